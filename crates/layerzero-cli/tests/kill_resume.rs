//! `layerzero train` killed with SIGKILL mid-run resumes with `--resume` and finishes with the
//! same weights as an uninterrupted run. Needs the real data set (`LAYERZERO_CIFAR10_ARCHIVE`);
//! skipped with the reason printed otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use layerzero_data::{fetch, Dataset, Location, Source};

fn data_dir() -> Option<PathBuf> {
    let archive = match std::env::var_os("LAYERZERO_CIFAR10_ARCHIVE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            eprintln!("skipped: set LAYERZERO_CIFAR10_ARCHIVE to a CIFAR-10 binary .tar.gz");
            return None;
        }
    };
    let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cifar10");
    let src = Source::new(Dataset::Cifar10).with_location(Location::Archive(archive));
    Some(fetch(&dest, &src).unwrap().dir().to_path_buf())
}

fn train(data: &Path, out: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layerzero"));
    cmd.args([
        "train",
        "--arch",
        "resnet8",
        "--profile",
        "smoke",
        "--epochs",
        "3",
    ])
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

#[test]
fn killed_training_resumes_to_the_same_weights() {
    let Some(data) = data_dir() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let straight = root.path().join("straight");
    assert!(train(&data, &straight, false).status().unwrap().success());

    let killed = root.path().join("killed");
    let mut child = train(&data, &killed, false).spawn().unwrap();
    // Kill once the first epoch's checkpoint exists: the run is then mid-way through epoch 2.
    let first = killed.join("checkpoints").join("epoch-001.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !first.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(first.exists(), "no checkpoint after 300 s");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("weights.safetensors").exists());

    assert!(train(&data, &killed, true).status().unwrap().success());
    assert_eq!(
        std::fs::read(straight.join("weights.safetensors")).unwrap(),
        std::fs::read(killed.join("weights.safetensors")).unwrap(),
        "resumed weights differ from the uninterrupted run"
    );
    let lines = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
}
