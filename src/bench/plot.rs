//! The stress-test plot: throughput, latency and per-node load over time, as one PNG.
//!
//! [`render`] draws three stacked panels sharing the time axis, from a [`timeline`] of the
//! run (the demo passes its report's `timeline`, so the picture and the JSON hold the same
//! slices): the throughput (successful requests per second, a filled area), the p50 and p99
//! latency in milliseconds, and the requests served per second by each node (one coloured
//! line per node). Every [`FailureWindow`] is shaded in all three panels and labelled
//! "node N failed" (or "node N failed (coordinator)") in each, so a dip in throughput or a spike in latency can be read against
//! the failure that caused it.
//!
//! Drawing happens in memory with plotters' bitmap backend; the RGB buffer is encoded to PNG
//! with the `image` crate the project already uses ([`render_to_buffer`]), so no system
//! library is involved. Text uses DejaVu Sans, embedded in the binary and registered with
//! plotters' `ab_glyph` font support on first use.
//!
//! Implementation caveats: the image size is fixed ([`WIDTH`] x [`HEIGHT`]); latency slices
//! with no success leave a gap in the latency lines rather than dropping to zero; the node
//! palette repeats after eight nodes; y axes are linear, so one huge p99 flattens the rest.
//!
//! [`timeline`]: crate::bench::metrics::timeline

use std::collections::BTreeSet;
use std::io::Cursor;
use std::ops::Range;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle, RGBColor};

use crate::bench::metrics::Slice;
use crate::ids::NodeId;
use crate::watch::FailureWindow;
use crate::{Error, Result};

/// Width of the rendered image in pixels.
pub const WIDTH: u32 = 1400;
/// Height of the rendered image in pixels.
pub const HEIGHT: u32 = 900;
/// The embedded font (DejaVu Sans; see `assets/README.md`).
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
/// The family name under which the embedded font is registered.
pub(crate) const FAMILY: &str = "sans-serif";
/// Height of the title band at the top of the image.
const TITLE_HEIGHT: u32 = 64;
/// Throughput colour (blue).
const BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// p99 latency colour (orange).
const ORANGE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
/// Failure shading and label colour (red).
pub(crate) const RED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
/// Text and axis colour (near black).
pub(crate) const INK: RGBColor = RGBColor(0x33, 0x33, 0x33);
/// One colour per node (Tableau 10, without the red that marks failures).
const NODE_COLOURS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0xbc, 0xbd, 0x22),
];

/// A chart of one panel, with seconds on x and the panel's figure on y.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Renders the plot of a run, cut into `width`-long slices, and writes it as a PNG file at `path`.
pub fn render(
    report_title: &str,
    timeline: &[Slice],
    width: Duration,
    failure_windows: &[FailureWindow],
    path: &Path,
) -> Result<()> {
    let png = render_to_buffer(report_title, timeline, width, failure_windows)?;
    std::fs::write(path, png)?;
    Ok(())
}

/// Renders the plot of a run, cut into `width`-long slices, and returns the PNG file's bytes.
pub fn render_to_buffer(
    report_title: &str,
    timeline: &[Slice],
    width: Duration,
    failure_windows: &[FailureWindow],
) -> Result<Vec<u8>> {
    register_embedded_font();
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    let width = width.as_secs_f64().max(f64::MIN_POSITIVE);
    draw(report_title, timeline, width, failure_windows, &mut rgb)?;
    png_of(WIDTH, HEIGHT, rgb)
}

/// An RGB pixel buffer of `width` x `height`, as PNG bytes.
pub(crate) fn png_of(width: u32, height: u32, rgb: Vec<u8>) -> Result<Vec<u8>> {
    let image = image::RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| plot_error("the pixel buffer does not match the image size"))?;
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(plot_error)?;
    Ok(png)
}

/// Registers the embedded font with plotters, once per process.
pub(crate) fn register_embedded_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The font is a constant of the build; a failure here is a packaging bug.
            let registered = register_font(FAMILY, style, FONT).is_ok();
            assert!(registered, "the embedded DejaVu Sans font is valid");
        }
    });
}

/// Draws the title and the three panels into an RGB buffer of [`WIDTH`] x [`HEIGHT`].
fn draw(
    title: &str,
    timeline: &[Slice],
    width: f64,
    windows: &[FailureWindow],
    rgb: &mut [u8],
) -> Result<()> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (band, body) = root.split_vertically(TITLE_HEIGHT);
    band.draw_text(
        title,
        &(FAMILY, 30).into_font().style(FontStyle::Bold).color(&INK),
        (40, 18),
    )
    .map_err(plot_error)?;
    let panels = body.split_evenly((3, 1));
    let end_s = timeline
        .last()
        .map(|s| s.t_s + width)
        .into_iter()
        .chain(windows.iter().map(|w| w.end_s))
        .fold(1.0, f64::max);
    let x = 0.0..end_s;

    // Throughput: a filled area, plotted at the middle of each slice.
    let middle = |s: &Slice| s.t_s + width / 2.0;
    let points: Vec<(f64, f64)> = timeline
        .iter()
        .map(|s| (middle(s), s.ok as f64 / width))
        .collect();
    let top = headroom(points.iter().map(|p| p.1));
    let mut chart = panel(
        &panels[0],
        "Throughput",
        "requests / s",
        x.clone(),
        top,
        false,
    )?;
    shade(&mut chart, windows, top)?;
    chart
        .draw_series(
            AreaSeries::new(points.clone(), 0.0, BLUE.mix(0.18)).border_style(BLUE.stroke_width(2)),
        )
        .map_err(plot_error)?
        .label("successful requests / s")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 22, y + 6)], BLUE.mix(0.5).filled()));
    legend(&mut chart)?;

    // Latency: p50 and p99, broken where a slice had no success.
    let p50 = gaps(timeline, width, |s| s.p50_ms);
    let p99 = gaps(timeline, width, |s| s.p99_ms);
    let top = headroom(p99.iter().chain(&p50).flatten().map(|p| p.1));
    let mut chart = panel(&panels[1], "Latency", "latency (ms)", x.clone(), top, false)?;
    shade(&mut chart, windows, top)?;
    line(&mut chart, &p99, ORANGE, "p99")?;
    line(&mut chart, &p50, BLUE, "p50")?;
    legend(&mut chart)?;

    // Per node: completions per second of each node, zero where it served nothing.
    let nodes: BTreeSet<NodeId> = timeline
        .iter()
        .flat_map(|s| s.served_per_node.keys().copied())
        .collect();
    let per_node: Vec<(NodeId, Vec<(f64, f64)>)> = nodes
        .iter()
        .map(|&node| {
            let rate = |s: &Slice| *s.served_per_node.get(&node).unwrap_or(&0) as f64 / width;
            (
                node,
                timeline.iter().map(|s| (middle(s), rate(s))).collect(),
            )
        })
        .collect();
    let top = headroom(per_node.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)));
    let mut chart = panel(
        &panels[2],
        "Requests served per node",
        "requests / s",
        x,
        top,
        true,
    )?;
    shade(&mut chart, windows, top)?;
    for (i, (node, points)) in per_node.into_iter().enumerate() {
        let colour = NODE_COLOURS[i % NODE_COLOURS.len()];
        line(&mut chart, &[points], colour, &format!("node {node}"))?;
    }
    legend(&mut chart)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Builds one panel: its caption, axes with units and a light grid.
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    y_label: &str,
    x: Range<f64>,
    top: f64,
    x_axis_label: bool,
) -> Result<Chart<'a, 'b>> {
    // Runs shorter than ~13 s get ticks closer than a second: label them with a decimal.
    let decimals = usize::from(x.end - x.start < 13.0);
    let x_label = move |v: &f64| format!("{v:.decimals$}");
    let mut chart = ChartBuilder::on(area)
        .margin_left(20)
        .margin_right(40)
        .margin_top(6)
        .margin_bottom(if x_axis_label { 6 } else { 2 })
        .caption(
            caption,
            (FAMILY, 21).into_font().style(FontStyle::Bold).color(&INK),
        )
        .x_label_area_size(if x_axis_label { 52 } else { 30 })
        .y_label_area_size(86)
        .build_cartesian_2d(x, 0.0..top)
        .map_err(plot_error)?;
    let mut mesh = chart.configure_mesh();
    mesh.y_desc(y_label)
        .axis_desc_style((FAMILY, 17).into_font().color(&INK))
        .label_style((FAMILY, 15).into_font().color(&INK))
        .axis_style(INK.mix(0.6))
        .bold_line_style(INK.mix(0.10))
        .light_line_style(INK.mix(0.04))
        .x_labels(13)
        .y_labels(6)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| format!("{v:.0}"));
    if x_axis_label {
        mesh.x_desc("time since start (s)");
    }
    mesh.draw().map_err(plot_error)?;
    Ok(chart)
}

/// Shades every failure window over the panel's full height and labels it.
/// A failure window's label: its node, and its role when it was the coordinator.
fn window_label(w: &FailureWindow) -> String {
    match w.coordinator {
        true => format!("node {} failed (coordinator)", w.node),
        false => format!("node {} failed", w.node),
    }
}

fn shade(chart: &mut Chart<'_, '_>, windows: &[FailureWindow], top: f64) -> Result<()> {
    chart
        .draw_series(
            windows.iter().map(|w| {
                Rectangle::new([(w.start_s, 0.0), (w.end_s, top)], RED.mix(0.10).filled())
            }),
        )
        .map_err(plot_error)?;
    let label = (FAMILY, 15)
        .into_font()
        .style(FontStyle::Bold)
        .color(&RED.mix(0.85));
    chart
        .draw_series(windows.iter().map(|w| {
            // Just inside the window's top-left corner, a few pixels in from the edges.
            EmptyElement::at((w.start_s, top)) + Text::new(window_label(w), (6, 6), label.clone())
        }))
        .map_err(plot_error)?;
    Ok(())
}

/// Draws a series made of one or more unbroken segments, labelled once in the legend.
fn line(
    chart: &mut Chart<'_, '_>,
    segments: &[Vec<(f64, f64)>],
    colour: RGBColor,
    label: &str,
) -> Result<()> {
    let mut labelled = false;
    for segment in segments.iter().filter(|s| !s.is_empty()) {
        let series = chart
            .draw_series(LineSeries::new(
                segment.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(plot_error)?;
        if !labelled {
            series.label(label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(3))
            });
            labelled = true;
        }
    }
    Ok(())
}

/// Draws the panel's legend in its upper right corner.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 15).into_font().color(&INK))
        .background_style(WHITE.mix(0.85))
        .border_style(INK.mix(0.3))
        .margin(10)
        .draw()
        .map_err(plot_error)
}

/// Splits a per-slice optional figure into unbroken segments of points, each at the middle of
/// its `width`-long slice.
fn gaps(
    timeline: &[Slice],
    width: f64,
    figure: impl Fn(&Slice) -> Option<f64>,
) -> Vec<Vec<(f64, f64)>> {
    let mut segments = vec![Vec::new()];
    for slice in timeline {
        match figure(slice) {
            Some(value) => segments
                .last_mut()
                .expect("never empty")
                .push((slice.t_s + width / 2.0, value)),
            None if segments.last().is_some_and(|s| !s.is_empty()) => segments.push(Vec::new()),
            None => {}
        }
    }
    segments
}

/// The top of a y axis: the largest value plus room for the legend (1 when all are zero).
fn headroom(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.fold(0.0, f64::max);
    if max > 0.0 {
        max * 1.35
    } else {
        1.0
    }
}

/// Wraps a drawing or encoding failure as an I/O error of the plot.
pub(crate) fn plot_error(error: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!(
        "cannot draw the plot: {error}"
    )))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::bench::metrics::{timeline, Cause, Sample, SampleOutcome};

    /// The synthetic run's slice width.
    const SECOND: Duration = Duration::from_secs(1);
    /// Failure of node 2 in the synthetic run, in seconds.
    const FAILED: (f64, f64) = (20.0, 34.0);

    /// A realistic 60 s run of 3 nodes at about 220 requests/s, with node 2 failed from 20 s to
    /// 34 s: 2 s of detection and election with few completions and a latency spike, then the
    /// two survivors serve about two thirds of the load at a higher latency.
    fn synthetic_run() -> Vec<Sample> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut samples = Vec::new();
        for i in 0..13_200u64 {
            let sent = i as f64 / 220.0;
            let down = sent >= FAILED.0 && sent < FAILED.1;
            let settling = sent >= FAILED.0 && sent < FAILED.0 + 2.0;
            let nodes: &[NodeId] = if down { &[1, 3] } else { &[1, 2, 3] };
            let node = nodes[rng.gen_range(0..nodes.len())];
            // Log-normal latency (sigma 0.35, by Box-Muller) around 180 ms; slower with two
            // nodes, very slow while settling.
            let base = if settling {
                1400.0
            } else if down {
                320.0
            } else {
                180.0
            };
            let (u, v): (f64, f64) = (rng.gen_range(1e-9..1.0), rng.gen_range(0.0..1.0));
            let normal = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            let latency = base * (0.35 * normal).exp();
            // While degraded, a third of the load cannot be served in time.
            let fails =
                (down && rng.gen_bool(if settling { 0.7 } else { 0.3 })) || rng.gen_bool(0.002);
            samples.push(Sample {
                sent_at: Duration::from_secs_f64(sent),
                latency: Duration::from_secs_f64(latency / 1000.0),
                served_by: (!fails).then_some(node),
                outcome: if fails {
                    SampleOutcome::Failed(Cause::Timeout)
                } else {
                    SampleOutcome::Ok
                },
            });
        }
        samples
    }

    fn window() -> Vec<FailureWindow> {
        vec![FailureWindow {
            node: 2,
            start_s: FAILED.0,
            end_s: FAILED.1,
            coordinator: false,
        }]
    }

    #[test]
    fn render_to_buffer_gives_a_png_of_the_requested_size() {
        let slices = timeline(&synthetic_run(), Duration::from_secs(1));
        let png = render_to_buffer("imgcloud stress test", &slices, SECOND, &window()).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let image = image::load_from_memory(&png).unwrap();
        assert_eq!((image.width(), image.height()), (WIDTH, HEIGHT));
    }

    #[test]
    fn render_writes_the_png_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        render("empty run", &[], SECOND, &[], &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        let image = image::load_from_memory(&bytes).unwrap();
        assert_eq!((image.width(), image.height()), (WIDTH, HEIGHT));
    }

    #[test]
    fn latency_gaps_split_the_line() {
        let slice = |i: usize, p50: Option<f64>| Slice {
            t_s: i as f64,
            p50_ms: p50,
            ..Slice::default()
        };
        let slices = [
            slice(0, Some(1.0)),
            slice(1, None),
            slice(2, Some(3.0)),
            slice(3, Some(4.0)),
        ];
        let segments = gaps(&slices, 1.0, |s| s.p50_ms);
        assert_eq!(
            segments,
            vec![vec![(0.5, 1.0)], vec![(2.5, 3.0), (3.5, 4.0)]]
        );
    }

    /// Writes `docs/plot-example.png`: `cargo test --lib plot::tests::example -- --ignored`.
    #[test]
    #[ignore = "writes docs/plot-example.png"]
    fn example() {
        let slices = timeline(&synthetic_run(), SECOND);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/plot-example.png");
        let title = "imgcloud stress test: 3 nodes, 50 clients, node 2 failed at 20 s";
        render(title, &slices, SECOND, &window(), &path).unwrap();
    }
}
