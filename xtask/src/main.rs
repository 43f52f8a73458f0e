//! `cargo xtask`: the project's build system, in Rust so that it runs wherever cargo does.
//!
//! It stays thin: each task parses its options and calls the library crates.
//! - `cargo xtask fetch`: get CIFAR-10 into `data/` (official archive, a mirror or a local copy).
//! - `cargo xtask reproduce`: the whole study. Today it runs the stages that exist (fetch and
//!   verify the data); training, ablation and the report are added as their crates land.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use layerzero_data::{Dataset, FetchOutcome, Location, Source, Split};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "layerzero's build system: fetch, reproduce"
)]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Fetch CIFAR-10 into the data directory (uses LAYERZERO_CIFAR10_ARCHIVE when set).
    Fetch(FetchArgs),
    /// Run the study end to end: fetch → train → ablate → report (stages land one by one).
    Reproduce(ReproduceArgs),
}

#[derive(clap::Args, Debug)]
struct FetchArgs {
    /// Data root (holds `cifar-10-batches-bin/`).
    #[arg(long, visible_alias = "dir", default_value = "data")]
    data_dir: PathBuf,
    /// A local CIFAR-10 .tar.gz to use instead of downloading.
    #[arg(long)]
    archive: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ReproduceArgs {
    #[command(flatten)]
    fetch: FetchArgs,
}

fn main() -> ExitCode {
    let args = Xtask::parse();
    let result = match args.task {
        Task::Fetch(a) => fetch(&a).map(|_| ()),
        Task::Reproduce(a) => reproduce(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn fetch(args: &FetchArgs) -> Result<PathBuf> {
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

fn reproduce(args: &ReproduceArgs) -> Result<()> {
    let dir = fetch(&args.fetch)?;
    for split in [Split::Train, Split::Test] {
        let set = layerzero_data::CifarSet::load(&dir, Dataset::Cifar10, split)?;
        println!(
            "[verify] {split}: {} images, {:?} per class",
            set.len(),
            set.class_counts()
        );
    }
    println!(
        "[reproduce] data stage done; the training, ablation and report stages are not built yet"
    );
    Ok(())
}
