//! `cargo xtask reproduce --profile smoke` killed with SIGKILL at several moments — random ones,
//! during checkpoint writes of both training stages, right after a training and an ablation
//! stage finish, during a results write — and re-run
//! until it completes gives the same weights, results and claims as an uninterrupted run.
//! After every kill, each stage manifest and results file present must be complete.
//!
//! The random moments come from `LAYERZERO_KILL_SEED` (default: the clock), printed so a failure
//! can be replayed. Needs the real data set (`LAYERZERO_CIFAR10_ARCHIVE`); skipped with the
//! reason printed otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use layerzero_testkit::kill::{kill_at, KillPoint, Killed, Moments};

/// How long a kill point may take to come before the test gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(900);

fn reproduce(archive: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["reproduce", "--profile", "smoke", "--arch", "resnet8"])
        .args(["--seeds", "1", "--device", "cpu"])
        .arg("--data-dir")
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("cifar10"))
        .arg("--archive")
        .arg(archive)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Every stage manifest and results file a killed run left is complete.
fn check_leftovers(out: &Path, point: &KillPoint) {
    for e in std::fs::read_dir(out.join("stages"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".json") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|err| panic!("{name} after kill at {point:?}: {err}"));
        }
    }
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("ablate-") && name.ends_with(".json") {
            layerzero_ablate::ResultsFile::read(e.path())
                .unwrap_or_else(|err| panic!("after kill at {point:?}: {err}"));
        }
    }
}

/// A results file without what legitimately differs between two runs in two folders.
fn results_sans_run(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("elapsed_s");
    o.remove("threads");
    // The command line names each run's own --out.
    o.remove("command");
    o["weights"].as_object_mut().unwrap().remove("path");
    v
}

#[test]
fn killed_reproduce_reruns_to_the_same_outputs() {
    let archive = match std::env::var_os("LAYERZERO_CIFAR10_ARCHIVE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            eprintln!("skipped: set LAYERZERO_CIFAR10_ARCHIVE to a CIFAR-10 binary .tar.gz");
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let straight = root.path().join("straight");
    let started = Instant::now();
    assert!(reproduce(&archive, &straight).status().unwrap().success());
    let span = started.elapsed();

    let out = root.path().join("killed");
    let mut moments = Moments::from_env();
    let points = [
        KillPoint::After(moments.within(span, 0.0, 0.3)),
        KillPoint::DuringWrite(out.join("train-resnet8-s0").join("checkpoints")),
        KillPoint::OnceExists(out.join("stages").join("train-resnet8-s0.json")),
        KillPoint::DuringWrite(out.join("train-plain8-s0").join("checkpoints")),
        KillPoint::OnceExists(
            out.join("stages")
                .join("ablate-resnet8-s0-zero-kernel.json"),
        ),
        // Each re-run skips the finished stages, so what is left is short.
        KillPoint::After(moments.within(span, 0.0, 0.15)),
        // Results files are small and written fast: this one may be missed.
        KillPoint::DuringWrite(out.clone()),
    ];
    let mut kills = Vec::new();
    for point in &points {
        if kill_at(
            reproduce(&archive, &out).spawn().unwrap(),
            point,
            GIVE_UP_AFTER,
        ) == Killed::Yes
        {
            check_leftovers(&out, point);
            kills.push(format!("{point:?}"));
        } else {
            eprintln!("reproduce finished before {point:?}");
        }
    }
    eprintln!(
        "cargo xtask reproduce: killed at {} points: {kills:#?}",
        kills.len()
    );
    assert!(kills.len() >= 4, "too few kills landed: {kills:?}");
    assert!(reproduce(&archive, &out).status().unwrap().success());

    for stage in ["train-resnet8-s0", "train-plain8-s0"] {
        for file in ["weights.safetensors", "init.safetensors"] {
            assert_eq!(
                std::fs::read(straight.join(stage).join(file)).unwrap(),
                std::fs::read(out.join(stage).join(file)).unwrap(),
                "{stage}/{file} differs from the uninterrupted run"
            );
        }
    }
    for results in [
        "ablate-resnet8-s0-zero-kernel.json",
        "ablate-resnet8-s0-skip-branch.json",
        "ablate-resnet8-s0-cumulative-skip-branch.json",
        "ablate-plain8-s0-zero-kernel.json",
    ] {
        assert_eq!(
            results_sans_run(&out.join(results)),
            results_sans_run(&straight.join(results)),
            "{results}"
        );
    }
    // The claims name their source files, which live in each run's own folder.
    let claims = |dir: &Path| {
        let text = std::fs::read_to_string(dir.join("report").join("summary.json")).unwrap();
        let text = text.replace(&dir.display().to_string(), "<out>");
        let s: serde_json::Value = serde_json::from_str(&text).unwrap();
        s["claims"].clone()
    };
    assert_eq!(claims(&out), claims(&straight));
}
