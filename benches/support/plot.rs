//! SVG pictures of the bench reports (issue 16 point 8), shared by the cluster and WAL
//! benches through `#[path]`: a latency percentile plot (each system's latency
//! distribution beside its reference from the same run) and a throughput against
//! in-flight count plot (one line per system). It owns only the drawing and where the files
//! go; it never measures, never judges a result, and never panics on its input: empty
//! series are left out and every failure comes back as an `io::Error`.
//!
//! Output: `FLOTILLA_PLOTS_DIR` if set, else `$CARGO_TARGET_DIR/flotilla-plots`, else
//! `target/flotilla-plots` under the repository root. SVG only, with plotters' built-in
//! text size estimate (no font library).

use std::io;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

/// Width and height of every picture, in SVG pixels.
const SIZE: (u32, u32) = (860, 500);
/// Points drawn per latency series (it stays a few KB whatever the sample count).
const LATENCY_POINTS: usize = 160;
/// The deepest percentile drawn: 99.999% (five nines).
const MAX_NINES: f64 = 5.0;

/// One system's latencies: `sorted_us` holds one sample per operation, in microseconds,
/// sorted ascending. A reference (raw hardware limit or peer crate) is drawn dashed.
pub struct LatencySeries<'a> {
    /// Legend name.
    pub name: &'a str,
    /// Samples in microseconds, ascending.
    pub sorted_us: &'a [u32],
    /// Drawn dashed, as a reference to compare against.
    pub reference: bool,
}

/// One system's throughput at several in-flight counts: `points` are (in flight,
/// operations/s). A reference is drawn dashed.
pub struct ThroughputSeries<'a> {
    /// Legend name.
    pub name: &'a str,
    /// (in-flight count, operations per second) pairs, in any order.
    pub points: &'a [(f64, f64)],
    /// Drawn dashed, as a reference to compare against.
    pub reference: bool,
}

/// Where the benches write their pictures (see the module comment); created if missing.
pub fn out_dir() -> io::Result<PathBuf> {
    let dir = match std::env::var_os("FLOTILLA_PLOTS_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("flotilla-plots"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The k-th series' colour: flotilla's series and references alike, distinct hues.
fn colour(k: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
        RGBColor(140, 86, 75),
        RGBColor(127, 127, 127),
    ];
    C[k % C.len()]
}

/// "0%", "90%", "99%", "99.9%"... for a position on the nines axis (x = -log10(1 - p)).
fn nines_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as i64 - 2).clamp(0, 6) as usize;
    format!("{p:.decimals$}%")
}

/// A number of milliseconds without float noise: "0.05", "2", "300".
fn ms_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let d = (-v.log10().floor()) as usize;
        format!("{v:.d$}")
    }
}

/// A rate with a k/M suffix.
fn rate_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The series' percentile curve: (nines, latency ms) at evenly spaced nines up to what
/// its sample count supports (a percentile beyond 1 - 1/n is the maximum).
fn percentile_curve(sorted_us: &[u32]) -> Vec<(f64, f64)> {
    let n = sorted_us.len();
    if n == 0 {
        return Vec::new();
    }
    let top = (n as f64).log10().min(MAX_NINES);
    let steps = LATENCY_POINTS.max(2) - 1;
    (0..=steps)
        .map(|i| {
            let x = top * i as f64 / steps as f64;
            let p = 1.0 - 10f64.powf(-x);
            let idx = ((p * n as f64) as usize).min(n - 1);
            (x, f64::from(sorted_us[idx].max(1)) / 1e3)
        })
        .collect()
}

/// Writes a "no data" picture, so a run that measured nothing says so.
fn empty(root: &DrawingArea<SVGBackend, Shift>, title: &str) -> io::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let style = TextStyle::from(("sans-serif", 20).into_font()).color(&BLACK);
    root.draw_text(&format!("{title}: no data"), &style, (20, 40)).map_err(err)?;
    root.present().map_err(err)
}

/// Draws one line, solid or dashed, and its legend entry.
fn line<DB, CT>(
    chart: &mut ChartContext<'_, DB, CT>,
    points: Vec<(f64, f64)>,
    name: &str,
    k: usize,
    reference: bool,
) -> io::Result<()>
where
    DB: DrawingBackend,
    CT: CoordTranslate<From = (f64, f64)>,
{
    let c = colour(k);
    let style = c.stroke_width(if reference { 2 } else { 3 });
    let anno = if reference {
        chart.draw_series(DashedLineSeries::new(points, 8, 5, style)).map_err(err)?
    } else {
        chart.draw_series(LineSeries::new(points, style)).map_err(err)?
    };
    let label = if reference { format!("{name} (reference)") } else { name.to_string() };
    anno.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
    Ok(())
}

/// Writes `path`: each series' latency against percentile (x: 0% to at most 99.999%, on
/// a nines scale; y: milliseconds, log scale).
pub fn latency_svg(path: &Path, title: &str, series: &[LatencySeries<'_>]) -> io::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let curves: Vec<(&LatencySeries, Vec<(f64, f64)>)> =
        series.iter().map(|s| (s, percentile_curve(s.sorted_us))).filter(|(_, c)| !c.is_empty()).collect();
    if curves.is_empty() {
        return empty(&root, title);
    }
    let top = curves.iter().map(|(_, c)| c.last().map_or(0.0, |p| p.0)).fold(0.0, f64::max);
    let x_max = top.ceil().max(1.0);
    let (lo, hi) = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(0.0..x_max, ((lo / 1.5).max(1e-3)..(hi * 1.5).max(2e-3)).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        // At most one label per unit: 0%, 90%, 99%, ...
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|v| ms_label(*v))
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (k, (s, c)) in curves.into_iter().enumerate() {
        line(&mut chart, c, s.name, k, s.reference)?;
    }
    chart
        .configure_series_labels()
        // The curves climb to the right: the lower right stays clear.
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Writes `path`: operations/s against in-flight count (x: log scale; y: linear from 0),
/// one line with a marker per measured point for each series.
pub fn throughput_svg(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[ThroughputSeries<'_>],
) -> io::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let usable = |p: &&(f64, f64)| p.0 > 0.0 && p.0.is_finite() && p.1 >= 0.0 && p.1.is_finite();
    let lines: Vec<(&ThroughputSeries, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let mut pts: Vec<(f64, f64)> = s.points.iter().filter(usable).copied().collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (s, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if lines.is_empty() {
        return empty(&root, title);
    }
    let all = || lines.iter().flat_map(|(_, p)| p.iter());
    let x_lo = all().map(|p| p.0).fold(f64::MAX, f64::min);
    let x_hi = all().map(|p| p.0).fold(0.0, f64::max);
    let y_hi = all().map(|p| p.1).fold(0.0, f64::max);
    // Ticks exactly at the measured in-flight counts.
    let mut ticks: Vec<f64> = all().map(|p| p.0).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(
            (x_lo / 1.6..x_hi * 1.6).log_scale().with_key_points(ticks),
            // Headroom for the legend above the highest point.
            0.0..(y_hi * 1.4).max(1.0),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|v| rate_label(*v))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (k, (s, pts)) in lines.into_iter().enumerate() {
        let c = colour(k);
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(err)?;
        line(&mut chart, pts, s.name, k, s.reference)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
