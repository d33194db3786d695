//! The report's figures, drawn with plotters' SVG backend: axes with units, a legend,
//! and the CPU and date under each.

use super::{Report, KINDS};
use crate::commands::CliResult;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// The figure files, as the page names them.
pub const WORK_AND_TIME: &str = "work-and-time.svg";
/// The roofline's file.
pub const ROOFLINE: &str = "roofline.svg";

/// Half the width of a bar in the stacked figure, in variants (one variant per unit of x).
const BAR_HALF_WIDTH: f64 = 0.3;
/// Legend swatches are this many pixels wide: far narrower than a bar, so a reader of the
/// SVG tells them apart.
pub const SWATCH: i32 = 10;

/// One colour per kind of layer, in [`KINDS`] order, the same in every figure.
pub const KIND_COLOURS: [RGBColor; 5] = [
    RGBColor(0x4c, 0x72, 0xb0), // stem
    RGBColor(0xdd, 0x84, 0x52), // 1x1
    RGBColor(0x55, 0xa8, 0x68), // 3x3
    RGBColor(0x81, 0x72, 0xb3), // fc
    RGBColor(0x93, 0x78, 0x60), // other
];

const FONT: &str = "sans-serif";

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn fail(e: impl std::fmt::Display) -> String {
    format!("figure: {e}")
}

/// Writes every figure of `report` into `dir`.
pub fn write_all(report: &Report, dir: &Path) -> CliResult<()> {
    work_and_time(report, &dir.join(WORK_AND_TIME))?;
    roofline(report, &dir.join(ROOFLINE))
}

/// The line under a figure: the CPU, the kernel family and the date.
fn footer(area: &Area<'_>, report: &Report) -> CliResult<()> {
    let text = format!(
        "{} ({}), {} thread(s), {}x{} input, convkit {}, {}",
        report.machine.cpu,
        report.machine.isa,
        report.threads,
        report.size,
        report.size,
        report.machine.convkit,
        report.date
    );
    area.draw(&Text::new(text, (12, 6), (FONT, 13).into_font().color(&BLACK.mix(0.7)))).map_err(fail)?;
    Ok(())
}

/// Multiply-adds by kind (left) beside time by kind (right), one stacked bar per variant.
fn work_and_time(report: &Report, path: &Path) -> CliResult<()> {
    let root = SVGBackend::new(path, (960, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(fail)?;
    let (body, foot) = root.split_vertically(410);
    footer(&foot, report)?;
    let panels = body.split_evenly((1, 2));
    let names: Vec<String> = report.profiles.iter().map(|p| p.variant.clone()).collect();
    let macs: Vec<[f64; 5]> = report.profiles.iter().map(|p| p.macs.values().map(|m| m / 1e9)).collect();
    let ms: Vec<[f64; 5]> = report.profiles.iter().map(|p| p.ms.values()).collect();
    stacked(&panels[0], "Multiply-adds run, by kind of layer", "GMACs (batch 1)", &names, &macs)?;
    stacked(&panels[1], "Time, by kind of layer (f32, batch 1)", "ms (median per layer)", &names, &ms)?;
    root.present().map_err(fail)?;
    Ok(())
}

fn stacked(area: &Area<'_>, title: &str, unit: &str, names: &[String], stacks: &[[f64; 5]]) -> CliResult<()> {
    // Headroom above the tallest bar for the legend.
    let top = stacks.iter().map(|s| s.iter().sum::<f64>()).fold(0.0, f64::max).max(1e-9) * 1.6;
    let n = names.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 17))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..top)
        .map_err(fail)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_desc("variant")
        .y_desc(unit)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-9 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .label_style((FONT, 13))
        .draw()
        .map_err(fail)?;
    for (k, kind) in KINDS.iter().enumerate() {
        let colour = KIND_COLOURS[k];
        let bars = stacks.iter().enumerate().filter(|(_, s)| s[k] > 0.0).map(move |(i, s)| {
            let below: f64 = s[..k].iter().sum();
            let x = i as f64;
            Rectangle::new([(x - BAR_HALF_WIDTH, below), (x + BAR_HALF_WIDTH, below + s[k])], colour.filled())
        });
        chart.draw_series(bars).map_err(fail)?.label(*kind).legend(move |(x, y)| swatch(x, y, colour));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// A legend's colour swatch at (x, y).
fn swatch(x: i32, y: i32, colour: RGBColor) -> Rectangle<(i32, i32)> {
    Rectangle::new([(x, y - SWATCH / 2), (x + SWATCH, y + SWATCH / 2)], colour.filled())
}

/// Draws a chart's legend at `position`, in the figures' one style.
fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> CliResult<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(fail)?;
    Ok(())
}

/// Achieved GFLOP/s of every conv layer of D against its arithmetic intensity, under the
/// roof min(FMA peak, intensity x memory bandwidth).
fn roofline(report: &Report, path: &Path) -> CliResult<()> {
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(fail)?;
    let (body, foot) = root.split_vertically(530);
    footer(&foot, report)?;
    let peak = report.peaks.get("f32").copied().unwrap_or(1.0);
    let bw = report.bandwidth_gbs;
    let points = &report.roofline;
    let (lo, hi) =
        points.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| (lo.min(p.intensity), hi.max(p.intensity)));
    let x_range = (lo.min(peak / bw) / 2.0).max(1e-3)..(hi * 2.0).max(1.0);
    let y_min = points.iter().map(|p| p.gflops).fold(f64::INFINITY, f64::min).min(peak / 10.0) / 2.0;
    let mut chart = ChartBuilder::on(&body)
        .caption("ResNet-50-D conv layers on the roofline (f32, batch 1)", (FONT, 17))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.clone().log_scale(), (y_min.max(1e-3)..peak * 2.0).log_scale())
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc("arithmetic intensity, FLOP per byte of input, weights and output")
        .y_desc("GFLOP/s achieved")
        .label_style((FONT, 13))
        .draw()
        .map_err(fail)?;
    // The roof, sampled evenly in log space.
    let samples = 200;
    let roof = (0..=samples).map(|i| {
        let t = i as f64 / samples as f64;
        let x = (x_range.start.ln() + t * (x_range.end.ln() - x_range.start.ln())).exp();
        (x, (x * bw).min(peak))
    });
    let roof_label = format!("roof: min({peak:.0} GFLOP/s FMA peak, intensity x {bw:.1} GB/s memory)");
    chart
        .draw_series(LineSeries::new(roof, BLACK.stroke_width(2)))
        .map_err(fail)?
        .label(roof_label)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 2 * SWATCH, y)], BLACK.stroke_width(2)));
    for (k, kind) in KINDS.iter().enumerate() {
        let colour = KIND_COLOURS[k];
        let mine: Vec<_> = points.iter().filter(|p| p.kind == *kind).collect();
        if mine.is_empty() {
            continue;
        }
        chart
            .draw_series(mine.into_iter().map(|p| Circle::new((p.intensity, p.gflops), 4, colour.filled())))
            .map_err(fail)?
            .label(format!("{kind} layers"))
            .legend(move |(x, y)| swatch(x, y, colour));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(fail)?;
    Ok(())
}
