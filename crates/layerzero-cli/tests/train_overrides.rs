//! `layerzero train --batch-size/--lr/--label-smoothing/--momentum/--weight-decay/--flip/
//! --progressive-resize/--ghost-batches/--readback-steps` (and the `--nesterov`,
//! `--no-decay-on-norm-and-bias` switches): bad values are refused before any data is read,
//! naming the option and the value; good ones land in the run's `config.json`, with a one-cycle
//! schedule stretched to the new number of steps.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::real_data;

fn layerzero() -> Command {
    Command::new(env!("CARGO_BIN_EXE_layerzero"))
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `layerzero train --profile PROFILE ARGS` with no data and `--out out`: what a mistake in
/// the options gives, which must come before anything is read.
fn train_without_data(profile: &str, args: &[&str], out: &Path) -> std::process::Output {
    layerzero()
        .args(["train", "--profile", profile, "--device", "cpu"])
        .args(args)
        .args(["--data-dir", "/nonexistent"])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn bad_overrides_are_refused_naming_the_option() {
    let out = tmp("overrides-bad");
    for (flag, value, named) in [
        ("--batch-size", "0", "batch size"),
        ("--lr", "-0.1", "learning rate"),
        ("--lr", "NaN", "learning rate"),
        ("--lr", "inf", "learning rate"),
        ("--epochs", "0", "epochs"),
        ("--label-smoothing", "1.5", "label smoothing"),
        ("--momentum", "1.2", "momentum"),
        ("--weight-decay", "-0.0001", "weight decay"),
        ("--progressive-resize", "18:3", "side"),
        // The smoke profile has one epoch: none would be left at full size.
        ("--progressive-resize", "16:1", "epochs"),
        ("--progressive-resize", "16", "SIDE:EPOCHS"),
        // Their sum wrapped round to 1 (release builds do not check overflow).
        (
            "--progressive-resize",
            "16:18446744073709551615,16:2",
            "epochs",
        ),
        ("--flip", "sideways", "flip"),
        // The smoke profile's batch of 128 does not split into 3 equal parts.
        ("--ghost-batches", "3", "ghost batches"),
        ("--ghost-batches", "0", "ghost batches"),
        ("--readback-steps", "0", "--readback-steps"),
        ("--max-epochs", "0", "--max-epochs"),
    ] {
        // `--flag=value`, so that clap takes "-0.1" as a value rather than an option.
        let o = train_without_data("smoke", &[&format!("{flag}={value}")], &out);
        let err = String::from_utf8_lossy(&o.stderr);
        // A mistake in the command line: exit 2, naming the flag (README).
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(named)
                && err.contains(flag)
                && err.to_lowercase().contains(&value.to_lowercase()),
            "{flag} {value}: the error should name {flag}, {named:?} and the value: {err}"
        );
        assert!(!out.exists(), "{flag} {value} left a run directory");
    }
}

/// A profile default that an override made invalid is named as the profile's, with the flag
/// that overrides it: the user never typed `16:8` or `2`.
#[test]
fn a_profile_default_that_no_longer_fits_names_its_flag() {
    let out = tmp("overrides-profile-default");
    for (args, said) in [
        (
            vec!["--epochs", "3"],
            "the quick profile's progressive resize's epochs no longer fits",
        ),
        (vec!["--epochs", "3"], "--progressive-resize off"),
        (
            vec!["--batch-size", "3"],
            "the quick profile's ghost batches no longer fits",
        ),
        (vec!["--batch-size", "3"], "--ghost-batches 1"),
    ] {
        let o = train_without_data("quick", &args, &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(said), "{args:?}: {err}");
        assert!(!out.exists());
    }
}

#[test]
fn overrides_reach_the_run_config() {
    let Some(data) = real_data() else {
        return;
    };
    let out = tmp("overrides-run");
    let status = layerzero()
        .args(["train", "--arch", "resnet8", "--profile", "smoke"])
        .args(["--device", "cpu", "--batch-size", "64"])
        .args(["--lr", "0.05", "--label-smoothing", "0.1"])
        .args(["--momentum", "0.8", "--weight-decay", "1e-4"])
        .args(["--nesterov", "--no-decay-on-norm-and-bias"])
        .args(["--epochs", "2", "--flip", "alternating"])
        .args(["--progressive-resize", "16:1", "--ghost-batches", "2"])
        // Changes when losses are read, not the weights (tested in layerzero-train).
        .args(["--readback-steps", "5"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["batch_size"], 64);
    assert_eq!(config["label_smoothing"], 0.1);
    assert_eq!(config["schedule"]["max_lr"], 0.05);
    assert_eq!(config["sgd"]["momentum"], 0.8);
    assert_eq!(config["sgd"]["weight_decay"], 1e-4);
    assert_eq!(config["sgd"]["nesterov"], true);
    assert_eq!(config["sgd"]["no_decay_on_norm_and_bias"], true);
    assert_eq!(config["alternating_flip"], true);
    assert_eq!(config["ghost_batches"], 2);
    assert_eq!(
        config["progressive_resize"],
        serde_json::json!({"phases": [{"side": 16, "epochs": 1}]})
    );
    // The smoke profile's 2,048 images in batches of 64, two epochs.
    assert_eq!(config["schedule"]["total_steps"], 2 * 2048 / 64);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["step"], 2048 / 64);
    assert_eq!(lines[0]["image_side"], 16);
    assert_eq!(lines[1]["image_side"], 32);
}

/// The quick profile trains its first epochs at 16×16, which VGG cannot take: refused before
/// training, with the way out named.
#[test]
fn an_architecture_needing_full_size_is_told_to_turn_resizing_off() {
    let Some(data) = real_data() else {
        return;
    };
    let out = tmp("overrides-vgg");
    let o = layerzero()
        .args(["train", "--arch", "vgg16-bn", "--profile", "quick"])
        .args(["--device", "cpu", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("16×16") && err.contains("--progressive-resize off"),
        "{err}"
    );
    assert!(!out.join("config.json").exists(), "nothing written: {err}");
}

/// A run stopped with --max-epochs: its checkpoint can be evaluated (it holds the model's
/// state and, in its own header, the architecture), and the resume says where it continues
/// from. An unknown --arch is a usage mistake.
#[test]
fn a_stopped_run_is_evaluated_from_its_checkpoint_and_resumed_with_a_word() {
    let o = train_without_data(
        "smoke",
        &["--arch", "resnet99x"],
        &tmp("overrides-unknown-arch"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--arch") && err.contains("resnet99x"), "{err}");

    let Some(data) = real_data() else {
        return;
    };
    let out = tmp("overrides-stopped");
    let train = |resume: bool| {
        let mut cmd = layerzero();
        cmd.args(["train", "--arch", "resnet8", "--profile", "smoke"])
            .args(["--device", "cpu", "--epochs", "2", "--max-epochs", "1"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--out")
            .arg(&out);
        if resume {
            cmd.arg("--resume");
        }
        cmd.output().unwrap()
    };
    let o = train(false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let checkpoint = out.join("checkpoints").join("epoch-001.safetensors");
    let eval_file = |file: &Path, arch: Option<&str>| {
        let mut cmd = layerzero();
        cmd.args(["eval", "--device", "cpu", "--limit", "200", "--json"])
            .arg("--weights")
            .arg(file)
            .arg("--data-dir")
            .arg(&data);
        if let Some(a) = arch {
            cmd.args(["--arch", a]);
        }
        cmd.output().unwrap()
    };
    // Epoch 0's checkpoint has no momentum buffers yet: still a checkpoint (by its header).
    let o = eval_file(&out.join("checkpoints").join("epoch-000.safetensors"), None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("after epoch 0 of a `resnet8` run"), "{err}");
    // An alias of the checkpoint's network is that network.
    let o = eval_file(&checkpoint, Some("resnet8-a"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eval = |arch: Option<&str>| eval_file(&checkpoint, arch);
    let o = eval(None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("training checkpoint after epoch 1 of a `resnet8` run"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["n_images"], 200);
    let o = eval(Some("resnet20"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not `resnet20` (--arch)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // inspect reads a checkpoint's architecture from its header: the layer table, checked.
    let o = layerzero()
        .arg("inspect")
        .arg(&checkpoint)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("training checkpoint after epoch 1")
            && text.contains("arch resnet8")
            && text.contains("channel-changing"),
        "{text}"
    );
    let o = train(true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("resuming at epoch 1 of 2 from") && err.contains("epoch-001.safetensors"),
        "{err}"
    );
}
