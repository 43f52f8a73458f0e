//! The `results.json` schema (version 1), its validation, reading and writing.
//!
//! ```text
//! {
//!   "schema": 1,
//!   "arch": "resnet56",
//!   "weights": {"path": "runs/resnet56/weights.safetensors", "sha256": "<64 lowercase hex>"},
//!   "init_weights": {"path": "runs/resnet56/init.safetensors", "sha256": "…"}, // reinit only
//!   "dataset": "cifar10",
//!   "split": "test",
//!   "n_images": 10000,                         // the images every number below is over
//!   "mode": "zero-kernel",                     // an AblationMode CLI name
//!   "seed": 7,                                 // optional: rerandomize's seed
//!   "train_seed": 0,                           // optional: the weights' training seed
//!   "baseline": {"top1": 0.9312, "top5": 0.998, "loss": 0.29},
//!   "verdict_rule": "trivial if |delta_top1| <= 0.01 and mcnemar_p >= 0.01 (...)",
//!   "verdict_thresholds": {"max_abs_delta_top1": 0.01, "min_mcnemar_p": 0.01},
//!   "n_ablations": 57,                         // ablations in the whole (unsharded) run
//!   "shard": {"index": 0, "count": 4},         // only on partial (sharded) files
//!   "layers": [{
//!     "index": 3,                              // network order of the layer
//!     "layer": "layer1.0.conv2", "kind": "conv", "role": "residual",
//!     "changes_channels": false, "params": 2304,
//!     "level": 0.5,                            // only for zero-filters / prune sweeps
//!     "zeroed": 8,                             // with level: filters / weights it zeroed
//!     "step": 2,                               // only for cumulative modes (1-based)
//!     "top1": 0.9101, "top5": 0.997, "loss": 0.35,
//!     "delta_top1": -0.0211,                   // ablated - baseline, a fraction
//!     "ci95": {"top1": [0.9043, 0.9155], "delta_top1": [-0.0245, -0.0177]},
//!     "mcnemar_p": 2.40e-35,
//!     "flips_right_to_wrong": 262, "flips_wrong_to_right": 51,
//!     "verdict": "non-trivial"
//!   }],
//!   "elapsed_s": 812.5,
//!   "command": "layerzero ablate --weights … --limit 1000",  // optional: what wrote it
//!   "threads": 16
//! }
//! ```
//!
//! Accuracies are fractions in `[0, 1]`; `ci95.top1` is the Wilson score interval of the
//! ablated top-1 and `ci95.delta_top1` the Wald interval of the paired difference (see
//! [`crate::stats`]). `layers` is in canonical order: by `step` (cumulative modes), then
//! `index` (network order), then `level` ascending.
//!
//! A cumulative file with a held-out selection (see below) also has, beside an `n_images` that
//! then counts the held-out images only:
//!
//! ```text
//!   "n_images": 5000,
//!   "selection_images": 5000,
//!   "selection_baseline": {"top1": 0.9301, "top5": 0.997, "loss": 0.3},
//!   "layers": [{ ..., "step": 1, "selection_top1": 0.9188, ... }]
//! ```
//!
//! In the cumulative modes each step's `mcnemar_p`, intervals and verdict are computed as if
//! its layer had been chosen in advance. Without `selection_images` it was not: the greedy
//! path picks, at each step, the best of the remaining candidates on the same images it is
//! scored on, so these statistics are optimistic, and a step's verdict is not a test of that
//! layer. With `selection_images: k` the path was chosen on the first `k` images of the split
//! and everything else in the file (`n_images`, `baseline`, every record) was measured on the
//! `n_images` images after them, which the choice never saw: there a step's statistics are
//! those of a set of layers fixed in advance. Each record's `selection_top1` is then the top-1
//! on the `k` selection images that chose it and `selection_baseline` the unablated network's
//! metrics on them: `selection_top1 − selection_baseline.top1`, the Δ the choice saw, against
//! `delta_top1` shows how much the choice flattered the path (the two parts of the split also
//! differ by chance).
//!
//! **Compatibility.** Readers reject any `schema` other than 1. Version 1 may gain new
//! optional fields (readers ignore fields they do not know); renaming or removing a field,
//! or changing its meaning, requires a new version.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::mode::AblationMode;
use crate::shard::Shard;
use crate::stats::{Ci95, Measurement, Metrics, Verdict, VerdictRule};

/// The schema version this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// One layer (or block) of the network as the model inventory describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Position in network order (0-based), used to order merged results.
    pub index: usize,
    /// The layer's name, e.g. `layer2.0.conv1`.
    pub name: String,
    /// What kind of module it is, e.g. `conv`, `linear`, `block`.
    pub kind: String,
    /// Its role in the architecture, e.g. `stem`, `residual`, `shortcut`, `classifier`.
    pub role: String,
    /// Whether its output has a different number of channels than its input.
    pub changes_channels: bool,
    /// Number of parameters the intervention touches.
    pub params: u64,
}

/// One ablation's entry in `"layers"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The layer's position in network order (0-based).
    pub index: usize,
    /// The layer's name.
    pub layer: String,
    /// Module kind, from the inventory.
    pub kind: String,
    /// Architectural role, from the inventory.
    pub role: String,
    /// Whether the layer changes the channel count, from the inventory.
    pub changes_channels: bool,
    /// Parameters of the layer, from the inventory.
    pub params: u64,
    /// Sparsity level for `zero-filters` / `prune` sweeps; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<f64>,
    /// `zero-filters` / `prune`: how many output filters / weights the level zeroed,
    /// `floor(level · count)` ([`crate::sparsity::count_at`]). 0 when the level rounds down
    /// to none of a small layer's, so the record measured the unchanged network. Absent in
    /// other modes and in files written before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zeroed: Option<u64>,
    /// Step (1-based) for cumulative modes: this many layers are ablated, this one last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// Top-1 on the selection images (a fraction) with this step's layers ablated: the score
    /// that chose this step. Only in cumulative files with `selection_images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_top1: Option<f64>,
    /// Top-1 accuracy after the ablation, a fraction.
    pub top1: f64,
    /// Top-5 accuracy after the ablation, a fraction.
    pub top5: f64,
    /// Mean cross-entropy after the ablation.
    pub loss: f64,
    /// Ablated − baseline top-1, a fraction (negative = worse).
    pub delta_top1: f64,
    /// 95 % intervals: Wilson for `top1`, paired Wald for `delta_top1`.
    pub ci95: Ci95,
    /// Exact two-sided McNemar p-value on paired top-1 correctness.
    pub mcnemar_p: f64,
    /// Images right in the baseline and wrong after the ablation.
    pub flips_right_to_wrong: u64,
    /// Images wrong in the baseline and right after the ablation.
    pub flips_wrong_to_right: u64,
    /// The verdict under the file's `verdict_thresholds`.
    pub verdict: Verdict,
}

impl LayerRecord {
    /// A record from the layer's inventory entry and its measurement (no level, no step).
    pub fn new(info: &LayerInfo, m: &Measurement) -> Self {
        LayerRecord {
            index: info.index,
            layer: info.name.clone(),
            kind: info.kind.clone(),
            role: info.role.clone(),
            changes_channels: info.changes_channels,
            params: info.params,
            level: None,
            zeroed: None,
            step: None,
            selection_top1: None,
            top1: m.metrics.top1,
            top5: m.metrics.top5,
            loss: m.metrics.loss,
            delta_top1: m.delta_top1,
            ci95: m.ci95,
            mcnemar_p: m.mcnemar_p,
            flips_right_to_wrong: m.counts.right_to_wrong,
            flips_wrong_to_right: m.counts.wrong_to_right,
            verdict: m.verdict,
        }
    }

    /// The record's paired table over `n_images` (its file's `n_images`), from its flips: only
    /// the discordant cells, which are all that Δ, the paired intervals and McNemar's test
    /// depend on (the concordant ones are left at 0).
    pub fn paired_counts(&self, n_images: u64) -> crate::stats::PairedCounts {
        crate::stats::PairedCounts {
            n: n_images,
            both_right: 0,
            right_to_wrong: self.flips_right_to_wrong,
            wrong_to_right: self.flips_wrong_to_right,
            both_wrong: 0,
        }
    }

    /// Sets the sweep level.
    pub fn with_level(mut self, level: f64) -> Self {
        self.level = Some(level);
        self
    }

    /// Sets the cumulative step.
    pub fn with_step(mut self, step: usize) -> Self {
        self.step = Some(step);
        self
    }

    /// Sets the top-1 on the selection images that chose this cumulative step.
    pub fn with_selection_top1(mut self, top1: f64) -> Self {
        self.selection_top1 = Some(top1);
        self
    }

    /// Canonical ordering: step (absent = 0), then index, then level (absent first).
    pub fn canonical_cmp(&self, other: &Self) -> std::cmp::Ordering {
        let level = |r: &LayerRecord| r.level.unwrap_or(f64::NEG_INFINITY);
        self.step
            .unwrap_or(0)
            .cmp(&other.step.unwrap_or(0))
            .then(self.index.cmp(&other.index))
            .then(level(self).total_cmp(&level(other)))
    }
}

/// The evaluated weights: where they were read from and their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WeightsRef {
    /// The path as given on the command line.
    pub path: String,
    /// SHA-256 of the file's bytes, 64 lowercase hex digits (see [`sha256_file`]).
    pub sha256: String,
}

impl WeightsRef {
    /// The weights file at `path`, recorded under that path, with its SHA-256.
    pub fn of_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Ok(WeightsRef {
            path: path.display().to_string(),
            sha256: sha256_file(path)?,
        })
    }

    /// A network in memory (one just trained or built, not read from a file), recorded as
    /// `label`, with the SHA-256 of the file that [`layerzero_models::save_safetensors`] would
    /// write for it with [`layerzero_models::WeightsMetadata::for_network`]: saved that way,
    /// the file and the results agree.
    pub fn of_network(net: &dyn layerzero_models::Network, label: &str) -> Result<Self> {
        let bytes = layerzero_models::weights::to_safetensors_bytes(
            net,
            &layerzero_models::WeightsMetadata::for_network(net),
        )
        .map_err(|e| Error::Model {
            context: format!("serialising `{label}` to hash it"),
            source: Box::new(e),
        })?;
        Ok(WeightsRef {
            path: label.to_string(),
            sha256: hex::encode(Sha256::digest(&bytes)),
        })
    }
}

/// A whole `results.json` (or a partial shard file when `shard` is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    /// Always [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Architecture name, e.g. `resnet56`.
    pub arch: String,
    /// The evaluated weights.
    pub weights: WeightsRef,
    /// `reinit` only: the epoch-0 weights file the layers were restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_weights: Option<WeightsRef>,
    /// Dataset name, e.g. `cifar10`.
    pub dataset: String,
    /// Split evaluated, e.g. `test`.
    pub split: String,
    /// Number of images evaluated (every statistic in the file is over these).
    pub n_images: u64,
    /// Cumulative modes only: the greedy path was chosen on the first `selection_images`
    /// images of the split, and `n_images` counts the images after them, on which the baseline
    /// and every record were measured. Absent: chosen and measured on the same images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_images: Option<u64>,
    /// With `selection_images`: the unablated network's metrics on the selection images (the
    /// baseline of each record's `selection_top1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_baseline: Option<Metrics>,
    /// The intervention.
    pub mode: AblationMode,
    /// Seed of `rerandomize`'s draw; absent otherwise. (Files `cargo xtask reproduce` wrote
    /// before `train_seed` existed carry the training seed here instead.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The seed the evaluated weights were trained with, where the producer knows it
    /// (`layerzero ablate --train-seed`, `cargo xtask reproduce`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_seed: Option<u64>,
    /// The unablated network's metrics.
    pub baseline: Metrics,
    /// The verdict rule in words ([`VerdictRule::describe`]).
    pub verdict_rule: String,
    /// The verdict rule's thresholds.
    pub verdict_thresholds: VerdictRule,
    /// Number of ablations in the whole run (all shards together).
    pub n_ablations: usize,
    /// Which shard this partial file is; absent in a complete file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// One record per ablation, canonical order.
    pub layers: Vec<LayerRecord>,
    /// Wall-clock seconds of the run (for a merged file: the sum over shards).
    pub elapsed_s: f64,
    /// The command line that wrote the file, where the producer records it (`layerzero
    /// ablate`, `cargo xtask reproduce`): it holds what the file does not, such as `--limit`
    /// and `--layers`. A merged file keeps its first shard's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Worker threads used (for a merged file: the maximum over shards).
    pub threads: usize,
}

impl ResultsFile {
    /// The ablations that changed nothing measurable: mean loss equal to the baseline's to the
    /// last bit, top-1 and top-5 equal, no image flipped. A real layer's ablation almost never
    /// does that (a kernel that was already zero, a branch whose output is exactly zero); an
    /// intervention the architecture never applies (a block that does not check
    /// `is_skipped`, a layer whose weight is used directly instead of through its `forward`)
    /// always does, and would otherwise pass for a trivial layer. In a sparsity sweep a level
    /// that zeroes nothing (0, or a fraction of a small layer that rounds down to no filter)
    /// is listed too: its record's `zeroed` is 0.
    pub fn without_effect(&self) -> impl Iterator<Item = &LayerRecord> {
        let base = &self.baseline;
        self.layers.iter().filter(move |l| {
            l.loss.to_bits() == base.loss.to_bits()
                && l.top1 == base.top1
                && l.top5 == base.top5
                && l.flips_right_to_wrong == 0
                && l.flips_wrong_to_right == 0
        })
    }

    /// Sorts `layers` into canonical order (see [`LayerRecord::canonical_cmp`]).
    pub fn sort_layers(&mut self) {
        self.layers.sort_by(LayerRecord::canonical_cmp);
    }

    /// Checks every invariant of the schema; `origin` (usually the file name) labels errors.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |field: String, expected: &str, found: String| {
            Error::schema(origin, field, expected, found)
        };
        if self.schema != SCHEMA_VERSION {
            return Err(err(
                "schema".into(),
                &SCHEMA_VERSION.to_string(),
                self.schema.to_string(),
            ));
        }
        for (field, value) in [
            ("arch", &self.arch),
            ("dataset", &self.dataset),
            ("split", &self.split),
            ("weights.path", &self.weights.path),
        ] {
            if value.is_empty() {
                return Err(err(field.into(), "a non-empty string", "\"\"".into()));
            }
        }
        check_sha(origin, "weights.sha256", &self.weights.sha256)?;
        if self.n_images == 0 {
            return Err(err("n_images".into(), "at least 1", "0".into()));
        }
        check_metrics(origin, "baseline", &self.baseline)?;
        self.verdict_thresholds.validate().map_err(|_| {
            err(
                "verdict_thresholds".into(),
                "max_abs_delta_top1 and min_mcnemar_p in [0, 1]",
                format!("{:?}", self.verdict_thresholds),
            )
        })?;
        if let Some(shard) = self.shard {
            shard.validate().map_err(|_| {
                err(
                    "shard".into(),
                    "{index, count} with 0 <= index < count",
                    format!("{{index: {}, count: {}}}", shard.index, shard.count),
                )
            })?;
            if self.mode.is_cumulative() {
                return Err(err(
                    "shard".into(),
                    "absent: cumulative modes cannot be sharded",
                    shard.to_string(),
                ));
            }
        }
        if let Some(init) = &self.init_weights {
            if self.mode != AblationMode::Reinit {
                return Err(err(
                    "init_weights".into(),
                    &format!("absent for mode {} (reinit only)", self.mode),
                    init.path.clone(),
                ));
            }
            check_sha(origin, "init_weights.sha256", &init.sha256)?;
        }
        if let Some(k) = self.selection_images {
            if !self.mode.is_cumulative() {
                return Err(err(
                    "selection_images".into(),
                    &format!("absent for mode {} (cumulative modes only)", self.mode),
                    k.to_string(),
                ));
            }
            if k == 0 {
                return Err(err("selection_images".into(), "at least 1", "0".into()));
            }
        }
        match (self.selection_images.is_some(), &self.selection_baseline) {
            (true, None) => {
                return Err(err(
                    "selection_baseline".into(),
                    "the baseline on the selection images (the file has selection_images)",
                    "absent".into(),
                ))
            }
            (false, Some(m)) => {
                return Err(err(
                    "selection_baseline".into(),
                    "absent (the file has no selection_images)",
                    format!("{m:?}"),
                ))
            }
            (true, Some(m)) => check_metrics(origin, "selection_baseline", m)?,
            (false, None) => {}
        }
        let expected_len = match self.shard {
            Some(shard) => shard.len_of(self.n_ablations),
            None => self.n_ablations,
        };
        if self.layers.len() != expected_len {
            return Err(err(
                "layers".into(),
                &match self.shard {
                    Some(s) => format!(
                        "{expected_len} records (shard {s} of n_ablations {})",
                        self.n_ablations
                    ),
                    None => format!("{expected_len} records (n_ablations)"),
                },
                format!("{} records", self.layers.len()),
            ));
        }
        if !(self.elapsed_s.is_finite() && self.elapsed_s >= 0.0) {
            return Err(err(
                "elapsed_s".into(),
                "a finite number >= 0",
                self.elapsed_s.to_string(),
            ));
        }
        if self.threads == 0 {
            return Err(err("threads".into(), "at least 1", "0".into()));
        }
        let mut by_index = HashSet::new();
        let mut by_name = HashSet::new();
        for (i, r) in self.layers.iter().enumerate() {
            self.check_record(origin, i, r)?;
            let level_bits = r.level.map(f64::to_bits);
            if !by_index.insert((r.index, level_bits, r.step))
                || !by_name.insert((r.layer.as_str(), level_bits, r.step))
            {
                return Err(err(
                    format!("layers[{i}]"),
                    "each (layer, level, step) at most once",
                    format!(
                        "a second record for layer {:?} (index {}, level {:?}, step {:?})",
                        r.layer, r.index, r.level, r.step
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_record(&self, origin: &str, i: usize, r: &LayerRecord) -> Result<()> {
        let field = |name: &str| format!("layers[{i}].{name}");
        let err = |name: &str, expected: &str, found: String| {
            Error::schema(origin, field(name), expected, found)
        };
        if r.layer.is_empty() {
            return Err(err("layer", "a non-empty name", "\"\"".into()));
        }
        check_metrics(
            origin,
            &format!("layers[{i}]"),
            &Metrics {
                top1: r.top1,
                top5: r.top5,
                loss: r.loss,
            },
        )?;
        match (self.mode.is_swept(), r.level) {
            (true, None) => {
                return Err(err(
                    "level",
                    &format!("a level for mode {}", self.mode),
                    "absent".into(),
                ))
            }
            (false, Some(l)) => {
                return Err(err(
                    "level",
                    &format!("absent for mode {}", self.mode),
                    l.to_string(),
                ))
            }
            (true, Some(l)) if !(l.is_finite() && (0.0..=1.0).contains(&l)) => {
                return Err(err("level", "a fraction in [0, 1]", l.to_string()))
            }
            _ => {}
        }
        match (r.level, r.zeroed) {
            (None, Some(z)) => {
                return Err(err(
                    "zeroed",
                    "absent (the record has no level)",
                    z.to_string(),
                ))
            }
            (Some(_), Some(z)) if z > r.params => {
                return Err(err(
                    "zeroed",
                    &format!("at most the layer's params ({})", r.params),
                    z.to_string(),
                ))
            }
            _ => {}
        }
        match (self.mode.is_cumulative(), r.step) {
            (true, None) | (true, Some(0)) => {
                return Err(err(
                    "step",
                    &format!("a step >= 1 for mode {}", self.mode),
                    format!("{:?}", r.step),
                ))
            }
            (false, Some(s)) => {
                return Err(err(
                    "step",
                    &format!("absent for mode {}", self.mode),
                    s.to_string(),
                ))
            }
            _ => {}
        }
        match (self.selection_images.is_some(), r.selection_top1) {
            (true, None) => {
                return Err(err(
                    "selection_top1",
                    "a fraction in [0, 1] (the file has selection_images)",
                    "absent".into(),
                ))
            }
            (false, Some(t)) => {
                return Err(err(
                    "selection_top1",
                    "absent (the file has no selection_images)",
                    t.to_string(),
                ))
            }
            (true, Some(t)) if !(t.is_finite() && (0.0..=1.0).contains(&t)) => {
                return Err(err("selection_top1", "a fraction in [0, 1]", t.to_string()))
            }
            _ => {}
        }
        let flips = r.flips_right_to_wrong.checked_add(r.flips_wrong_to_right);
        if flips.is_none_or(|f| f > self.n_images) {
            return Err(err(
                "flips_right_to_wrong",
                &format!(
                    "flips_right_to_wrong + flips_wrong_to_right <= n_images ({})",
                    self.n_images
                ),
                format!("{} + {}", r.flips_right_to_wrong, r.flips_wrong_to_right),
            ));
        }
        let n = self.n_images as f64;
        let (b, c) = (r.flips_right_to_wrong, r.flips_wrong_to_right);
        // Only the discordant cells matter to Δ, the Wald interval and McNemar's test.
        let counts = r.paired_counts(self.n_images);
        let expected_delta = counts.delta();
        if !(r.delta_top1.is_finite() && (r.delta_top1 - expected_delta).abs() <= 1e-9) {
            return Err(err(
                "delta_top1",
                &format!(
                    "(flips_wrong_to_right - flips_right_to_wrong) / n_images = {expected_delta}"
                ),
                r.delta_top1.to_string(),
            ));
        }
        if (r.top1 - self.baseline.top1 - r.delta_top1).abs() > 1e-9 {
            return Err(err(
                "top1",
                &format!(
                    "baseline.top1 + delta_top1 = {}",
                    self.baseline.top1 + r.delta_top1
                ),
                r.top1.to_string(),
            ));
        }
        check_interval(origin, &field("ci95.top1"), r.ci95.top1, [0.0, 1.0])?;
        check_interval(
            origin,
            &field("ci95.delta_top1"),
            r.ci95.delta_top1,
            [-1.0, 1.0],
        )?;
        if !(r.mcnemar_p.is_finite() && (0.0..=1.0).contains(&r.mcnemar_p)) {
            return Err(err(
                "mcnemar_p",
                "a probability in [0, 1]",
                r.mcnemar_p.to_string(),
            ));
        }
        // The statistics must be the ones the paired counts give: recomputed here, and
        // compared with room for another tool's implementation or rounding (z = 1.96, a
        // p-value from another library or written to 3 significant digits, intervals to 3
        // decimals: p within 0.5 %, bounds within 5e-4), not for other numbers.
        let p = crate::stats::mcnemar_exact_p(b, c);
        if (r.mcnemar_p - p).abs() > 5e-3 * p + f64::MIN_POSITIVE {
            return Err(err(
                "mcnemar_p",
                &format!("the exact McNemar p-value of {b} right→wrong and {c} wrong→right = {p}"),
                r.mcnemar_p.to_string(),
            ));
        }
        let correct = (r.top1 * n).round();
        let wilson =
            crate::stats::wilson_interval(correct as u64, self.n_images, crate::stats::Z95)?;
        let wald = crate::stats::paired_difference_wald(&counts, crate::stats::Z95)?;
        for (name, found, want, what) in [
            (
                "ci95.top1",
                r.ci95.top1,
                wilson,
                format!("Wilson interval of {correct} of {} right", self.n_images),
            ),
            (
                "ci95.delta_top1",
                r.ci95.delta_top1,
                wald,
                format!("paired Wald interval of {b} right→wrong and {c} wrong→right"),
            ),
        ] {
            if found.iter().zip(want).any(|(f, w)| (f - w).abs() > 5e-4) {
                return Err(err(
                    name,
                    &format!("[{}, {}] (95 % {what} from the counts)", want[0], want[1]),
                    format!("[{}, {}]", found[0], found[1]),
                ));
            }
        }
        // By the counts' Δ and p, not the stored ones: a value stored a hair off a threshold
        // must not carry a verdict the counts do not give.
        let expected = self.verdict_thresholds.verdict(expected_delta, p);
        if r.verdict != expected {
            return Err(err(
                "verdict",
                &format!("{expected} (by verdict_thresholds)"),
                r.verdict.to_string(),
            ));
        }
        Ok(())
    }

    /// Parses and validates a results file's text; `origin` (usually the path) labels errors.
    ///
    /// A `"schema"` other than 1 (or a missing one) is rejected before anything else, with
    /// an error naming the field, the expected and the found value.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|source| Error::Json {
                origin: origin.to_string(),
                source,
            })?;
        let Some(object) = value.as_object() else {
            return Err(Error::schema(
                origin,
                "(top level)",
                "a JSON object",
                json_kind(&value),
            ));
        };
        match object.get("schema") {
            None => return Err(Error::schema(origin, "schema", "1", "no such field")),
            Some(v) if v.as_u64() != Some(u64::from(SCHEMA_VERSION)) => {
                return Err(Error::schema(origin, "schema", "1", v));
            }
            Some(_) => {}
        }
        // Parse again from the text (not the Value) so structural errors carry line/column.
        let results: ResultsFile = serde_json::from_str(text).map_err(|source| Error::Json {
            origin: origin.to_string(),
            source,
        })?;
        results.validate(origin)?;
        Ok(results)
    }

    /// Reads and validates a results file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Pretty-printed JSON with a trailing newline. Validates first.
    pub fn to_json_string(&self) -> Result<String> {
        self.json_for("results to write")
    }

    fn json_for(&self, origin: &str) -> Result<String> {
        self.validate(origin)?;
        let mut text = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            origin: origin.to_string(),
            source,
        })?;
        text.push('\n');
        Ok(text)
    }

    /// Validates and writes the JSON atomically to `path` (errors name `path`).
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = self.json_for(&path.display().to_string())?;
        write_atomic(path, text.as_bytes())
    }

    /// Validates and writes the CSV ([`crate::csv::to_csv`]) atomically to `path`.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.validate(&path.display().to_string())?;
        write_atomic(path, crate::csv::to_csv(self).as_bytes())
    }

    /// Writes `json_path` and the CSV beside it ([`csv_path_for`]) as one atomic pair: both
    /// are written in full before either replaces its old version, so a failed or killed write
    /// never leaves a new JSON beside an old CSV. Returns the CSV path.
    pub fn write(&self, json_path: impl AsRef<Path>) -> Result<PathBuf> {
        let json_path = json_path.as_ref();
        let csv_path = csv_path_for(json_path);
        let json = self.json_for(&json_path.display().to_string())?;
        let csv = crate::csv::to_csv(self);
        crate::atomic::write_atomic_all(&[
            (json_path, json.as_bytes()),
            (&csv_path, csv.as_bytes()),
        ])?;
        Ok(csv_path)
    }
}

/// The CSV path that goes with a JSON results path: the same path with extension `.csv`
/// (`out/results.json` → `out/results.csv`).
pub fn csv_path_for(json_path: &Path) -> PathBuf {
    json_path.with_extension("csv")
}

/// SHA-256 of a file's bytes as 64 lowercase hex digits, read in 1 MiB chunks.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buf[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A SHA-256 as the files record it: 64 lowercase hex digits.
fn check_sha(origin: &str, field: &str, sha: &str) -> Result<()> {
    if sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::schema(
            origin,
            field,
            "64 lowercase hex digits",
            format!("{sha:?}"),
        ));
    }
    Ok(())
}

fn check_metrics(origin: &str, prefix: &str, m: &Metrics) -> Result<()> {
    for (name, v) in [("top1", m.top1), ("top5", m.top5)] {
        if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
            return Err(Error::schema(
                origin,
                format!("{prefix}.{name}"),
                "a fraction in [0, 1]",
                v,
            ));
        }
    }
    if m.top1 > m.top5 {
        return Err(Error::schema(
            origin,
            format!("{prefix}.top5"),
            format!("at least top1 ({})", m.top1),
            m.top5,
        ));
    }
    if !m.loss.is_finite() {
        return Err(Error::schema(
            origin,
            format!("{prefix}.loss"),
            "a finite number",
            m.loss,
        ));
    }
    Ok(())
}

fn check_interval(
    origin: &str,
    field: &str,
    [lo, hi]: [f64; 2],
    [min, max]: [f64; 2],
) -> Result<()> {
    if lo.is_finite() && hi.is_finite() && min <= lo && lo <= hi && hi <= max {
        Ok(())
    } else {
        Err(Error::schema(
            origin,
            field,
            format!("[lo, hi] with {min} <= lo <= hi <= {max}"),
            format!("[{lo}, {hi}]"),
        ))
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
