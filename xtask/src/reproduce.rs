//! `cargo xtask reproduce`: fetch → for each seed: train the ResNet → ablate it → train its plain
//! twin → ablate it → report.
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
    /// smoke (seconds to minutes: checks the pipeline, verdicts mean nothing), quick (the CPU
    /// default), paper (He et al.; for a GPU).
    #[arg(long, default_value = "quick")]
    pub profile: String,
    /// The residual network; its no-shortcut twin (`plainN`) is derived. An alias is taken
    /// under the network's one name (`resnet20-a` is `resnet20`) for the stages and the study.
    #[arg(long, default_value = "resnet20")]
    pub arch: String,
    /// Number of training seeds (0 … N−1); the report gives mean ± std across them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
    /// Output folder of the run [default: runs/ARCH-PROFILE, e.g. runs/resnet20-quick].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// Threads for the CPU kernels (default: all cores).
    #[arg(long, value_parser = crate::at_least_one)]
    pub threads: Option<usize>,
}

/// `stages/NAME.json`: what a finished stage read and wrote, with SHA-256 sums, so that a
/// re-run can skip it. Paths are relative to the study's folder (absolute in files written
/// before 2026-11-27), so a copied or moved study checks its own files.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    stage: String,
    /// The files the stage was computed from (an ablation's weights): a stage whose inputs
    /// changed since, e.g. after its network was trained again, runs again.
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
    elapsed_s: f64,
}

fn manifest_path(out: &Path, stage: &str) -> PathBuf {
    out.join("stages").join(format!("{stage}.json"))
}

/// Whether `stage` already ran and its inputs and outputs are unchanged.
fn stage_done(out: &Path, stage: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(manifest_path(out, stage)) else {
        return false;
    };
    let Ok(m) = serde_json::from_str::<Manifest>(&text) else {
        return false;
    };
    // `join` keeps an absolute path as it is: older manifests still check.
    m.inputs
        .iter()
        .chain(&m.outputs)
        .all(|(path, sha)| sha256_file(out.join(path)).is_ok_and(|s| &s == sha))
}

/// `path`'s SHA-256, keyed by the path relative to `out` where it lies inside it.
fn checksums(out: &Path, paths: &[PathBuf]) -> Result<BTreeMap<String, String>> {
    paths
        .iter()
        .map(|p| {
            let key = p.strip_prefix(out).unwrap_or(p).display().to_string();
            Ok((key, sha256_file(p)?))
        })
        .collect()
}

fn finish_stage(
    out: &Path,
    stage: &str,
    inputs: &[PathBuf],
    outputs: &[PathBuf],
    started: Instant,
) -> Result<()> {
    let dir = out.join("stages");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let m = Manifest {
        stage: stage.to_string(),
        inputs: checksums(out, inputs)?,
        outputs: checksums(out, outputs)?,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    write_atomic(
        &manifest_path(out, stage),
        serde_json::to_string_pretty(&m)?.as_bytes(),
    )?;
    Ok(())
}

/// `study.json`: what the study in a folder is, so that a re-run with another profile or
/// network is refused instead of reusing stages that answer another question (the report
/// would then describe the old stages under the new command).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Study {
    /// The network's one name ([`canonical_arch`]); older records may hold the alias that was
    /// given (`resnet20-a`), which their stages are named by.
    arch: String,
    profile: String,
}

/// The one name `arch` is created under (`resnet20-a` → `resnet20`), or an error naming
/// `--arch` if there is no such network.
fn canonical_arch(arch: &str) -> Result<String> {
    match create_model(arch, &ModelConfig::new(10)) {
        Ok(net) => Ok(net.spec().name.clone()),
        Err(e) => Err(crate::BadFlag(format!("--arch {arch}: {e}")).into()),
    }
}

/// Refuses a folder whose `study.json` records another study (networks compared by their one
/// name, so an alias is the same study). Reads only: the record is written by
/// [`record_study`] once the inputs are checked and the data are there, so that a run that
/// fails before that (a fetch without network, a wrong option) leaves nothing that refuses
/// its corrected retry. Returns the network as the folder's record spells it, if it has one.
fn check_study(out: &Path, study: &Study) -> Result<Option<String>> {
    let path = out.join("study.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found: Study = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a study record", path.display()))?;
            let same_arch = found.arch == study.arch
                || canonical_arch(&found.arch).is_ok_and(|a| a == study.arch);
            if !same_arch || found.profile != study.profile {
                bail!(
                    "{}: this folder holds the study of --arch {} --profile {}, not of --arch {} \
                     --profile {}; give the new study its own --out",
                    path.display(),
                    found.arch,
                    found.profile,
                    study.arch,
                    study.profile
                );
            }
            Ok(Some(found.arch))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The default `--out`: `runs/ARCH-PROFILE` by the network's one name (`canonical`), or by the
/// name as given (`given`, an alias) where a study folder of that name exists already, which
/// versions before the one name made; the study there goes on rather than a new one starting
/// beside it.
fn default_out(given: &str, canonical: &str, profile: &str) -> PathBuf {
    let by_alias = PathBuf::from(format!("runs/{given}-{profile}"));
    if given != canonical && by_alias.join("study.json").is_file() {
        eprintln!(
            "note: continuing the study in {} (made under --arch {given}, which is {canonical})",
            by_alias.display()
        );
        return by_alias;
    }
    PathBuf::from(format!("runs/{canonical}-{profile}"))
}

/// Writes `study.json` (see [`check_study`]).
fn record_study(out: &Path, study: &Study) -> Result<()> {
    Ok(write_atomic(
        &out.join("study.json"),
        serde_json::to_string_pretty(study)?.as_bytes(),
    )?)
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

/// An ablation stage's progress as a line at each tenth of its evaluations, so that a long
/// stage (minutes for ResNet-56 on a CPU) shows it is moving, in a terminal and in a log file
/// alike.
struct Deciles {
    started: Instant,
    printed: std::cell::Cell<usize>,
}

impl Deciles {
    fn new(started: Instant) -> Self {
        Deciles {
            started,
            printed: std::cell::Cell::new(0),
        }
    }

    /// The line to print after `done` of `total` evaluations, if a new tenth was reached
    /// (not the last: the stage's summary line follows it).
    fn line(&self, done: usize, total: usize) -> Option<String> {
        let tenth = (done * 10).checked_div(total).unwrap_or(10).min(10);
        (tenth > self.printed.get() && tenth < 10).then(|| {
            self.printed.set(tenth);
            format!(
                "    {tenth}0 % ({done} of {total} chunk evaluations, {:.0} s)",
                self.started.elapsed().as_secs_f64()
            )
        })
    }
}

/// The twin without shortcuts: `resnet20` → `plain20`.
fn plain_twin(arch: &str) -> Result<String> {
    let depth = arch
        .strip_prefix("resnet")
        .map(|d| d.trim_end_matches("-a").trim_end_matches("-b"))
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            crate::BadFlag(format!(
                "--arch {arch}: expected a CIFAR ResNet such as resnet20"
            ))
        })?;
    Ok(format!("plain{depth}"))
}

pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    let total = Instant::now();
    let profile: Profile = args
        .profile
        .parse()
        .map_err(|e| crate::BadFlag(format!("--profile: {e}")))?;
    if args.seeds == 0 {
        return Err(crate::BadFlag("--seeds: expected at least 1, found 0".into()).into());
    }
    if args.threads == Some(0) {
        return Err(crate::BadFlag("--threads: expected at least 1, found 0".into()).into());
    }
    if let Some(n) = args.threads {
        // Only the speed depends on the thread count (the results record the count that ran),
        // so a pool already built with another one (reproduce driven in-process) is a warning.
        if let Err(e) = crate::set_global_threads(n) {
            eprintln!("warning: {e:#}; the run goes on with those");
        }
    }
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => layerzero_kernels::open_cuda(0)
            .context("--device cuda (build xtask with CUDA support)")?,
        other => bail!("--device: expected cpu or cuda, found {other:?}"),
    };
    // Both networks must exist (resnet99 has the right prefix but no such depth) before the
    // run's folder is made or the data fetched. The stages, the study record and the default
    // folder use the network's one name, so that `resnet20-a` and `resnet20` are one study.
    let arch = canonical_arch(&args.arch)?;
    let twin = canonical_arch(&plain_twin(&arch)?)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.arch, &arch, &profile.to_string()));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let study = Study {
        arch: arch.clone(),
        profile: profile.to_string(),
    };
    let recorded = check_study(&out, &study)?;
    // A folder whose record spells the network by an alias (written before reproduce took the
    // one name) keeps that spelling for its stages, whose folders and checkpoints carry it.
    let archs = [recorded.clone().unwrap_or_else(|| arch.clone()), twin];

    println!("[fetch]");
    let data = crate::fetch(&args.fetch)?;
    let train_set = CifarSet::load(&data, Dataset::Cifar10, Split::Train)?;
    let mut test_set = CifarSet::load(&data, Dataset::Cifar10, Split::Test)?;
    // The profile's evaluation subset (smoke: the first 1,000 test images) for the ablations
    // too, so that the training's test accuracy and the ablations' baseline agree.
    if let Some(n) = TrainConfig::from_profile(profile, &arch, 0).test_limit {
        test_set = test_set.truncate(n);
    }
    if recorded.is_none() {
        record_study(&out, &study)?;
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
                    &[],
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
                // The cumulative path is chosen on the first half of the test images and
                // measured on the second, so that its curve is not flattered by the choice (a
                // set of one image is chosen and measured on itself).
                let selection =
                    (mode.is_cumulative() && test_set.len() >= 2).then(|| test_set.len() / 2);
                // A file made otherwise (before reproduce held the path out) is made again.
                let current = stage_done(&out, &stage)
                    && (!mode.is_cumulative()
                        || ResultsFile::read(&path)
                            .is_ok_and(|f| f.selection_images == selection.map(|k| k as u64)));
                if !current {
                    let started = Instant::now();
                    let net =
                        create_model(arch, &ModelConfig::new(10).with_device(device.clone()))?;
                    load_safetensors(net.as_ref(), &dir.weights(), &LoadOptions::default())?;
                    let mut cfg = EngineConfig::new(mode);
                    if mode.is_cumulative() && profile == Profile::Smoke {
                        cfg.max_cumulative_steps = Some(3);
                    }
                    cfg.selection_images = selection;
                    let ctx = RunContext {
                        net: net.as_ref(),
                        test: &test_set,
                        weights: WeightsRef::of_file(dir.weights())?,
                        dataset: "cifar10".into(),
                        split: "test".into(),
                        threads: rayon::current_num_threads(),
                    };
                    let progress = Deciles::new(started);
                    let report = |done: usize, total: usize| {
                        if let Some(line) = progress.line(done, total) {
                            println!("{line}");
                        }
                    };
                    let mut file: ResultsFile = run_ablation(&ctx, &cfg, Some(&report))?;
                    file.train_seed = Some(seed);
                    file.command = Some(layerzero_report::shell_command_line(std::env::args_os()));
                    let csv = file.write(&path)?;
                    let trivial = file
                        .layers
                        .iter()
                        .filter(|l| l.verdict == layerzero_ablate::Verdict::Trivial)
                        .count();
                    println!(
                        "    {} ablations on {} images, {trivial} trivial; baseline top-1 \
                         {:.2} %; {:.0} s",
                        file.layers.len(),
                        file.n_images,
                        100.0 * file.baseline.top1,
                        started.elapsed().as_secs_f64()
                    );
                    finish_stage(
                        &out,
                        &stage,
                        &[dir.weights()],
                        &[path.clone(), csv],
                        started,
                    )?;
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
            commands: vec![layerzero_report::shell_command_line(std::env::args_os())],
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
    if profile == Profile::Smoke {
        println!(
            "  (smoke profile: barely trained networks on 1,000 test images; these verdicts check \
             the pipeline, they are not findings; report.md says why)"
        );
    }
    Ok(())
}

/// The commit of the layerzero checkout xtask's source lies in (not of the directory it is run
/// in), read when the report is made: `cargo xtask` builds xtask from that checkout just
/// before running it, so this is what ran, unless the binary is run by hand after the checkout
/// moved on. Uncommitted changes to tracked files are marked (`<sha>+uncommitted changes`).
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            // Reading only: no index refresh, no index.lock taken from a concurrent commit.
            .arg("--no-optional-locks")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{head}+uncommitted changes")
    } else {
        head
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_study_checks_its_own_files_and_a_changed_input_reruns_the_stage() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("study");
        std::fs::create_dir_all(&out).unwrap();
        let (weights, results) = (out.join("w.safetensors"), out.join("r.json"));
        std::fs::write(&weights, b"weights").unwrap();
        std::fs::write(&results, b"results").unwrap();
        finish_stage(
            &out,
            "s",
            std::slice::from_ref(&weights),
            &[results],
            Instant::now(),
        )
        .unwrap();
        assert!(stage_done(&out, "s"));

        // The copy's manifest names its own files: losing one there reruns the stage there.
        let copy = root.path().join("copy");
        std::fs::create_dir_all(copy.join("stages")).unwrap();
        for f in ["w.safetensors", "r.json", "stages/s.json"] {
            std::fs::copy(out.join(f), copy.join(f)).unwrap();
        }
        assert!(stage_done(&copy, "s"));
        std::fs::remove_file(copy.join("r.json")).unwrap();
        assert!(!stage_done(&copy, "s"));
        assert!(stage_done(&out, "s"));

        // New weights (the network trained again): the ablation's results are stale.
        std::fs::write(&weights, b"retrained").unwrap();
        assert!(!stage_done(&out, "s"));
    }

    #[test]
    fn an_ablation_stage_prints_each_tenth_once() {
        let d = Deciles::new(Instant::now());
        let lines: Vec<String> = (0..=45).filter_map(|done| d.line(done, 45)).collect();
        let heads: Vec<&str> = lines
            .iter()
            .map(|l| l.split(" (").next().unwrap())
            .collect();
        assert_eq!(
            heads,
            (1..10).map(|t| format!("    {t}0 %")).collect::<Vec<_>>()
        );
        assert!(
            lines[0].starts_with("    10 % (5 of 45 chunk evaluations, "),
            "{lines:?}"
        );
        // Chunks report several evaluations at once: a jump past two tenths prints one line.
        let d = Deciles::new(Instant::now());
        assert_eq!(d.line(0, 10), None);
        assert!(d.line(3, 10).unwrap().starts_with("    30 %"));
        assert_eq!(d.line(3, 10), None);
        assert_eq!(d.line(10, 10), None);
        assert_eq!(Deciles::new(Instant::now()).line(0, 0), None);
    }

    #[test]
    fn a_study_folder_refuses_another_profile_or_network() {
        let out = tempfile::tempdir().unwrap();
        let study = |arch: &str, profile: &str| Study {
            arch: arch.into(),
            profile: profile.into(),
        };
        // A folder without a record is free; checking does not write one.
        assert_eq!(
            check_study(out.path(), &study("resnet20", "smoke")).unwrap(),
            None
        );
        assert!(!out.path().join("study.json").exists());
        record_study(out.path(), &study("resnet20", "smoke")).unwrap();
        assert_eq!(
            check_study(out.path(), &study("resnet20", "smoke")).unwrap(),
            Some("resnet20".into())
        );
        for other in [study("resnet20", "quick"), study("resnet56", "smoke")] {
            let err = check_study(out.path(), &other).unwrap_err().to_string();
            assert!(
                err.contains("--arch resnet20 --profile smoke") && err.contains("its own --out"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_alias_is_the_same_study() {
        assert_eq!(canonical_arch("resnet20-a").unwrap(), "resnet20");
        assert_eq!(canonical_arch("resnet20-b").unwrap(), "resnet20-b");
        assert!(canonical_arch("resnet99")
            .unwrap_err()
            .to_string()
            .contains("--arch resnet99"));
        // A record written under the alias (before reproduce took the one name) still matches.
        let out = tempfile::tempdir().unwrap();
        let study = |arch: &str| Study {
            arch: arch.into(),
            profile: "smoke".into(),
        };
        record_study(out.path(), &study("resnet20-a")).unwrap();
        assert_eq!(
            check_study(out.path(), &study("resnet20")).unwrap(),
            Some("resnet20-a".into())
        );
        // Option B shortcuts are another network.
        assert!(check_study(out.path(), &study("resnet20-b")).is_err());
    }
}
