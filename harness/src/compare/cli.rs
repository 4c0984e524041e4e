//! The command line of the comparison run.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};

use super::{workspace_root, Component};
use crate::workload::THREAD_COUNTS;

/// How the results are printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One Markdown table per component, then the seed-bug reproduction.
    Table,
    /// The content of `results.json`.
    Json,
}

/// Measures raceless's lock-free components against their std::sync::Mutex,
/// parking_lot::Mutex and sharded-mutex baselines (and real peers), the
/// implementations of each workload interleaved round by round, and
/// reproduces each seed bug on a racy check-then-act variant.
///
/// Writes report.md, throughput.svg and results.json into the output
/// directory (default: target/raceless-report).
#[derive(Parser, Debug)]
#[command(name = "compare", version, about, long_about)]
struct Cli {
    /// Components to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    components: Vec<String>,

    /// Thread counts, comma-separated (default: 1,2,4,8).
    #[arg(long, value_delimiter = ',', value_name = "N,...",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Vec<u16>,

    /// Measured time of one repetition of a cell (implementation × thread
    /// count), e.g. 250ms, 1s, 0.5s. Default: derived from the time budget
    /// (100 s, 12 s with --quick) divided over the cells.
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// A fast run (about 20 s): a smaller time budget and fewer
    /// reproduction rounds.
    #[arg(long)]
    quick: bool,

    /// Rounds: each runs every implementation of a workload once, in
    /// turn; the report gives each cell's median and spread and the
    /// median of the per-round (paired) ratios.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=100))]
    repeats: u16,

    /// Output directory (default: target/raceless-report in the workspace).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// A results.json of an earlier run: prints the change per cell and
    /// flags regressions beyond the measured spread.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,

    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Also refresh the generated sections of docs/benchmarks.md (or FILE)
    /// and copy the chart beside it.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    update_docs: Option<Option<PathBuf>>,

    /// Also measure the redis feature's types against the Redis server at
    /// URL (e.g. redis://127.0.0.1:6379/): a `redis` row in
    /// arcs/cycle-1000-pairs, breaker/mixed-16-names and
    /// stream/cycles-1000-sessions (tasks sharing one connection). Needs
    /// `--features raceless-harness/redis`.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
}

/// The resolved options of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The components to run (validated names, in the order given).
    pub components: Vec<String>,
    /// The thread counts (sorted, deduplicated).
    pub threads: Vec<usize>,
    /// The measured time of one repetition of a cell, or `None` to derive
    /// it from [`Options::budget`].
    pub duration: Option<Duration>,
    /// `--quick`.
    pub quick: bool,
    /// Repetitions per cell.
    pub repeats: usize,
    /// The output directory.
    pub out: PathBuf,
    /// `--baseline`.
    pub baseline: Option<PathBuf>,
    /// `--format`.
    pub format: Format,
    /// `--update-docs`: the Markdown file to refresh.
    pub update_docs: Option<PathBuf>,
    /// `--redis`: the server the `redis` rows are measured against.
    pub redis: Option<String>,
}

impl Options {
    /// The defaults for `components` (what `compare` with no argument
    /// does).
    pub fn defaults(components: &[Component]) -> Self {
        Options {
            components: components.iter().map(|c| c.name.to_string()).collect(),
            threads: THREAD_COUNTS.to_vec(),
            duration: None,
            quick: false,
            repeats: 3,
            out: workspace_root().join("target").join("raceless-report"),
            baseline: None,
            format: Format::Table,
            update_docs: None,
            redis: None,
        }
    }

    /// Parses a command line (the first item is the program name).
    /// Unknown components and malformed values are clap errors, so they
    /// print like every other usage error (exit code 2).
    pub fn parse_from<I, T>(components: &[Component], args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let mut options = Options::defaults(components);
        if !cli.components.is_empty() {
            let mut names = Vec::new();
            for name in &cli.components {
                let name = name.trim();
                if !components.iter().any(|c| c.name == name) {
                    let known: Vec<&str> = components.iter().map(|c| c.name).collect();
                    return Err(Cli::command().error(
                        ErrorKind::InvalidValue,
                        format!(
                            "unknown component '{name}' for '--components' (known: {})",
                            known.join(", ")
                        ),
                    ));
                }
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
            options.components = names;
        }
        if !cli.threads.is_empty() {
            let mut threads: Vec<usize> = cli.threads.iter().map(|&t| usize::from(t)).collect();
            threads.sort_unstable();
            threads.dedup();
            options.threads = threads;
        }
        options.duration = cli.duration;
        options.quick = cli.quick;
        options.repeats = usize::from(cli.repeats);
        if let Some(out) = cli.out {
            options.out = out;
        }
        options.baseline = cli.baseline;
        options.format = cli.format;
        options.update_docs = cli.update_docs.map(|file| {
            file.unwrap_or_else(|| workspace_root().join("docs").join("benchmarks.md"))
        });
        options.redis = cli.redis;
        Ok(options)
    }

    /// The time budget that the measured cells share when no `--duration`
    /// is given (warm-ups included, the reproduction not).
    pub fn budget(&self) -> Duration {
        if self.quick {
            Duration::from_secs(12)
        } else {
            Duration::from_secs(100)
        }
    }
}

/// Parses `250ms`, `1s`, `0.5s`, `2m` or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "ms"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 250ms, 1s or 0.5s)"))?;
    let seconds = match unit.trim() {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (use ms, s or m)"
            ))
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("'{text}' must be a positive duration"));
    }
    if seconds > 3600.0 {
        return Err(format!("'{text}' is longer than an hour per cell"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_millis(20)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
