//! `layerzero ablate` (+ `merge`) and `layerzero report`: thin wrappers over the ablation and
//! report crates.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use layerzero_ablate::engine::{run, EngineConfig, RunContext};
use layerzero_ablate::{AblationMode, Shard, VerdictRule, WeightsRef};
use layerzero_data::{CifarSet, Split};
use layerzero_report::{MetricsSeries, Provenance, ReportInput, ResultsSource};

use crate::train_cmd::{at_least_one, device, load_network, set_threads, CommonArgs};
use crate::{command_line, create_parent_dir, usage};

fn parse_mode(s: &str) -> Result<AblationMode, String> {
    s.parse::<AblationMode>().map_err(|e| e.to_string())
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse::<Shard>().map_err(|e| e.to_string())
}

/// `layerzero ablate`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AblateArgs {
    #[command(subcommand)]
    pub merge: Option<AblateSub>,
    #[command(flatten)]
    pub run: AblateRunArgs,
}

/// `layerzero ablate merge`.
#[derive(Subcommand, Debug)]
pub enum AblateSub {
    /// Combine the partial results of `--shard K/N` runs into one results.json.
    #[command(after_help = "Example:\n  layerzero ablate merge shard-*.json --out results.json")]
    Merge {
        /// The shard files (all N of them).
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// The merged results.json (a .csv is written beside it).
        #[arg(long)]
        out: PathBuf,
    },
}

/// The options of an ablation run.
#[derive(Args, Debug)]
pub struct AblateRunArgs {
    /// Model name; default: the `layerzero.arch` recorded in the weights file.
    #[arg(long)]
    pub arch: Option<String>,
    /// Trained weights (safetensors, PyTorch state_dict names).
    #[arg(long)]
    pub weights: Option<String>,
    /// zero-kernel, skip-branch, reinit, rerandomize, zero-filters, prune,
    /// cumulative-zero-kernel or cumulative-skip-branch.
    #[arg(long, default_value = "zero-kernel", value_parser = parse_mode)]
    pub mode: AblationMode,
    /// Where to write results.json (a .csv is written beside it).
    #[arg(long, default_value = "results.json")]
    pub out: PathBuf,
    /// Comma-separated name patterns with * and ?, e.g. 'layer2.*,fc'. Default: every layer.
    #[arg(long)]
    pub layers: Option<String>,
    /// Evaluate every N-th ablation starting at K, writing a partial file for `ablate merge`.
    #[arg(long, value_parser = parse_shard, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Epoch-0 weights for --mode reinit (the run's init.safetensors).
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
    /// Seed of --mode rerandomize's draw [default: 0]. (The seed the weights were trained
    /// with is --train-seed.)
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// The seed --weights were trained with, recorded in results.json (train_seed) so that
    /// `layerzero report` labels and groups results by it.
    #[arg(long, value_name = "N")]
    pub train_seed: Option<u64>,
    /// Sparsity levels of zero-filters / prune, comma-separated fractions
    /// [default: 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9].
    #[arg(long)]
    pub levels: Option<String>,
    /// Most greedy steps of the cumulative modes.
    #[arg(long, value_parser = at_least_one)]
    pub max_steps: Option<usize>,
    /// Cumulative modes: choose each greedy step on the first N test images (after --limit)
    /// and measure the path on the others, which the choice never saw. Without it the path is
    /// chosen and measured on the same images, and its statistics are optimistic.
    #[arg(long, value_parser = at_least_one, value_name = "N")]
    pub selection_images: Option<usize>,
    /// A layer is trivial when |Δtop-1| ≤ this (a fraction) …
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub max_abs_delta: f64,
    /// … and McNemar's p ≥ this.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub min_p: f64,
    /// Test images held per chunk of the activation cache (memory ∝ this).
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    pub chunk_images: usize,
    /// Evaluate only the first N test images.
    #[arg(long, value_parser = at_least_one)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn ablate(args: AblateArgs) -> Result<()> {
    match args.merge {
        Some(AblateSub::Merge { shards, out }) => {
            create_parent_dir("--out", &out)?;
            let mut merged = layerzero_ablate::merge_files(&shards)?;
            // The shards' own commands name one shard each; this one made the whole file.
            merged.command = Some(command_line());
            let csv = merged.write(&out)?;
            out!(
                "merged {} shards: {} and {}",
                shards.len(),
                out.display(),
                csv.display()
            );
            Ok(())
        }
        None => ablate_run(args.run),
    }
}

fn ablate_run(args: AblateRunArgs) -> Result<()> {
    set_threads(args.common.threads)?;
    let weights = args
        .weights
        .clone()
        .ok_or_else(|| usage("--weights is required (the trained safetensors file)"))?;
    if args.mode == AblationMode::Reinit && args.init_weights.is_none() {
        return Err(usage(
            "--init-weights is required with --mode reinit (the run's epoch-0 weights, \
             init.safetensors beside its weights.safetensors)",
        ));
    }
    if args.shard.is_some() && args.mode.is_cumulative() {
        // Each greedy step depends on the one before, so the steps cannot be split.
        return Err(usage(format!(
            "--shard: {} is sequential (each step builds on the previous one) and cannot be \
             sharded; run it whole, without --shard",
            args.mode
        )));
    }
    // A flag the mode does not use is a mistake, not something to ignore: `--seed 3` with
    // zero-kernel most likely meant the weights' training seed. (given, used by the mode,
    // flag, why not.)
    let mode = args.mode;
    let unused = [
        (
            args.selection_images.is_some(),
            mode.is_cumulative(),
            "--selection-images",
            "chooses no path; it goes with cumulative-zero-kernel and cumulative-skip-branch",
        ),
        (
            args.seed.is_some(),
            mode == AblationMode::Rerandomize,
            "--seed",
            "draws nothing; it is rerandomize's seed. The seed the weights were trained with \
             is --train-seed",
        ),
        (
            args.levels.is_some(),
            mode.is_swept(),
            "--levels",
            "sweeps no level; it goes with zero-filters and prune",
        ),
        (
            args.max_steps.is_some(),
            mode.is_cumulative(),
            "--max-steps",
            "takes no greedy steps; it goes with cumulative-zero-kernel and \
             cumulative-skip-branch",
        ),
        (
            args.init_weights.is_some(),
            mode == AblationMode::Reinit,
            "--init-weights",
            "restores no epoch-0 weights; it goes with --mode reinit",
        ),
    ];
    if let Some((.., flag, why)) = unused.iter().find(|(given, used, ..)| *given && !*used) {
        return Err(usage(format!("{flag}: {mode} {why}")));
    }
    // Values clap cannot check: mistakes in the command line too (exit 2).
    let rule = VerdictRule::new(args.max_abs_delta, args.min_p)
        .map_err(|e| usage(format!("--max-abs-delta / --min-p: {e}")))?;
    let levels = match &args.levels {
        Some(text) => layerzero_ablate::sparsity::parse_levels(text)
            .map_err(|e| usage(format!("--levels: {e}")))?,
        None => layerzero_ablate::sparsity::default_levels(),
    };
    let device = device(&args.common.device)?;
    let net = load_network(args.arch.as_deref(), &weights, args.common.dataset, &device)?;
    let path = layerzero_models::hub::resolve_weights(&weights)?;
    let weights_sha = layerzero_ablate::sha256_file(&path)?;
    if let Some(init) = &args.init_weights {
        let init_sha = layerzero_ablate::sha256_file(init).with_context(|| {
            format!(
                "--init-weights {}: the run's epoch-0 weights (a local file)",
                init.display()
            )
        })?;
        if init_sha == weights_sha {
            return Err(usage(format!(
                "--init-weights {} has the same contents (SHA-256) as --weights: reinit would \
                 restore every layer to the values it has; give the run's epoch-0 weights \
                 (init.safetensors beside its weights.safetensors)",
                init.display()
            )));
        }
    }
    let mut test = CifarSet::load(&args.common.data_dir, args.common.dataset, Split::Test)?;
    if let Some(n) = args.limit {
        test = test.truncate(n);
    }
    if let Some(k) = args.selection_images.filter(|&k| k >= test.len()) {
        return Err(usage(format!(
            "--selection-images {k}: must be fewer than the {} test images{}, so that some are \
             left to measure the path on",
            test.len(),
            if args.limit.is_some() {
                " (after --limit)"
            } else {
                ""
            }
        )));
    }
    if let Some(k) = args.selection_images {
        let measured = test.len() - k;
        if (measured as u64) < layerzero_report::FEW_IMAGES {
            // Not an error: a quick look on few images is legitimate, but its intervals are
            // wide and the report will say so; better to know before the run than after.
            eprintln!(
                "note: the path will be chosen on {k} images and measured on the other \
                 {measured}; the report cautions under held-out curves measured on fewer than \
                 {} images (a Δtop-1's 95 % interval is then about as wide as the verdict \
                 threshold)",
                layerzero_report::FEW_IMAGES
            );
        }
    }
    let mut cfg = EngineConfig::new(args.mode);
    cfg.layers = args.layers;
    cfg.shard = args.shard;
    cfg.rule = rule;
    cfg.chunk_images = args.chunk_images;
    cfg.levels = levels;
    cfg.seed = args.seed.unwrap_or(0);
    cfg.init_weights = args.init_weights;
    cfg.max_cumulative_steps = args.max_steps;
    cfg.selection_images = args.selection_images;
    let ctx = RunContext {
        net: net.as_ref(),
        test: &test,
        weights: WeightsRef {
            path: weights.clone(),
            sha256: weights_sha,
        },
        dataset: args.common.dataset.cli_name().to_string(),
        split: "test".to_string(),
        threads: args
            .common
            .threads
            .unwrap_or_else(rayon::current_num_threads),
    };
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_message(format!("{}", args.mode));
        Some(b)
    } else {
        None
    };
    let report = |done: usize, total: usize| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    };
    // After the quick checks (weights, data) and before the long part.
    create_parent_dir("--out", &args.out)?;
    let command = command_line();
    let mut results = run(&ctx, &cfg, Some(&report))?;
    results.train_seed = args.train_seed;
    results.command = Some(command);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let csv = results.write(&args.out)?;
    let trivial = results
        .layers
        .iter()
        .filter(|l| l.verdict == layerzero_ablate::Verdict::Trivial)
        .count();
    let chosen_on = match results.selection_images {
        Some(k) => format!(" (the path chosen on the {k} before them)"),
        None => String::new(),
    };
    out!(
        "{} {} on {} images{}: baseline top-1 {:.2}%, {} of {} ablations trivial ({}); {} and {}",
        results.arch,
        results.mode,
        results.n_images,
        chosen_on,
        100.0 * results.baseline.top1,
        trivial,
        results.layers.len(),
        cfg.rule.describe(),
        args.out.display(),
        csv.display()
    );
    // A sweep's level may zero nothing on a small layer: a genuine no-op, not a warning.
    let inert: Vec<&str> = results
        .without_effect()
        .filter(|l| l.level.is_none())
        .map(|l| l.layer.as_str())
        .collect();
    if !inert.is_empty() {
        eprintln!(
            "note: {} of {} ablations changed nothing at all (loss equal to the baseline's to \
             the last bit, no image flipped): {}. If that is unexpected, check that the \
             architecture applies the intervention (docs/architecture.md, how to add an \
             architecture)",
            inert.len(),
            results.layers.len(),
            inert.join(", ")
        );
    }
    let none_zeroed: Vec<String> = results
        .layers
        .iter()
        .filter(|l| l.zeroed == Some(0))
        .filter_map(|l| Some(format!("{} at {}", l.layer, l.level?)))
        .collect();
    if !none_zeroed.is_empty() {
        eprintln!(
            "note: {} of {} sweep points zeroed nothing (the level rounds down to none of the \
             layer's {}), so they measured the unchanged network: {}",
            none_zeroed.len(),
            results.layers.len(),
            if results.mode == AblationMode::ZeroFilters {
                "filters"
            } else {
                "weights"
            },
            none_zeroed.join(", ")
        );
    }
    Ok(())
}

/// `layerzero report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// results.json files (any modes, architectures and seeds).
    #[arg(long, num_args = 1.., required = true)]
    pub results: Vec<PathBuf>,
    /// Training metrics as ARCH:SEED:PATH (e.g. resnet20:0:runs/resnet20/metrics.jsonl).
    #[arg(long, num_args = 0..)]
    pub metrics: Vec<String>,
    /// Output directory (report.md, summary.json, layers.csv, figures/).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn report(args: ReportArgs) -> Result<()> {
    // Every usage mistake that needs no file before any is read.
    let specs = args
        .metrics
        .iter()
        .map(|spec| parse_metrics_spec(spec))
        .collect::<Result<Vec<_>>>()?;
    let mut provenance = provenance(command_line())?;
    let results: Vec<ResultsSource> = args
        .results
        .iter()
        .map(ResultsSource::read)
        .collect::<Result<_, _>>()?;
    // The commands that made the inputs, where they recorded them, before the report's own.
    let mut commands: Vec<String> = Vec::new();
    for c in results.iter().filter_map(|r| r.results.command.clone()) {
        if !commands.contains(&c) {
            commands.push(c);
        }
    }
    commands.append(&mut provenance.commands);
    provenance.commands = commands;
    let input = ReportInput {
        results,
        metrics: specs
            .into_iter()
            .map(|(arch, seed, path)| {
                MetricsSeries::read(arch, seed, path).map_err(|e| match e {
                    // The run's config.json disagrees with ARCH:SEED: the command line's mistake.
                    layerzero_report::ReportError::Input { .. } => usage(e.to_string()),
                    other => other.into(),
                })
            })
            .collect::<Result<_>>()?,
        provenance,
    };
    let files = layerzero_report::write_report(&args.out, &input)?;
    out!("report written to {}", files.report_md.display());
    Ok(())
}

/// `--metrics ARCH:SEED:PATH` (SEED may be empty) into its parts.
fn parse_metrics_spec(spec: &str) -> Result<(&str, Option<u64>, &str)> {
    let mut parts = spec.splitn(3, ':');
    let (Some(arch), Some(seed), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(usage(format!(
            "--metrics: expected ARCH:SEED:PATH, found {spec:?}"
        )));
    };
    let seed = if seed.is_empty() {
        None
    } else {
        Some(seed.parse().map_err(|_| {
            usage(format!(
                "--metrics {spec:?}: expected a seed number (or nothing) between the colons, found {seed:?}"
            ))
        })?)
    };
    Ok((arch, seed, path))
}

/// Version, the commit this binary was built from (when built in a git checkout), the command
/// and the time (`SOURCE_DATE_EPOCH` fixes it, for a byte-identical re-run), for the report.
pub fn provenance(command: String) -> Result<Provenance> {
    Ok(Provenance {
        layerzero_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: option_env!("LAYERZERO_GIT_COMMIT").map(str::to_string),
        commands: vec![command],
        created_utc: layerzero_report::created_utc_now().map_err(|e| usage(e.to_string()))?,
        ..Provenance::default()
    })
}
