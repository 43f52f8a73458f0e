//! What the command line promises around the work itself (docs/architecture.md, "Exit codes"):
//! 2 for usage mistakes, also those clap cannot see; a quiet exit 0 when the reader of stdout
//! goes away; result folders made before a sweep is written into them; a report that names
//! the commit the binary was built from and when it was made.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::real_data;

use layerzero_models::{create_model, save_safetensors, ModelConfig, WeightsMetadata};

fn layerzero() -> Command {
    Command::new(env!("CARGO_BIN_EXE_layerzero"))
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `dir/w.safetensors`: an untrained ResNet-8 (seed `seed`), saved as `layerzero train` would.
fn random_resnet8(dir: &Path, seed: u64) -> PathBuf {
    let weights = dir.join("w.safetensors");
    let net = create_model("resnet8", &ModelConfig::new(10).with_seed(seed)).unwrap();
    save_safetensors(
        net.as_ref(),
        &weights,
        &WeightsMetadata::for_network(net.as_ref()),
    )
    .unwrap();
    weights
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn usage_mistakes_exit_2_and_say_what_was_expected() {
    let dir = tmp("usage");
    let w = dir.join("w.safetensors");
    let w = w.to_str().unwrap();
    for (args, named) in [
        // Checked by hand after parsing (ablate merge shares the command).
        (vec!["ablate", "--out", "r.json"], "--weights is required"),
        // Greedy steps build on each other.
        (
            vec![
                "ablate",
                "--weights",
                w,
                "--mode",
                "cumulative-zero-kernel",
                "--shard",
                "0/2",
            ],
            "cannot be sharded",
        ),
        (
            vec!["ablate", "--weights", w, "--mode", "reinit"],
            "--init-weights is required",
        ),
        // Only a greedy path is chosen on some images and measured on others.
        (
            vec!["ablate", "--weights", w, "--selection-images", "5000"],
            "--selection-images: zero-kernel chooses no path",
        ),
        (
            vec!["ablate", "--weights", w, "--init-weights", w],
            "--init-weights: zero-kernel restores no epoch-0 weights",
        ),
        // Values clap cannot check, named before any file is read.
        (
            vec![
                "ablate",
                "--weights",
                w,
                "--mode",
                "zero-filters",
                "--levels",
                "0.5,0.5",
            ],
            "--levels: ",
        ),
        // A flag the mode does not use.
        (
            vec!["ablate", "--weights", w, "--seed", "3"],
            "--seed: zero-kernel draws nothing; it is rerandomize's seed. The seed the weights \
             were trained with is --train-seed",
        ),
        (
            vec!["ablate", "--weights", w, "--levels", "0.5"],
            "--levels: zero-kernel sweeps no level",
        ),
        (
            vec!["ablate", "--weights", w, "--max-steps", "3"],
            "--max-steps: zero-kernel takes no greedy steps",
        ),
        (
            vec!["ablate", "--weights", w, "--max-abs-delta", "2"],
            "max_abs_delta",
        ),
        (
            vec!["ablate", "--weights", w, "--max-abs-delta", "-0.1"],
            "max_abs_delta",
        ),
        (
            vec!["ablate", "--weights", w, "--min-p", "1.5"],
            "min_mcnemar_p",
        ),
        (vec!["models", "--num-classes", "0"], "from 1 to 100000"),
        (
            vec!["data", "fetch", "--dir", "/nonexistent", "--sha256", "abc"],
            "--sha256",
        ),
        // Every network is built: 20,000,000 classes aborted on an allocation.
        (
            vec!["models", "--num-classes", "20000000"],
            "from 1 to 100000",
        ),
        (vec!["eval", "--weights", w, "--device", "gpu"], "gpu"),
        (vec!["eval", "--weights", w, "--batch-size", "0"], "≥ 1"),
        (vec!["eval", "--weights", w, "--threads", "0"], "≥ 1"),
        (
            vec![
                "report",
                "--results",
                w,
                "--metrics",
                "resnet20",
                "--out",
                "r",
            ],
            "ARCH:SEED:PATH",
        ),
        (
            vec![
                "report",
                "--results",
                w,
                "--metrics",
                "resnet20:x:m.jsonl",
                "--out",
                "r",
            ],
            "found \"x\"",
        ),
    ] {
        let o = layerzero().args(&args).current_dir(&dir).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: expected {named:?} in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A failure at run time is not a usage mistake.
    let o = layerzero()
        .args(["eval", "--device", "cpu", "--weights", w])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    for args in [vec!["models"], vec!["models", "--json"]] {
        let mut child = layerzero()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the pipe's only reader before the first line is written, as `| head -0`
        // would: every write then fails with EPIPE.
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{args:?}: {status}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn ablate_makes_the_folder_of_out_and_report_records_commit_and_time() {
    let Some(data) = real_data() else { return };
    let dir = tmp("out-folder");
    let weights = random_resnet8(&dir, 3);
    let results = dir.join("not/yet/there/zk.json");
    let o = layerzero()
        .args(["ablate", "--device", "cpu", "--threads", "1"])
        .args(["--layers", "fc", "--limit", "50"])
        .arg("--weights")
        .arg(&weights)
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(&results)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(results.exists() && results.with_extension("csv").exists());

    // The report is made in a scratch git repository: the commit it records must still be
    // the one layerzero was built from, not the scratch repository's.
    let report = dir.join("report");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&dir)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let in_scratch_repo = git(&["init", "-q"])
        && git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "scratch",
        ]);
    let o = layerzero()
        .args(["report", "--results"])
        .arg(&results)
        .arg("--out")
        .arg(&report)
        .current_dir(&dir)
        .env("SOURCE_DATE_EPOCH", "1798343812")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("Generated 2026-12-27T03:56:52Z by"), "{md}");
    // The ablation's command line comes before the report's.
    let ablate_at = md.find(" ablate --device cpu --threads 1 --layers fc --limit 50 --weights ");
    let report_at = md.find(" report --results ");
    assert!(ablate_at.is_some() && ablate_at < report_at, "{md}");
    match option_env!("LAYERZERO_GIT_COMMIT") {
        // Built from a git checkout (the build script sets this for the binary too).
        Some(built) => assert!(md.contains(&format!("git commit {built}")), "{md}"),
        None => assert!(md.contains("git commit unknown"), "{md}"),
    }
    if in_scratch_repo {
        let scratch = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let scratch = String::from_utf8_lossy(&scratch.stdout).trim().to_string();
        assert!(
            !md.contains(&scratch),
            "the scratch repo's {scratch} in {md}"
        );
    }
    // A malformed SOURCE_DATE_EPOCH is a usage mistake, named.
    let o = layerzero()
        .args(["report", "--results"])
        .arg(&results)
        .arg("--out")
        .arg(&report)
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("SOURCE_DATE_EPOCH"), "{}", stderr(&o));
}

#[test]
fn a_held_out_cumulative_run_says_where_its_path_was_chosen() {
    let Some(data) = real_data() else { return };
    let dir = tmp("held-out");
    let weights = random_resnet8(&dir, 5);
    let ablate = |selection: &str| {
        layerzero()
            .args([
                "ablate",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--limit",
                "50",
            ])
            .args(["--mode", "cumulative-skip-branch", "--max-steps", "2"])
            .args(["--train-seed", "5"])
            .args(["--selection-images", selection])
            .arg("--weights")
            .arg(&weights)
            .arg("--data-dir")
            .arg(&data)
            .arg("--out")
            .arg(dir.join("cum.json"))
            .output()
            .unwrap()
    };
    let o = ablate("20");
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(
            "cumulative-skip-branch on 30 images (the path chosen on the 20 before them)"
        ),
        "{stdout}"
    );
    // Few held-out images: said before the run, not only in the report afterwards.
    assert!(
        stderr(&o).contains(
            "note: the path will be chosen on 20 images and measured on the other 30; the \
             report cautions"
        ),
        "{}",
        stderr(&o)
    );
    let r = layerzero_ablate::ResultsFile::read(dir.join("cum.json")).unwrap();
    assert_eq!((r.n_images, r.selection_images), (30, Some(20)));
    assert_eq!((r.train_seed, r.seed), (Some(5), None));
    // The command line is kept, with what the file has no field for (--limit).
    let command = r.command.as_deref().unwrap();
    assert!(
        command.ends_with("cum.json")
            && command.contains(
                " ablate --device cpu --threads 1 --limit 50 --mode cumulative-skip-branch"
            ),
        "{command}"
    );
    assert_eq!(r.layers.len(), 2);
    // None left to measure on: a mistake in the command line, named before any work.
    let o = ablate("50");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "--selection-images 50: must be fewer than the 50 test images (after --limit)"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn reinit_from_the_evaluated_weights_is_a_usage_mistake() {
    let dir = tmp("reinit-same");
    let weights = random_resnet8(&dir, 2);
    let o = layerzero()
        .args([
            "ablate",
            "--device",
            "cpu",
            "--mode",
            "reinit",
            "--data-dir",
            "nowhere",
        ])
        .arg("--weights")
        .arg(&weights)
        .arg("--init-weights")
        .arg(&weights)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has the same contents (SHA-256) as --weights"),
        "{}",
        stderr(&o)
    );
}

/// `inspect` builds its layer table from the header's architecture and class count, which a
/// file may claim freely: a class count the file cannot hold is not built (it aborted on an
/// allocation of 100,000,000,000 outputs), and a table whose network is not the file's tensors
/// is not shown (a ResNet-8's tensors labelled `wrn28-10` printed WRN-28-10's table).
#[test]
fn inspect_checks_the_header_against_the_tensors_before_showing_a_layer_table() {
    let dir = tmp("inspect-claims");
    let net = create_model("resnet8", &ModelConfig::new(10)).unwrap();
    for (name, arch, classes, said) in [
        (
            "huge.safetensors",
            "resnet8",
            100_000_000_000usize,
            "`layerzero.num_classes` = 100000000000 cannot be right",
        ),
        (
            "relabelled.safetensors",
            "wrn28-10",
            10,
            "the file's tensors are not the `wrn28-10` its header names",
        ),
    ] {
        let w = dir.join(name);
        let meta = WeightsMetadata {
            arch: Some(arch.into()),
            num_classes: Some(classes),
            ..WeightsMetadata::for_network(net.as_ref())
        };
        save_safetensors(net.as_ref(), &w, &meta).unwrap();
        let o = layerzero().arg("inspect").arg(&w).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(said), "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no layer table"),
            "{name}: {}",
            stderr(&o)
        );
        assert!(
            out.contains("layer1.0.conv1.weight") && !out.contains("channel-changing"),
            "{name}: {out}"
        );
    }
    // The file's own header: the table, checked.
    let w = random_resnet8(&dir, 3);
    let o = layerzero().arg("inspect").arg(&w).output().unwrap();
    assert!(
        o.status.success() && stderr(&o).is_empty(),
        "{}",
        stderr(&o)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("channel-changing"));
}

/// A file of an architecture the binary does not have (a user's own, registered in their
/// program) is still inspected: its metadata and tensors, with a note that there is no layer
/// table. Before, `inspect` failed with "unknown architecture" and showed nothing.
#[test]
fn inspect_shows_the_tensors_of_an_architecture_it_does_not_know() {
    let dir = tmp("inspect-own-arch");
    let w = dir.join("own.safetensors");
    let net = create_model("resnet8", &ModelConfig::new(10)).unwrap();
    let meta = WeightsMetadata {
        arch: Some("projnet3".into()),
        num_classes: Some(10),
        ..WeightsMetadata::default()
    };
    save_safetensors(net.as_ref(), &w, &meta).unwrap();
    for json in [false, true] {
        let mut cmd = layerzero();
        cmd.arg("inspect").arg(&w);
        if json {
            cmd.arg("--json");
        }
        let o = cmd.output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "json {json}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("`projnet3` is not built into this binary"),
            "{}",
            stderr(&o)
        );
        assert!(
            out.contains("projnet3") && out.contains("layer1.0.conv1.weight"),
            "{out}"
        );
        if json {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert!(
                v["layers"].is_null(),
                "no layer table, not an empty one: {out}"
            );
        }
    }
}
