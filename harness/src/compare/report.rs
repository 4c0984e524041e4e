//! The tables: printed on the terminal, written to `report.md`, and
//! spliced into `docs/benchmarks.md` by `--update-docs`.

use std::fmt::Write as _;
use std::path::Path;

use super::results::{
    BaselineComparison, Cell, ComponentResult, PairedRatio, Results, RowKind, Verdict,
    WorkloadResult, FORMAT_1,
};
use super::{io_err, CompareError, Component};
use crate::workload::impl_name::{LOCK_FREE, PARKING_LOT, SHARDED_MUTEX, STD_MUTEX};

/// The baselines the lock-free type's ratio is always given against (when
/// the workload has them), besides "vs best peer" and "vs floor".
const RATIO_AGAINST: [&str; 3] = [STD_MUTEX, PARKING_LOT, SHARDED_MUTEX];

/// The summary's ratio columns: a title and how to find the ratio of one
/// workload at one thread count.
type RatioColumn = (
    &'static str,
    fn(&WorkloadResult, usize) -> Option<&PairedRatio>,
);

const SUMMARY_COLUMNS: [RatioColumn; 5] = [
    ("/ std-mutex", |wl, t| wl.ratio(STD_MUTEX, t)),
    ("/ parking-lot", |wl, t| wl.ratio(PARKING_LOT, t)),
    ("/ sharded-mutex", |wl, t| wl.ratio(SHARDED_MUTEX, t)),
    ("vs best peer", |wl, t| wl.vs_best_peer(t)),
    ("vs floor", |wl, t| wl.vs_floor(t)),
];

/// Formats operations per second with an SI prefix and three significant
/// digits: `950`, `12.3 k`, `4.56 M`.
pub fn ops(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    let (value, prefix) = if x >= 1e9 {
        (x / 1e9, " G")
    } else if x >= 1e6 {
        (x / 1e6, " M")
    } else if x >= 1e3 {
        (x / 1e3, " k")
    } else {
        (x, "")
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{prefix}")
}

fn cell_text(cell: Option<&Cell>) -> String {
    match cell {
        None => "—".to_string(),
        Some(c) if c.error.is_some() => "error".to_string(),
        Some(c) if c.samples.len() > 1 => {
            format!("{} ±{:.0}%", ops(c.median), c.spread() * 100.0)
        }
        Some(c) => ops(c.median),
    }
}

/// A paired ratio's median, e.g. `1.23×`.
fn ratio_text(ratio: Option<&PairedRatio>) -> String {
    match ratio {
        Some(r) if r.median > 0.0 => format!("{:.2}×", r.median),
        _ => "—".to_string(),
    }
}

/// A Markdown table padded so that it also reads well as plain text.
/// `right[i]` right-aligns column `i`.
pub fn table(headers: &[String], right: &[bool], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, |s| s.chars().count()))
            .chain([headers[i].chars().count(), 3])
            .max()
            .unwrap_or(3)
    };
    let widths: Vec<usize> = (0..headers.len()).map(width).collect();
    let pad = |s: &str, i: usize| {
        let fill = " ".repeat(widths[i].saturating_sub(s.chars().count()));
        if right.get(i).copied().unwrap_or(false) {
            format!("{fill}{s}")
        } else {
            format!("{s}{fill}")
        }
    };
    let mut out = String::new();
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    out += &line(headers.iter().enumerate().map(|(i, h)| pad(h, i)).collect());
    out += &line(
        (0..headers.len())
            .map(|i| {
                let dashes = "-".repeat(widths[i].saturating_sub(1));
                if right.get(i).copied().unwrap_or(false) {
                    format!("{dashes}:")
                } else {
                    format!(":{dashes}")
                }
            })
            .collect(),
    );
    for row in rows {
        out += &line(
            (0..headers.len())
                .map(|i| pad(row.get(i).map_or("", String::as_str), i))
                .collect(),
        );
    }
    out
}

/// One workload's table: ops/s (median ± half-range) per implementation and
/// thread count, then the lock-free row's paired ratios (median over the
/// rounds of lock-free ÷ the other row in the same round) against the
/// mutex baselines, against the fastest peer and against the floor.
pub fn workload_table(wl: &WorkloadResult, threads: &[usize]) -> String {
    let lf = wl.lock_free_name();
    let against: Vec<&str> = RATIO_AGAINST
        .into_iter()
        .filter(|b| wl.impls.iter().any(|i| i == b))
        .collect();
    let has = |kind| wl.impls.iter().any(|i| super::results::row_kind(i) == kind);
    let (peers, floors) = (has(RowKind::Peer), has(RowKind::Floor));
    let mut headers = vec!["threads".to_string()];
    headers.extend(wl.impls.iter().map(|i| format!("{i} ops/s")));
    headers.extend(against.iter().map(|b| format!("{lf} / {b}")));
    if peers {
        headers.push("vs best peer".to_string());
    }
    if floors {
        headers.push("vs floor".to_string());
    }
    let right = vec![true; headers.len()];
    let rows: Vec<Vec<String>> = threads
        .iter()
        .map(|&t| {
            let mut row = vec![t.to_string()];
            row.extend(wl.impls.iter().map(|i| cell_text(wl.cell(i, t))));
            row.extend(against.iter().map(|b| ratio_text(wl.ratio(b, t))));
            if peers {
                row.push(match wl.vs_best_peer(t) {
                    Some(r) => format!("{} ({})", ratio_text(Some(r)), r.against),
                    None => "—".to_string(),
                });
            }
            if floors {
                row.push(ratio_text(wl.vs_floor(t)));
            }
            row
        })
        .collect();
    table(&headers, &right, &rows)
}

/// A component's section: one table per workload.
pub fn component_section(comp: &ComponentResult, threads: &[usize], level: usize) -> String {
    let hashes = "#".repeat(level);
    let mut out = format!("{hashes} {}\n\n", comp.name);
    if comp.workloads.is_empty() {
        out += "_No workloads yet._\n\n";
    }
    for wl in &comp.workloads {
        let _ = writeln!(out, "{hashes}# {} / {}\n", comp.name, wl.name);
        if !wl.description.is_empty() {
            let _ = writeln!(out, "{}\n", wl.description);
        }
        out += &workload_table(wl, threads);
        for cell in wl.cells.iter().filter(|c| c.error.is_some()) {
            let _ = writeln!(
                out,
                "\n{} ×{}: {}",
                cell.implementation,
                cell.threads,
                cell.error.as_deref().unwrap_or_default()
            );
        }
        out += "\n";
    }
    out
}

/// The summary: per component, the geometric mean over its workloads of
/// the lock-free row's paired ratios (each a median over the rounds)
/// against the mutex baselines, the fastest peer and the floor, at the
/// fewest and the most threads. A column averages the workloads that have
/// its row; a component with none shows `—`.
pub fn summary_table(results: &Results) -> String {
    let threads = &results.settings.threads;
    let (Some(&few), Some(&many)) = (threads.first(), threads.last()) else {
        return String::new();
    };
    let ends: Vec<usize> = if few == many {
        vec![few]
    } else {
        vec![few, many]
    };
    let columns: Vec<&RatioColumn> = SUMMARY_COLUMNS
        .iter()
        .filter(|(_, find)| {
            results
                .components
                .iter()
                .flat_map(|c| &c.workloads)
                .any(|wl| ends.iter().any(|&t| find(wl, t).is_some()))
        })
        .collect();
    let mut headers = vec!["component".to_string(), "workloads".to_string()];
    for (title, _) in &columns {
        for t in &ends {
            let title = match title.strip_prefix('/') {
                Some(rest) => format!("{LOCK_FREE} /{rest}"),
                None => title.to_string(),
            };
            headers.push(format!("{title} @{t}"));
        }
    }
    let rows: Vec<Vec<String>> = results
        .components
        .iter()
        .filter(|c| !c.workloads.is_empty())
        .map(|c| {
            let mut row = vec![c.name.clone(), c.workloads.len().to_string()];
            for (_, find) in &columns {
                for &t in &ends {
                    let logs: Vec<f64> = c
                        .workloads
                        .iter()
                        .filter_map(|wl| find(wl, t))
                        .filter(|r| r.median > 0.0)
                        .map(|r| r.median.ln())
                        .collect();
                    row.push(if logs.is_empty() {
                        "—".to_string()
                    } else {
                        format!(
                            "{:.2}×",
                            (logs.iter().sum::<f64>() / logs.len() as f64).exp()
                        )
                    });
                }
            }
            row
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut right = vec![false];
    right.resize(headers.len(), true);
    table(&headers, &right, &rows)
}

fn summary_section(results: &Results) -> String {
    let table = summary_table(results);
    if table.is_empty() {
        return table;
    }
    format!(
        "Summary: the lock-free row's throughput ÷ another row's in the same round (paired ratios, \
         median over the rounds), geometric mean over each component's workloads that have that row, \
         at the fewest and the most threads (> 1: lock-free is faster). \
         \"vs best peer\": against the fastest (by median) of the mutex baselines, `sharded-mutex` \
         and the other real implementations; \"vs floor\": against the workload's floor row \
         (the least the design costs), where it has one.\n\n{table}\n"
    )
}

/// The seed-bug reproduction table: what each racy variant lost next to
/// the lock-free type's count.
pub fn reproduction_table(results: &Results) -> String {
    let headers: Vec<String> = [
        "component",
        "anomaly",
        "racy check-then-act",
        "lock-free",
        "rounds × threads",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = results
        .components
        .iter()
        .map(|c| match &c.reproduction {
            None => vec![
                c.name.clone(),
                "(no reproduction yet)".to_string(),
                "—".to_string(),
                "—".to_string(),
                "—".to_string(),
            ],
            Some(r) => vec![
                c.name.clone(),
                r.what_is_lost.clone(),
                match &r.error {
                    Some(e) => e.clone(),
                    None => r.racy.to_string(),
                },
                if r.error.is_some() {
                    "—".to_string()
                } else {
                    r.lock_free.to_string()
                },
                format!("{} × {}", r.rounds, r.threads),
            ],
        })
        .collect();
    table(&headers, &[false, false, true, true, true], &rows)
}

/// The `--baseline` table: every cell's change, regressions flagged.
pub fn baseline_table(cmp: &BaselineComparison) -> String {
    let headers: Vec<String> = [
        "component / workload",
        "impl",
        "threads",
        "baseline ops/s",
        "now ops/s",
        "change",
        "change vs std-mutex's",
        "",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = cmp
        .changes
        .iter()
        .map(|c| {
            vec![
                format!("{} / {}", c.component, c.workload),
                c.implementation.clone(),
                c.threads.to_string(),
                ops(c.old),
                ops(c.new),
                format!("{:+.1}%", c.change * 100.0),
                c.against_std
                    .map_or_else(String::new, |r| format!("{:+.1}%", r * 100.0)),
                match c.verdict {
                    Verdict::Regression => "REGRESSION".to_string(),
                    Verdict::Improvement => "faster".to_string(),
                    Verdict::Unchanged => String::new(),
                },
            ]
        })
        .collect();
    table(
        &headers,
        &[false, false, true, true, true, true, true, false],
        &rows,
    )
}

fn baseline_section(cmp: &BaselineComparison) -> String {
    let mut out = String::new();
    if cmp.changes.is_empty() {
        out += "No cell of this run is in the baseline.\n";
        return out;
    }
    let _ = writeln!(
        out,
        "Against the baseline (measured on: {}{}). A regression is a drop larger than both runs' spreads together. \
         \"change vs std-mutex's\" divides a cell's change by the std-mutex row's change in the same workload and \
         thread count, which cancels a machine phase that hit the whole of one run.\n",
        cmp.machine.describe(),
        if cmp.format == FORMAT_1 {
            "; format 1, its rows measured one after another"
        } else {
            ""
        }
    );
    out += &baseline_table(cmp);
    let _ = writeln!(
        out,
        "\n{} of {} cells regressed beyond the measured spread.",
        cmp.regressions(),
        cmp.changes.len()
    );
    out
}

/// How the cells were measured, in one paragraph.
fn settings_line(results: &Results) -> String {
    let s = &results.settings;
    format!(
        "Each workload and thread count: a fresh instance per implementation, each warmed up for {:.0} ms, \
         then {} rounds in which every implementation runs once for {:.0} ms (interleaved, the first one rotating), \
         all threads released by a barrier; ops/s of all threads together, median ± half the range of the rounds{}. \
         Ratios are paired: lock-free ÷ the other implementation in the same round, median over the rounds; \
         > 1 means the lock-free type is faster. Whole run: {:.0} s.\n",
        s.warmup_ms,
        s.repeats,
        s.duration_ms,
        if s.quick { " (--quick)" } else { "" },
        s.wall_seconds
    )
}

/// The results without a title: machine, settings, the tables, the
/// reproduction and the chart (`chart` is its path relative to the
/// Markdown file). Shared by `report.md` and `docs/benchmarks.md`.
pub fn results_body(results: &Results, chart: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {}.\n", results.machine.describe());
    out += &settings_line(results);
    out += "\n";
    let _ = writeln!(out, "![throughput (ops/s) against threads]({chart})\n");
    out += &summary_section(results);
    for comp in &results.components {
        out += &component_section(comp, &results.settings.threads, 3);
    }
    out += "### Seed-bug reproduction\n\n";
    let _ = writeln!(
        out,
        "Each component's seed scenario, contended, on a racy check-then-act variant (the seed's \
         original code) and on the lock-free type: anomalies counted.\n"
    );
    out += &reproduction_table(results);
    out
}

/// The whole `report.md`.
pub fn markdown(results: &Results, chart: &str) -> String {
    let mut out = String::from("# raceless: lock-free vs mutex baselines\n\n");
    out += &results_body(results, chart);
    if let Some(cmp) = &results.baseline {
        out += "\n## Change against the baseline\n\n";
        out += &baseline_section(cmp);
    }
    out
}

/// What the command prints on stdout with `--format table`.
pub fn terminal(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {}", results.machine.describe());
    if results.machine.profile == "debug" {
        out += "warning: a debug build; run with --release for meaningful numbers\n";
    }
    out += &settings_line(results);
    out += "\n";
    for comp in &results.components {
        out += &component_section(comp, &results.settings.threads, 2);
    }
    let summary = summary_section(results);
    if !summary.is_empty() {
        out += "## Summary\n\n";
        out += &summary;
        out += "\n";
    }
    out += "## Seed-bug reproduction\n\n";
    out += &reproduction_table(results);
    out += "\n";
    if let Some(cmp) = &results.baseline {
        out += "## Change against the baseline\n\n";
        out += &baseline_section(cmp);
        out += "\n";
    }
    out
}

/// The list of workloads, generated from the definitions.
pub fn workloads_body(components: &[Component]) -> String {
    let mut out = String::new();
    for c in components {
        let defs = (c.workloads)();
        let _ = writeln!(out, "### {}\n", c.name);
        if defs.is_empty() {
            out += "_No workloads yet._\n";
        }
        for def in &defs {
            let impls: Vec<&str> = def.impls.iter().map(|(n, _)| *n).collect();
            let _ = writeln!(
                out,
                "- **`{}`** — {} _({})_",
                def.name,
                def.description,
                impls.join(", ")
            );
        }
        match c.reproduction {
            Some(make) => {
                let r = make();
                let _ = writeln!(
                    out,
                    "- seed-bug reproduction: counts **{}** of the racy check-then-act variant against the lock-free type.",
                    r.what_is_lost
                );
            }
            None => out += "- seed-bug reproduction: not yet.\n",
        }
        out += "\n";
    }
    out
}

/// Replaces the text between `<!-- BEGIN GENERATED: {name} ... -->` and
/// `<!-- END GENERATED: {name} -->` (appending the section when the
/// markers are missing).
pub fn splice(doc: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- BEGIN GENERATED: {name}");
    let end = format!("<!-- END GENERATED: {name} -->");
    let begin_line =
        format!("{begin} (cargo run --release --example compare -- --update-docs) -->");
    match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            let after_begin = doc[b..].find('\n').map_or(doc.len(), |i| b + i + 1);
            format!(
                "{}\n{body}{}",
                &doc[..after_begin.min(e)].trim_end(),
                &doc[e..]
            )
        }
        _ => format!("{}\n\n{begin_line}\n{body}{end}\n", doc.trim_end()),
    }
}

/// The generated "performance" section of `docs/<component>.md`: the
/// component's tables of this run.
pub fn performance_body(results: &Results, comp: &ComponentResult) -> String {
    let section = component_section(comp, &results.settings.threads, 3);
    let tables = section.split_once('\n').map_or("", |(_, rest)| rest);
    format!(
        "The latest comparison run's tables for this component (the machine, \
         the settings, the chart and every other component: \
         [`benchmarks.md`](benchmarks.md)). Ratios are paired (lock-free ÷ \
         the other row in the same round, median over the rounds); above 1 \
         the lock-free type is faster.\n\n{}",
        tables.trim_start()
    )
}

/// `--update-docs`: refreshes the generated sections of `doc` (the
/// workload list from `components`' definitions, the results of this run)
/// and copies the chart beside it as `benchmarks-throughput.svg`; and the
/// generated "performance" section of each `<component>.md` beside it that
/// has the section's markers.
pub fn update_docs(
    doc: &Path,
    components: &[Component],
    results: &Results,
    chart: &Path,
) -> Result<(), CompareError> {
    let text = std::fs::read_to_string(doc).map_err(io_err(doc))?;
    let chart_name = "benchmarks-throughput.svg";
    let text = splice(&text, "workloads", &workloads_body(components));
    let text = splice(&text, "results", &results_body(results, chart_name));
    std::fs::write(doc, text).map_err(io_err(doc))?;
    let target = doc.with_file_name(chart_name);
    std::fs::copy(chart, &target).map_err(io_err(&target))?;
    for comp in &results.components {
        let page = doc.with_file_name(format!("{}.md", comp.name));
        let Ok(text) = std::fs::read_to_string(&page) else {
            continue;
        };
        if text.contains("<!-- BEGIN GENERATED: performance") {
            let text = splice(&text, "performance", &performance_body(results, comp));
            std::fs::write(&page, text).map_err(io_err(&page))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_ops() {
        assert_eq!(ops(950.0), "950");
        assert_eq!(ops(12_345.0), "12.3 k");
        assert_eq!(ops(4_560_000.0), "4.56 M");
        assert_eq!(ops(123_000_000.0), "123 M");
    }

    #[test]
    fn splices_between_markers() {
        let doc = "# T\n\n<!-- BEGIN GENERATED: results (x) -->\nold\n<!-- END GENERATED: results -->\ntail\n";
        let out = splice(doc, "results", "new\n");
        assert_eq!(
            out,
            "# T\n\n<!-- BEGIN GENERATED: results (x) -->\nnew\n<!-- END GENERATED: results -->\ntail\n"
        );
        assert_eq!(splice(&out, "results", "new\n"), out);
        let appended = splice("# T\n", "workloads", "w\n");
        assert!(appended.contains("<!-- BEGIN GENERATED: workloads"));
        assert!(appended.ends_with("w\n<!-- END GENERATED: workloads -->\n"));
    }

    #[test]
    fn pads_tables() {
        let t = table(
            &["a".to_string(), "bb".to_string()],
            &[false, true],
            &[vec!["xyz".to_string(), "1".to_string()]],
        );
        assert_eq!(t, "| a   |  bb |\n| :-- | --: |\n| xyz |   1 |\n");
    }
}
