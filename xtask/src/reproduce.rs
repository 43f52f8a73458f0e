//! `cargo xtask reproduce`: fetch → train the ResNet → train its plain twin → ablate → report.
//!
//! Each stage writes `stages/<name>.json`, a manifest with the SHA-256 of its outputs; a re-run
//! skips a stage whose manifest matches the files on disk, and an interrupted training stage
//! resumes from its last checkpoint. The stages call the library crates; nothing here computes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use layerzero_ablate::engine::{run as run_ablation, EngineConfig, RunContext};
use layerzero_ablate::{sha256_file, write_atomic, AblationMode, ResultsFile, WeightsRef};
use layerzero_data::{CifarSet, Dataset, Split};
use layerzero_models::{create_model, load_safetensors, LoadOptions, ModelConfig, WeightsMetadata};
use layerzero_report::{MetricsSeries, Provenance, ReportInput, ResultsSource};
use layerzero_train::{
    train_observed, EpochMetrics, Profile, RunDir, RunOptions, TrainConfig, TrainObserver,
};
use serde::{Deserialize, Serialize};

/// Options of `cargo xtask reproduce`.
#[derive(clap::Args, Debug)]
pub struct ReproduceArgs {
    #[command(flatten)]
    pub fetch: crate::FetchArgs,
    /// smoke (minutes, CI), quick (the CPU default), paper (He et al.; for a GPU).
    #[arg(long, default_value = "quick")]
    pub profile: String,
    /// The residual network; its no-shortcut twin (`plainN`) is derived.
    #[arg(long, default_value = "resnet20")]
    pub arch: String,
    /// Number of training seeds (0 … N−1); the report gives mean ± std across them.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Output folder of the run [default: runs/ARCH-PROFILE, e.g. runs/resnet20-quick].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// Threads for the CPU kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    stage: String,
    outputs: BTreeMap<String, String>,
    elapsed_s: f64,
}

fn manifest_path(out: &Path, stage: &str) -> PathBuf {
    out.join("stages").join(format!("{stage}.json"))
}

/// Whether `stage` already ran and its outputs are unchanged.
fn stage_done(out: &Path, stage: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(manifest_path(out, stage)) else {
        return false;
    };
    let Ok(m) = serde_json::from_str::<Manifest>(&text) else {
        return false;
    };
    m.outputs
        .iter()
        .all(|(path, sha)| sha256_file(Path::new(path)).is_ok_and(|s| &s == sha))
}

fn finish_stage(out: &Path, stage: &str, outputs: &[PathBuf], started: Instant) -> Result<()> {
    let mut map = BTreeMap::new();
    for p in outputs {
        map.insert(p.display().to_string(), sha256_file(p)?);
    }
    let dir = out.join("stages");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let m = Manifest {
        stage: stage.to_string(),
        outputs: map,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    write_atomic(
        &manifest_path(out, stage),
        serde_json::to_string_pretty(&m)?.as_bytes(),
    )?;
    Ok(())
}

struct Log;
impl TrainObserver for Log {
    fn start(&self, epoch: usize, epochs: usize, steps: usize) {
        println!("    training from epoch {epoch} of {epochs} ({steps} steps per epoch)");
    }
    fn epoch(&self, m: &EpochMetrics) {
        println!(
            "    epoch {:>3}: train loss {:.4} | test top-1 {:.2}% | {:.0} img/s",
            m.epoch,
            m.train_loss,
            100.0 * m.test_top1,
            m.images_per_s
        );
    }
}

/// The twin without shortcuts: `resnet20` → `plain20`.
fn plain_twin(arch: &str) -> Result<String> {
    let depth = arch
        .strip_prefix("resnet")
        .map(|d| d.trim_end_matches("-a").trim_end_matches("-b"))
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .with_context(|| format!("--arch {arch}: expected a CIFAR ResNet such as resnet20"))?;
    Ok(format!("plain{depth}"))
}

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    let total = Instant::now();
    let profile: Profile = args.profile.parse()?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .ok();
    }
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => layerzero_kernels::open_cuda(0)
            .context("--device cuda (build xtask with CUDA support)")?,
        other => bail!("--device: expected cpu or cuda, found {other:?}"),
    };
    if args.seeds == 0 {
        bail!("--seeds: expected at least 1, found 0");
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", args.arch, profile)));
    let archs = [args.arch.clone(), plain_twin(&args.arch)?];
    // Both networks must exist (resnet99 has the right prefix but no such depth) before the
    // run's folder is made or the data fetched.
    for arch in &archs {
        create_model(arch, &ModelConfig::new(10)).with_context(|| format!("--arch {arch}"))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    println!("[fetch]");
    let data = crate::fetch(&args.fetch)?;
    let train_set = CifarSet::load(&data, Dataset::Cifar10, Split::Train)?;
    let mut test_set = CifarSet::load(&data, Dataset::Cifar10, Split::Test)?;
    if profile == Profile::Smoke {
        test_set = test_set.truncate(500);
    }

    let mut results = Vec::new();
    let mut metrics = Vec::new();
    for seed in 0..args.seeds {
        for (k, arch) in archs.iter().enumerate() {
            let stage = format!("train-{arch}-s{seed}");
            let run_dir = out.join(&stage);
            let dir = RunDir::new(&run_dir);
            println!("[{stage}]");
            if stage_done(&out, &stage) {
                println!("    done before; skipped");
            } else {
                let started = Instant::now();
                let config = TrainConfig::from_profile(profile, arch, seed);
                let net = create_model(
                    arch,
                    &ModelConfig::new(10)
                        .with_seed(seed)
                        .with_device(device.clone()),
                )?;
                let metadata = WeightsMetadata::for_network(net.as_ref()).with_dataset("cifar10");
                let opts = RunOptions {
                    resume: dir.config().exists(),
                    max_epochs: None,
                    metadata: Some(metadata),
                    readback_steps: None,
                };
                train_observed(
                    net.as_ref(),
                    &train_set,
                    &test_set,
                    &config,
                    &run_dir,
                    &opts,
                    &Log,
                )?;
                finish_stage(
                    &out,
                    &stage,
                    &[dir.weights(), dir.init_weights(), dir.metrics()],
                    started,
                )?;
            }
            metrics.push(MetricsSeries::read(arch, Some(seed), dir.metrics())?);

            let residual = k == 0;
            let mut modes = vec![AblationMode::ZeroKernel];
            if residual {
                modes.push(AblationMode::SkipBranch);
                modes.push(AblationMode::CumulativeSkipBranch);
            }
            for mode in modes {
                let stage = format!("ablate-{arch}-s{seed}-{mode}");
                let path = out.join(format!("{stage}.json"));
                println!("[{stage}]");
                if !stage_done(&out, &stage) {
                    let started = Instant::now();
                    let net =
                        create_model(arch, &ModelConfig::new(10).with_device(device.clone()))?;
                    load_safetensors(net.as_ref(), &dir.weights(), &LoadOptions::default())?;
                    let mut cfg = EngineConfig::new(mode);
                    if mode.is_cumulative() && profile == Profile::Smoke {
                        cfg.max_cumulative_steps = Some(3);
                    }
                    let ctx = RunContext {
                        net: net.as_ref(),
                        test: &test_set,
                        weights: WeightsRef {
                            path: dir.weights().display().to_string(),
                            sha256: sha256_file(dir.weights())?,
                        },
                        dataset: "cifar10".into(),
                        split: "test".into(),
                        threads: rayon::current_num_threads(),
                    };
                    let mut file: ResultsFile = run_ablation(&ctx, &cfg, None)?;
                    file.seed = Some(seed);
                    let csv = file.write(&path)?;
                    finish_stage(&out, &stage, &[path.clone(), csv], started)?;
                } else {
                    println!("    done before; skipped");
                }
                results.push(ResultsSource::read(&path)?);
            }
        }
    }

    println!("[report]");
    let report_dir = out.join("report");
    let input = ReportInput {
        results,
        metrics,
        provenance: Provenance {
            layerzero_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: git_commit(),
            seeds: (0..args.seeds).collect(),
            commands: vec![std::env::args().collect::<Vec<_>>().join(" ")],
            created_utc: layerzero_report::created_utc_now()?,
            ..Provenance::default()
        },
    };
    let files = layerzero_report::write_report(&report_dir, &input)?;
    let summary = layerzero_report::analyze(&input)?;
    println!(
        "\nreport: {}  ({:.0} s in all)",
        files.report_md.display(),
        total.elapsed().as_secs_f64()
    );
    for claim in &summary.claims {
        println!(
            "  claim {}: {} — {} (holds in {} of {})",
            claim.id, claim.statement, claim.outcome, claim.holds_in, claim.tested_in
        );
    }
    Ok(())
}

/// The commit of the layerzero checkout this xtask was built from (not of the directory it is
/// run in, which may be elsewhere).
fn git_commit() -> Option<String> {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}
