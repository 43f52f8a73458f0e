//! The library half of `cargo xtask`, so that the end-to-end tests in `tests/` can drive the
//! same pipeline in-process.

use std::path::PathBuf;

use anyhow::{Context, Result};
use layerzero_data::{Dataset, FetchOutcome, Location, Source};

pub mod bench;
pub mod reproduce;

/// A mistake in the command line (or in an environment variable standing for an option) found
/// after clap parsed it, before any work: `cargo xtask` exits with status 2, as for the errors
/// clap finds itself.
#[derive(Debug)]
pub struct BadFlag(pub String);

impl std::fmt::Display for BadFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadFlag {}

/// Value parser of the counts that must be at least 1 (`--threads`, `--steps`, …), so that 0
/// is refused when the command line is parsed, naming the flag.
pub fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number ≥ 1, found {s:?}")),
    }
}

/// Sizes rayon's global thread pool to `threads` (`--threads`). The pool can be built once per
/// process: if it already runs with another number of threads (xtask driven in-process, after
/// something used rayon), the error says so; the same number is fine.
pub fn set_global_threads(threads: usize) -> Result<()> {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == threads => Ok(()),
        Err(e) => anyhow::bail!(
            "--threads {threads}: rayon's global thread pool already runs {} threads ({e})",
            rayon::current_num_threads()
        ),
    }
}

/// Options of `cargo xtask fetch` (and the fetch stage of `reproduce`).
#[derive(clap::Args, Debug, Clone)]
pub struct FetchArgs {
    /// Data root (holds `cifar-10-batches-bin/`).
    #[arg(long, visible_alias = "dir", default_value = "data")]
    pub data_dir: PathBuf,
    /// A local CIFAR-10 .tar.gz to use instead of downloading.
    #[arg(long)]
    pub archive: Option<PathBuf>,
}

/// Fetches CIFAR-10 into `args.data_dir`; returns the folder of the batch files.
pub fn fetch(args: &FetchArgs) -> Result<PathBuf> {
    let mut source = Source::new(Dataset::Cifar10);
    if let Some(p) = &args.archive {
        source = source.with_location(Location::Archive(p.clone()));
    }
    let outcome = layerzero_data::fetch(&args.data_dir, &source).context("fetching CIFAR-10")?;
    let dir = outcome.dir().to_path_buf();
    match outcome {
        FetchOutcome::AlreadyPresent(_) => {
            println!("[fetch] CIFAR-10 present in {}", dir.display())
        }
        FetchOutcome::Fetched(_) => println!("[fetch] CIFAR-10 extracted into {}", dir.display()),
    }
    Ok(dir)
}
