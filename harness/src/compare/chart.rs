//! `throughput.svg`: one row of panels per component (one panel per
//! workload), ops/s against threads (log₂ axis: 1, 2, 4, 8 evenly spaced,
//! ticks at the measured thread counts; y axis from zero), one line per
//! implementation with the repetitions' range as error bars. Each panel's
//! ranges hold every point and error bar, so nothing is drawn outside its
//! plot area.
//!
//! plotters' SVG backend only: the SVG names its fonts and the viewer
//! renders them, so no font or graphics library is needed.

use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;

use super::report::ops;
use super::results::{Results, WorkloadResult};
use super::CompareError;
use crate::workload::impl_name::{LOCK_FREE, PARKING_LOT, STD_MUTEX};

const PANEL: (u32, u32) = (480, 320);
const TITLE_HEIGHT: u32 = 40;
const MIN_WIDTH: u32 = 640;

fn colour(implementation: &str, index: usize) -> RGBColor {
    match implementation {
        LOCK_FREE => RGBColor(0x1b, 0x9e, 0x77),
        STD_MUTEX => RGBColor(0xd9, 0x5f, 0x02),
        PARKING_LOT => RGBColor(0x75, 0x70, 0xb3),
        _ => {
            let c = Palette99::pick(index + 3).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

fn chart_err(e: impl std::fmt::Display) -> CompareError {
    CompareError::Chart(e.to_string())
}

/// Writes the chart of `results` to `path`.
pub fn write_svg(path: &Path, results: &Results) -> Result<(), CompareError> {
    let rows: Vec<(&str, &[WorkloadResult])> = results
        .components
        .iter()
        .filter(|c| !c.workloads.is_empty())
        .map(|c| (c.name.as_str(), c.workloads.as_slice()))
        .collect();
    let cols = rows.iter().map(|(_, w)| w.len()).max().unwrap_or(1);
    let size = (
        (PANEL.0 * cols as u32).max(MIN_WIDTH),
        PANEL.1 * rows.len().max(1) as u32 + TITLE_HEIGHT,
    );
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(chart_err)?;
    let root = root
        .titled(
            "raceless: ops/s (all threads together) against threads",
            ("sans-serif", 20),
        )
        .map_err(chart_err)?;
    if rows.is_empty() {
        root.draw(&Text::new(
            "no workloads measured yet",
            (20, 20),
            ("sans-serif", 18),
        ))
        .map_err(chart_err)?;
    }
    let panels = root.split_evenly((rows.len().max(1), cols));
    for (r, (component, workloads)) in rows.iter().enumerate() {
        for (c, wl) in workloads.iter().enumerate() {
            panel(
                &panels[r * cols + c],
                component,
                wl,
                &results.settings.threads,
            )?;
        }
    }
    root.present().map_err(chart_err)?;
    Ok(())
}

/// The x axis: log₂ of the thread count, linear in that, with ticks at
/// the measured thread counts only.
struct ThreadAxis {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for ThreadAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let frac = if span > 0.0 {
            (value - self.range.start) / span
        } else {
            0.5
        };
        limit.0 + (frac * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// The x position of `threads` on the log₂ axis: 1, 2, 4, 8 are evenly
/// spaced.
fn log2(threads: usize) -> f64 {
    (threads.max(1) as f64).log2()
}

/// The panel's ranges: x over the thread counts' log₂ with a margin for
/// the error bars' caps, y from zero to a little above the highest
/// repetition, so every point, line and error bar is inside the plot area.
fn ranges(wl: &WorkloadResult, threads: &[usize]) -> ((f64, f64), f64) {
    let xs: Vec<f64> = threads.iter().map(|&t| log2(t)).collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let pad = ((hi - lo) * 0.08).max(0.25);
    let top = wl
        .cells
        .iter()
        .filter(|c| threads.contains(&c.threads) && c.error.is_none())
        .flat_map(|c| c.samples.iter().copied().chain([c.max, c.median]))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    ((lo - pad, hi + pad), top)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    component: &str,
    wl: &WorkloadResult,
    threads: &[usize],
) -> Result<(), CompareError>
where
    DB::ErrorType: 'static,
{
    let ((x0, x1), top) = ranges(wl, threads);
    // Ticks exactly at the measured thread counts.
    let ticks: Vec<f64> = threads.iter().map(|&t| log2(t)).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{component} / {}", wl.name), ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(
            ThreadAxis {
                range: x0..x1,
                ticks,
            },
            0.0..top,
        )
        .map_err(chart_err)?;
    let x_label = |x: &f64| format!("{}", 2f64.powf(*x).round());
    let y_label = |y: &f64| ops(*y);
    chart
        .configure_mesh()
        .x_desc("threads")
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(chart_err)?;

    // Inside the plot area whatever the data (a value is never above `top`
    // by construction; the clamp keeps it so if that changes).
    let y = |v: f64| v.clamp(0.0, top);
    for (index, imp) in wl.impls.iter().enumerate() {
        let colour = colour(imp, index);
        let cells: Vec<_> = threads
            .iter()
            .filter_map(|&t| wl.cell(imp, t))
            .filter(|c| c.error.is_none() && c.median > 0.0)
            .collect();
        let line = cells.iter().map(|c| (log2(c.threads), y(c.median)));
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))
            .map_err(chart_err)?
            .label(imp.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(cells.iter().map(|c| {
                ErrorBar::new_vertical(
                    log2(c.threads),
                    y(c.min),
                    y(c.median),
                    y(c.max),
                    colour.filled(),
                    6,
                )
            }))
            .map_err(chart_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(chart_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::results::Cell;

    #[test]
    fn thread_counts_are_evenly_spaced_and_everything_fits() {
        let axis = ThreadAxis {
            range: -0.25..3.25,
            ticks: vec![0.0, 1.0, 2.0, 3.0],
        };
        let px: Vec<i32> = [1, 2, 4, 8]
            .iter()
            .map(|&t| axis.map(&log2(t), (0, 350)))
            .collect();
        assert_eq!(px, vec![25, 125, 225, 325]);

        let wl = WorkloadResult {
            name: "w".into(),
            description: String::new(),
            impls: vec!["lock-free".into()],
            cells: vec![
                Cell::from_samples("lock-free", 1, vec![5.0, 9.0, 7.0]),
                Cell::from_samples("lock-free", 8, vec![50.0, 90.0, 70.0]),
                // Not drawn (not a measured thread count): not counted.
                Cell::from_samples("lock-free", 64, vec![1e9]),
            ],
            ratios: Vec::new(),
        };
        let ((x0, x1), top) = ranges(&wl, &[1, 2, 4, 8]);
        assert!(x0 < 0.0 && x1 > 3.0, "{x0}..{x1}");
        assert!((90.0..1e9).contains(&top), "{top}");
    }
}
