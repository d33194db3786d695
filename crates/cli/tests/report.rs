//! `convkit report` end to end at a small size: every number of the page and every bar
//! and point of the figures equal those in report.json, and report.json agrees with
//! `bench --json` on the same build.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn convkit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_convkit")).args(args).output().expect("run convkit")
}

/// The page's rule for a number: `digits` decimals, an integer for 0, "-" for null.
fn format_number(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) if digits == 0 => format!("{}", x.round() as i64),
        Some(x) => format!("{x:.digits$}"),
        None => "-".to_string(),
    }
}

fn attr(node: roxmltree::Node<'_, '_>, name: &str) -> Option<f64> {
    node.attribute(name).and_then(|v| v.parse().ok())
}

/// Every number element of the page shows the value its JSON pointer names in
/// report.json, and every table cell is such a number or a label.
fn check_page(dir: &Path, report: &Value) {
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&html, options).expect("the page is well-formed XHTML");
    let mut numbers = 0;
    for node in doc.descendants().filter(|n| n.is_element()) {
        if let Some(key) = node.attribute("data-key") {
            let digits: usize = node.attribute("data-digits").and_then(|d| d.parse().ok()).expect("data-digits");
            let want = report.pointer(key).unwrap_or_else(|| panic!("{key}: not in report.json"));
            let text: String = node.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect();
            assert_eq!(text, format_number(want, digits), "{key}");
            numbers += 1;
        }
        if node.tag_name().name() == "td" {
            let class = node.attribute("class").unwrap_or_default();
            assert!(
                (class == "num" && node.has_attribute("data-key")) || class == "label",
                "a table cell that is neither a number from report.json nor a label: {:?}",
                node.text()
            );
        }
        if node.tag_name().name() == "img" {
            let src = node.attribute("src").unwrap();
            assert!(!src.contains("//") && dir.join(src).is_file(), "{src}: a file beside the page");
        }
        if matches!(node.tag_name().name(), "script" | "link") {
            panic!("the page loads nothing: found <{}>", node.tag_name().name());
        }
    }
    let timings = report["timings"].as_array().unwrap().len();
    assert!(numbers > 8 * timings, "{numbers} numbers on the page");
}

/// The stacked bars: one per non-zero (variant, kind) in each panel, bottom up in kind
/// order, heights in one proportion to the values of report.json.
fn check_bars(dir: &Path, report: &Value) {
    let svg = std::fs::read_to_string(dir.join("work-and-time.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let width = attr(doc.root_element(), "width").unwrap();
    // Bars are coloured rects wider than a legend swatch (the background and the legend box
    // are white).
    let bars: Vec<[f64; 4]> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("fill").is_some_and(|f| f.starts_with('#') && f != "#FFFFFF"))
        .filter_map(|n| Some([attr(n, "x")?, attr(n, "y")?, attr(n, "width")?, attr(n, "height")?]))
        .filter(|r| r[2] > 14.0 && r[2] < width / 8.0)
        .collect();
    let kinds = ["stem", "1x1", "3x3", "fc", "other"];
    for (panel, (field, scale)) in [("macs", 1e9), ("ms", 1.0)].into_iter().enumerate() {
        let in_panel: Vec<&[f64; 4]> = bars.iter().filter(|b| ((b[0] >= width / 2.0) as usize) == panel).collect();
        let mut xs: Vec<f64> = in_panel.iter().map(|b| b[0]).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let profiles = report["profiles"].as_array().unwrap();
        assert_eq!(xs.len(), profiles.len(), "{field}: one stack per variant");
        let mut pairs = Vec::new();
        for (x, profile) in xs.iter().zip(profiles) {
            let mut stack: Vec<&&[f64; 4]> = in_panel.iter().filter(|b| b[0] == *x).collect();
            stack.sort_by(|a, b| b[1].total_cmp(&a[1])); // bottom first
            let values: Vec<f64> =
                kinds.iter().map(|k| profile[field][k].as_f64().unwrap() / scale).filter(|v| *v > 0.0).collect();
            assert_eq!(stack.len(), values.len(), "{field}: a bar per kind");
            pairs.extend(stack.iter().map(|b| b[3]).zip(values));
        }
        // One scale for the panel (least squares), then every bar within its rounding.
        let k = pairs.iter().map(|(h, v)| h * v).sum::<f64>() / pairs.iter().map(|(_, v)| v * v).sum::<f64>();
        for (h, v) in pairs {
            // Both pixel edges are rounded: a bar is within two pixels of its value.
            assert!((h - v * k).abs() <= 2.0, "{field}: bar {h} px for {v} ({k} px per unit)");
        }
    }
}

/// The roofline's points: one per layer of report.json, placed by log(intensity) and
/// log(GFLOP/s) on one pair of axes.
fn check_roofline(dir: &Path, report: &Value) {
    let svg = std::fs::read_to_string(dir.join("roofline.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let points: Vec<(f64, f64)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("circle"))
        .map(|n| (attr(n, "cx").unwrap(), attr(n, "cy").unwrap()))
        .collect();
    let layers = report["roofline"].as_array().unwrap();
    assert_eq!(points.len(), layers.len(), "a point per layer");
    let data: Vec<(f64, f64)> = layers
        .iter()
        .map(|l| (l["intensity"].as_f64().unwrap().log10(), l["gflops"].as_f64().unwrap().log10()))
        .collect();
    // Points are drawn kind by kind: match each point of the data with its pixel by fitting
    // the axis maps on the extreme points and checking every layer has a circle there.
    let fit = |d: &dyn Fn(&(f64, f64)) -> f64, p: &dyn Fn(&(f64, f64)) -> f64| {
        let (lo, hi) = data.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(d(v)), b.max(d(v))));
        let (plo, phi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(p(v)), b.max(p(v))));
        (lo, hi, plo, phi)
    };
    let (xlo, xhi, pxlo, pxhi) = fit(&|v| v.0, &|v| v.0);
    let (ylo, yhi, pylo, pyhi) = fit(&|v| v.1, &|v| v.1);
    for (i, d) in data.iter().enumerate() {
        let px = pxlo + (d.0 - xlo) / (xhi - xlo).max(1e-12) * (pxhi - pxlo);
        // y grows downwards in the SVG.
        let py = pyhi - (d.1 - ylo) / (yhi - ylo).max(1e-12) * (pyhi - pylo);
        let near = points.iter().any(|p| (p.0 - px).abs() <= 2.0 && (p.1 - py).abs() <= 2.0);
        assert!(near, "layer {i} ({}): no point near ({px:.0}, {py:.0})", layers[i]["name"]);
    }
}

#[test]
fn report_page_figures_and_json_agree() {
    let dir = std::env::temp_dir().join(format!("convkit-report-{}", std::process::id()));
    let args = ["-o", dir.to_str().unwrap(), "--size", "64", "--iters", "1", "--rounds", "1", "--batch", "2"];
    let out = convkit(&[&["report"][..], &args].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    check_page(&dir, &report);
    check_bars(&dir, &report);
    check_roofline(&dir, &report);

    // The claims' counts are exact.
    assert_eq!(report["flops"]["a_macs"], report["variants"][0]["macs"]);
    for s in report["strided_reads"].as_array().unwrap().iter().skip(1) {
        assert_eq!(s["a_over_b"], 0.25, "stride 2 reads a quarter: {s}");
    }
    assert!(report["positions"]["macs_read_only"].as_u64() < report["positions"]["macs_every"].as_u64());

    // Against bench on the same build: MACs/A exactly. Times are measured, never compared:
    // on a loaded machine two runs of one network differ by any factor, so a time only
    // has to exist, be finite and positive.
    let out = convkit(&["bench", "--json", "--size", "64", "--iters", "1", "--warmup", "0", "--rounds", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bench: Value = serde_json::from_slice(&out.stdout).unwrap();
    for row in bench["rows"].as_array().unwrap() {
        let mine = report["timings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["variant"] == row["variant"] && t["precision"] == "f32" && t["batch"] == 1)
            .expect("the variant in the report");
        assert_eq!(mine["macs_over_a"], row["macs_over_a"], "{}", row["variant"]);
        for time_over_a in [&mine["time_over_a"], &row["time_over_a"]] {
            let t = time_over_a.as_f64().unwrap_or(f64::NAN);
            assert!(t.is_finite() && t > 0.0, "{}: time/A {time_over_a}", row["variant"]);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
