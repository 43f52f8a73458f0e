//! `layerzero models`, `train`, `eval` and `inspect`: thin wrappers over the model and training
//! crates.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use layerzero_data::{CifarSet, Dataset, Split};
use layerzero_models::{
    create_model, list_models, load_safetensors_bytes, read_metadata_bytes, read_safetensors_bytes,
    read_weights_file, LoadOptions, ModelConfig, Network, WeightsMetadata,
};
use layerzero_train::{
    evaluate, train_observed, EpochMetrics, Profile, ProgressiveResize, RunOptions, TrainConfig,
    TrainError, TrainObserver,
};

/// Picks the compute device (`cpu`, `cuda` (built with the `cuda` feature), or `auto`) and says on
/// stderr which one, and which kernels will run on it: `auto` falls back to the CPU silently
/// otherwise, and a GPU build without cuDNN is several times slower.
pub fn device(name: &str) -> Result<Device> {
    let device = pick_device(name)?;
    let which = match &device {
        Device::Cpu => match rayon::current_num_threads() {
            1 => "cpu (1 thread)".to_string(),
            n => format!("cpu ({n} threads)"),
        },
        Device::Cuda(_) => "cuda:0".to_string(),
        other => format!("{other:?}"),
    };
    eprintln!(
        "device: {which}; kernels: {}",
        layerzero_kernels::describe_path(&device)
    );
    Ok(device)
}

fn pick_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--device cuda: this binary was built without CUDA; rebuild with `--features cuda`");
            }
            layerzero_kernels::open_cuda(0).context("opening CUDA device 0")
        }
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = layerzero_kernels::open_cuda(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        other => bail!("--device: expected cpu, cuda or auto, found {other:?}"),
    }
}

/// Sets the size of the thread pool the kernels and data decoding use.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting the thread count")?;
    }
    Ok(())
}

fn parse_dataset(s: &str) -> Result<Dataset, String> {
    s.parse::<Dataset>().map_err(|e| e.to_string())
}

/// `--progressive-resize`: `off`, or the phases.
#[derive(Debug, Clone)]
pub enum ResizeArg {
    Off,
    Phases(ProgressiveResize),
}

fn parse_resize(s: &str) -> Result<ResizeArg, String> {
    if s == "off" {
        return Ok(ResizeArg::Off);
    }
    s.parse().map(ResizeArg::Phases).map_err(|e| match e {
        layerzero_train::TrainError::InvalidConfig {
            what,
            expected,
            found,
        } => format!("invalid {what}: expected off or {expected}, found {found}"),
        other => other.to_string(),
    })
}

/// A count that must be at least 1 (threads, epochs, images per batch).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number ≥ 1, found {s:?}")),
    }
}

/// Most classes `layerzero models` builds its networks with: every network is built to count
/// its parameters, and a classifier of millions of outputs would exhaust memory (ImageNet-21k
/// has 21,841 classes).
const MAX_CLASSES: usize = 100_000;

fn class_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_CLASSES).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from 1 to {MAX_CLASSES}, found {s:?}"
        )),
    }
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    s.parse::<Profile>().map_err(|e| e.to_string())
}

/// Options shared by the commands that read CIFAR and run a network.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Data root holding `cifar-10-batches-bin/` (or that folder itself).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Data set: cifar10 or cifar100.
    #[arg(long, default_value = "cifar10", value_parser = parse_dataset)]
    pub dataset: Dataset,
    /// cpu, cuda, or auto (CUDA when built with it and a GPU exists).
    #[arg(long, default_value = "auto", value_parser = ["cpu", "cuda", "auto"])]
    pub device: String,
    /// Threads (default: all cores): the CPU kernels' threads, and for `ablate` how many
    /// ablations are evaluated side by side. On a GPU each of those holds one chunk of
    /// activations in GPU memory: lower it (or ablate's --chunk-images) if the GPU runs out of
    /// memory.
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
}

/// `layerzero models`.
#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Classes of the classifier (10 for CIFAR-10, 100 for CIFAR-100; at most 100,000).
    #[arg(long, default_value_t = 10, value_parser = class_count)]
    pub num_classes: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn models(args: ModelsArgs) -> Result<()> {
    let list = list_models(args.num_classes)?;
    if args.json {
        let rows: Vec<_> = list
            .iter()
            .map(|m| {
                serde_json::json!({"name": m.name, "description": m.description,
                    "params": m.params, "macs": m.macs, "weight_layers": m.weight_layers})
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    out!(
        "{:<12} {:>12} {:>14} {:>7}  description",
        "name",
        "params",
        "MACs/image",
        "layers"
    );
    for m in list {
        out!(
            "{:<12} {:>12} {:>14} {:>7}  {}",
            m.name,
            m.params,
            m.macs,
            m.weight_layers,
            m.description
        );
    }
    out!(
        "\nAlso accepted: every depth of the CIFAR families, resnet{{6n+2}}[-b] and plain{{6n+2}} \
         (e.g. resnet8, resnet1202), wrn{{6n+4}}-{{k}} (e.g. wrn10-2)."
    );
    Ok(())
}

/// `layerzero train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model name (see `layerzero models`), e.g. resnet20, plain20, resnet56-b.
    #[arg(long, default_value = "resnet20")]
    pub arch: String,
    /// smoke (seconds, for tests), quick (the CPU default), paper (He et al., for a GPU).
    #[arg(long, default_value = "quick", value_parser = parse_profile)]
    pub profile: Profile,
    /// Seed of initialisation, data order and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override the profile's number of epochs. The learning-rate schedule is stretched to
    /// fit: a one-cycle or cosine schedule spans the new run, a multi-step schedule's
    /// milestones (paper: at 50 % and 75 % of the steps) move in proportion.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override the profile's images per optimiser step (the schedule is stretched to fit the
    /// new number of steps, as for --epochs).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override the profile's peak learning rate (one-cycle `max_lr`, cosine or multi-step base).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Override the profile's label smoothing ε, in [0, 1).
    #[arg(long, allow_negative_numbers = true)]
    pub label_smoothing: Option<f64>,
    /// Override the profile's SGD momentum μ, in [0, 1) (0.9 in every profile).
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Use Nesterov momentum (PyTorch's `nesterov=True`); the quick profile already does.
    #[arg(long, conflicts_with = "no_nesterov")]
    pub nesterov: bool,
    /// Use plain (heavy-ball) momentum where the profile uses Nesterov's (quick).
    #[arg(long)]
    pub no_nesterov: bool,
    /// Override the profile's weight decay λ, ≥ 0 (smoke and quick 5e-4; paper 1e-4, He et al.'s).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Apply no weight decay to batch-norm parameters and biases; the quick profile already
    /// does.
    #[arg(long, conflicts_with = "decay_on_norm_and_bias")]
    pub no_decay_on_norm_and_bias: bool,
    /// Apply weight decay to every parameter, batch-norm ones and biases too, where the profile
    /// exempts them (quick).
    #[arg(long)]
    pub decay_on_norm_and_bias: bool,
    /// Override the profile's horizontal flips (smoke and paper: random; quick: alternating).
    #[arg(long, value_enum)]
    pub flip: Option<FlipArg>,
    /// Override the profile's progressive resizing: off, or SIDE:EPOCHS[,SIDE:EPOCHS…] to train
    /// the first epochs on images downscaled to SIDE×SIDE (a multiple of 4 from 8 to 32), phase
    /// after phase, and the rest at full size (at least one epoch). The quick profile uses 16:8
    /// (8 epochs at 16×16, then 32×32); architectures that need 32×32 inputs (VGG) take off.
    /// The test set is always evaluated at 32×32.
    #[arg(long, value_parser = parse_resize)]
    pub progressive_resize: Option<ResizeArg>,
    /// Override the profile's ghost batches: split each batch into N equal parts, each with
    /// batch-norm statistics of its own (1: off). On a CPU with two or more threads the parts
    /// run side by side; the weights do not depend on how many do. N must divide the batch
    /// size and leave at least 2 images per part. The quick profile uses 2.
    #[arg(long, value_name = "N")]
    pub ghost_batches: Option<usize>,
    /// Run directory (checkpoints, metrics.jsonl, weights.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last good checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many epochs in this invocation (resume later with --resume).
    #[arg(long, value_parser = at_least_one)]
    pub max_epochs: Option<usize>,
    /// Read each step's loss and correct count back from the device every N steps [default: 1
    /// on a CPU, 32 on a GPU]. Each read waits for the device to finish every step queued
    /// before it, so reading after every step leaves a GPU idle while the CPU prepares the next
    /// batch. The weights do not depend on N; a non-finite loss is still reported with the
    /// step that produced it, once read.
    #[arg(long, value_name = "N")]
    pub readback_steps: Option<std::num::NonZeroUsize>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--flip`: how training images are mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlipArg {
    /// Each image with probability ½ every epoch (He et al.).
    Random,
    /// Each image in every other epoch (Jordan 2024).
    Alternating,
}

/// Progress bar on a terminal, one log line per epoch otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    /// The run directory, to say where a resume continues from.
    run: PathBuf,
}

impl TrainObserver for Progress {
    fn start(&self, epoch: usize, epochs: usize, steps_per_epoch: usize) {
        if epoch > 0 {
            // Said on a terminal too: the bar's position alone does not say it is a resume.
            eprintln!(
                "resuming at epoch {epoch} of {epochs} from {}",
                layerzero_train::RunDir::new(&self.run)
                    .checkpoint(epoch)
                    .display()
            );
        }
        if let Some(bar) = &self.bar {
            bar.set_length((epochs * steps_per_epoch) as u64);
            bar.set_position((epoch * steps_per_epoch) as u64);
            bar.reset_eta();
        } else {
            eprintln!(
                "training from epoch {epoch} of {epochs} ({steps_per_epoch} steps per epoch)"
            );
        }
    }
    fn step(&self, epoch: usize, _step: usize, loss: f32) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!("epoch {epoch} loss {loss:.3}"));
        }
    }
    fn epoch(&self, m: &EpochMetrics) {
        // The training side only when progressive resizing shrank it.
        let side = if m.image_side == layerzero_data::IMAGE_SIDE {
            String::new()
        } else {
            format!(" at {0}×{0}", m.image_side)
        };
        let line = format!(
            "epoch {:>3}: train loss {:.4} acc {:.2}%{side} | test loss {:.4} top-1 {:.2}% top-5 {:.2}% | {:.0} img/s, {:.0} s",
            m.epoch,
            m.train_loss,
            100.0 * m.train_top1,
            m.test_loss,
            100.0 * m.test_top1,
            100.0 * m.test_top5,
            m.images_per_s,
            m.wall_s
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

fn progress_bar() -> Option<ProgressBar> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn load_split(common: &CommonArgs, split: Split) -> Result<CifarSet> {
    CifarSet::load(&common.data_dir, common.dataset, split)
        .with_context(|| format!("loading the {split} split"))
}

/// The profile's configuration with the command line's overrides, validated.
fn configure(args: &TrainArgs) -> Result<TrainConfig> {
    let mut config = TrainConfig::from_profile(args.profile, &args.arch, args.seed);
    let profile_steps = total_steps(&config);
    if let Some(e) = args.epochs {
        config.epochs = e;
    }
    if let Some(b) = args.batch_size {
        config.batch_size = b;
    }
    if let Some(lr) = args.lr {
        *config.schedule.peak_mut() = lr;
    }
    if let Some(ls) = args.label_smoothing {
        config.label_smoothing = ls;
    }
    if let Some(m) = args.momentum {
        config.sgd.momentum = m;
    }
    if let Some(wd) = args.weight_decay {
        config.sgd.weight_decay = wd;
    }
    // Each switch has its opposite; neither given keeps the profile's choice.
    if args.nesterov || args.no_nesterov {
        config.sgd.nesterov = args.nesterov;
    }
    if args.no_decay_on_norm_and_bias || args.decay_on_norm_and_bias {
        config.sgd.no_decay_on_norm_and_bias = args.no_decay_on_norm_and_bias;
    }
    if let Some(flip) = args.flip {
        config.alternating_flip = flip == FlipArg::Alternating;
    }
    match &args.progressive_resize {
        Some(ResizeArg::Off) => config.progressive_resize = None,
        Some(ResizeArg::Phases(r)) => config.progressive_resize = Some(r.clone()),
        None => {}
    }
    if let Some(n) = args.ghost_batches {
        config.ghost_batches = n;
    }
    // Validated before the schedule is stretched (which divides by the batch size).
    if let Err(e) = config.validate() {
        return Err(config_mistake(args, e));
    }
    if args.epochs.is_some() || args.batch_size.is_some() {
        rescale_schedule(&mut config, profile_steps);
    }
    Ok(config)
}

/// An `--arch` this binary does not know is a mistake in the command line (exit 2), not a
/// failure of the run.
fn unknown_arch_is_usage(e: layerzero_models::ModelError) -> anyhow::Error {
    match e {
        layerzero_models::ModelError::UnknownArchitecture { .. } => {
            crate::usage(format!("--arch: {e}"))
        }
        e => e.into(),
    }
}

/// A configuration `TrainConfig::validate` refuses, as a usage mistake (exit 2) that names the
/// flag: the value the user gave, or the profile's own default that no longer fits what the
/// user changed (then with the flag that overrides it).
fn config_mistake(args: &TrainArgs, e: TrainError) -> anyhow::Error {
    let TrainError::InvalidConfig {
        what,
        expected,
        found,
    } = &e
    else {
        return e.into();
    };
    let (flag, given) = match *what {
        "epochs" => ("--epochs", args.epochs.is_some()),
        "batch size" => ("--batch-size", args.batch_size.is_some()),
        "ghost batches" => ("--ghost-batches", args.ghost_batches.is_some()),
        "label smoothing" => ("--label-smoothing", args.label_smoothing.is_some()),
        "learning rate" => ("--lr", args.lr.is_some()),
        "momentum" => ("--momentum", args.momentum.is_some()),
        "Nesterov momentum" => ("--momentum (or --no-nesterov)", args.momentum.is_some()),
        "weight decay" => ("--weight-decay", args.weight_decay.is_some()),
        w if w.starts_with("progressive resize") => {
            ("--progressive-resize", args.progressive_resize.is_some())
        }
        _ => return e.into(),
    };
    if given {
        crate::usage(format!(
            "{flag} ({what}): expected {expected}, found {found}"
        ))
    } else {
        let hint = match flag {
            "--progressive-resize" => " (--progressive-resize off trains at full size throughout)",
            "--ghost-batches" => " (--ghost-batches 1 turns them off)",
            _ => "",
        };
        crate::usage(format!(
            "the {} profile's {what} no longer fits: expected {expected}, found {found}; set \
             {flag} to override it{hint}",
            args.profile
        ))
    }
}

pub fn train(args: TrainArgs) -> Result<()> {
    set_threads(args.common.threads)?;
    let device = device(&args.common.device)?;
    let config = configure(&args)?;
    let net = create_model(
        &args.arch,
        &ModelConfig::new(args.common.dataset.num_classes())
            .with_seed(args.seed)
            .with_device(device),
    )
    .map_err(unknown_arch_is_usage)?;
    let train_set = load_split(&args.common, Split::Train)?;
    let test_set = load_split(&args.common, Split::Test)?;
    if args.resume && !layerzero_train::RunDir::new(&args.out).config().exists() {
        // Scripts pass --resume on every call; the first one starts the run.
        eprintln!(
            "note: {} holds no run to resume; starting a new one",
            args.out.display()
        );
    }
    let opts = RunOptions {
        resume: args.resume,
        max_epochs: args.max_epochs,
        metadata: Some(weights_metadata(net.as_ref(), args.common.dataset)),
        readback_steps: args.readback_steps.map(std::num::NonZeroUsize::get),
    };
    let progress = Progress {
        bar: progress_bar(),
        run: args.out.clone(),
    };
    let outcome = train_observed(
        net.as_ref(),
        &train_set,
        &test_set,
        &config,
        &args.out,
        &opts,
        &progress,
    )
    .map_err(|e| match e {
        TrainError::InvalidConfig {
            what: "progressive resize",
            ..
        } => anyhow::anyhow!(
            "{e}; pass --progressive-resize off to train {} at 32×32 throughout",
            args.arch
        ),
        // Checked against the data (a batch larger than the training images): still a
        // mistake in the command line, named by its flag.
        e @ TrainError::InvalidConfig {
            what: "batch size", ..
        } => config_mistake(&args, e),
        TrainError::InvalidConfig {
            what: "run directory",
            expected,
            found,
        } => crate::usage(format!("--out: expected {expected}, found {found}")),
        e => e.into(),
    })?;
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    if outcome.finished {
        let last = outcome.metrics.last();
        out!(
            "trained {} for {} epochs: test top-1 {}; weights in {}",
            args.arch,
            outcome.epochs_done,
            last.map_or("n/a".into(), |m| format!("{:.2}%", 100.0 * m.test_top1)),
            outcome.weights.display()
        );
    } else {
        out!(
            "stopped after epoch {} of {}; continue with --resume",
            outcome.epochs_done,
            config.epochs
        );
    }
    Ok(())
}

/// Optimiser steps of a whole run of `config` (the schedule's length).
fn total_steps(config: &TrainConfig) -> usize {
    let images = config.train_limit.unwrap_or(50_000);
    config
        .epochs
        .saturating_mul((images / config.batch_size).max(1))
}

/// Keeps a schedule in step with an `--epochs` or `--batch-size` override: a one-cycle or
/// cosine schedule gets the run's new length, a multi-step schedule's milestones move in
/// proportion (the paper profile's 32k and 48k of 64k steps stay at half and three quarters
/// of the run; left alone, 10 epochs would never reach the first and the rate would never
/// fall). `profile_steps` is the profile's own run length, before the overrides.
fn rescale_schedule(config: &mut TrainConfig, profile_steps: usize) {
    use layerzero_train::LrSchedule;
    let steps = total_steps(config);
    match &mut config.schedule {
        LrSchedule::OneCycle { total_steps, .. } | LrSchedule::Cosine { total_steps, .. } => {
            *total_steps = steps
        }
        LrSchedule::MultiStep { milestones, .. } => {
            for m in milestones.iter_mut() {
                // Exact in u128 for any realistic run; rounds to the nearest step.
                let scaled = (*m as u128 * steps as u128 + profile_steps as u128 / 2)
                    / profile_steps as u128;
                // At least 1: a milestone at step 0 would skip the base rate altogether.
                *m = usize::try_from(scaled).unwrap_or(usize::MAX).max(1);
            }
        }
    }
}

/// Header metadata for weights trained here.
pub fn weights_metadata(net: &dyn Network, dataset: Dataset) -> WeightsMetadata {
    let (m, s) = (dataset.channel_mean(), dataset.channel_std());
    WeightsMetadata::for_network(net)
        .with_dataset(dataset.cli_name())
        .with_normalization(format!("mean={m:?} std={s:?}"))
}

/// `layerzero eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model name; default: the `layerzero.arch` recorded in the weights file.
    #[arg(long)]
    pub arch: Option<String>,
    /// Weights: a safetensors file with PyTorch state_dict names, or
    /// `hf://owner/repo[@revision]/path.safetensors` (from the Hugging Face cache; downloading a
    /// missing file needs a build with `--features hub`).
    #[arg(long)]
    pub weights: String,
    /// Evaluate only the first N test images.
    #[arg(long, value_parser = at_least_one)]
    pub limit: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 500, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Print {"top1", "top5", "loss", "n_images"} as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Builds the network for a weights file and loads the weights.
pub fn load_network(
    arch: Option<&str>,
    weights: &str,
    dataset: Dataset,
    device: &Device,
) -> Result<Box<dyn Network>> {
    let path = layerzero_models::hub::resolve_weights(weights)?;
    // Read once: the header says what the file is, the same bytes are then loaded.
    let bytes = read_weights_file(&path)?;
    let origin = path.display().to_string();
    let metadata = read_metadata_bytes(&bytes, &origin)?;
    // A training checkpoint (`checkpoints/epoch-NNN.safetensors`) holds the model's state
    // beside the optimiser's, and its architecture in its own header: a run stopped with
    // --max-epochs has nothing else to evaluate.
    if metadata
        .other
        .contains_key(layerzero_train::checkpoint::META_KEY)
    {
        let ck = layerzero_train::Checkpoint::from_bytes(&bytes, &path, device)?;
        if let Some(a) = arch {
            // Compared by the network's one name: `resnet20-a` is `resnet20`.
            let given = create_model(a, &ModelConfig::new(dataset.num_classes()))
                .map_err(unknown_arch_is_usage)?
                .spec()
                .name
                .clone();
            if given != ck.meta.arch {
                bail!(
                    "{} is a training checkpoint of `{}`, not `{a}` (--arch)",
                    path.display(),
                    ck.meta.arch
                );
            }
        }
        eprintln!(
            "note: {} is the training checkpoint after epoch {} of a `{}` run",
            path.display(),
            ck.meta.epoch,
            ck.meta.arch
        );
        let net = create_model(
            &ck.meta.arch,
            &ModelConfig::new(dataset.num_classes()).with_device(device.clone()),
        )
        .with_context(|| format!("{}: its checkpoint header", path.display()))?;
        let tensors: Vec<(String, candle_core::Tensor)> = ck.model.into_iter().collect();
        layerzero_models::load_state_dict(net.as_ref(), &tensors, &LoadOptions::default())
            .with_context(|| format!("loading {} into {}", path.display(), ck.meta.arch))?;
        return Ok(net);
    }
    let config = ModelConfig::new(dataset.num_classes()).with_device(device.clone());
    let (arch, net) = match arch {
        Some(a) => (
            a.to_string(),
            create_model(a, &config).map_err(unknown_arch_is_usage)?,
        ),
        None => {
            let a = metadata.arch.clone().with_context(|| {
                format!(
                    "{} does not record its architecture (layerzero.arch); pass --arch",
                    path.display()
                )
            })?;
            // A name from the file, not the command line: a failure of the file (exit 1).
            let net = create_model(&a, &config)
                .with_context(|| format!("{}: its layerzero.arch", path.display()))?;
            (a, net)
        }
    };
    load_safetensors_bytes(net.as_ref(), &bytes, &origin, &LoadOptions::default())
        .with_context(|| format!("loading {origin} into {arch}"))?;
    Ok(net)
}

pub fn eval(args: EvalArgs) -> Result<()> {
    set_threads(args.common.threads)?;
    let device = device(&args.common.device)?;
    let net = load_network(
        args.arch.as_deref(),
        &args.weights,
        args.common.dataset,
        &device,
    )?;
    let mut test = load_split(&args.common, Split::Test)?;
    if let Some(n) = args.limit {
        test = test.truncate(n);
    }
    let s = evaluate(
        net.as_ref(),
        &test,
        args.batch_size,
        layerzero_models::Interventions::none(),
    )?
    .summary();
    if args.json {
        out!(
            "{}",
            serde_json::json!({"top1": s.top1, "top5": s.top5, "loss": s.loss, "n_images": s.n_images})
        );
    } else {
        out!(
            "{}: top-1 {:.2}%  top-5 {:.2}%  loss {:.4}  on {} test images",
            net.spec().name,
            100.0 * s.top1,
            100.0 * s.top5,
            s.loss,
            s.n_images
        );
    }
    Ok(())
}

/// `layerzero inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A safetensors weights file, or `hf://owner/repo[@revision]/path.safetensors`.
    pub weights: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let path = layerzero_models::hub::resolve_weights(&args.weights)?;
    let bytes = read_weights_file(&path)?;
    let origin = path.display().to_string();
    let content = read_safetensors_bytes(&bytes, &origin)?;
    let meta = &content.metadata;
    let sha = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&bytes))
    };
    // The layer table needs the architecture built; one of the user's own (registered in
    // their program, not in this binary) has none, and a file whose tensors are not the
    // network its header names gets none either. The file's tensors are still worth showing.
    // A training checkpoint keeps its architecture (and epoch) in its own header entry.
    let checkpoint: Option<layerzero_train::CheckpointMeta> = meta
        .other
        .get(layerzero_train::checkpoint::META_KEY)
        .and_then(|json| serde_json::from_str(json).ok());
    let arch = meta
        .arch
        .clone()
        .or_else(|| checkpoint.as_ref().map(|c| c.arch.clone()));
    let ignore = checkpoint
        .as_ref()
        .map(|_| layerzero_train::checkpoint::MOMENTUM_PREFIX);
    let inventory = match &arch {
        Some(arch) => match layer_table_network(arch, meta.num_classes, &bytes, &origin, ignore) {
            Ok(net) => Some(net),
            Err(why) => {
                eprintln!("note: {why}: no layer table, only the file's tensors");
                None
            }
        },
        None => None,
    };
    if args.json {
        // null, not [], when the architecture is unknown here: no table, rather than an
        // empty one.
        let layers: Option<Vec<_>> = inventory.as_ref().map(|n| {
            n.inventory()
                .iter()
                .map(|l| {
                    serde_json::json!({"layer": l.name, "kind": l.kind.short_name(),
                    "in_channels": l.in_channels, "out_channels": l.out_channels,
                    "params": l.params, "macs": l.macs, "changes_channels": l.changes_channels()})
                })
                .collect()
        });
        let tensors: Vec<_> = content
            .tensors
            .iter()
            .map(|(n, t)| serde_json::json!({"name": n, "shape": t.dims(), "dtype": format!("{:?}", t.dtype())}))
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "file": args.weights, "sha256": sha, "arch": arch, "dataset": meta.dataset,
                "shortcut": meta.shortcut, "normalization": meta.normalization,
                "num_classes": meta.num_classes, "tensors": tensors, "layers": layers,
                "checkpoint_epoch": checkpoint.as_ref().map(|c| c.epoch),
            }))?
        );
        return Ok(());
    }
    out!("{}  sha256 {sha}", args.weights);
    if let Some(c) = &checkpoint {
        out!(
            "training checkpoint after epoch {} (step {}, seed {})",
            c.epoch,
            c.step,
            c.seed
        );
    }
    out!(
        "arch {}  dataset {}  shortcut {}  classes {}",
        arch.as_deref().unwrap_or("?"),
        meta.dataset.as_deref().unwrap_or("?"),
        meta.shortcut.as_deref().unwrap_or("?"),
        meta.num_classes.map_or("?".into(), |n| n.to_string())
    );
    out!("{} tensors", content.tensors.len());
    if let Some(net) = inventory {
        out!(
            "\n{:<28} {:<9} {:>6} {:>6} {:>10} {:>12}  channel-changing",
            "layer",
            "kind",
            "in",
            "out",
            "params",
            "MACs"
        );
        for l in net.inventory().iter() {
            out!(
                "{:<28} {:<9} {:>6} {:>6} {:>10} {:>12}  {}",
                l.name,
                l.kind.short_name(),
                l.in_channels,
                l.out_channels,
                l.params,
                l.macs,
                if l.changes_channels() { "yes" } else { "" }
            );
        }
    } else {
        for (n, t) in &content.tensors {
            out!("  {n:<40} {:?}", t.dims());
        }
    }
    Ok(())
}

/// The network whose layer table `inspect` prints, checked against the file it describes:
/// the header's class count must fit in the file (a header may claim any number, and the
/// classifier is built from it before anything is read), and the file's tensors must load
/// into the network (names, shapes, dtypes), so that the table describes the tensors in the
/// file rather than what the header claims. `Err` says why there is no table.
fn layer_table_network(
    arch: &str,
    num_classes: Option<usize>,
    bytes: &[u8],
    origin: &str,
    ignore_prefix: Option<&str>,
) -> std::result::Result<Box<dyn Network>, String> {
    let classes = num_classes.unwrap_or(10);
    if classes.saturating_mul(4) > bytes.len() {
        return Err(format!(
            "`layerzero.num_classes` = {classes} cannot be right: the file has {} bytes, too \
             few for a classifier with that many outputs",
            bytes.len()
        ));
    }
    let config = ModelConfig::new(classes).with_init(layerzero_models::Init::Zeros);
    let net = create_model(arch, &config).map_err(|e| match e {
        layerzero_models::ModelError::UnknownArchitecture { .. } => {
            format!("architecture `{arch}` is not built into this binary")
        }
        e => format!("cannot build `{arch}` with {classes} classes: {e}"),
    })?;
    let mut options = LoadOptions::default();
    if let Some(prefix) = ignore_prefix {
        options = options.ignore(prefix);
    }
    load_safetensors_bytes(net.as_ref(), bytes, origin, &options)
        .map_err(|e| format!("the file's tensors are not the `{arch}` its header names: {e}"))?;
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `layerzero train` ARGS, as the command line parses them.
    fn train_args(args: &[&str]) -> std::result::Result<TrainArgs, clap::Error> {
        #[derive(Parser)]
        struct Train {
            #[command(flatten)]
            args: TrainArgs,
        }
        Train::try_parse_from(
            ["train", "--arch", "resnet20", "--out", "r"]
                .iter()
                .chain(args),
        )
        .map(|t| t.args)
    }

    #[test]
    fn a_multi_step_schedule_keeps_its_milestones_in_proportion() {
        use layerzero_train::LrSchedule;
        let milestones = |args: &[&str]| {
            let c = configure(&train_args(args).unwrap()).unwrap();
            let steps = total_steps(&c);
            match c.schedule {
                LrSchedule::MultiStep { milestones, .. } => (steps, milestones),
                other => panic!("{other:?}"),
            }
        };
        // He et al.'s 32k and 48k of the paper profile's 64k steps.
        let (steps, m) = milestones(&["--profile", "paper"]);
        assert_eq!(m, [32_000, 48_000]);
        // 10 epochs of 390 steps: still at half and three quarters, so the rate falls.
        let (steps10, m10) = milestones(&["--profile", "paper", "--epochs", "10"]);
        assert_eq!(steps10, 3_900);
        assert_eq!(
            m10,
            [
                (32_000 * steps10 + steps / 2) / steps,
                (48_000 * steps10 + steps / 2) / steps
            ]
        );
        assert!(m10[0] < steps10 / 2 + 10 && m10[1] < steps10, "{m10:?}");
        // Half the batch: twice the steps, twice the milestones.
        let (steps64, m64) = milestones(&["--profile", "paper", "--batch-size", "64"]);
        assert_eq!(steps64 * 390, steps * 781);
        assert_eq!(
            m64,
            [
                (32_000 * steps64 + steps / 2) / steps,
                (48_000 * steps64 + steps / 2) / steps
            ]
        );
        assert!(m64[0] > 63_000 && m64[0] < 64_500, "{m64:?} of {steps64}");
    }

    #[test]
    fn each_sgd_switch_can_be_turned_either_way_or_left_to_the_profile() {
        let sgd = |args: &[&str]| {
            let c = configure(&train_args(args).unwrap()).unwrap();
            (c.sgd.nesterov, c.sgd.no_decay_on_norm_and_bias)
        };
        // The quick profile has both on, the paper profile both off (He et al.).
        assert_eq!(sgd(&["--profile", "quick"]), (true, true));
        assert_eq!(sgd(&["--profile", "paper"]), (false, false));
        assert_eq!(
            sgd(&[
                "--profile",
                "quick",
                "--no-nesterov",
                "--decay-on-norm-and-bias"
            ]),
            (false, false)
        );
        assert_eq!(
            sgd(&[
                "--profile",
                "paper",
                "--nesterov",
                "--no-decay-on-norm-and-bias"
            ]),
            (true, true)
        );
        assert_eq!(sgd(&["--profile", "quick", "--no-nesterov"]), (false, true));
        for both in [
            ["--nesterov", "--no-nesterov"],
            ["--decay-on-norm-and-bias", "--no-decay-on-norm-and-bias"],
        ] {
            let err = train_args(&both).expect_err("a switch and its opposite together");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{err}"
            );
        }
    }

    #[test]
    fn progressive_resize_takes_off_or_phases() {
        assert!(matches!(parse_resize("off"), Ok(ResizeArg::Off)));
        match parse_resize("16:8,24:2") {
            Ok(ResizeArg::Phases(r)) => assert_eq!(r.to_string(), "16:8,24:2"),
            other => panic!("{other:?}"),
        }
        let err = parse_resize("Off").unwrap_err();
        assert!(
            err.contains("expected off or SIDE:EPOCHS") && err.ends_with("found Off"),
            "{err}"
        );
    }
}
