//! The analysed study ([`Summary`], written as `summary.json`) and [`analyze`], which
//! builds it from a [`ReportInput`] without touching the file system.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use layerzero_ablate::{AblationMode, LayerRecord, Metrics, ResultsFile, Verdict, VerdictRule};
use serde::{Deserialize, Serialize};

use crate::claims::{evaluate_claims, Claim};
use crate::error::{ReportError, Result};
use crate::input::{Provenance, ReportInput, WeightsChecksum};
use crate::metrics::EpochMetrics;

/// Version of the `summary.json` layout.
pub const REPORT_SCHEMA: u32 = 1;

/// The single-layer modes, which get a per-layer table and a Δtop-1 figure.
pub const SINGLE_LAYER_MODES: [AblationMode; 4] = [
    AblationMode::ZeroKernel,
    AblationMode::SkipBranch,
    AblationMode::Reinit,
    AblationMode::Rerandomize,
];

/// The swept modes, which get a level-by-layer table and a sensitivity figure.
pub const SWEPT_MODES: [AblationMode; 2] = [AblationMode::ZeroFilters, AblationMode::Prune];

/// Everything the report says, as data (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Always [`REPORT_SCHEMA`].
    pub report_schema: u32,
    /// The crate that made the report and its version, e.g. `layerzero-report 0.1.0`.
    pub generator: String,
    /// As supplied by the caller.
    pub provenance: Provenance,
    /// Every weights file involved: those in the provenance and those named by results
    /// files, deduplicated, sorted by path.
    pub weights: Vec<WeightsChecksum>,
    /// The results files, in the order networks and modes are reported.
    pub inputs: Vec<InputFile>,
    /// One entry per architecture: residual nets first, each followed by its no-shortcut
    /// twin, then the remaining no-shortcut nets, then others.
    pub networks: Vec<NetworkSummary>,
    /// The seed paper's three claims checked against the data.
    pub claims: Vec<Claim>,
    /// One entry per training-metrics series.
    pub training: Vec<TrainingSummary>,
    /// Every figure the report can have, drawn or omitted (with the reason).
    pub figures: Vec<FigureNote>,
}

/// One results file as the report used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    /// Its path.
    pub path: String,
    /// SHA-256 of the file, when it was read from disk.
    pub sha256: Option<String>,
    /// Architecture.
    pub arch: String,
    /// Mode.
    pub mode: AblationMode,
    /// The file's `seed`, if any.
    pub seed: Option<u64>,
    /// Dataset and split, e.g. `cifar10` / `test`.
    pub dataset: String,
    /// Split evaluated.
    pub split: String,
    /// Number of images evaluated.
    pub n_images: u64,
    /// The evaluated weights.
    pub weights: WeightsChecksum,
    /// Number of layer records.
    pub records: usize,
    /// Wall-clock seconds of the ablation run.
    pub elapsed_s: f64,
}

/// Whether a network has shortcuts, judged from its layer roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Some record has role `residual-branch` or `shortcut`.
    Residual,
    /// Some record has role `plain` and none is `residual-branch` or `shortcut`.
    Plain,
    /// Neither.
    Other,
}

impl Family {
    /// `"with shortcuts"`, `"no shortcuts"` or `"other"`.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Residual => "with shortcuts",
            Family::Plain => "no shortcuts",
            Family::Other => "other",
        }
    }
}

/// Mean, standard deviation and range of a quantity over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Number of values (seeds).
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (divisor n − 1); `None` for a single value.
    pub std: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Stat {
    /// The statistics of a non-empty slice; `None` when it is empty.
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        // Shifted by the first value: seeds that agree give exactly that value and a std of
        // exactly 0 (summed plainly, three seeds at 0.1 gave a mean of 0.10000000000000002,
        // above their max, and a std of 1.7e-17), and the sums stay small.
        let shift = values[0];
        let offset = values.iter().map(|v| v - shift).sum::<f64>() / n as f64;
        let (lo, hi) = (
            values.iter().copied().fold(f64::INFINITY, f64::min),
            values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        // Not with NaNs or infinities (clamp panics when lo > hi, as all-NaN values give).
        let mean = if lo <= hi && lo.is_finite() && hi.is_finite() {
            (shift + offset).clamp(lo, hi)
        } else {
            values.iter().sum::<f64>() / n as f64
        };
        let std = (n > 1).then(|| {
            let ss: f64 = values
                .iter()
                .map(|v| (v - shift - offset) * (v - shift - offset))
                .sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Some(Stat {
            n,
            mean,
            std,
            min: lo,
            max: hi,
        })
    }
}

/// One architecture's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkSummary {
    /// Architecture name, e.g. `resnet20`.
    pub arch: String,
    /// With or without shortcuts.
    pub family: Family,
    /// The twin of the other family (`resnet20` ↔ `plain20`), when both are present.
    pub twin: Option<String>,
    /// Dataset of the first results file, e.g. `cifar10`.
    pub dataset: String,
    /// Split of the first results file, e.g. `test`.
    pub split: String,
    /// One baseline per distinct weights file (i.e. per trained seed).
    pub baselines: Vec<Baseline>,
    /// Baseline top-1 over the distinct weights files.
    pub baseline_top1: Stat,
    /// One entry per mode, in [`AblationMode::ALL`] order.
    pub modes: Vec<ModeSummary>,
}

impl NetworkSummary {
    /// The entry for `mode`, if the network has results for it.
    pub fn mode(&self, mode: AblationMode) -> Option<&ModeSummary> {
        self.modes.iter().find(|m| m.mode == mode)
    }
}

/// The unablated metrics of one weights file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The weights.
    pub weights: WeightsChecksum,
    /// The training seeds of the results files evaluating these weights (`train_seed`, or
    /// `seed` outside rerandomize in files written before it).
    pub seeds: Vec<Option<u64>>,
    /// Number of images evaluated.
    pub n_images: u64,
    /// Top-1, top-5 (fractions) and loss.
    pub metrics: Metrics,
}

/// One (architecture, mode) across seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeSummary {
    /// The mode.
    pub mode: AblationMode,
    /// Seeds of its files, ascending (`None` = the file had no seed); a seed appears twice
    /// when two files share it but evaluate different weights.
    pub seeds: Vec<Option<u64>>,
    /// The files, in the order of `seeds`.
    pub sources: Vec<String>,
    /// The verdict rule in words, shared by all files.
    pub verdict_rule: String,
    /// Its thresholds.
    pub verdict_thresholds: VerdictRule,
    /// Non-cumulative modes: one entry per (layer, level) in network order, then level.
    pub layers: Vec<LayerSummary>,
    /// Cumulative modes: one curve per seed.
    pub cumulative: Vec<CumulativeCurve>,
}

/// Whether the seeds agree on a layer's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consensus {
    /// Trivial in every seed.
    Trivial,
    /// Non-trivial in every seed.
    NonTrivial,
    /// The seeds disagree.
    Mixed,
}

impl Consensus {
    /// `"trivial"`, `"non-trivial"` or `"mixed"`.
    pub const fn name(self) -> &'static str {
        match self {
            Consensus::Trivial => "trivial",
            Consensus::NonTrivial => "non-trivial",
            Consensus::Mixed => "mixed",
        }
    }
}

impl fmt::Display for Consensus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One layer (at one level, for swept modes) across seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    /// Network order.
    pub index: usize,
    /// Layer name.
    pub layer: String,
    /// `conv`, `linear`, ...
    pub kind: String,
    /// `stem`, `residual-branch`, ...
    pub role: String,
    /// Whether it changes the channel count.
    pub changes_channels: bool,
    /// Parameters.
    pub params: u64,
    /// Sparsity level (swept modes).
    pub level: Option<f64>,
    /// Δtop-1 (fraction) over seeds.
    pub delta_top1: Stat,
    /// Ablated top-1 (fraction) over seeds.
    pub top1: Stat,
    /// Seeds with verdict `trivial`.
    pub trivial: usize,
    /// Seeds with verdict `non-trivial`.
    pub non_trivial: usize,
    /// Whether the seeds agree.
    pub consensus: Consensus,
    /// The records, one per seed.
    pub per_seed: Vec<SeedRecord>,
}

/// One seed's record of a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRecord {
    /// The file's seed label: rerandomize's draw seed, else the weights' training seed
    /// (`train_seed`, or `seed` in files written before it).
    pub seed: Option<u64>,
    /// The file.
    pub source: String,
    /// The record as written by the ablation.
    pub record: LayerRecord,
    /// The file's `n_images` (0 when read from a `summary.json` written before this field).
    #[serde(default)]
    pub n_images: u64,
}

/// One seed's greedy multiple-deletion curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CumulativeCurve {
    /// The file's seed label: rerandomize's draw seed, else the weights' training seed
    /// (`train_seed`, or `seed` in files written before it).
    pub seed: Option<u64>,
    /// The file.
    pub source: String,
    /// Top-1 with nothing ablated (step 0), a fraction.
    pub baseline_top1: f64,
    /// Top-1, top-5 and loss with nothing ablated, on the images the steps were measured on
    /// (`None` when read from a `summary.json` written before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Metrics>,
    /// The images every number of the curve was measured on (0 when read from a
    /// `summary.json` written before this field).
    #[serde(default)]
    pub n_images: u64,
    /// With a held-out selection: the images before them, on which the path was chosen (the
    /// steps' `selection_top1`). Absent: chosen on the measured images themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_images: Option<u64>,
    /// With a held-out selection: top-1 with nothing ablated on the selection images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_baseline_top1: Option<f64>,
    /// The steps in order: record `k` has the first `k + 1` layers ablated.
    pub steps: Vec<LayerRecord>,
}

/// One training run's curve and its headline numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Architecture.
    pub arch: String,
    /// Training seed, if known.
    pub seed: Option<u64>,
    /// The metrics file.
    pub path: String,
    /// Last epoch number.
    pub final_epoch: u64,
    /// Test top-1 after the last epoch, a fraction.
    pub final_test_top1: f64,
    /// Training loss in the last epoch.
    pub final_train_loss: f64,
    /// Best test top-1 over epochs, a fraction.
    pub best_test_top1: f64,
    /// The (first) epoch that reached it.
    pub best_epoch: u64,
    /// Mean training throughput over the full-size epochs that record it (a downscaled epoch's
    /// rate is not comparable).
    pub mean_images_per_s: Option<f64>,
    /// Epochs trained on downscaled images (progressive resizing).
    #[serde(default)]
    pub resized_epochs: u64,
    /// Every epoch.
    pub curve: Vec<EpochMetrics>,
}

/// A figure the report can contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FigureNote {
    /// Path relative to the report directory, e.g. `figures/cumulative.svg`.
    pub file: String,
    /// What it shows.
    pub title: String,
    /// Whether it is drawn.
    pub drawn: bool,
    /// Why it is omitted (empty when drawn).
    pub reason: String,
}

/// Analyses the inputs: checks that they fit together, groups results by architecture and
/// mode, aggregates across seeds, checks the claims and plans the figures. Pure: reads no
/// file and no clock.
///
/// Errors when a results file fails validation, is a partial shard, or two files of one
/// (architecture, mode) measure the same thing: the same weights (and, for `rerandomize`, the
/// same draw seed) on the same kind of image set (all images, or a held-out selection), even
/// under different seed labels (one network counted as two seeds), or files of one
/// (architecture, mode) use different verdict thresholds, or a metrics series has no epochs.
pub fn analyze(input: &ReportInput) -> Result<Summary> {
    // Group files by arch, then mode, then seed.
    // Key: (seed label, weights sha256, held-out selection). A `rerandomize` file's seed is
    // the re-draw seed, which several training runs (different weights) may share; a
    // cumulative curve chosen on held-out images may stand beside one of the same weights
    // chosen on all of them.
    type Files<'a> = BTreeMap<FileKey<'a>, (&'a str, &'a ResultsFile)>;
    let mut checksums: BTreeMap<&str, &str> = BTreeMap::new();
    let mut by_arch: BTreeMap<&str, BTreeMap<AblationMode, Files<'_>>> = BTreeMap::new();
    let mut paths: Vec<String> = Vec::with_capacity(input.results.len());
    for src in &input.results {
        paths.push(src.path.display().to_string());
    }
    for (src, origin) in input.results.iter().zip(&paths) {
        let rf = &src.results;
        if let Some(sha) = &src.sha256 {
            checksums.insert(origin.as_str(), sha.as_str());
        }
        rf.validate(origin)?;
        if let Some(shard) = rf.shard {
            return Err(ReportError::input(
                origin.as_str(),
                "shard",
                "a complete results file (merge shards with `layerzero ablate merge` first)",
                format!("shard {}/{}", shard.index, shard.count),
            ));
        }
        let files = by_arch
            .entry(rf.arch.as_str())
            .or_default()
            .entry(rf.mode)
            .or_default();
        // One results file per measurement: the same weights on the same kind of image set
        // (all, or a held-out selection) are one network, whatever their seed labels, except
        // that rerandomize's label is its draw, several of which one network may have.
        let rerandomize = rf.mode == AblationMode::Rerandomize;
        let same = files.iter().find(|((label, sha, selection), _)| {
            *sha == rf.weights.sha256
                && *selection == rf.selection_images
                && (!rerandomize || *label == file_seed(rf))
        });
        if let Some(((label, ..), (other, _))) = same {
            return Err(if rerandomize {
                ReportError::input(
                    origin.as_str(),
                    "seed",
                    format!(
                        "one results file per (arch, mode, seed, weights); {other} already has \
                         arch {}, mode {}, seed {}, weights sha256 {}",
                        rf.arch,
                        rf.mode,
                        seed_label(file_seed(rf)),
                        rf.weights.sha256
                    ),
                    seed_label(file_seed(rf)),
                )
            } else {
                ReportError::input(
                    origin.as_str(),
                    "weights",
                    format!(
                        "other weights than {other} (seed {}), or another mode: one results \
                         file per network and mode, and both ablate weights sha256 {} in mode \
                         {}{}; leave one out",
                        seed_label(*label),
                        rf.weights.sha256,
                        rf.mode,
                        if rf.selection_images.is_some() {
                            " with a held-out selection"
                        } else {
                            ""
                        }
                    ),
                    format!("the same weights (seed {})", seed_label(file_seed(rf))),
                )
            });
        }
        let key = (
            file_seed(rf),
            rf.weights.sha256.as_str(),
            rf.selection_images,
        );
        files.insert(key, (origin.as_str(), rf));
    }

    let mut networks = Vec::new();
    let mut inputs = Vec::new();
    for (&arch, modes) in &by_arch {
        let family = family_of(modes.values().flat_map(|f| f.values()).map(|(_, rf)| *rf));
        let mut baselines: Vec<Baseline> = Vec::new();
        // Per baseline: whether it was measured on a held-out part only (see below).
        let mut partial_baselines: Vec<bool> = Vec::new();
        let mut mode_summaries = Vec::new();
        let mut first: Option<&ResultsFile> = None;
        for (&mode, files) in modes {
            let mut rule: Option<(&str, VerdictRule)> = None;
            for (&(seed, _, _), &(origin, rf)) in files {
                first.get_or_insert(rf);
                match rule {
                    None => rule = Some((origin, rf.verdict_thresholds)),
                    Some((o, r)) if r != rf.verdict_thresholds => {
                        return Err(ReportError::input(
                            origin,
                            "verdict_thresholds",
                            format!(
                                "the same thresholds as {o} (same arch and mode): {}",
                                describe_rule(&r)
                            ),
                            describe_rule(&rf.verdict_thresholds),
                        ));
                    }
                    Some(_) => {}
                }
                inputs.push(InputFile {
                    path: origin.to_string(),
                    sha256: checksums.get(origin).map(|s| s.to_string()),
                    arch: arch.to_string(),
                    mode,
                    seed,
                    dataset: rf.dataset.clone(),
                    split: rf.split.clone(),
                    n_images: rf.n_images,
                    weights: WeightsChecksum {
                        path: rf.weights.path.clone(),
                        sha256: rf.weights.sha256.clone(),
                    },
                    records: rf.layers.len(),
                    elapsed_s: rf.elapsed_s,
                });
                // A held-out cumulative run measures its baseline on part of the images only:
                // the weights' baseline comes from a file that saw them all, if one was given.
                let partial = rf.selection_images.is_some();
                match baselines
                    .iter_mut()
                    .zip(&mut partial_baselines)
                    .find(|(b, _)| b.weights.sha256 == rf.weights.sha256)
                {
                    Some((b, was_partial)) => {
                        // A rerandomize draw's seed is no seed of these weights.
                        let seed = weights_seed(rf);
                        if !b.seeds.contains(&seed) {
                            b.seeds.push(seed);
                            b.seeds.sort();
                        }
                        if *was_partial && !partial {
                            b.n_images = rf.n_images;
                            b.metrics = rf.baseline;
                            *was_partial = false;
                        }
                    }
                    None => baselines.push(Baseline {
                        weights: WeightsChecksum {
                            path: rf.weights.path.clone(),
                            sha256: rf.weights.sha256.clone(),
                        },
                        seeds: vec![weights_seed(rf)],
                        n_images: rf.n_images,
                        metrics: rf.baseline,
                    }),
                }
                if partial_baselines.len() < baselines.len() {
                    partial_baselines.push(partial);
                }
            }
            // `files` is non-empty, so `rule` is set.
            let thresholds = rule.map(|(_, r)| r).unwrap_or_default();
            mode_summaries.push(summarise_mode(mode, files, thresholds));
        }
        baselines.sort_by(|a, b| a.seeds.cmp(&b.seeds).then(a.weights.cmp(&b.weights)));
        let top1s: Vec<f64> = baselines.iter().map(|b| b.metrics.top1).collect();
        let (Some(baseline_top1), Some(first)) = (Stat::of(&top1s), first) else {
            continue; // unreachable: every arch has at least one file
        };
        networks.push(NetworkSummary {
            arch: arch.to_string(),
            family,
            twin: None,
            dataset: first.dataset.clone(),
            split: first.split.clone(),
            baselines,
            baseline_top1,
            modes: mode_summaries,
        });
    }
    let networks = order_networks(networks);
    let order: Vec<&str> = networks.iter().map(|n| n.arch.as_str()).collect();
    inputs.sort_by_key(|f| order.iter().position(|a| *a == f.arch));

    let mut weights: BTreeSet<WeightsChecksum> = input.provenance.weights.iter().cloned().collect();
    weights.extend(inputs.iter().map(|f| f.weights.clone()));

    let mut training = input
        .metrics
        .iter()
        .map(summarise_training)
        .collect::<Result<Vec<_>>>()?;
    // Networks in report order, then other architectures by name; seeds ascending.
    training.sort_by(|a, b| {
        let rank = |t: &TrainingSummary| order.iter().position(|x| *x == t.arch);
        let key = |t: &TrainingSummary| (rank(t).is_none(), rank(t), natural_key(&t.arch), t.seed);
        key(a).cmp(&key(b))
    });
    let claims = evaluate_claims(&networks);
    let figures = plan_figures(&networks, &training);
    Ok(Summary {
        report_schema: REPORT_SCHEMA,
        generator: format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        provenance: input.provenance.clone(),
        weights: weights.into_iter().collect(),
        inputs,
        networks,
        claims,
        training,
        figures,
    })
}

fn describe_rule(r: &VerdictRule) -> String {
    format!(
        "max_abs_delta_top1 {}, min_mcnemar_p {}",
        r.max_abs_delta_top1, r.min_mcnemar_p
    )
}

/// `"none"` for a file without a seed, else the number.
pub(crate) fn seed_label(seed: Option<u64>) -> String {
    seed.map_or_else(|| "none".to_string(), |s| s.to_string())
}

fn family_of<'a>(files: impl Iterator<Item = &'a ResultsFile>) -> Family {
    let mut plain = false;
    for rf in files {
        for r in &rf.layers {
            match r.role.as_str() {
                "residual-branch" | "shortcut" => return Family::Residual,
                "plain" => plain = true,
                _ => {}
            }
        }
    }
    if plain {
        Family::Plain
    } else {
        Family::Other
    }
}

/// The seed a results file is labelled and grouped by: rerandomize's draw where there is one,
/// else the weights' training seed (`train_seed`, which files written before it carried in
/// `seed`).
fn file_seed(rf: &ResultsFile) -> Option<u64> {
    rf.seed.or(rf.train_seed)
}

/// The seed the weights of a results file were trained with: `train_seed`, or `seed` in a
/// file of another mode than rerandomize (written before `train_seed` existed).
fn weights_seed(rf: &ResultsFile) -> Option<u64> {
    rf.train_seed
        .or(rf.seed.filter(|_| rf.mode != AblationMode::Rerandomize))
}

/// A results file's place within one (architecture, mode): seed label, weights sha256, and
/// the number of selection images of a held-out cumulative curve.
type FileKey<'a> = (Option<u64>, &'a str, Option<u64>);

fn summarise_mode(
    mode: AblationMode,
    files: &BTreeMap<FileKey<'_>, (&str, &ResultsFile)>,
    thresholds: VerdictRule,
) -> ModeSummary {
    let seeds: Vec<Option<u64>> = files.keys().map(|(seed, _, _)| *seed).collect();
    let sources: Vec<String> = files.values().map(|(o, _)| o.to_string()).collect();
    let mut layers = Vec::new();
    let mut cumulative = Vec::new();
    if mode.is_cumulative() {
        for (&(seed, _, _), &(origin, rf)) in files {
            let mut steps = rf.layers.clone();
            steps.sort_by(LayerRecord::canonical_cmp);
            cumulative.push(CumulativeCurve {
                seed,
                source: origin.to_string(),
                baseline_top1: rf.baseline.top1,
                baseline: Some(rf.baseline),
                n_images: rf.n_images,
                selection_images: rf.selection_images,
                selection_baseline_top1: rf.selection_baseline.map(|m| m.top1),
                steps,
            });
        }
    } else {
        // Key: network order, then level (normalised: -0.0 becomes 0.0), then name.
        type Key = (usize, Option<u64>, String);
        let mut groups: BTreeMap<Key, Vec<SeedRecord>> = BTreeMap::new();
        for (&(seed, _, _), &(origin, rf)) in files {
            for r in &rf.layers {
                let key = (
                    r.index,
                    r.level.map(|l| (l + 0.0).to_bits()),
                    r.layer.clone(),
                );
                groups.entry(key).or_default().push(SeedRecord {
                    seed,
                    source: origin.to_string(),
                    record: r.clone(),
                    n_images: rf.n_images,
                });
            }
        }
        for (_, per_seed) in groups {
            let Some(first) = per_seed.first().map(|s| &s.record) else {
                continue;
            };
            let deltas: Vec<f64> = per_seed.iter().map(|s| s.record.delta_top1).collect();
            let top1s: Vec<f64> = per_seed.iter().map(|s| s.record.top1).collect();
            let (Some(delta_top1), Some(top1)) = (Stat::of(&deltas), Stat::of(&top1s)) else {
                continue;
            };
            let trivial = per_seed
                .iter()
                .filter(|s| s.record.verdict == Verdict::Trivial)
                .count();
            let non_trivial = per_seed.len() - trivial;
            let consensus = match (trivial, non_trivial) {
                (_, 0) => Consensus::Trivial,
                (0, _) => Consensus::NonTrivial,
                _ => Consensus::Mixed,
            };
            layers.push(LayerSummary {
                index: first.index,
                layer: first.layer.clone(),
                kind: first.kind.clone(),
                role: first.role.clone(),
                changes_channels: first.changes_channels,
                params: first.params,
                level: first.level,
                delta_top1,
                top1,
                trivial,
                non_trivial,
                consensus,
                per_seed,
            });
        }
    }
    ModeSummary {
        mode,
        seeds,
        sources,
        verdict_rule: thresholds.describe(),
        verdict_thresholds: thresholds,
        layers,
        cumulative,
    }
}

/// Natural order of architecture names: `resnet20` < `resnet56` < `resnet110`.
fn natural_key(name: &str) -> (String, u64, String) {
    let prefix: String = name.chars().take_while(|c| !c.is_ascii_digit()).collect();
    let rest = &name[prefix.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let number = digits.parse().unwrap_or(0);
    (prefix, number, rest[digits.len()..].to_string())
}

/// The name's part after its family prefix (`resnet20` → `20`, `plain20` → `20`).
fn twin_suffix(name: &str) -> Option<&str> {
    name.strip_prefix("resnet")
        .or_else(|| name.strip_prefix("plain"))
}

fn order_networks(mut networks: Vec<NetworkSummary>) -> Vec<NetworkSummary> {
    networks.sort_by(|a, b| {
        a.family
            .cmp(&b.family)
            .then_with(|| natural_key(&a.arch).cmp(&natural_key(&b.arch)))
    });
    // Pair by name (resnetN ↔ plainN).
    let residual: Vec<usize> = (0..networks.len())
        .filter(|&i| networks[i].family == Family::Residual)
        .collect();
    let plain: Vec<usize> = (0..networks.len())
        .filter(|&i| networks[i].family == Family::Plain)
        .collect();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for &r in &residual {
        let Some(suffix) = twin_suffix(&networks[r].arch) else {
            continue;
        };
        if let Some(&p) = plain.iter().find(|&&p| {
            twin_suffix(&networks[p].arch) == Some(suffix) && !pairs.iter().any(|&(_, q)| q == p)
        }) {
            pairs.push((r, p));
        }
    }
    // Otherwise a lone residual and a lone plain net are twins.
    let unpaired_r: Vec<usize> = residual
        .iter()
        .copied()
        .filter(|r| !pairs.iter().any(|&(q, _)| q == *r))
        .collect();
    let unpaired_p: Vec<usize> = plain
        .iter()
        .copied()
        .filter(|p| !pairs.iter().any(|&(_, q)| q == *p))
        .collect();
    if pairs.is_empty() && unpaired_r.len() == 1 && unpaired_p.len() == 1 {
        pairs.push((unpaired_r[0], unpaired_p[0]));
    }
    for &(r, p) in &pairs {
        networks[r].twin = Some(networks[p].arch.clone());
        networks[p].twin = Some(networks[r].arch.clone());
    }
    let mut order: Vec<usize> = Vec::with_capacity(networks.len());
    for &r in &residual {
        order.push(r);
        if let Some(&(_, p)) = pairs.iter().find(|&&(q, _)| q == r) {
            order.push(p);
        }
    }
    let rest: Vec<usize> = (0..networks.len()).filter(|i| !order.contains(i)).collect();
    order.extend(rest);
    let mut slots: Vec<Option<NetworkSummary>> = networks.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

fn summarise_training(series: &crate::metrics::MetricsSeries) -> Result<TrainingSummary> {
    let path = series.path.display().to_string();
    let (Some(last), Some(best)) = (
        series.epochs.last(),
        series.epochs.iter().reduce(|best, e| {
            if e.test_top1 > best.test_top1 {
                e
            } else {
                best
            }
        }),
    ) else {
        return Err(ReportError::Metrics {
            file: series.path.clone(),
            line: 0,
            field: "(file)".into(),
            expected: "at least one epoch line".into(),
            found: "no epoch lines".into(),
        });
    };
    let rates: Vec<f64> = series
        .epochs
        .iter()
        .filter(|e| !e.resized())
        .filter_map(|e| e.images_per_s)
        .collect();
    Ok(TrainingSummary {
        arch: series.arch.clone(),
        seed: series.seed,
        path,
        final_epoch: last.epoch,
        final_test_top1: last.test_top1,
        final_train_loss: last.train_loss,
        best_test_top1: best.test_top1,
        best_epoch: best.epoch,
        mean_images_per_s: Stat::of(&rates).map(|s| s.mean),
        resized_epochs: series.epochs.iter().filter(|e| e.resized()).count() as u64,
        curve: series.epochs.clone(),
    })
}

/// The file name of a single-layer mode's Δtop-1 figure.
pub fn delta_figure_file(mode: AblationMode) -> String {
    format!("figures/delta_top1_{}.svg", mode.name())
}

/// The file name of a swept mode's sensitivity figure.
pub fn sensitivity_figure_file(mode: AblationMode) -> String {
    format!("figures/sensitivity_{}.svg", mode.name())
}

/// The cumulative-ablation figure.
pub const CUMULATIVE_FIGURE: &str = "figures/cumulative.svg";
/// The training-curves figure.
pub const TRAINING_FIGURE: &str = "figures/training.svg";

fn plan_figures(networks: &[NetworkSummary], training: &[TrainingSummary]) -> Vec<FigureNote> {
    let has = |mode: AblationMode| {
        networks.iter().any(|n| {
            n.mode(mode).is_some_and(|m| {
                !m.layers.is_empty() || m.cumulative.iter().any(|c| !c.steps.is_empty())
            })
        })
    };
    let note = |file: String, title: String, drawn: bool, reason: String| FigureNote {
        file,
        title,
        drawn,
        reason: if drawn { String::new() } else { reason },
    };
    let mut figures = Vec::new();
    for mode in SINGLE_LAYER_MODES {
        figures.push(note(
            delta_figure_file(mode),
            format!("Δtop-1 per layer in network order, {mode}"),
            has(mode),
            format!("no {mode} results among the inputs"),
        ));
    }
    let cumulative = AblationMode::ALL
        .into_iter()
        .any(|m| m.is_cumulative() && has(m));
    figures.push(note(
        CUMULATIVE_FIGURE.to_string(),
        "Top-1 as more layers are ablated (greedy multiple deletion)".into(),
        cumulative,
        "no cumulative-zero-kernel or cumulative-skip-branch results among the inputs".into(),
    ));
    for mode in SWEPT_MODES {
        figures.push(note(
            sensitivity_figure_file(mode),
            format!("Δtop-1 against sparsity level, {mode}"),
            has(mode),
            format!("no {mode} results among the inputs"),
        ));
    }
    figures.push(note(
        TRAINING_FIGURE.to_string(),
        "Training curves: test top-1 and training loss per epoch".into(),
        !training.is_empty(),
        "no training metrics among the inputs".into(),
    ));
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_mean_and_sample_std() {
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.mean, 2.5);
        assert!((s.std.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max, s.n), (1.0, 4.0, 4));
        assert_eq!(Stat::of(&[0.5]).unwrap().std, None);
        assert!(Stat::of(&[]).is_none());
        // Seeds that agree: exactly their value, a std of exactly 0.
        for (v, n) in [(0.1, 3), (0.3, 10), (-0.0123, 7)] {
            let s = Stat::of(&vec![v; n]).unwrap();
            assert_eq!((s.mean, s.std), (v, Some(0.0)), "{n} × {v}");
        }
        // Large offsets do not swamp the spread.
        let s = Stat::of(&[1e9 + 1.0, 1e9 + 2.0, 1e9 + 3.0]).unwrap();
        assert_eq!((s.mean, s.std), (1e9 + 2.0, Some(1.0)));
        // Neither NaNs nor infinities panic; they give what plain sums give.
        assert!(Stat::of(&[f64::NAN, f64::NAN]).unwrap().mean.is_nan());
        assert_eq!(Stat::of(&[f64::INFINITY, 1.0]).unwrap().mean, f64::INFINITY);
    }

    #[test]
    fn downscaled_epochs_are_counted_and_left_out_of_the_throughput() {
        let text = [
            r#"{"epoch":1,"train_loss":2,"train_top1":0.3,"test_loss":2,"test_top1":0.3,"images_per_s":1200,"image_side":16}"#,
            r#"{"epoch":2,"train_loss":1,"train_top1":0.6,"test_loss":1,"test_top1":0.6,"images_per_s":500,"image_side":32}"#,
            r#"{"epoch":3,"train_loss":1,"train_top1":0.7,"test_loss":1,"test_top1":0.7,"images_per_s":520}"#,
        ]
        .join("\n");
        let series = crate::metrics::MetricsSeries {
            arch: "resnet20".into(),
            seed: Some(0),
            path: "m.jsonl".into(),
            epochs: crate::metrics::parse_metrics(&text, std::path::Path::new("m.jsonl")).unwrap(),
        };
        let t = summarise_training(&series).unwrap();
        assert_eq!(t.resized_epochs, 1);
        assert_eq!(t.mean_images_per_s, Some(510.0));
    }

    #[test]
    fn natural_order_of_arch_names() {
        let mut names = ["resnet110", "resnet20", "resnet56", "plain20"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["plain20", "resnet20", "resnet56", "resnet110"]);
    }
}
