//! A full disk while writing a checkpoint, the final weights or a run file: the write fails
//! with an error naming the file, the previous good file is intact, and no temporary file is
//! left behind. The one file appended to, `metrics.jsonl`, is the exception: a full disk during
//! an epoch's append leaves a torn last line, which a resume drops before retraining the epoch.
//!
//! The full disk is simulated with `RLIMIT_FSIZE` in a child process (this test binary run
//! again, with `SIGXFSZ` ignored so an oversized write fails with `EFBIG` instead of killing
//! the process). The child is the `#[ignore]`d `child_*` test of the same name.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use layerzero_models::{
    create_model, read_safetensors, save_safetensors, ModelConfig, WeightsMetadata,
};
use layerzero_train::{
    write_atomic, Checkpoint, CheckpointMeta, LrSchedule, Profile, RunDir, TrainConfig,
};

use layerzero_testkit::disk_full::{child_dir, listing, run_limited};

mod common;
use common::{
    assert_same_metrics, assert_same_state, net, resuming, state_bytes, stop_after, Setup,
};

fn checkpoint(value: f32) -> Checkpoint {
    let t = (Tensor::ones((64, 16, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap()
        * value as f64)
        .unwrap();
    Checkpoint {
        meta: CheckpointMeta {
            format: 1,
            epoch: value as usize,
            step: 10,
            seed: 1,
            arch: "resnet8".into(),
            config: serde_json::json!({}),
        },
        model: BTreeMap::from([("conv1.weight".to_string(), t.clone())]),
        momentum: BTreeMap::from([("conv1.weight".to_string(), t)]),
    }
}

#[test]
#[ignore = "child of checkpoint_write_on_a_full_disk_keeps_the_previous_file"]
fn child_checkpoint() {
    let err = checkpoint(2.0)
        .save(&child_dir().join("epoch-002.safetensors"))
        .unwrap_err();
    println!("error: {err}");
}

#[test]
fn checkpoint_write_on_a_full_disk_keeps_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epoch-002.safetensors");
    checkpoint(1.0).save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let out = run_limited("child_checkpoint", dir.path(), good.len() as u64 / 2);
    assert!(
        out.contains("error: ") && out.contains("epoch-002.safetensors"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the previous checkpoint changed"
    );
    assert_eq!(Checkpoint::load(&path, &Device::Cpu).unwrap().meta.epoch, 1);
    assert_eq!(
        listing(dir.path()),
        ["epoch-002.safetensors"],
        "temporary file left"
    );
}

#[test]
#[ignore = "child of weights_write_on_a_full_disk_keeps_the_previous_file"]
fn child_weights() {
    let net = create_model("resnet8", &ModelConfig::new(10).with_seed(2)).unwrap();
    let meta = WeightsMetadata::for_network(net.as_ref());
    let err = save_safetensors(
        net.as_ref(),
        &child_dir().join("weights.safetensors"),
        &meta,
    )
    .unwrap_err();
    println!("error: {err}");
}

#[test]
fn weights_write_on_a_full_disk_keeps_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    let net = create_model("resnet8", &ModelConfig::new(10).with_seed(1)).unwrap();
    save_safetensors(
        net.as_ref(),
        &path,
        &WeightsMetadata::for_network(net.as_ref()),
    )
    .unwrap();
    let good = std::fs::read(&path).unwrap();
    let out = run_limited("child_weights", dir.path(), good.len() as u64 / 2);
    assert!(
        out.contains("error: ") && out.contains("weights.safetensors"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the previous weights changed"
    );
    read_safetensors(&path).unwrap();
    assert_eq!(
        listing(dir.path()),
        ["weights.safetensors"],
        "temporary file left"
    );
}

#[test]
#[ignore = "child of run_file_write_on_a_full_disk_keeps_the_previous_file"]
fn child_run_file() {
    let err = write_atomic(&child_dir().join("config.json"), &[b'x'; 4096]).unwrap_err();
    println!("error: {err}");
}

/// `config.json` (and `metrics.jsonl` when a resume rewrites it) goes through `write_atomic`.
#[test]
fn run_file_write_on_a_full_disk_keeps_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    write_atomic(&path, b"{\"epochs\":1}\n").unwrap();
    let out = run_limited("child_run_file", dir.path(), 1024);
    assert!(
        out.contains("error: ") && out.contains("config.json"),
        "{out}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"epochs\":1}\n");
    assert_eq!(listing(dir.path()), ["config.json"], "temporary file left");
}

/// A 2-epoch run of ResNet-8 on 64 synthetic images, the same in the parent and the child.
fn tiny_run() -> Setup {
    let mut c = TrainConfig::from_profile(Profile::Smoke, "resnet8", 3);
    c.epochs = 2;
    c.batch_size = 32;
    c.train_limit = Some(64);
    c.test_limit = None;
    c.schedule = LrSchedule::one_cycle(0.1, 2 * 2, 0.3);
    Setup::synthetic(64, 32, c)
}

#[test]
#[ignore = "child of metrics_append_on_a_full_disk_leaves_a_torn_line_that_resume_drops"]
fn child_metrics_append() {
    // The resume rewrites metrics.jsonl as it is (within the limit), trains epoch 2, and its
    // append of epoch 2's line crosses the limit.
    let err = tiny_run()
        .train(net(8).as_ref(), &child_dir(), &resuming())
        .unwrap_err();
    println!("error: {err}");
}

/// The append of an epoch's metrics line is the one write that is not atomic: a full disk cuts
/// it short, leaving the line without its newline (and no checkpoint of the epoch, which is
/// written after the line). A resume drops the torn line, retrains the epoch and ends where an
/// uninterrupted run does.
#[test]
fn metrics_append_on_a_full_disk_leaves_a_torn_line_that_resume_drops() {
    let setup = tiny_run();
    let straight = net(8);
    let (_dir, a) = setup.run_to_end(straight.as_ref());

    let dir = tempfile::tempdir().unwrap();
    setup
        .train(net(8).as_ref(), dir.path(), &stop_after(1))
        .unwrap();
    let run = RunDir::new(dir.path());
    let first_line = std::fs::read(run.metrics()).unwrap();
    assert_eq!(first_line.iter().filter(|&&b| b == b'\n').count(), 1);
    // Room for the first line and a few bytes of the second.
    let out = run_limited(
        "child_metrics_append",
        dir.path(),
        first_line.len() as u64 + 20,
    );
    assert!(
        out.contains("error: ") && out.contains("metrics.jsonl"),
        "{out}"
    );
    let torn = std::fs::read(run.metrics()).unwrap();
    assert!(
        torn.len() > first_line.len() && torn.starts_with(&first_line) && !torn.ends_with(b"\n"),
        "expected the first line and a torn second one, found {:?}",
        String::from_utf8_lossy(&torn)
    );
    assert_eq!(run.checkpoint_epochs(), [0, 1], "epoch 2 was checkpointed");
    assert!(
        !listing(dir.path()).iter().any(|n| n.contains(".tmp")),
        "temporary file left: {:?}",
        listing(dir.path())
    );

    let resumed = net(99);
    let b = setup
        .train(resumed.as_ref(), dir.path(), &resuming())
        .unwrap();
    assert!(b.finished);
    assert_eq!(b.metrics.len(), 2);
    let text = std::fs::read_to_string(run.metrics()).unwrap();
    assert!(
        text.starts_with(std::str::from_utf8(&first_line).unwrap())
            && text.ends_with('\n')
            && text.lines().count() == 2,
        "{text}"
    );
    assert_same_metrics(&a.metrics, &b.metrics, "resumed after a torn line");
    assert_same_state(
        &state_bytes(straight.as_ref()),
        &state_bytes(resumed.as_ref()),
        "resumed after a torn line against uninterrupted",
    );
}
