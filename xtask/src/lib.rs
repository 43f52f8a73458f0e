//! The library half of `cargo xtask`, so that the end-to-end tests in `tests/` can drive the
//! same pipeline in-process.

use std::path::PathBuf;

use anyhow::{Context, Result};
use layerzero_data::{Dataset, FetchOutcome, Location, Source};

pub mod bench;
pub mod reproduce;

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
