//! The comparison run: every component's workloads on the lock-free type and
//! its mutex baselines, at several thread counts, plus the seed-bug
//! reproduction. `examples/compare.rs` is a thin `main` around [`main`];
//! the integration test (`tests/compare.rs`) calls [`run`] directly.
//!
//! ```text
//! cargo run --release --example compare -- --help
//! ```
//!
//! - [`cli`]: the command line (`clap`) and the resolved [`Options`].
//! - [`runner`]: the measurement (the implementations of a workload and
//!   thread count interleaved: each warmed up, then rounds of every
//!   implementation for a fixed duration behind a barrier → medians,
//!   spreads and paired ratios) and the reproduction runs.
//! - [`results`]: the serde model of `results.json`, the machine
//!   description and the `--baseline` comparison.
//! - [`report`]: the tables (terminal and `report.md`) and the
//!   `docs/benchmarks.md` refresh.
//! - [`chart`]: `throughput.svg` (plotters' SVG backend, no system
//!   libraries).
//!
//! The components are wired in [`components`], the one list of the five
//! components' `workloads()` and `reproduction()` functions.

pub mod chart;
pub mod cli;
pub mod redis;
pub mod report;
pub mod results;
pub mod runner;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::workload::{Reproduction, WorkloadDef};

pub use cli::{Format, Options};
pub use results::Results;

/// One component as the comparison run sees it: its workloads and, once it
/// has one, its seed-bug reproduction.
#[derive(Clone, Copy)]
pub struct Component {
    /// The component's name (`"breaker"`, …), as `--components` takes it.
    pub name: &'static str,
    /// Its workload definitions (shared with `benches/`).
    pub workloads: fn() -> Vec<WorkloadDef>,
    /// Its seed-bug reproduction, if it has one.
    pub reproduction: Option<fn() -> Reproduction>,
}

/// The five components, in the spec's order. This is the only place the
/// comparison run names them.
pub fn components() -> Vec<Component> {
    vec![
        Component {
            name: "arcs",
            workloads: crate::arcs::workloads,
            reproduction: Some(crate::arcs::reproduction),
        },
        Component {
            name: "breaker",
            workloads: crate::breaker::workloads,
            reproduction: Some(crate::breaker::reproduction),
        },
        Component {
            name: "bus",
            workloads: crate::bus::workloads,
            reproduction: Some(crate::bus::reproduction),
        },
        Component {
            name: "changeset",
            workloads: crate::changeset::workloads,
            reproduction: Some(crate::changeset::reproduction),
        },
        Component {
            name: "stream",
            workloads: crate::stream::workloads,
            reproduction: Some(crate::stream::reproduction),
        },
    ]
}

/// What went wrong in a run (bad options are reported by [`cli`]).
#[derive(Debug)]
pub enum CompareError {
    /// Reading or writing a file failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The `--baseline` file is not a results file of this tool.
    Baseline {
        /// The file.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// Drawing the chart failed.
    Chart(String),
    /// Serializing the results failed.
    Json(serde_json::Error),
    /// `--redis`: the server could not be used (or the harness was built
    /// without its `redis` feature).
    Redis(String),
}

impl fmt::Display for CompareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompareError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CompareError::Baseline { path, reason } => {
                write!(f, "baseline {}: {reason}", path.display())
            }
            CompareError::Chart(e) => write!(f, "drawing the chart: {e}"),
            CompareError::Json(e) => write!(f, "writing JSON: {e}"),
            CompareError::Redis(e) => write!(f, "redis rows: {e}"),
        }
    }
}

impl std::error::Error for CompareError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CompareError::Io { source, .. } => Some(source),
            CompareError::Json(e) => Some(e),
            _ => None,
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CompareError + '_ {
    move |source| CompareError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a run produced, besides the files it wrote.
pub struct Outcome {
    /// The measurements and reproductions (also in `results.json`).
    pub results: Results,
    /// `report.md`.
    pub report: PathBuf,
    /// `throughput.svg`.
    pub chart: PathBuf,
    /// `results.json`.
    pub json: PathBuf,
}

/// The workspace root (the `raceless` crate), found from this crate's
/// manifest directory at build time.
pub fn workspace_root() -> PathBuf {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    harness.parent().unwrap_or(harness).to_path_buf()
}

/// `cargo run --release --example compare`: parses the process's
/// arguments and runs every component.
pub fn main() -> ExitCode {
    main_with(&components(), std::env::args_os())
}

/// Parses `args` (the first is the program name), runs `components`,
/// prints the tables (or JSON) and returns the exit code: 0 on success,
/// 2 on bad options (with clap's message), 1 on any other error.
pub fn main_with<I, T>(components: &[Component], args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let options = match Options::parse_from(components, args) {
        Ok(options) => options,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(components, &options) {
        Ok(outcome) => {
            match options.format {
                Format::Table => {
                    print!("{}", report::terminal(&outcome.results));
                    println!(
                        "Report: {}\nChart:  {}\nJSON:   {}",
                        outcome.report.display(),
                        outcome.chart.display(),
                        outcome.json.display()
                    );
                }
                Format::Json => match serde_json::to_string_pretty(&outcome.results) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("error: {}", CompareError::Json(e));
                        return ExitCode::FAILURE;
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected components with `options`: measures, reproduces the
/// seed bugs, compares with the baseline if one was given, and writes
/// `report.md`, `throughput.svg` and `results.json` into `options.out`
/// (and refreshes `docs/benchmarks.md` with `--update-docs`). Prints
/// nothing but the progress bar (on stderr, only on a terminal).
pub fn run(components: &[Component], options: &Options) -> Result<Outcome, CompareError> {
    // Read the baseline first: a bad file is reported before minutes of
    // measuring, not after.
    let baseline = match &options.baseline {
        Some(path) => Some(results::load_baseline(path)?),
        None => None,
    };
    let selected: Vec<Component> = components
        .iter()
        .filter(|c| options.components.iter().any(|n| n == c.name))
        .copied()
        .collect();

    let mut results = runner::run(&selected, options);
    if let Some(url) = &options.redis {
        redis::add_rows(&mut results, url, options).map_err(CompareError::Redis)?;
    }
    if let Some(baseline) = &baseline {
        results.baseline = Some(results::compare(baseline, &results));
    }

    let out = &options.out;
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let chart = out.join("throughput.svg");
    chart::write_svg(&chart, &results)?;
    let report = out.join("report.md");
    std::fs::write(&report, report::markdown(&results, "throughput.svg"))
        .map_err(io_err(&report))?;
    let json = out.join("results.json");
    let text = serde_json::to_string_pretty(&results).map_err(CompareError::Json)?;
    std::fs::write(&json, text + "\n").map_err(io_err(&json))?;

    if let Some(doc) = &options.update_docs {
        report::update_docs(doc, components, &results, &chart)?;
    }
    Ok(Outcome {
        results,
        report,
        chart,
        json,
    })
}
