//! Layer-ablation studies of trained CIFAR CNNs: the engine behind `layerzero ablate` and
//! everything around it.
//!
//! The study ("Is Each Layer Non-trivial in CNN?") applies one intervention at a time to
//! every selected layer of a trained network, evaluates the test set, and measures the
//! effect against the unablated baseline. This crate provides:
//!
//! * [`engine`] — [`run`]: applies a mode's interventions to a [`layerzero_models::Network`]
//!   (on the fly, never written into the weights), evaluates a [`layerzero_data::CifarSet`]
//!   chunk by chunk through a prefix cache (each ablation re-runs only the ablated layer's
//!   segment and those after it; memory bounded by the chunk size), in parallel, and returns a
//!   validated [`ResultsFile`]; [`evaluate_baseline`] evaluates the unablated network the same
//!   way;
//! * [`AblationMode`] — the interventions (`zero-kernel`, `skip-branch`, `reinit`,
//!   `rerandomize`, `zero-filters`, `prune`, and the cumulative forms), with CLI names;
//! * [`select`] — layer selection by comma-separated glob patterns (`--layers 'layer2.*'`);
//! * [`sparsity`] — which filters (smallest L1 norm) or weights (smallest magnitude) to zero
//!   at a sparsity level, deterministically;
//! * [`stats`] — top-1/top-5/loss, Δtop-1, Wilson and paired-difference 95 % intervals, the
//!   exact McNemar p-value, flip counts, and the `trivial` / `non-trivial` [`VerdictRule`];
//! * [`cumulative`] — the greedy multiple-deletion driver over an evaluator closure;
//! * [`schema`] — the stable `results.json` (schema 1) and its CSV companion, written
//!   atomically;
//! * [`shard`] and [`mod@merge`] — `--shard K/N` and `layerzero ablate merge`.
//!
//! # Example: an ablation run
//!
//! Zero each kernel of the first stage of a (here untrained) ResNet-8, one at a time, on four
//! images:
//!
//! ```
//! use layerzero_ablate::{run, AblationMode, EngineConfig, RunContext, WeightsRef};
//! use layerzero_data::{CifarSet, Dataset, Split};
//! use layerzero_models::{create_model, ModelConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = create_model("resnet8", &ModelConfig::new(10).with_seed(1))?;
//! let pixels: Vec<u8> = (0..4 * 3072).map(|i| (i * 7 % 251) as u8).collect();
//! let names = (0..10).map(|c| format!("class{c}")).collect();
//! let test = CifarSet::from_parts(Dataset::Cifar10, Split::Test, pixels, vec![3, 1, 4, 1], names)?;
//!
//! let mut cfg = EngineConfig::new(AblationMode::ZeroKernel);
//! cfg.layers = Some("layer1.*".into());
//! let ctx = RunContext {
//!     net: net.as_ref(),
//!     test: &test,
//!     // A network in memory; `WeightsRef::of_file(path)` for one read from a file.
//!     weights: WeightsRef::of_network(net.as_ref(), "resnet8 (seed 1, untrained)")?,
//!     dataset: "cifar10".into(),
//!     split: "test".into(),
//!     threads: 1,
//! };
//! let results = run(&ctx, &cfg, None)?;
//! let layers: Vec<&str> = results.layers.iter().map(|r| r.layer.as_str()).collect();
//! assert_eq!(layers, ["layer1.0.conv1", "layer1.0.conv2"]);
//! assert_eq!(results.layers[0].role, "residual-branch");
//! assert_eq!(results.n_images, 4);
//! # Ok(())
//! # }
//! ```
//!
//! # Example: statistics, records and shards
//!
//! Measure one ablation from paired per-image results, record it, and split a study into
//! shards:
//!
//! ```
//! use layerzero_ablate::{
//!     measure, AblationMode, Evaluation, LayerInfo, LayerRecord, Shard, Verdict, VerdictRule,
//! };
//!
//! # fn main() -> Result<(), layerzero_ablate::Error> {
//! // Per-image results on the same 8 test images, baseline and with one layer zeroed.
//! let baseline = Evaluation::new(
//!     vec![true, true, true, true, true, true, false, false],
//!     vec![true; 8],
//!     vec![0.1, 0.2, 0.1, 0.3, 0.2, 0.1, 2.0, 1.5],
//! )?;
//! let ablated = Evaluation::new(
//!     vec![true, false, true, true, true, true, false, true],
//!     vec![true; 8],
//!     vec![0.1, 1.2, 0.1, 0.3, 0.2, 0.1, 2.5, 0.5],
//! )?;
//! let m = measure(&baseline, &ablated, &VerdictRule::default())?;
//! assert_eq!(m.metrics.top1, 0.75);
//! assert_eq!(m.delta_top1, 0.0); // one image flipped each way
//! assert_eq!((m.counts.right_to_wrong, m.counts.wrong_to_right), (1, 1));
//! assert_eq!(m.mcnemar_p, 1.0);
//! assert_eq!(m.verdict, Verdict::Trivial);
//!
//! let info = LayerInfo {
//!     index: 4,
//!     name: "layer1.1.conv2".into(),
//!     kind: "conv".into(),
//!     role: "residual-branch".into(),
//!     changes_channels: false,
//!     params: 2304,
//! };
//! let record = LayerRecord::new(&info, &m);
//! assert_eq!(record.verdict, Verdict::Trivial);
//!
//! let mode: AblationMode = "zero-kernel".parse()?;
//! assert_eq!(mode.to_string(), "zero-kernel");
//!
//! // Shard 1 of 3 evaluates every third ablation starting at the second.
//! let shard: Shard = "1/3".parse()?;
//! assert_eq!(shard.jobs(8).collect::<Vec<_>>(), vec![1, 4, 7]);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod atomic;
pub mod csv;
pub mod cumulative;
pub mod engine;
pub mod error;
pub mod merge;
pub mod mode;
pub mod schema;
pub mod select;
pub mod shard;
pub mod sparsity;
pub mod stats;

pub use atomic::{write_atomic, write_atomic_all};
pub use cumulative::{greedy_cumulative, GreedyOptions, GreedyStep};
pub use engine::{
    evaluate_baseline, role_name, run, EngineConfig, Evaluator, Job, Plan, PrefixCache, RunContext,
};
pub use error::{Error, Result};
pub use merge::{merge, merge_files};
pub use mode::AblationMode;
pub use schema::{
    csv_path_for, sha256_file, LayerInfo, LayerRecord, ResultsFile, WeightsRef, SCHEMA_VERSION,
};
pub use select::{glob_match, parse_patterns, select_layers};
pub use shard::Shard;
pub use sparsity::{filters_to_zero, weights_to_prune};
pub use stats::{
    mcnemar_exact_p, measure, paired_difference_agresti_min, paired_difference_tango,
    paired_difference_wald, tango_min_pairs_within, wilson_interval, Ci95, Evaluation, Measurement,
    Metrics, PairedCounts, Verdict, VerdictRule, Z95,
};
