//! `layerzero train` and `layerzero ablate` killed with SIGKILL at several moments — random
//! ones, one while a checkpoint is being written, one right after a checkpoint appears — finish
//! (after `--resume`, or a plain re-run for `ablate`) with exactly the outputs of an
//! uninterrupted run. After every kill, every file the run left must be complete: each
//! checkpoint verifies, `init.safetensors` and `results.json` parse, and there is no final
//! `weights.safetensors` unless the last epoch's checkpoint is there (a kill just before exit).
//!
//! The random moments come from `LAYERZERO_KILL_SEED` (default: the clock), printed so a failure
//! can be replayed. Needs the real data set (`LAYERZERO_CIFAR10_ARCHIVE`); skipped with the
//! reason printed otherwise.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use layerzero_ablate::ResultsFile;
use layerzero_testkit::kill::{kill_at, KillPoint, Killed, Moments};
use layerzero_train::Checkpoint;

/// How long a kill point may take to come before the test gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

const EPOCHS: usize = 3;

fn train(data: &Path, out: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layerzero"));
    cmd.args(["train", "--arch", "resnet8", "--profile", "smoke"])
        .args(["--epochs", &EPOCHS.to_string()])
        .args(["--device", "cpu", "--seed", "4"])
        .arg("--data-dir")
        .arg(data)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

fn ablate(data: &Path, weights: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layerzero"));
    cmd.args(["ablate", "--mode", "zero-kernel", "--limit", "500"])
        .args(["--device", "cpu"])
        .arg("--weights")
        .arg(weights)
        .arg("--data-dir")
        .arg(data)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Whatever a killed training run left behind is complete: every checkpoint verifies,
/// `init.safetensors` (if there) reads, and final weights exist only after the last checkpoint.
fn check_train_leftovers(run: &Path, point: &KillPoint) {
    for e in std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("epoch-") && name.ends_with(".safetensors") {
            if let Err(err) = Checkpoint::load(&p, &Device::Cpu) {
                panic!("after kill at {point:?}: {err}");
            }
        }
    }
    let init = run.join("init.safetensors");
    if init.exists() {
        layerzero_models::read_safetensors(&init)
            .unwrap_or_else(|e| panic!("after kill at {point:?}: {e}"));
    }
    // The trainer writes the final weights only after the last epoch's checkpoint. A kill in
    // the moment between that write and the process's exit finds a finished run (seen in CI
    // with a random moment): the weights may be there then, and must be whole.
    let weights = run.join("weights.safetensors");
    if weights.exists() {
        let last = format!("epoch-{EPOCHS:03}.safetensors");
        assert!(
            run.join("checkpoints").join(&last).exists(),
            "final weights written before the run finished (no {last}; {point:?})"
        );
        layerzero_models::read_safetensors(&weights)
            .unwrap_or_else(|e| panic!("after kill at {point:?}: {e}"));
    }
}

/// The metrics lines without their timing fields, which differ between runs.
fn metrics_sans_timing(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("wall_s");
            o.remove("images_per_s");
            v
        })
        .collect()
}

/// `results.json` without `elapsed_s` and `threads`, which differ between runs.
fn results_sans_timing(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("elapsed_s");
    o.remove("threads");
    // The command line names each run's own --out.
    o.remove("command");
    v
}

#[test]
fn killed_training_and_ablation_resume_to_the_same_outputs() {
    let Some(data) = common::real_data() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let straight = root.path().join("straight");
    let started = Instant::now();
    assert!(train(&data, &straight, false).status().unwrap().success());
    let span = started.elapsed();

    // ---- layerzero train: a chain of kills in one run directory, then a final resume.
    let killed = root.path().join("killed");
    let ckpts = killed.join("checkpoints");
    let mut moments = Moments::from_env();
    // Random moments are fractions of the uninterrupted run's time, and each resume has less
    // work left than the run before it: the random ones come first, while nearly all the work
    // remains (a kill at ≤ 15 % leaves ≥ 85 %), so that they land even when this run is slower or
    // faster than the measured one; the event-driven points after them land whatever the timing,
    // since each waits for a write that the remaining work must still make.
    let points = [
        // While it loads data or writes the epoch-0 checkpoint and init weights.
        KillPoint::After(moments.within(span, 0.0, 0.15)),
        KillPoint::After(moments.within(span, 0.1, 0.5)),
        KillPoint::DuringWrite(ckpts.clone()),
        KillPoint::OnceExists(ckpts.join("epoch-002.safetensors")),
        KillPoint::DuringWrite(ckpts.clone()),
        // Lands only if the last epoch is still running: a bonus, not counted on.
        KillPoint::After(moments.within(span, 0.0, 0.3)),
    ];
    let mut killed_at = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let child = train(&data, &killed, i > 0).spawn().unwrap();
        match kill_at(child, point, GIVE_UP_AFTER) {
            Killed::Yes => {
                check_train_leftovers(&killed, point);
                killed_at.push(format!("{point:?}"));
            }
            Killed::FinishedFirst => {
                eprintln!("train finished before {point:?}");
                break;
            }
        }
    }
    eprintln!(
        "layerzero train: killed at {} points: {killed_at:#?}",
        killed_at.len()
    );
    assert!(killed_at.len() >= 3, "too few kills landed: {killed_at:?}");
    assert!(train(&data, &killed, true).status().unwrap().success());
    for file in ["weights.safetensors", "init.safetensors"] {
        assert_eq!(
            std::fs::read(straight.join(file)).unwrap(),
            std::fs::read(killed.join(file)).unwrap(),
            "{file} of the killed and resumed run differs from the uninterrupted run"
        );
    }
    assert_eq!(metrics_sans_timing(&killed), metrics_sans_timing(&straight));
    assert_eq!(metrics_sans_timing(&killed).len(), EPOCHS);

    // ---- layerzero ablate: killed runs leave no partial results.json; a re-run completes it.
    let weights = straight.join("weights.safetensors");
    let reference = root.path().join("reference.json");
    let started = Instant::now();
    assert!(ablate(&data, &weights, &reference)
        .status()
        .unwrap()
        .success());
    let span = started.elapsed();
    let out_dir = root.path().join("ablate");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("results.json");
    let points = [
        KillPoint::After(moments.within(span, 0.0, 0.5)),
        KillPoint::After(moments.within(span, 0.3, 1.0)),
        KillPoint::DuringWrite(out_dir.clone()),
    ];
    let mut ablate_kills = 0;
    for point in &points {
        let child = ablate(&data, &weights, &out).spawn().unwrap();
        match kill_at(child, point, GIVE_UP_AFTER) {
            Killed::Yes => ablate_kills += 1,
            Killed::FinishedFirst => eprintln!("ablate finished before {point:?}"),
        }
        if out.exists() {
            ResultsFile::read(&out).unwrap_or_else(|e| panic!("after kill at {point:?}: {e}"));
        }
    }
    eprintln!(
        "layerzero ablate: killed at {ablate_kills} of {} points",
        points.len()
    );
    assert!(ablate(&data, &weights, &out).status().unwrap().success());
    assert_eq!(results_sans_timing(&out), results_sans_timing(&reference));
}
