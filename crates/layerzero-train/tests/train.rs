//! The training loop end to end: overfitting real images, resume equivalence, corrupt
//! checkpoints, run-directory rules.

use std::path::{Path, PathBuf};

use candle_core::Device;
use layerzero_data::{fetch, CifarSet, Dataset, Location, Source, Split};
use layerzero_models::{create_model, ModelConfig, Network};
mod common;
use common::{
    assert_same_metrics, assert_same_state, in_pool, net, resuming, state_bytes, stop_after, Setup,
};
use layerzero_train::{
    LrSchedule, Profile, RunDir, RunOptions, TrainConfig, TrainError, TrainObserver,
};

/// The real CIFAR-10 (extracted once into the target folder), or `None` with the reason printed.
fn real_cifar() -> Option<PathBuf> {
    let archive = match std::env::var_os("LAYERZERO_CIFAR10_ARCHIVE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            eprintln!("skipped: set LAYERZERO_CIFAR10_ARCHIVE to a CIFAR-10 binary .tar.gz");
            return None;
        }
    };
    let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cifar10");
    let src = Source::new(Dataset::Cifar10).with_location(Location::Archive(archive));
    Some(
        fetch(&dest, &src)
            .expect("extracting the archive")
            .dir()
            .to_path_buf(),
    )
}

fn small_config(epochs: usize, images: usize, batch: usize) -> TrainConfig {
    let mut c = TrainConfig::from_profile(Profile::Smoke, "resnet8", 3);
    c.epochs = epochs;
    c.batch_size = batch;
    c.train_limit = Some(images);
    c.test_limit = None;
    c.schedule = LrSchedule::one_cycle(0.1, epochs * (images / batch), 0.3);
    c
}

#[test]
fn overfits_256_real_images() {
    let Some(dir) = real_cifar() else {
        return;
    };
    let train_set = CifarSet::load(&dir, Dataset::Cifar10, Split::Train)
        .unwrap()
        .truncate(256);
    let mut config = small_config(40, 256, 32);
    config.augment = false;
    config.sgd.weight_decay = 0.0;
    config.schedule = LrSchedule::one_cycle(0.05, 40 * 8, 0.2);
    // Evaluate on the same 256 images: the point is memorisation, in eval mode too.
    let setup = Setup {
        test_set: train_set.clone(),
        train_set,
        config,
    };
    let (_dir, outcome) = setup.run_to_end(net(1).as_ref());
    let last = outcome.metrics.last().unwrap();
    assert_eq!(
        last.train_top1, 1.0,
        "train accuracy {} after 40 epochs ({:?})",
        last.train_top1, outcome.metrics
    );
    assert!(
        last.test_top1 >= 0.99,
        "eval-mode accuracy {}",
        last.test_top1
    );
}

#[test]
fn resume_gives_the_same_weights_as_an_uninterrupted_run() {
    let setup = Setup::synthetic(192, 64, small_config(2, 192, 32));

    let straight = net(5);
    let (dir_a, a) = setup.run_to_end(straight.as_ref());

    let dir_b = tempfile::tempdir().unwrap();
    let b1 = setup
        .train(net(5).as_ref(), dir_b.path(), &stop_after(1))
        .unwrap();
    assert!(!b1.finished);
    assert!(!RunDir::new(dir_b.path()).weights().exists());
    // A new process: a fresh network with another initialisation, restored from the checkpoint.
    let resumed = net(99);
    let b2 = setup
        .train(resumed.as_ref(), dir_b.path(), &resuming())
        .unwrap();
    assert!(b2.finished);
    assert_eq!(
        state_bytes(straight.as_ref()),
        state_bytes(resumed.as_ref())
    );
    assert_eq!(a.metrics.len(), 2);
    assert_eq!(b2.metrics.len(), 2);
    assert_eq!(a.metrics[1].test_top1, b2.metrics[1].test_top1);
    assert_eq!(a.metrics[1].train_loss, b2.metrics[1].train_loss);
    // The saved files agree byte for byte too.
    assert_eq!(
        std::fs::read(RunDir::new(dir_a.path()).weights()).unwrap(),
        std::fs::read(RunDir::new(dir_b.path()).weights()).unwrap()
    );
}

/// The kernels split work into counts of tasks that depend only on the shapes, and sum the
/// tasks' partial results in a fixed order, so a run gives the same weights on any number of
/// threads.
#[test]
fn weights_do_not_depend_on_the_thread_count() {
    let setup = Setup::synthetic(96, 32, small_config(1, 96, 32));
    let run = |threads: usize| {
        in_pool(threads, || {
            let network = net(11);
            let (_dir, out) = setup.run_to_end(network.as_ref());
            (state_bytes(network.as_ref()), out.metrics[0].train_loss)
        })
    };
    let (one, loss_one) = run(1);
    for threads in [2, 3] {
        let (many, loss_many) = run(threads);
        assert_eq!(
            loss_one, loss_many,
            "train loss, 1 against {threads} threads"
        );
        assert_same_state(&one, &many, &format!("1 against {threads} threads"));
    }
    // From outside every pool (this test's own thread, like a program's main thread): each
    // step runs on a worker of rayon's global pool (`on_worker_thread`).
    let network = net(11);
    let (_dir, out) = setup.run_to_end(network.as_ref());
    assert_eq!(
        loss_one, out.metrics[0].train_loss,
        "train loss, 1 thread against the global pool"
    );
    assert_same_state(
        &one,
        &state_bytes(network.as_ref()),
        "1 thread against the global pool",
    );
}

/// A run of a 2-epoch configuration on small synthetic data, stopped after its first epoch.
struct OneEpochRun {
    dir: tempfile::TempDir,
    setup: Setup,
}

impl OneEpochRun {
    /// Runs the same configuration again in the same directory (a resume, with `opts`).
    fn again(
        &self,
        net: &dyn Network,
        opts: &RunOptions,
    ) -> Result<layerzero_train::TrainOutcome, TrainError> {
        self.setup.train(net, self.dir.path(), opts)
    }
}

fn one_epoch_of_two(seed: u64) -> OneEpochRun {
    let setup = Setup::synthetic(64, 32, small_config(2, 64, 32));
    let dir = tempfile::tempdir().unwrap();
    let outcome = setup
        .train(net(seed).as_ref(), dir.path(), &stop_after(1))
        .unwrap();
    assert!(!outcome.finished);
    OneEpochRun { dir, setup }
}

/// A crash while appending an epoch's metrics line leaves it without its newline: resume drops
/// that line (the epoch is retrained) instead of refusing the run; a malformed complete line
/// is still an error naming the file and line.
#[test]
fn resume_drops_a_torn_metrics_line_but_refuses_a_malformed_one() {
    let run = one_epoch_of_two(3);
    let metrics = RunDir::new(run.dir.path()).metrics();
    let good = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(good.lines().count(), 1);

    // Torn: the start of a second line, no newline.
    std::fs::write(&metrics, format!("{good}{{\"epoch\":2,\"train_lo")).unwrap();
    let resume = RunOptions {
        max_epochs: Some(0),
        ..resuming()
    };
    let out = run.again(net(3).as_ref(), &resume).unwrap();
    assert_eq!(out.metrics.len(), 1);
    assert_eq!(std::fs::read_to_string(&metrics).unwrap(), good);

    // Malformed but complete: refused, naming the file and the line.
    std::fs::write(&metrics, format!("{good}not json\n")).unwrap();
    let e = run.again(net(3).as_ref(), &resume).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("metrics.jsonl"), "{e}");
}

/// A SIGKILL during an atomic write leaves its temporary (`NAME.tmp-<pid>`) behind; the next
/// run on the directory removes every such file in it and in `checkpoints/`, and nothing else.
#[test]
fn resume_removes_temporaries_a_killed_run_left() {
    let run = one_epoch_of_two(4);
    let root = run.dir.path();
    let checkpoints = root.join("checkpoints");
    let leftovers = [
        checkpoints.join("epoch-002.safetensors.tmp-99999"),
        root.join("weights.safetensors.tmp-12345"),
        root.join("metrics.jsonl.tmp-5583"),
        // The form `save_safetensors` used for its temporaries before `.tmp-<pid>`.
        root.join("init.safetensors.tmp4242"),
    ];
    let kept = [
        root.join("notes.tmp.txt"),
        root.join("keep.tmp-abc"),
        root.join("keep.tmp-12x"),
        root.join("keep.tmp-"),
        root.join("results.json.tmp-1.bak"),
        root.join("notes.tmp123"),
        checkpoints.join("mine.tmp-abc"),
    ];
    for path in leftovers.iter().chain(&kept) {
        std::fs::write(path, b"partial bytes").unwrap();
    }
    // A folder and a symbolic link with a temporary's name are no temporaries: both stay, and
    // the link's target is not touched.
    let folder = root.join("folder.tmp-777");
    std::fs::create_dir(&folder).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target.tmp-888");
    std::fs::write(&target, b"not the run's").unwrap();
    let link = root.join("link.tmp-999");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let out = run.again(net(4).as_ref(), &resuming()).unwrap();
    assert!(out.finished);
    for path in &leftovers {
        assert!(!path.exists(), "{} was left", path.display());
    }
    for path in &kept {
        assert_eq!(
            std::fs::read(path).unwrap(),
            b"partial bytes",
            "{} changed",
            path.display()
        );
    }
    assert!(folder.is_dir());
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"not the run's");
}

/// Records where the observer saw training start and which epochs it saw end.
#[derive(Default)]
struct EpochLog(std::sync::Mutex<(Vec<usize>, Vec<usize>)>);
impl TrainObserver for EpochLog {
    fn start(&self, epoch: usize, _epochs: usize, _steps_per_epoch: usize) {
        self.0.lock().unwrap().0.push(epoch);
    }
    fn epoch(&self, metrics: &layerzero_train::EpochMetrics) {
        self.0.lock().unwrap().1.push(metrics.epoch);
    }
}

/// A resume falls back to the newest checkpoint that verifies: with the newest one's data
/// flipped, it starts from the one before, retrains the epoch, and ends with the weights and
/// metrics of an uninterrupted run.
#[test]
fn resume_falls_back_past_a_corrupt_checkpoint_to_the_same_result() {
    let setup = Setup::synthetic(64, 32, small_config(3, 64, 32));

    let straight = net(6);
    let (dir_a, a) = setup.run_to_end(straight.as_ref());

    let dir_b = tempfile::tempdir().unwrap();
    let b1 = setup
        .train(net(6).as_ref(), dir_b.path(), &stop_after(2))
        .unwrap();
    assert_eq!((b1.epochs_done, b1.finished), (2, false));

    // Flip one byte in the middle of the newest checkpoint's data section.
    let run = RunDir::new(dir_b.path());
    assert_eq!(run.checkpoint_epochs(), [0, 1, 2]);
    let newest = run.checkpoint(2);
    let mut bytes = std::fs::read(&newest).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data_start = 8 + header_len;
    let pos = data_start + (bytes.len() - data_start) / 2;
    bytes[pos] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    assert!(matches!(
        layerzero_train::Checkpoint::load(&newest, &Device::Cpu),
        Err(TrainError::CorruptCheckpoint { .. })
    ));

    // A new process, from another initialisation.
    let resumed = net(77);
    let log = EpochLog::default();
    let b2 = setup
        .train_observed(resumed.as_ref(), dir_b.path(), &resuming(), &log)
        .unwrap();
    assert!(b2.finished);
    let (starts, epochs) = log.0.into_inner().unwrap();
    assert_eq!(
        starts,
        [1],
        "the resume did not start from epoch 1's checkpoint"
    );
    assert_eq!(epochs, [2, 3], "epoch 2 was not retrained");
    assert_same_state(
        &state_bytes(straight.as_ref()),
        &state_bytes(resumed.as_ref()),
        "resumed past a corrupt checkpoint against uninterrupted",
    );
    assert_eq!(
        std::fs::read(RunDir::new(dir_a.path()).weights()).unwrap(),
        std::fs::read(run.weights()).unwrap(),
        "weights.safetensors differs"
    );
    assert_same_metrics(&a.metrics, &b2.metrics, "metrics after the fallback");
    // The retrained epoch's checkpoint replaced the corrupt one.
    layerzero_train::Checkpoint::load(&newest, &Device::Cpu).unwrap();
}

#[test]
fn corrupt_checkpoint_is_named_and_not_loaded() {
    let one = one_epoch_of_two(1);
    let run = RunDir::new(one.dir.path());
    let ck1 = run.checkpoint(1);
    let mut bytes = std::fs::read(&ck1).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x01;
    std::fs::write(&ck1, &bytes).unwrap();
    // Epoch 0 is still good, so a resume falls back to it; epoch 1's file is never loaded.
    let err = layerzero_train::Checkpoint::load(&ck1, &Device::Cpu).unwrap_err();
    assert!(matches!(err, TrainError::CorruptCheckpoint { .. }));
    assert!(err.to_string().contains("epoch-001.safetensors"), "{err}");

    // With every checkpoint corrupt, resuming is refused naming the file.
    let ck0 = run.checkpoint(0);
    std::fs::write(&ck0, &std::fs::read(&ck0).unwrap()[..100]).unwrap();
    let err = one.again(net(1).as_ref(), &resuming()).unwrap_err();
    assert!(matches!(err, TrainError::CorruptCheckpoint { .. }), "{err}");
    assert!(err.to_string().contains("epoch-000.safetensors"), "{err}");
}

#[test]
fn an_existing_run_is_not_overwritten_without_resume() {
    let setup = Setup::synthetic(32, 32, small_config(1, 32, 32));
    let dir = tempfile::tempdir().unwrap();
    let fresh = RunOptions::default();
    setup.train(net(1).as_ref(), dir.path(), &fresh).unwrap();
    let err = setup
        .train(net(1).as_ref(), dir.path(), &fresh)
        .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
}

/// Records the observer's per-step calls.
#[derive(Default)]
struct StepLog(std::sync::Mutex<Vec<(usize, usize, u32)>>);
impl TrainObserver for StepLog {
    fn step(&self, epoch: usize, step_in_epoch: usize, loss: f32) {
        self.0
            .lock()
            .unwrap()
            .push((epoch, step_in_epoch, loss.to_bits()));
    }
}

#[test]
fn reading_losses_back_in_groups_changes_nothing() {
    // What a GPU run does to keep its launch queue full: the losses read every few steps. The
    // weights, the metrics and the observer's calls must be those of reading every step.
    // 2 epochs of 6 steps: groups of 4 leave a group of 2 at the end of each epoch.
    let mut config = small_config(2, 96, 16);
    config.ghost_batches = 2;
    let setup = Setup::synthetic(96, 32, config);
    let run = |readback: usize| {
        let network = net(5);
        let dir = tempfile::tempdir().unwrap();
        let log = StepLog::default();
        let options = RunOptions {
            readback_steps: Some(readback),
            ..RunOptions::default()
        };
        let out = setup
            .train_observed(network.as_ref(), dir.path(), &options, &log)
            .unwrap();
        (
            state_bytes(network.as_ref()),
            out,
            log.0.into_inner().unwrap(),
        )
    };
    let (state, out, steps) = run(1);
    assert_eq!(steps.len(), 12);
    let order: Vec<(usize, usize)> = steps.iter().map(|&(e, s, _)| (e, s)).collect();
    let expected: Vec<(usize, usize)> =
        (1..=2).flat_map(|e| (1..=6).map(move |s| (e, s))).collect();
    assert_eq!(order, expected);
    for readback in [4, 100] {
        let (state_g, out_g, steps_g) = run(readback);
        assert_eq!(
            steps_g, steps,
            "observer calls, reading every {readback} steps"
        );
        let what = format!("reading every {readback} steps");
        assert_same_metrics(&out.metrics, &out_g.metrics, &what);
        assert_same_state(&state, &state_g, &what);
    }
}

#[test]
fn nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint() {
    let mut config = small_config(1, 64, 16);
    config.schedule = LrSchedule::MultiStep {
        base: 1e30,
        milestones: vec![],
        gamma: 1.0,
    };
    let setup = Setup::synthetic(64, 64, config);
    let failing_step = |readback_steps: Option<usize>| {
        let dir = tempfile::tempdir().unwrap();
        let options = RunOptions {
            readback_steps,
            ..RunOptions::default()
        };
        let err = setup
            .train(net(1).as_ref(), dir.path(), &options)
            .unwrap_err();
        let ck =
            layerzero_train::Checkpoint::load(&RunDir::new(dir.path()).checkpoint(0), &Device::Cpu)
                .unwrap();
        assert_eq!(ck.meta.epoch, 0);
        match err {
            TrainError::NonFiniteLoss { step, epoch, .. } => (epoch, step),
            other => panic!("expected a non-finite loss, got {other}"),
        }
    };
    // Read after every step (a CPU's default): the first step's loss is finite (no update
    // yet), a later one is not. Read in groups of 4 (as on a GPU): the same step is named,
    // not its group's last (seen: step 1).
    let every_step = failing_step(None);
    assert!(every_step.1 >= 1, "{every_step:?}");
    assert_eq!(failing_step(Some(4)), every_step);
}

#[test]
fn checkpoint_of_another_architecture_is_named_and_not_loaded() {
    let mut setup = Setup::synthetic(64, 32, small_config(2, 64, 32));
    let dir = tempfile::tempdir().unwrap();
    setup
        .train(net(1).as_ref(), dir.path(), &stop_after(1))
        .unwrap();

    setup.config.arch = "plain8".into();
    let plain = create_model("plain8", &ModelConfig::new(10).with_seed(1)).unwrap();
    let before = state_bytes(plain.as_ref());
    let err = setup
        .train(plain.as_ref(), dir.path(), &resuming())
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::CannotResume(_)), "{msg}");
    assert!(
        msg.contains("epoch-001.safetensors")
            && msg.contains("`resnet8`")
            && msg.contains("`plain8`"),
        "{msg}"
    );
    assert_eq!(state_bytes(plain.as_ref()), before, "weights changed");
}

/// Replays every input that once crashed the `checkpoint_read` fuzz target, or that stands for
/// a known corruption (`tests/data/fuzz-regressions/checkpoint_read/`): each is refused as
/// corrupt, naming it. The target's seed (`fuzz/seeds/checkpoint_read/`) is a valid checkpoint.
#[test]
fn fuzz_regressions_are_refused_as_corrupt() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for e in std::fs::read_dir(crate_dir.join("tests/data/fuzz-regressions/checkpoint_read"))
        .unwrap()
        .flatten()
    {
        let bytes = std::fs::read(e.path()).unwrap();
        let err = layerzero_train::Checkpoint::from_bytes(&bytes, &e.path(), &Device::Cpu)
            .expect_err("a regression input is no valid checkpoint");
        assert!(matches!(err, TrainError::CorruptCheckpoint { .. }), "{err}");
        assert!(
            err.to_string().contains(&*e.file_name().to_string_lossy()),
            "{err}"
        );
        seen += 1;
    }
    assert!(seen >= 2);
    let seed = crate_dir.join("../../fuzz/seeds/checkpoint_read/valid-small");
    let ck = layerzero_train::Checkpoint::load(&seed, &Device::Cpu).unwrap();
    assert_eq!((ck.meta.epoch, ck.meta.arch.as_str()), (3, "resnet8"));
}

/// A resume rewrites `metrics.jsonl` from the parsed lines, so parsing must give back the exact
/// f64 that was written: with serde_json's default (fast, not exact) float parser the value
/// below came back one unit in the last place off, and the resume test above failed whenever
/// the measured throughput happened to be such a value.
#[test]
fn metrics_lines_round_trip_exactly() {
    let m = layerzero_train::EpochMetrics {
        epoch: 1,
        step: 2,
        lr: 0.0811745653949763,
        train_loss: 2.4678834676742554,
        train_top1: 0.109375,
        test_loss: 2.1294889699726376,
        test_top1: 0.21875,
        test_top5: 0.71875,
        images_per_s: 511.50801931083436,
        wall_s: 0.1426632,
        image_side: 32,
    };
    let line = serde_json::to_string(&m).unwrap();
    let back: layerzero_train::EpochMetrics = serde_json::from_str(&line).unwrap();
    assert_eq!(
        back.images_per_s.to_bits(),
        m.images_per_s.to_bits(),
        "{line}"
    );
    assert_eq!(serde_json::to_string(&back).unwrap(), line);
}

/// A resume refuses what it must not continue, and says why: other options (named, with both
/// values), trained epochs whose checkpoints are gone (it started afresh and replaced the
/// metrics), a run directory another process is training in (two processes appended the same
/// epochs to metrics.jsonl), a file where the directory should be.
#[test]
fn a_resume_that_cannot_continue_says_why() {
    let run = one_epoch_of_two(5);
    let root = run.dir.path();
    let metrics_before = std::fs::read_to_string(RunDir::new(root).metrics()).unwrap();

    // Other options: each difference named with the run's value and this one's.
    let mut config = run.setup.config.clone();
    config.epochs = 3;
    config.sgd.momentum = 0.8;
    let other = Setup {
        train_set: run.setup.train_set.clone(),
        test_set: run.setup.test_set.clone(),
        config,
    };
    let e = other
        .train(net(5).as_ref(), root, &resuming())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot resume:")
            && e.contains("epochs: 2 in the run, 3 now")
            && e.contains("sgd.momentum: 0.9 in the run, 0.8 now"),
        "{e}"
    );

    // Another process holds the directory: refused before anything is touched.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(RunDir::new(root).lock())
        .unwrap();
    lock.lock().unwrap();
    let e = run.again(net(5).as_ref(), &resuming()).unwrap_err();
    assert!(matches!(e, TrainError::RunInUse { .. }), "{e}");
    assert!(e.to_string().contains("another process"), "{e}");
    drop(lock);

    // The checkpoints deleted by hand: not silently trained over from epoch 0.
    std::fs::remove_dir_all(RunDir::new(root).checkpoints()).unwrap();
    let e = run
        .again(net(5).as_ref(), &resuming())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1 trained epoch(s)") && e.contains("no checkpoint"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(RunDir::new(root).metrics()).unwrap(),
        metrics_before
    );

    // A file where the run directory should be.
    let file = root.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let e = run
        .setup
        .train(net(5).as_ref(), &file, &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("expected a directory") && e.contains("a file"),
        "{e}"
    );
}
