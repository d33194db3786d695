//! The report's page: one template, its slots filled with tables whose every number is
//! read from report.json by its JSON pointer (`data-key`), so that page and file agree.

use super::figures::{ROOFLINE, WORK_AND_TIME};
use super::{Report, KINDS};
use crate::commands::CliResult;
use serde_json::Value;

const TEMPLATE: &str = r#"<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="en">
<head>
<meta charset="utf-8"/>
<title>Bag of Tricks, measured: ResNet-50 A, B, C, D on {{cpu}}</title>
<style>
body { font-family: sans-serif; max-width: 1000px; margin: 2em auto; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { text-align: left; background: #f4f4f4; }
figure { margin: 1em 0; }
figure img { width: 100%; border: 1px solid #eee; }
p.meta, figcaption { color: #555; font-size: 0.92em; }
p.verdict { background: #f7f7f0; padding: 0.5em 0.8em; border-left: 4px solid #bbb; }
</style>
</head>
<body>
<h1>Bag of Tricks, measured: ResNet-50 A, B, C, D</h1>
<p class="meta">{{meta}}</p>
<p>"Bag of Tricks for Image Classification with Convolutional Neural Networks" (He et al., 2018)
tweaks ResNet-50 three times: B moves the stride of a downsampling block from its first 1x1 conv
to its 3x3, C replaces the 7x7 stem with three 3x3 convs, D puts a 2x2 average pool before the
projection shortcut's 1x1 conv. The paper finds D costs about 13% more FLOPs and is only about
3% slower. This page measures each claim on this CPU with convkit's kernels, on seeded weights
(the timings do not depend on the values).</p>

<h2>1. The four variants</h2>
{{counts}}
<p>Time in alternating rounds (every variant in turn in each round), medians of the passes;
GFLOP/s count the paper's nominal multiply-adds; the share is of the measured peak of the
row's precision (FMAs for f32, the bf16 dot product for bf16). The stride-1 3x3 convs run on
Winograd, which does fewer multiplies than it is credited with, so a share can pass 1.</p>
{{timings}}

<h2>2. Where the work is and where the time goes</h2>
<figure><img src="{{work_svg}}" alt="Multiply-adds and time by kind of layer, per variant"/>
<figcaption>Left: multiply-adds each variant runs, by kind of layer. Right: the time they take
(median per layer over the passes, f32, batch 1). Same colours in both.</figcaption></figure>
{{profiles}}

<h2>3. Per-layer roofline</h2>
<figure><img src="{{roofline_svg}}" alt="Roofline of ResNet-50-D's conv layers"/>
<figcaption>Each conv layer of D: FLOPs over the bytes it must move at least (input, weights,
output in f32) against the GFLOP/s it reached, counting nominal FLOPs (the stride-1 3x3s run on
Winograd, which does fewer). The roof is the measured FMA peak and the measured memory
bandwidth of all threads.</figcaption></figure>
{{roofline}}

<h2>4. The seed's claims</h2>
<h3>4.1 D costs about 13% more FLOPs than A</h3>
{{flops}}
<h3>4.2 D is only about 3% slower</h3>
{{time}}
<h3>4.3 A 1x1 conv with stride 2 reads a quarter of its input</h3>
{{strided}}
<h3>4.4 1x1 convs need no im2col</h3>
{{im2col}}
<h3>4.5 A block's branches can run in parallel</h3>
{{branches}}
<h3>4.6 Computing only what is read</h3>
{{positions}}
</body>
</html>
"#;

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Formats a JSON number with `digits` decimals (an integer for 0); null as "-".
pub fn format_number(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) if digits == 0 => format!("{}", x.round() as i64),
        Some(x) => format!("{x:.digits$}"),
        None => "-".to_string(),
    }
}

/// Reads numbers out of report.json for the page.
struct Cells<'a> {
    json: &'a Value,
}

impl Cells<'_> {
    fn value(&self, key: &str) -> CliResult<&Value> {
        Ok(self.json.pointer(key).ok_or_else(|| format!("report: no value at {key}"))?)
    }
    /// A number in running text.
    fn span(&self, key: &str, digits: usize) -> CliResult<String> {
        let text = format_number(self.value(key)?, digits);
        Ok(format!(r#"<span class="num" data-key="{key}" data-digits="{digits}">{text}</span>"#))
    }
    /// A number in a table.
    fn td(&self, key: &str, digits: usize) -> CliResult<String> {
        let text = format_number(self.value(key)?, digits);
        Ok(format!(r#"<td class="num" data-key="{key}" data-digits="{digits}">{text}</td>"#))
    }
    /// A table row: `labels` as label cells, then the numbers of `fields` (name, decimals)
    /// under the JSON pointer `prefix`.
    fn row(&self, labels: &[&str], prefix: &str, fields: &[(&str, usize)]) -> CliResult<String> {
        let mut row: String = labels.iter().map(|l| label(l)).collect();
        for (field, digits) in fields {
            row += &self.td(&format!("{prefix}/{field}"), *digits)?;
        }
        Ok(row)
    }
    /// One row per element of the array at `array`, each through `row`.
    fn rows<T>(
        &self,
        array: &str,
        items: &[T],
        labels: impl Fn(&T) -> Vec<&str>,
        fields: &[(&str, usize)],
    ) -> CliResult<Vec<String>> {
        items.iter().enumerate().map(|(i, item)| self.row(&labels(item), &format!("{array}/{i}"), fields)).collect()
    }
    fn text(&self, key: &str) -> CliResult<String> {
        Ok(esc(self.value(key)?.as_str().unwrap_or_default()))
    }
}

/// One table: a header row and rows of cells.
fn table(headers: &[&str], rows: Vec<String>) -> String {
    let head: String = headers.iter().map(|h| format!("<th>{}</th>", esc(h))).collect();
    let body: String = rows.into_iter().map(|r| format!("<tr>{r}</tr>\n")).collect();
    format!("<table>\n<tr>{head}</tr>\n{body}</table>")
}

fn label(s: &str) -> String {
    format!(r#"<td class="label">{}</td>"#, esc(s))
}

/// The page of `report`, whose JSON is `json`.
pub fn render(report: &Report, json: &Value) -> CliResult<String> {
    let c = Cells { json };
    let meta = format!(
        "{} ({} kernels), {} {}, {}x{} input, convkit {}, {}. Made by <code>{}</code>.",
        c.text("/cpu")?,
        c.text("/isa")?,
        c.span("/threads", 0)?,
        if report.threads == 1 { "thread" } else { "threads" },
        c.span("/size", 0)?,
        c.span("/size", 0)?,
        c.text("/convkit")?,
        c.text("/date")?,
        c.text("/command")?
    );
    let counts = c.rows(
        "/variants",
        &report.variants,
        |v| vec![v.variant.as_str()],
        &[
            ("params", 0),
            ("macs", 0),
            ("macs_by_kind/1x1", 0),
            ("macs_by_kind/3x3", 0),
            ("macs_by_kind/stem", 0),
            ("macs_by_kind/fc", 0),
            ("macs_over_a", 3),
        ],
    )?;
    let counts =
        table(&["variant", "parameters", "MACs", "1x1 MACs", "3x3 MACs", "stem MACs", "fc MACs", "MACs/A"], counts);
    let timings = c.rows(
        "/timings",
        &report.timings,
        |t| vec![t.variant.as_str(), t.precision],
        &[
            ("batch", 0),
            ("median_ms", 2),
            ("min_ms", 2),
            ("time_over_a", 3),
            ("macs_over_a", 3),
            ("gflops", 1),
            ("peak_share", 3),
        ],
    )?;
    let timings = table(
        &["variant", "precision", "batch", "median ms", "min ms", "time/A", "MACs/A", "GFLOP/s", "share of peak"],
        timings,
    );
    let kind_fields: Vec<String> = KINDS.iter().map(|k| format!("ms/{k}")).collect();
    let mut profile_fields: Vec<(&str, usize)> = kind_fields.iter().map(|k| (k.as_str(), 2)).collect();
    profile_fields.push(("total_ms", 2));
    let profiles = c.rows("/profiles", &report.profiles, |p| vec![p.variant.as_str()], &profile_fields)?;
    let profiles = table(&["ms by kind", "stem", "1x1", "3x3", "fc", "other", "total"], profiles);

    let ridge = format!(
        "<p>Measured roof: {} GFLOP/s (f32 FMA peak of all threads) and {} GB/s (all threads reading memory); the \
         ridge, below which a layer is bound by the bytes it moves rather than by its FLOPs, is at {} FLOP per \
         byte. {}</p>",
        c.span("/peaks/f32", 0)?,
        c.span("/bandwidth_gbs", 1)?,
        c.span("/ridge_flop_per_byte", 1)?,
        if report.layers_below_ridge == 0 {
            "Every conv layer of D lies right of it: on this CPU they are bound by compute, and the distance to the \
             roof is the kernels' efficiency."
                .to_string()
        } else {
            format!(
                "{} of D's layers lie left of it (see the points), bound by the bytes they move; the others are bound \
                 by compute, and their distance to the roof is the kernels' efficiency.",
                c.span("/layers_below_ridge", 0)?
            )
        }
    );
    let roof_rows = c.rows(
        "/roofline",
        &report.roofline,
        |p| vec![p.name.as_str(), p.kind.as_str()],
        &[("flops", 0), ("bytes", 0), ("intensity", 1), ("gflops", 1)],
    )?;
    let roofline = format!(
        "{ridge}\n<details><summary>The points</summary>\n{}\n</details>",
        table(&["layer", "kind", "FLOPs", "bytes", "FLOP/byte", "GFLOP/s"], roof_rows)
    );
    let f = &report.flops;
    let flops = format!(
        "<p>A runs {} multiply-adds, D {}: D/A = {}, exactly (counted from the layer list; the paper says about \
         1.13). {}</p>",
        c.span("/flops/a_macs", 0)?,
        c.span("/flops/d_macs", 0)?,
        c.span("/flops/d_over_a", 3)?,
        if f.d_over_a > 1.0 {
            "The extra work is B's stride moved onto the 3x3 (its first 1x1 runs at every position) and the deep \
             stem's three 3x3 convs, which D shares with C; D's pool makes its shortcut conv no dearer."
        } else {
            "At this input size the counts differ from the paper's."
        }
    );

    let t = &report.time;
    let verdict = if t.d_over_a <= 1.05 {
        "As in the paper, D's extra FLOPs cost little time here."
    } else if (t.d_over_a - t.run_macs_d_over_a).abs() <= 0.06 {
        "Not so here: D's time over A's follows the multiply-adds each runs. The roofline shows why: nearly every \
         layer is bound by compute on this CPU, so extra multiply-adds cost time in proportion wherever they land, \
         1x1 convs included. The paper timed a GPU, where many of ResNet-50's layers at batch sizes like these do \
         not fill the device and extra work partly hides."
    } else {
        "Not so here, and D's time over A's is not what its extra multiply-adds alone explain: the difference by \
         kind of layer says where the rest goes."
    };
    let diff_fields: Vec<String> = KINDS.iter().map(|k| format!("difference_ms/{k}")).collect();
    let diff_fields: Vec<(&str, usize)> = diff_fields.iter().map(|k| (k.as_str(), 2)).collect();
    let diff = c.row(&["D - A, ms"], "/time", &diff_fields)?;
    let time = format!(
        "<p>f32, batch 1: A {} ms, D {} ms, D/A = {} (the paper: about 1.03). D runs {} times A's multiply-adds \
         (A computes only what is read, section 4.6).</p>\n<p class=\"verdict\">{verdict}</p>\n{}",
        c.span("/time/a_ms", 2)?,
        c.span("/time/d_ms", 2)?,
        c.span("/time/d_over_a", 3)?,
        c.span("/time/run_macs_d_over_a", 3)?,
        table(&["", "stem", "1x1", "3x3", "fc", "other"], vec![diff])
    );

    let strided = c.rows(
        "/strided_reads",
        &report.strided_reads,
        |s| vec![s.block.as_str()],
        &[("input/0", 0), ("input/1", 0), ("input/2", 0), ("a_reads", 0), ("b_reads", 0), ("a_over_b", 3)],
    )?;
    let strided = format!(
        "<p>Input elements the first 1x1 conv of each downsampling block reads: A's has stride 2 (stages 2-4) and \
         reads every other pixel of every other row, B's has stride 1 and reads them all (its stride is on the 3x3). \
         The three quarters A never reads are the information the paper says A loses; B reads them at four times \
         that conv's multiply-adds.</p>\n{}",
        table(&["block", "channels", "height", "width", "A reads", "B reads", "A/B"], strided)
    );

    let layers = c.rows(
        "/im2col",
        &report.im2col,
        |l| vec![l.name.as_str(), l.kind.as_str()],
        &[("macs", 0), ("direct_ms", 3), ("im2col_ms", 3), ("copy_ms", 3), ("copy_bytes", 0)],
    )?;
    let per_mac =
        c.rows("/per_mac", &report.per_mac, |p| vec![p.kind.as_str()], &[("direct_ps", 2), ("im2col_ps", 2)])?;
    let im2col = format!(
        "<p>Every distinct 1x1 and 3x3 layer of ResNet-50-B, batch 1, on the direct path (the 1x1 conv reads the \
         NHWC activation in place; the 3x3 runs on the microkernel over a padded copy) and on im2col + gemm, whose \
         copy time and bytes are its own columns. On the im2col path a 1x1 conv still copies its input (all of it, or \
         the strided pixels); the direct path skips that copy.</p>\n{}\n<p>Time per multiply-add, picoseconds:</p>\n{}",
        table(&["layer", "kind", "MACs", "direct ms", "im2col + gemm ms", "im2col copy ms", "copy bytes"], layers),
        table(&["kind", "direct", "im2col + gemm"], per_mac)
    );
    let cheaper = report.per_mac.iter().all(|p| p.direct_ps < p.im2col_ps);
    let im2col = format!(
        "{im2col}\n<p class=\"verdict\">{}</p>",
        if cheaper {
            "The direct path is cheaper per multiply-add for both kinds: for a 1x1 conv im2col is a pure copy (or a \
             strided gather) that the direct kernel does not need, and gemm then packs the copy once more."
        } else {
            "im2col + gemm is not dearer per multiply-add for every kind here: see the copy column for what it costs."
        }
    );

    let branch_rows = c.rows(
        "/branches",
        &report.branches,
        |b| vec![b.variant.as_str()],
        &[
            ("sequential_ms", 3),
            ("parallel_ms", 3),
            ("parallel_over_sequential", 3),
            ("network_sequential_ms", 2),
            ("network_parallel_ms", 2),
        ],
    )?;
    let faster = report.branches.iter().filter(|b| b.parallel_over_sequential < 1.0).count();
    let branch_verdict = if faster == report.branches.len() {
        "Running the branches side by side is faster here: each branch alone is too small to keep both threads busy."
    } else {
        "Side by side is not faster everywhere here: splitting every layer over both threads already keeps them busy, \
         and a branch on one thread takes as long as both branches on two, so the shortcut (a quarter of the main \
         branch's work or less) finishes early and its thread waits."
    };
    let branches = format!(
        "<p>The four downsampling blocks of each variant (f32, batch 1): the projection shortcut (with D's pool) and \
         the main branch's first two convs one after the other with all threads on each layer, against side by side \
         with one thread each; the block's last conv, which adds the two, runs on all threads either way. Logits are \
         bitwise the same (tested).</p>\n{}\n<p class=\"verdict\">{branch_verdict}</p>",
        table(
            &[
                "variant",
                "one after the other, ms",
                "side by side, ms",
                "ratio",
                "network, ms",
                "network side by side, ms"
            ],
            branch_rows
        )
    );

    let positions = format!(
        "<p>A's blocks before a stride-2 1x1 conv compute only the positions it reads (their output at a quarter of \
         the positions; OpenVINO does the same): {} multiply-adds against {} when every position is computed, {} ms \
         against {} ms (f32, batch 1), {} of the time saved. Same logits within float rounding (tested).</p>",
        c.span("/positions/macs_read_only", 0)?,
        c.span("/positions/macs_every", 0)?,
        c.span("/positions/ms_read_only", 2)?,
        c.span("/positions/ms_every", 2)?,
        c.span("/positions/time_saved", 3)?
    );

    let slots = [
        ("{{cpu}}", c.text("/cpu")?),
        ("{{meta}}", meta),
        ("{{counts}}", counts),
        ("{{timings}}", timings),
        ("{{work_svg}}", WORK_AND_TIME.to_string()),
        ("{{profiles}}", profiles),
        ("{{roofline_svg}}", ROOFLINE.to_string()),
        ("{{roofline}}", roofline),
        ("{{flops}}", flops),
        ("{{time}}", time),
        ("{{strided}}", strided),
        ("{{im2col}}", im2col),
        ("{{branches}}", branches),
        ("{{positions}}", positions),
    ];
    let mut page = TEMPLATE.to_string();
    for (slot, html) in slots {
        page = page.replace(slot, &html);
    }
    Ok(page)
}
