//! `throughput.svg`: one row of panels per component (one panel per
//! workload), ops/s against threads (log₂ axis), one line per
//! implementation with the repetitions' range as error bars.
//!
//! plotters' SVG backend only: the SVG names its fonts and the viewer
//! renders them, so no font or graphics library is needed.

use std::path::Path;

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

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    component: &str,
    wl: &WorkloadResult,
    threads: &[usize],
) -> Result<(), CompareError>
where
    DB::ErrorType: 'static,
{
    let log2 = |t: usize| (t as f64).log2();
    let xs: Vec<f64> = threads.iter().map(|&t| log2(t)).collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let pad = ((hi - lo) * 0.08).max(0.25);
    let top = wl.cells.iter().map(|c| c.max).fold(0.0, f64::max).max(1.0) * 1.1;

    let mut chart = ChartBuilder::on(area)
        .caption(format!("{component} / {}", wl.name), ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(lo - pad..hi + pad, 0.0..top)
        .map_err(chart_err)?;
    // Ticks at whole powers of two only (the thread counts, on a log axis).
    let x_label = |x: &f64| {
        if (x - x.round()).abs() < 1e-6 {
            format!("{}", 2f64.powf(x.round()))
        } else {
            String::new()
        }
    };
    let y_label = |y: &f64| ops(*y);
    chart
        .configure_mesh()
        .x_desc("threads")
        .x_labels(((hi - lo).round() as usize + 1).max(2))
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(chart_err)?;

    for (index, imp) in wl.impls.iter().enumerate() {
        let colour = colour(imp, index);
        let cells: Vec<_> = threads
            .iter()
            .filter_map(|&t| wl.cell(imp, t))
            .filter(|c| c.error.is_none() && c.median > 0.0)
            .collect();
        let line = cells.iter().map(|c| (log2(c.threads), c.median));
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))
            .map_err(chart_err)?
            .label(imp.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(cells.iter().map(|c| {
                ErrorBar::new_vertical(log2(c.threads), c.min, c.median, c.max, colour.filled(), 6)
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
