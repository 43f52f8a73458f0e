//! `layerzero`: the command line of the layerzero toolkit.
//!
//! This binary only defines the command line and calls the library crates; everything reusable
//! lives there. Exit codes: 0 success, 1 runtime failure, 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use layerzero_data::{Checksum, Dataset, FetchOutcome, Location, Source};

/// `println!` that returns write errors instead of panicking, so that output piped into a
/// reader that stops early (`layerzero models | head -3`) ends in a quiet exit through
/// `is_broken_pipe`, not a "failed printing to stdout" panic. Use it in functions returning
/// `anyhow::Result`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?;
    }};
}

mod ablate_cmd;
mod train_cmd;

/// A mistake in the command line that clap's parsers cannot see (a flag one mode requires,
/// two flags that exclude each other, a malformed value parsed later): exits 2, as clap's own
/// usage errors do, where a failure at run time exits 1.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A [`Usage`] error.
fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// This process's command line as a shell would read it back
/// ([`layerzero_report::shell_command_line`]).
fn command_line() -> String {
    layerzero_report::shell_command_line(std::env::args_os())
}

/// Creates the folder a result file `path` goes in, before hours of work are spent on
/// computing it: the atomic writers need it to exist.
fn create_parent_dir(flag: &str, path: &std::path::Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "{flag} {}: creating its folder {}",
                    path.display(),
                    dir.display()
                )
            })
        }
        _ => Ok(()),
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "layerzero",
    version,
    about = "Layer-ablation studies of convolutional networks: which layers of this network matter?",
    long_about = "Layer-ablation studies of convolutional networks.\n\n\
        Train a CIFAR ResNet, replace each convolution's kernel with zeros one layer at a time, \
        and measure what the test accuracy does (Liang et al., 'Is Each Layer Non-trivial in CNN?').\n\n\
        Start with `cargo xtask reproduce` for the whole study, or `layerzero data fetch` to get CIFAR-10."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fetch and inspect the CIFAR data sets.
    #[command(subcommand)]
    Data(DataCommand),
    /// List the built-in architectures with parameter counts and MACs per image.
    #[command(after_help = "Example:\n  layerzero models --num-classes 100")]
    Models(train_cmd::ModelsArgs),
    /// Train a model on CIFAR, with checkpoints every epoch (resumable).
    #[command(after_help = "Examples:\n  \
        layerzero train --arch resnet20 --out runs/resnet20 --data-dir data\n  \
        layerzero train --arch plain20 --profile smoke --out runs/smoke\n  \
        layerzero train --arch resnet20 --out runs/resnet20 --resume\n  \
        layerzero train --arch resnet20 --batch-size 64 --lr 0.1 --label-smoothing 0.1 --out runs/r20-b64\n\n\
        Profiles: smoke (2,048 images, 1 epoch), quick (one-cycle to 0.1, batch 64, label smoothing\n\
        0.1, alternating flips, 2 ghost batches, 26 epochs of which the first 8 on 16x16 images:\n\
        the CPU default), paper (He et al.: 0.1, /10 at 32k and 48k steps, 64k steps; for a GPU).")]
    Train(train_cmd::TrainArgs),
    /// Evaluate weights on the test set (the ablation baseline).
    #[command(
        after_help = "Example:\n  layerzero eval --weights runs/resnet20/weights.safetensors --json"
    )]
    Eval(train_cmd::EvalArgs),
    /// Ablate every selected layer, one at a time, and measure the effect on the test set.
    #[command(after_help = "Examples:\n  \
        layerzero ablate --weights runs/resnet20/weights.safetensors --mode zero-kernel --out results.json\n  \
        layerzero ablate --weights w.safetensors --mode skip-branch --layers 'layer2.*' --out skip.json\n  \
        layerzero ablate --weights w.safetensors --shard 0/4 --out shard-0.json   # then: ablate merge\n  \
        layerzero ablate merge shard-*.json --out results.json\n\n\
        Each layer gets top-1/top-5/loss, delta top-1 with a 95% interval, McNemar's exact p and a\n\
        trivial/non-trivial verdict (default: |delta| <= 1 point and p >= 0.01 -> trivial).")]
    Ablate(ablate_cmd::AblateArgs),
    /// Write report.md, summary.json, layers.csv and SVG figures from results and metrics.
    #[command(
        after_help = "Example:\n  layerzero report --results runs/*/zero-kernel.json \\\n    --metrics resnet20:0:runs/resnet20/metrics.jsonl --out runs/report"
    )]
    Report(ablate_cmd::ReportArgs),
    /// Show the metadata, tensors and layer inventory of a weights file.
    #[command(after_help = "Example:\n  layerzero inspect runs/resnet20/weights.safetensors")]
    Inspect(train_cmd::InspectArgs),
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Download (or take a local archive), verify and extract a CIFAR data set.
    #[command(after_help = "Examples:\n  \
        layerzero data fetch\n  \
        layerzero data fetch --archive ../shared/data/cifar-10-binary.tar.gz\n  \
        layerzero data fetch --dataset cifar100 --dir /scratch/data\n  \
        layerzero data fetch --url https://mirror.example/cifar-10-binary.tar.gz --sha256 <hex>\n\n\
        Without --url or --archive, the archive named by LAYERZERO_CIFAR10_ARCHIVE is used when set,\n\
        else the official one is downloaded and checked against its published MD5.\n\
        An already extracted, valid data set is reused without network access.")]
    Fetch(FetchArgs),
    /// Show split sizes, per-class counts and file checksums of an extracted data set.
    #[command(after_help = "Example:\n  layerzero data info --dir data --json")]
    Info(InfoArgs),
}

#[derive(Args, Debug)]
struct DatasetArg {
    /// Which data set: cifar10 or cifar100.
    #[arg(long, default_value = "cifar10", value_parser = parse_dataset)]
    dataset: Dataset,
    /// Data root holding `cifar-10-batches-bin/` (or that folder itself).
    #[arg(long, visible_alias = "data-dir", default_value = "data")]
    dir: PathBuf,
}

#[derive(Args, Debug)]
struct FetchArgs {
    #[command(flatten)]
    target: DatasetArg,
    /// Download from this URL (a mirror) instead of the official one.
    #[arg(long, conflicts_with = "archive")]
    url: Option<String>,
    /// Use this local .tar.gz instead of downloading.
    #[arg(long)]
    archive: Option<PathBuf>,
    /// Verify the archive against this SHA-256 (64 hex digits) instead of the official MD5.
    #[arg(long)]
    sha256: Option<String>,
}

#[derive(Args, Debug)]
struct InfoArgs {
    #[command(flatten)]
    target: DatasetArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_dataset(s: &str) -> Result<Dataset, String> {
    s.parse::<Dataset>().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", error_line(&err));
            let is_usage = err.chain().any(|e| e.is::<Usage>());
            ExitCode::from(if is_usage { 2 } else { 1 })
        }
    }
}

/// The error and its causes on one line, `outer: cause: …`, leaving out a cause whose text the
/// line already holds: the library errors name their source in their own message (`{path}:
/// {source}`), which `{:#}` would print a second time.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(DataCommand::Fetch(args)) => data_fetch(args),
        Command::Data(DataCommand::Info(args)) => data_info(args),
        Command::Models(args) => train_cmd::models(args),
        Command::Train(args) => train_cmd::train(args),
        Command::Eval(args) => train_cmd::eval(args),
        Command::Inspect(args) => train_cmd::inspect(args),
        Command::Ablate(args) => ablate_cmd::ablate(args),
        Command::Report(args) => ablate_cmd::report(args),
    }
}

fn data_fetch(args: FetchArgs) -> Result<()> {
    let mut source = Source::new(args.target.dataset);
    if let Some(url) = args.url {
        source = source.with_location(Location::Url(url));
    }
    if let Some(path) = args.archive {
        source = source.with_location(Location::Archive(path));
    }
    if let Some(hex) = args.sha256 {
        // A malformed digest is a mistake in the command line (exit 2).
        let checksum = Checksum::sha256(&hex).map_err(|e| usage(format!("--sha256: {e}")))?;
        source = source.with_checksum(Some(checksum));
    }
    let from = match &source.location {
        Location::Official => args.target.dataset.official_archive().url.to_string(),
        Location::Url(u) => u.clone(),
        Location::Archive(p) => p.display().to_string(),
    };
    let outcome = layerzero_data::fetch(&args.target.dir, &source)
        .with_context(|| format!("fetching {} from {from}", args.target.dataset))?;
    match outcome {
        FetchOutcome::AlreadyPresent(dir) => {
            out!(
                "{} already present and valid in {}",
                args.target.dataset,
                dir.display()
            )
        }
        FetchOutcome::Fetched(dir) => {
            out!(
                "{} fetched from {from} into {}",
                args.target.dataset,
                dir.display()
            )
        }
    }
    Ok(())
}

fn data_info(args: InfoArgs) -> Result<()> {
    let info = layerzero_data::info(&args.target.dir, args.target.dataset)?;
    if args.json {
        let splits: Vec<_> = info
            .splits
            .iter()
            .map(|s| {
                serde_json::json!({
                    "split": s.split.name(),
                    "records": s.records,
                    "class_counts": s.class_counts,
                    "files": s.files.iter().map(|f| serde_json::json!({
                        "path": f.path, "size": f.size, "sha256": f.sha256,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = serde_json::json!({
            "dataset": info.dataset.cli_name(),
            "dir": info.dir,
            "class_names": info.class_names,
            "splits": splits,
        });
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    out!("{} in {}", info.dataset, info.dir.display());
    for s in &info.splits {
        out!("\n{} split: {} images", s.split, s.records);
        for (name, count) in info.class_names.iter().zip(&s.class_counts) {
            out!("  {name:<16} {count:>6}");
        }
        for f in &s.files {
            let name = f.path.file_name().unwrap_or_default().to_string_lossy();
            out!("  {name:<18} {:>10} bytes  sha256 {}", f.size, f.sha256);
        }
    }
    Ok(())
}

#[cfg(test)]
mod error_line_tests {
    use super::error_line;
    use anyhow::Context;

    /// Like the library errors: names its source in its own message and returns it as the cause.
    #[derive(Debug)]
    struct Named {
        path: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for Named {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.path, self.source)
        }
    }

    impl std::error::Error for Named {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Err::<(), _>(Named {
            path: "a.bin".into(),
            source: io,
        })
        .context("loading weights")
        .unwrap_err();
        assert_eq!(error_line(&err), "loading weights: a.bin: no such file");
    }

    #[test]
    fn a_cause_not_in_the_message_is_appended() {
        let err = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing results.json")
            .unwrap_err();
        assert_eq!(error_line(&err), "writing results.json: disk full");
    }
}
