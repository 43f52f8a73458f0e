//! `cargo xtask`: the project's build system, in Rust so that it runs wherever cargo does.
//!
//! It stays thin: each task parses its options and calls the library crates.
//! - `cargo xtask fetch`: get CIFAR-10 into `data/` (the official archive, or a local copy named by
//!   `--archive` or `LAYERZERO_CIFAR10_ARCHIVE`).
//! - `cargo xtask reproduce`: the whole study: fetch → for each seed, train the ResNet and ablate
//!   it (zero-kernel, skip-branch, cumulative), train its plain twin and ablate it → report. See
//!   `reproduce.rs`.
//! - `cargo xtask bench`: training, evaluation, memory and the zero-kernel sweep against the
//!   PyTorch peer in the same run (ResNet-20 by default, `--depth`); writes `bench.json`
//!   (`bench-cuda.json` on a GPU). See `bench.rs`.
//!
//! The GPU builds are the aliases `cargo xtask-cuda` and `cargo xtask-cudnn` (`.cargo/config.toml`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::{bench, fetch, reproduce, BadFlag, FetchArgs};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "layerzero's build system: fetch, reproduce, bench"
)]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Fetch CIFAR-10 into the data directory (uses LAYERZERO_CIFAR10_ARCHIVE when set).
    Fetch(FetchArgs),
    /// Run the study end to end: fetch → for each seed, train and ablate the ResNet, then its
    /// plain twin → report.
    #[command(after_help = "Examples:\n  \
        cargo xtask reproduce                      # quick profile on the CPU\n  \
        cargo xtask reproduce --profile smoke      # minutes: checks the pipeline\n  \
        cargo xtask-cudnn reproduce --profile paper --device cuda --seeds 3\n\n\
        Re-running skips finished stages and resumes an interrupted training.")]
    Reproduce(reproduce::ReproduceArgs),
    /// Benchmark ResNet-20 (or --depth) training, evaluation, memory and the zero-kernel sweep
    /// against the PyTorch peer in the same run; writes target/bench/bench.json
    /// (bench-cuda.json with --device cuda).
    #[command(after_help = "Example:\n  \
        LAYERZERO_PEER_PYTHON=/path/to/venv/bin/python cargo xtask bench --threads 2\n\n\
        Without an interpreter that can `import torch` (or without the default peer script),\n\
        prints absolute figures only and says why on stderr; a --peer or LAYERZERO_PEER_PYTHON\n\
        that is given must work.")]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let args = Xtask::parse();
    let result = match args.task {
        Task::Fetch(a) => fetch(&a).map(|_| ()),
        Task::Reproduce(a) => reproduce::reproduce(&a),
        Task::Bench(a) => bench::bench(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            // A bad flag found after parsing exits as clap's own usage errors do.
            ExitCode::from(if e.downcast_ref::<BadFlag>().is_some() {
                2
            } else {
                1
            })
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
