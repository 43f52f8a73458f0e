//! The training loop: epochs of SGD over augmented batches, an evaluation and a checkpoint after
//! each epoch, metrics as JSON lines, and resumption from the last good checkpoint.
//!
//! A run directory holds:
//!
//! ```text
//! config.json                  the TrainConfig (a resumed run must match it)
//! checkpoints/epoch-000.safetensors   initialisation (kept: re-initialisation ablations need it)
//! checkpoints/epoch-NNN.safetensors   the last two epochs (older ones are removed)
//! metrics.jsonl                one EpochMetrics per line
//! init.safetensors             epoch-0 weights in the model crate's format
//! weights.safetensors          final weights in the model crate's format (when all epochs ran)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, D};
use layerzero_data::{Augmentation, BatchConfig, Batcher, CifarSet, Flip};
use layerzero_models::{
    defer_running_stats, load_state_dict, save_safetensors, DeferredRunningStats, ForwardMode,
    Interventions, LoadOptions, Network, WeightsMetadata,
};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{write_atomic, Checkpoint, CheckpointMeta};
use crate::error::{Result, TrainError};
use crate::eval::evaluate;
use crate::optim::{Param, Sgd};
use crate::profile::TrainConfig;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Optimiser steps completed at the end of the epoch.
    pub step: usize,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean training loss over the epoch (augmented images, training-mode batch norm).
    pub train_loss: f64,
    /// Training top-1 over the epoch, as a fraction.
    pub train_top1: f64,
    /// Test loss after the epoch.
    pub test_loss: f64,
    /// Test top-1 after the epoch, as a fraction.
    pub test_top1: f64,
    /// Test top-5 after the epoch, as a fraction.
    pub test_top5: f64,
    /// Training throughput of the epoch.
    pub images_per_s: f64,
    /// Wall time of the epoch (training and evaluation), in seconds.
    pub wall_s: f64,
    /// Side of the epoch's training images (32 unless progressive resizing shrank them;
    /// metrics written before this field existed read as 32).
    #[serde(default = "full_side")]
    pub image_side: usize,
}

fn full_side() -> usize {
    layerzero_data::IMAGE_SIDE
}

/// How to run (as opposed to what to train, which is the [`TrainConfig`]).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the last good checkpoint in the run directory.
    pub resume: bool,
    /// Stop after this many epochs in this invocation (the run can be resumed later).
    pub max_epochs: Option<usize>,
    /// Metadata written into the weights files (data set, normalisation).
    pub metadata: Option<WeightsMetadata>,
    /// Read the steps' losses and correct counts from the device every this many steps
    /// (`None`: every step on a CPU, every [`GPU_READBACK_STEPS`] on a GPU). The weights do not
    /// depend on it; a non-finite loss is still reported with its own step, once read.
    pub readback_steps: Option<usize>,
}

/// Steps whose losses a GPU run reads back at once. Each read waits for every kernel queued
/// before it; reading after every step would leave the GPU idle while the CPU prepares the next
/// batch and queues its kernels.
pub const GPU_READBACK_STEPS: usize = 32;

/// Hooks for progress display; every method has a no-op default.
pub trait TrainObserver {
    /// Training (re)starts at `epoch` (epochs completed) of `epochs`, with `steps_per_epoch`.
    fn start(&self, _epoch: usize, _epochs: usize, _steps_per_epoch: usize) {}
    /// After each optimiser step: epoch (from 1), step within the epoch (from 1), batch loss.
    fn step(&self, _epoch: usize, _step_in_epoch: usize, _loss: f32) {}
    /// After each epoch's evaluation and checkpoint.
    fn epoch(&self, _metrics: &EpochMetrics) {}
}

/// An observer that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;
impl TrainObserver for Quiet {}

/// What a run left behind.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Epochs completed in total.
    pub epochs_done: usize,
    /// Whether every configured epoch has run.
    pub finished: bool,
    /// All metrics lines so far.
    pub metrics: Vec<EpochMetrics>,
    /// `weights.safetensors` (present when finished).
    pub weights: PathBuf,
    /// `init.safetensors`.
    pub init_weights: PathBuf,
}

/// Paths inside a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A run directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    /// The checkpoint of an epoch.
    pub fn checkpoint(&self, epoch: usize) -> PathBuf {
        self.checkpoints()
            .join(format!("epoch-{epoch:03}.safetensors"))
    }
    /// Final weights.
    pub fn weights(&self) -> PathBuf {
        self.root.join("weights.safetensors")
    }
    /// Epoch-0 weights.
    pub fn init_weights(&self) -> PathBuf {
        self.root.join("init.safetensors")
    }
    /// The checkpoints' folder.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `.lock`: held by the process training in the directory.
    pub fn lock(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// Epochs that have a checkpoint file, ascending.
    pub fn checkpoint_epochs(&self) -> Vec<usize> {
        let mut epochs: Vec<usize> = fs::read_dir(self.checkpoints())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_prefix("epoch-")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()
            })
            .collect();
        epochs.sort_unstable();
        epochs
    }
}

/// Cross-entropy with optional label smoothing, averaged over the batch.
///
/// On a GPU (cuDNN build, unless `LAYERZERO_FUSED_LOSS=0`) this is one kernel forward and one
/// backward ([`layerzero_kernels::cross_entropy_train`]) instead of about fifteen candle ops
/// each way; the same loss within f32 rounding.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    if let Some(fused) = layerzero_kernels::cross_entropy_train(logits, labels, smoothing)? {
        return Ok(fused.loss);
    }
    cross_entropy_ops(logits, labels, smoothing)
}

/// [`cross_entropy`] in candle ops, on any device: what runs where the fused loss does not.
fn cross_entropy_ops(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let log_probs = candle_core::Tensor::log_sum_exp(logits, D::Minus1)?;
    let log_probs = logits.broadcast_sub(&log_probs.unsqueeze(1)?)?;
    let picked = log_probs
        .gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let nll = picked.neg()?.mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = log_probs.mean(D::Minus1)?.neg()?.mean_all()?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

/// The optimiser's view of a network: its trainable tensors by PyTorch name, with kernels and
/// weight matrices marked for weight decay and batch-norm parameters and biases not.
pub fn trainable_params(net: &dyn Network) -> Vec<Param> {
    net.params()
        .entries()
        .iter()
        .filter(|e| e.role().is_trainable())
        .filter_map(|e| {
            Some(Param {
                name: e.name().to_string(),
                var: e.var()?.clone(),
                norm_or_bias: !e.role().is_decayed(),
            })
        })
        .collect()
}

fn save_checkpoint(
    net: &dyn Network,
    sgd: &Sgd,
    dir: &RunDir,
    config: &TrainConfig,
    epoch: usize,
    step: usize,
) -> Result<()> {
    let model = net.params().state_dict()?.into_iter().collect();
    let ck = Checkpoint {
        meta: CheckpointMeta {
            format: 1,
            epoch,
            step,
            seed: config.seed,
            arch: config.arch.clone(),
            config: serde_json::to_value(config).map_err(|e| TrainError::InvalidConfig {
                what: "config",
                expected: "serialisable".into(),
                found: e.to_string(),
            })?,
        },
        model,
        momentum: sgd.state(),
    };
    ck.save(&dir.checkpoint(epoch))?;
    // Keep epoch 0 and the last two epochs: the newest may be the one a crash interrupts.
    for old in dir.checkpoint_epochs() {
        if old != 0 && old + 2 <= epoch {
            let _ = fs::remove_file(dir.checkpoint(old));
        }
    }
    Ok(())
}

/// Finds the newest checkpoint that loads and verifies, naming the ones that do not.
/// An exclusive lock on `dir`'s lock file, held while the returned file is open; `None` (with
/// a warning) where the file system cannot lock files (Lustre without `flock`, some FUSE and
/// NFS mounts), which trained without a lock before there was one.
fn lock_run_dir(dir: &RunDir) -> Result<Option<fs::File>> {
    let path = dir.lock();
    let opened = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path);
    // A lock file of another user's may be read-only to us; a lock needs no write access.
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            fs::File::open(&path).map_err(|e| TrainError::io(&path, e))?
        }
        Err(e) => return Err(TrainError::io(&path, e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Err(TrainError::RunInUse {
            path: dir.root().to_path_buf(),
            lock: path,
        }),
        Err(fs::TryLockError::Error(e)) if cannot_lock_here(&e) => {
            eprintln!(
                "warning: {}: this file system cannot lock files ({e}); make sure no other \
                 process trains in {}",
                path.display(),
                dir.root().display()
            );
            Ok(None)
        }
        Err(fs::TryLockError::Error(e)) => Err(TrainError::io(&path, e)),
    }
}

/// Whether a lock failed because the file system does not do locks (not because of a conflict).
fn cannot_lock_here(e: &std::io::Error) -> bool {
    // ENOLCK (37 on Linux): no locks available, as NFS without a lock manager says.
    const ENOLCK: i32 = 37;
    e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(ENOLCK)
}

/// The options in which `saved` (a run's) and `now` (this invocation's) differ, as
/// `name: saved there, now here`, by their names in config.json (nested ones dotted).
fn config_differences(saved: &TrainConfig, now: &TrainConfig) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    walk(
                        &name,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{prefix}: {a} in the run, {b} now")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match (serde_json::to_value(saved), serde_json::to_value(now)) {
        (Ok(a), Ok(b)) => walk("", &a, &b, &mut out),
        _ => out.push("the configurations differ".to_string()),
    }
    out
}

fn last_good_checkpoint(dir: &RunDir, device: &candle_core::Device) -> Result<Option<Checkpoint>> {
    let mut last_err = None;
    for epoch in dir.checkpoint_epochs().into_iter().rev() {
        match Checkpoint::load(&dir.checkpoint(epoch), device) {
            Ok(ck) => return Ok(Some(ck)),
            Err(e) => {
                eprintln!("warning: skipping {e}");
                last_err = Some(e);
            }
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    // A line without its newline is an append that a crash or a full disk cut short. Its
    // epoch's checkpoint is written only after the line is complete (see the end of an epoch
    // in `train_observed`), so that checkpoint does not exist: the resume starts from the
    // epoch before, retrains the epoch and writes its line again. Drop it. Anything else that
    // does not parse is an error.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    if complete.len() < text.len() {
        eprintln!(
            "warning: {}: ignoring an incomplete last line (a write cut short by a crash)",
            path.display()
        );
    }
    complete
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::InvalidConfig {
                what: "metrics line",
                expected: format!(
                    "an EpochMetrics object on line {} of {}",
                    i + 1,
                    path.display()
                ),
                found: e.to_string(),
            })
        })
        .collect()
}

/// Removes the temporaries that killed runs left in the run directory and its `checkpoints`
/// folder ([`layerzero_models::atomic::is_temporary`]): regular files only, never through a symbolic link (a
/// `checkpoints` that is a link is left alone). A file that cannot be removed is skipped; a
/// folder that cannot be read is reported on stderr, like a skipped checkpoint.
fn remove_leftover_temporaries(dir: &RunDir) {
    let checkpoints = dir.checkpoints();
    for folder in [dir.root(), checkpoints.as_path()] {
        if folder == checkpoints.as_path() {
            match fs::symlink_metadata(folder) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    eprintln!(
                        "warning: {}: not looking for leftover temporary files ({e})",
                        folder.display()
                    );
                    continue;
                }
            }
        }
        let entries = match fs::read_dir(folder) {
            Ok(entries) => entries,
            Err(e) => {
                eprintln!(
                    "warning: {}: not looking for leftover temporary files ({e})",
                    folder.display()
                );
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    eprintln!(
                        "warning: {}: stopped looking for leftover temporary files ({e})",
                        folder.display()
                    );
                    break;
                }
            };
            // `file_type` does not follow a symbolic link: a link is no regular file.
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(layerzero_models::atomic::is_temporary)
            {
                // Best effort: a temporary that stays is harmless, only untidy.
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn write_metrics(path: &Path, metrics: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in metrics {
        text.push_str(&serde_json::to_string(m).unwrap_or_default());
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Trains `net` on `train_set`, evaluating on `test_set` after each epoch, with checkpoints in
/// `run_dir`.
pub fn train(
    net: &dyn Network,
    train_set: &CifarSet,
    test_set: &CifarSet,
    config: &TrainConfig,
    run_dir: &Path,
    opts: &RunOptions,
) -> Result<TrainOutcome> {
    train_observed(net, train_set, test_set, config, run_dir, opts, &Quiet)
}

/// [`train`], reporting progress to `observer`.
pub fn train_observed(
    net: &dyn Network,
    train_set: &CifarSet,
    test_set: &CifarSet,
    config: &TrainConfig,
    run_dir: &Path,
    opts: &RunOptions,
    observer: &dyn TrainObserver,
) -> Result<TrainOutcome> {
    config.validate()?;
    // Batches drop the last partial one, so a batch larger than the training set would give
    // epochs of no steps: a "trained" network that never saw an image.
    let images = config
        .train_limit
        .map_or(train_set.len(), |n| n.min(train_set.len()));
    if config.batch_size > images {
        return Err(TrainError::InvalidConfig {
            what: "batch size",
            expected: format!(
                "at most the {images} training images, so that an epoch has a full step"
            ),
            found: config.batch_size.to_string(),
        });
    }
    let dir = RunDir::new(run_dir);
    let device = net.params().device().clone();
    if config.progressive_resize.is_some() {
        check_sides(net, config, &device)?;
    }
    if dir.root().exists() && !dir.root().is_dir() {
        return Err(TrainError::InvalidConfig {
            what: "run directory",
            expected: "a directory (or a path to create one at)".into(),
            found: format!("{}, a file", dir.root().display()),
        });
    }
    fs::create_dir_all(dir.root()).map_err(|e| TrainError::io(dir.root(), e))?;
    // One process per run directory: two would append the same epochs to metrics.jsonl and
    // remove each other's temporaries. The OS releases the lock when the process ends, however
    // it ends, so a killed run never leaves the directory locked.
    let _lock = lock_run_dir(&dir)?;
    let config_json = serde_json::to_string_pretty(config).unwrap_or_default();
    if !opts.resume && dir.config().exists() {
        return Err(TrainError::InvalidConfig {
            what: "run directory",
            expected: "a directory without a run, or --resume to continue the run in it".into(),
            found: format!("{} already holds a run", dir.root().display()),
        });
    }
    // The run directory is this process's from here on: temporaries that a killed run left
    // (`NAME.tmp-<pid>`) can never be renamed into place, so they go.
    remove_leftover_temporaries(&dir);

    let train_set = match config.train_limit {
        Some(n) => train_set.clone().truncate(n),
        None => train_set.clone(),
    };
    let test_set = match config.test_limit {
        Some(n) => test_set.clone().truncate(n),
        None => test_set.clone(),
    };

    let mut sgd = Sgd::new(trainable_params(net), config.sgd.clone());
    let metadata = opts
        .metadata
        .clone()
        .unwrap_or_else(|| WeightsMetadata::for_network(net));
    let (mut epoch, mut step, mut metrics) =
        match (opts.resume, last_good_checkpoint(&dir, &device)?) {
            (true, Some(ck)) => {
                let saved: TrainConfig =
                    serde_json::from_value(ck.meta.config.clone()).map_err(|e| {
                        TrainError::StateMismatch(format!("checkpoint config unreadable: {e}"))
                    })?;
                if saved.arch != config.arch || ck.meta.arch != config.arch {
                    return Err(TrainError::CannotResume(format!(
                        "{} holds a checkpoint of architecture `{}`, expected `{}` (the --arch \
                         of this run); resume with the same options or use a new run directory",
                        dir.checkpoint(ck.meta.epoch).display(),
                        ck.meta.arch,
                        config.arch
                    )));
                }
                if &saved != config {
                    return Err(TrainError::CannotResume(format!(
                        "{} was trained with other options ({}); resume with the same options \
                         (its config.json has them all) or use a new run directory",
                        dir.root().display(),
                        config_differences(&saved, config).join("; ")
                    )));
                }
                let tensors: Vec<(String, Tensor)> = ck.model.into_iter().collect();
                load_state_dict(net, &tensors, &LoadOptions::default())?;
                sgd.load_state(ck.momentum)?;
                let mut metrics = read_metrics(&dir.metrics())?;
                metrics.retain(|m| m.epoch <= ck.meta.epoch);
                (ck.meta.epoch, ck.meta.step, metrics)
            }
            (resume, _) => {
                // A resume with no checkpoint starts afresh only when nothing of a run is there
                // to lose: a crash between config.json and the epoch-0 checkpoint leaves just
                // those (see below). Trained epochs or final weights without any checkpoint
                // (deleted by hand, say) are not silently trained over.
                // Read only for a resume: a fresh run replaces whatever metrics are there.
                let done = if resume {
                    read_metrics(&dir.metrics())?.len()
                } else {
                    0
                };
                if resume && (done > 0 || dir.weights().exists()) {
                    return Err(TrainError::CannotResume(format!(
                        "{} holds {done} trained epoch(s) in {}{} but no checkpoint in {} to \
                         continue from; move those files away to start afresh there, or use a \
                         new run directory",
                        dir.root().display(),
                        dir.metrics().display(),
                        if dir.weights().exists() {
                            " and final weights"
                        } else {
                            ""
                        },
                        dir.checkpoints().display()
                    )));
                }
                write_atomic(&dir.config(), config_json.as_bytes())?;
                // The initial weights before the epoch-0 checkpoint: a resume starts from the
                // checkpoint and would never write them, so a crash between the two must leave
                // no checkpoint (and a resume then starts afresh, rewriting both).
                save_safetensors(net, &dir.init_weights(), &metadata)?;
                save_checkpoint(net, &sgd, &dir, config, 0, 0)?;
                (0, 0, Vec::new())
            }
        };
    write_metrics(&dir.metrics(), &metrics)?;

    let flip = if config.alternating_flip {
        Flip::Alternating
    } else {
        Flip::Random
    };
    let batch_config = BatchConfig {
        augmentation: config.augment.then_some(Augmentation {
            flip,
            ..Augmentation::default()
        }),
        ..BatchConfig::train(train_set.dataset(), config.batch_size, config.seed)
    };
    let steps_per_epoch =
        Batcher::new(&train_set, batch_config.clone(), device.clone())?.batches_per_epoch();
    let ghosts = GhostBatches::new(config.ghost_batches, &device)?;
    let readback_steps = opts
        .readback_steps
        .unwrap_or(if device.is_cpu() {
            1
        } else {
            GPU_READBACK_STEPS
        })
        .max(1);
    observer.start(epoch, config.epochs, steps_per_epoch);
    let mut ran = 0;
    while epoch < config.epochs && opts.max_epochs.is_none_or(|m| ran < m) {
        let started = Instant::now();
        let mut totals = EpochTotals::default();
        let mut unread: Vec<UnreadStep> = Vec::with_capacity(readback_steps);
        let mut lr = 0.0;
        let image_side = config.image_side(epoch);
        let batcher = Batcher::new(
            &train_set,
            BatchConfig {
                side: image_side,
                ..batch_config.clone()
            },
            device.clone(),
        )?;
        for (i, batch) in batcher.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            lr = config.schedule.lr_at(step);
            let outcome = ghosts.step(net, &batch.images, &batch.labels, config)?;
            unread.push(UnreadStep {
                step,
                step_in_epoch: i + 1,
                images: batch.indices.len(),
                values: outcome.values,
            });
            // Read before this step's update, so that with one step per read (a CPU) a
            // non-finite loss stops the run before the optimiser uses its gradients.
            if unread.len() >= readback_steps {
                totals.read(unread.drain(..), epoch + 1, observer)?;
            }
            layerzero_kernels::on_worker_thread(&device, || sgd.step(&outcome.grads, lr))?;
            step += 1;
        }
        totals.read(unread.drain(..), epoch + 1, observer)?;
        let EpochTotals {
            loss_sum,
            correct,
            seen,
        } = totals;
        let train_time = started.elapsed().as_secs_f64();
        let eval = evaluate(net, &test_set, 500, Interventions::none())?.summary();
        epoch += 1;
        ran += 1;
        let m = EpochMetrics {
            epoch,
            step,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_top1: correct as f64 / seen.max(1) as f64,
            test_loss: eval.loss,
            test_top1: eval.top1,
            test_top5: eval.top5,
            images_per_s: seen as f64 / train_time.max(1e-9),
            wall_s: started.elapsed().as_secs_f64(),
            image_side,
        };
        // The metrics line first, then the checkpoint: a crash between the two leaves a line
        // for an epoch without a checkpoint, which a resume drops (it keeps the lines up to
        // the checkpoint's epoch) before running that epoch again. The other order could lose
        // the line of a checkpointed epoch. A crash or a full disk during the append itself
        // leaves a line without its newline and no checkpoint of the epoch: `read_metrics`
        // drops that line and the resume retrains the epoch.
        metrics.push(m.clone());
        append_metrics(&dir.metrics(), &m)?;
        save_checkpoint(net, &sgd, &dir, config, epoch, step)?;
        observer.epoch(&m);
    }
    let finished = epoch >= config.epochs;
    if finished {
        save_safetensors(net, &dir.weights(), &metadata)?;
    }
    Ok(TrainOutcome {
        epochs_done: epoch,
        finished,
        metrics,
        weights: dir.weights(),
        init_weights: dir.init_weights(),
    })
}

/// What one training step computed: its loss and correct predictions, still on the device,
/// and the gradients of the batch's mean loss.
struct StepOutcome {
    values: StepValues,
    grads: GradStore,
}

/// A step's loss and correct top-1 predictions, per ghost batch, not yet read from the device.
struct StepValues {
    /// (mean loss, images, correct predictions) of each part, in part order.
    parts: Vec<(Tensor, usize, Tensor)>,
}

impl StepValues {
    /// The batch's mean loss and its correct predictions. Waits for the device.
    fn read(&self) -> Result<(f32, usize)> {
        // One part (a plain step) gives its own loss back bit for bit: an f32 times an image
        // count below 2^29 is exact in f64, and so is dividing it by the same count.
        let n: usize = self.parts.iter().map(|(_, len, _)| len).sum();
        let (mut loss, mut correct) = (0f64, 0);
        for (part_loss, len, part_correct) in &self.parts {
            loss += part_loss.to_scalar::<f32>()? as f64 * *len as f64 / n as f64;
            correct += part_correct.to_scalar::<f32>()? as usize;
        }
        Ok((loss as f32, correct))
    }
}

/// A step whose values wait to be read.
struct UnreadStep {
    /// Optimiser steps before it (the run's step number).
    step: usize,
    /// Its number within the epoch, from 1.
    step_in_epoch: usize,
    images: usize,
    values: StepValues,
}

/// An epoch's training loss and accuracy, summed over the steps read so far.
#[derive(Default)]
struct EpochTotals {
    /// Sum over images of the loss.
    loss_sum: f64,
    correct: usize,
    seen: usize,
}

impl EpochTotals {
    /// Reads `steps` in order: stops at the first non-finite loss, naming its step, and tells
    /// the observer of each.
    fn read(
        &mut self,
        steps: impl Iterator<Item = UnreadStep>,
        epoch: usize,
        observer: &dyn TrainObserver,
    ) -> Result<()> {
        for s in steps {
            let (loss, correct) = s.values.read()?;
            if !loss.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    value: loss,
                    epoch,
                    step: s.step,
                });
            }
            self.loss_sum += loss as f64 * s.images as f64;
            self.correct += correct;
            self.seen += s.images;
            observer.step(epoch, s.step_in_epoch, loss);
        }
        Ok(())
    }
}

/// Runs the forward and backward passes of a step, over the whole batch or over its ghost
/// batches ([`TrainConfig::ghost_batches`]).
struct GhostBatches {
    count: usize,
    /// One pool per group of ghost batches run side by side (a share of the threads each);
    /// empty where they run one after another (one ghost batch, one thread, or not a CPU).
    pools: Vec<rayon::ThreadPool>,
}

impl GhostBatches {
    fn new(count: usize, device: &candle_core::Device) -> Result<Self> {
        let threads = rayon::current_num_threads();
        let side_by_side = count.min(threads);
        let mut pools = Vec::new();
        if count > 1 && side_by_side > 1 && device.is_cpu() {
            for j in 0..side_by_side {
                // The threads shared out as evenly as they go, the first pools taking the rest.
                let n = threads / side_by_side + usize::from(j < threads % side_by_side);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(move |t| format!("ghost-batch-{j}-{t}"))
                    .build()
                    .map_err(|e| TrainError::Threads(e.to_string()))?;
                pools.push(pool);
            }
        }
        Ok(GhostBatches { count, pools })
    }

    fn step(
        &self,
        net: &dyn Network,
        images: &Tensor,
        labels: &Tensor,
        config: &TrainConfig,
    ) -> Result<StepOutcome> {
        if self.count == 1 {
            // The plain step: the loss is not rescaled, so the gradients are bit for bit those
            // of a run without ghost batches. On the CPU it runs on a worker of the thread pool,
            // which then takes part in every kernel instead of waiting for it.
            let part = layerzero_kernels::on_worker_thread(images.device(), || {
                forward_backward(net, images, labels, config, None)
            })?;
            return Ok(StepOutcome {
                values: StepValues {
                    parts: vec![(part.loss, part.len, part.correct)],
                },
                grads: part.grads,
            });
        }
        let n = images.dim(0)?;
        // Near-equal parts: a final short batch (drop_last off) need not divide evenly.
        let parts: Vec<(usize, usize)> = (0..self.count)
            .map(|k| {
                let start = k * n / self.count;
                (start, (k + 1) * n / self.count - start)
            })
            .filter(|&(_, len)| len > 0)
            .collect();
        // One part: forward, backward, with its running-statistic updates deferred, so that
        // parts running side by side can apply them in order afterwards.
        let part =
            |&(start, len): &(usize, usize)| -> Result<(GhostOutcome, DeferredRunningStats)> {
                let (outcome, stats) = defer_running_stats(|| -> Result<GhostOutcome> {
                    let x = images.narrow(0, start, len)?;
                    let y = labels.narrow(0, start, len)?;
                    // Weighted by its share of the images, the parts' gradients add up to those
                    // of the batch's mean loss.
                    forward_backward(net, &x, &y, config, Some(len as f64 / n as f64))
                });
                Ok((outcome?, stats))
            };
        let done: Vec<Result<(GhostOutcome, DeferredRunningStats)>> = if self.pools.is_empty() {
            parts.iter().map(part).collect()
        } else {
            let lanes = self.pools.len();
            let mut by_lane: Vec<Vec<Result<(GhostOutcome, DeferredRunningStats)>>> =
                std::thread::scope(|s| {
                    let run_lane = |j: usize| {
                        let pool = &self.pools[j];
                        let part = &part;
                        let parts = &parts;
                        move || {
                            pool.install(|| {
                                parts
                                    .iter()
                                    .skip(j)
                                    .step_by(lanes)
                                    .map(part)
                                    .collect::<Vec<_>>()
                            })
                        }
                    };
                    let others: Vec<_> = (1..lanes).map(|j| s.spawn(run_lane(j))).collect();
                    let mut lanes_done = vec![run_lane(0)()];
                    for h in others {
                        lanes_done.push(
                            h.join()
                                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                        );
                    }
                    lanes_done
                });
            // Back into part order: lane j ran parts j, j + lanes, …
            let mut iters: Vec<_> = by_lane.iter_mut().map(|l| l.drain(..)).collect();
            (0..parts.len())
                .filter_map(|k| iters[k % lanes].next())
                .collect()
        };
        // In part order: the running statistics as if the parts had run one after another,
        // and the gradients summed in a fixed order, so the weights do not depend on which
        // parts ran side by side.
        let vars = net.params().trainable_vars();
        let mut sums: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut values = Vec::with_capacity(parts.len());
        let mut store: Option<GradStore> = None;
        for result in done {
            let (ghost, stats) = result?;
            stats.apply()?;
            values.push((ghost.loss, ghost.len, ghost.correct));
            for (sum, v) in sums.iter_mut().zip(&vars) {
                if let Some(g) = ghost.grads.get(v.as_tensor()) {
                    *sum = Some(match sum.take() {
                        None => g.clone(),
                        Some(s) => (s + g)?,
                    });
                }
            }
            store.get_or_insert(ghost.grads);
        }
        // The first part's store carries the sums (its other entries are never read).
        let Some(mut grads) = store else {
            unreachable!("a batch has at least one image, so at least one part");
        };
        for (sum, v) in sums.into_iter().zip(&vars) {
            if let Some(sum) = sum {
                grads.insert(v.as_tensor(), sum);
            }
        }
        Ok(StepOutcome {
            values: StepValues { parts: values },
            grads,
        })
    }
}

/// One forward and backward pass over a batch or a ghost batch.
struct GhostOutcome {
    /// Its mean loss (a scalar on the device, detached from the graph).
    loss: Tensor,
    /// Its images.
    len: usize,
    /// Its correct top-1 predictions (a scalar on the device).
    correct: Tensor,
    /// Gradients of the mean loss, times `share` where given.
    grads: GradStore,
}

/// Training forward of `images`, its loss and correct predictions, and the backward pass of the
/// mean loss scaled by `share` (`None`: unscaled).
fn forward_backward(
    net: &dyn Network,
    images: &Tensor,
    labels: &Tensor,
    config: &TrainConfig,
    share: Option<f64>,
) -> Result<GhostOutcome> {
    let logits = net.forward(images, ForwardMode::Train, Interventions::none())?;
    // On a GPU (cuDNN build) the fused loss counts the correct predictions in the same
    // kernel; the candle-op count otherwise (and with LAYERZERO_FUSED_LOSS=0).
    let (loss, correct) =
        match layerzero_kernels::cross_entropy_train(&logits, labels, config.label_smoothing)? {
            Some(fused) => (fused.loss, fused.correct),
            None => (
                cross_entropy_ops(&logits, labels, config.label_smoothing)?,
                count_correct(&logits, labels)?,
            ),
        };
    // Kept for reading later, without the graph (which would keep the activations alive).
    let value = loss.detach();
    let grads = match share {
        None => loss.backward()?,
        Some(share) => (loss * share)?.backward()?,
    };
    Ok(GhostOutcome {
        loss: value,
        len: images.dim(0)?,
        correct,
        grads,
    })
}

/// Correct top-1 predictions among `logits` (argmax, first of equal maxima), as an f32 scalar
/// on their device.
fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(logits
        .argmax(D::Minus1)?
        .eq(labels)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .detach())
}

/// Before a progressively resized run: one image at each side the schedule uses must go
/// through the network, so that an architecture that cannot take small images (VGG's five
/// poolings need 32×32) is refused before training, with the side named.
fn check_sides(
    net: &dyn Network,
    config: &TrainConfig,
    device: &candle_core::Device,
) -> Result<()> {
    let mut sides: Vec<usize> = (0..config.epochs).map(|e| config.image_side(e)).collect();
    sides.dedup();
    for side in sides {
        let x = Tensor::zeros((1, 3, side, side), DType::F32, device)?;
        net.forward(&x, ForwardMode::Eval, Interventions::none())
            .map_err(|e| TrainError::InvalidConfig {
                what: "progressive resize",
                expected: format!("image sides that {} accepts", config.arch),
                // The first line only: candle appends a backtrace when RUST_BACKTRACE is set.
                found: format!(
                    "{side}×{side} ({})",
                    e.to_string().lines().next().unwrap_or_default()
                ),
            })?;
    }
    Ok(())
}

fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    // One write of the whole line, newline included, so that only a crash during that write
    // or a full disk (a short write) can cut it short; `read_metrics` drops such a line.
    let mut line = serde_json::to_string(m).unwrap_or_default();
    line.push('\n');
    f.write_all(line.as_bytes())
        .map_err(|e| TrainError::io(path, e))?;
    f.sync_all().map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::cannot_lock_here;

    #[test]
    fn only_a_file_system_without_locks_is_trained_on_unlocked() {
        assert!(cannot_lock_here(&std::io::Error::from(
            std::io::ErrorKind::Unsupported
        )));
        assert!(cannot_lock_here(&std::io::Error::from_raw_os_error(37)));
        // Anything else (a full disk, no permission) is an error of its own.
        assert!(!cannot_lock_here(&std::io::Error::from_raw_os_error(28)));
        assert!(!cannot_lock_here(&std::io::Error::from(
            std::io::ErrorKind::PermissionDenied
        )));
    }
}
