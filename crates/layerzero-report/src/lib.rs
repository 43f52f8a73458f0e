//! Reports of layer-ablation studies: from `results.json` files (the
//! [`layerzero_ablate::ResultsFile`] schema) and training metrics to a directory with
//! `report.md`, `summary.json`, `layers.csv` and SVG figures.
//!
//! * [`analyze`] groups the results by architecture and mode, aggregates across seeds
//!   (mean ± sample std of Δtop-1, how many seeds call each layer trivial), and checks the
//!   seed paper's three claims ([`claims::CLAIM_RULES`]) on the `zero-kernel` results. It is
//!   pure: no file, no clock, so the same input gives the same [`Summary`].
//! * [`render_markdown`], [`render_csv`] and [`render_figures`] turn a [`Summary`] into text
//!   and SVG; [`write_report`] does everything and writes the files atomically.
//! * [`load_metrics`] reads a training run's `metrics.jsonl`.
//!
//! Units: accuracies are fractions in `summary.json` and `layers.csv` (as in
//! `results.json`), percentages in `report.md` and the figures; Δtop-1 is shown in
//! percentage points (pp).
//!
//! # Example
//!
//! A three-layer "ResNet" evaluated on ten images: both channel-preserving branch convs are
//! trivial, the stage-transition conv is not, so claims 1 and 2 hold; there is no plain net,
//! so claim 3 is not tested.
//!
//! ```
//! use layerzero_ablate::{
//!     measure, AblationMode, Evaluation, LayerInfo, LayerRecord, ResultsFile, VerdictRule,
//!     WeightsRef,
//! };
//! use layerzero_report::{analyze, write_report, ClaimOutcome, Provenance, ReportInput, ResultsSource};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rule = VerdictRule::default();
//! // `right` of the 10 images classified correctly (the same first ones each time).
//! let eval = |right: usize| Evaluation::new((0..10).map(|i| i < right).collect(), vec![true; 10], vec![0.5; 10]);
//! let baseline = eval(9)?;
//! let record = |index, name: &str, role: &str, changes_channels, right| {
//!     let info = LayerInfo {
//!         index,
//!         name: name.into(),
//!         kind: "conv".into(),
//!         role: role.into(),
//!         changes_channels,
//!         params: 2304,
//!     };
//!     Ok::<_, layerzero_ablate::Error>(LayerRecord::new(&info, &measure(&baseline, &eval(right)?, &rule)?))
//! };
//! let layers = vec![
//!     record(0, "conv1", "stem", true, 1)?,
//!     record(1, "layer1.0.conv1", "residual-branch", false, 9)?,
//!     record(2, "layer1.0.conv2", "residual-branch", false, 9)?,
//!     record(3, "layer2.0.conv1", "residual-branch", true, 5)?,
//! ];
//! let results = ResultsFile {
//!     schema: 1,
//!     arch: "resnet20".into(),
//!     weights: WeightsRef { path: "resnet20.safetensors".into(), sha256: "ab".repeat(32) },
//!     dataset: "cifar10".into(),
//!     split: "test".into(),
//!     n_images: 10,
//!     selection_images: None,
//!     init_weights: None,
//!     train_seed: None,
//!     command: None,
//!     selection_baseline: None,
//!     mode: AblationMode::ZeroKernel,
//!     seed: None,
//!     baseline: baseline.metrics(),
//!     verdict_rule: rule.describe(),
//!     verdict_thresholds: rule,
//!     n_ablations: layers.len(),
//!     shard: None,
//!     layers,
//!     elapsed_s: 1.5,
//!     threads: 1,
//! };
//! let input = ReportInput {
//!     results: vec![ResultsSource::new("runs/resnet20/zero-kernel.json", results)],
//!     metrics: vec![],
//!     provenance: Provenance { layerzero_version: "0.1.0".into(), ..Provenance::default() },
//! };
//!
//! let summary = analyze(&input)?;
//! assert_eq!(summary.claims[0].outcome, ClaimOutcome::Holds); // 2 of 2 trivial
//! assert_eq!(summary.claims[1].outcome, ClaimOutcome::Holds); // layer2.0.conv1 non-trivial
//! assert_eq!(summary.claims[2].outcome, ClaimOutcome::NotTested); // no plain net
//!
//! let dir = tempfile::tempdir()?;
//! let files = write_report(dir.path(), &input)?;
//! let report = std::fs::read_to_string(&files.report_md)?;
//! assert!(report.contains("| 3 | `layer2.0.conv1` | conv | residual-branch | yes |"));
//! assert!(files.figures[0].ends_with("figures/delta_top1_zero-kernel.svg"));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod claims;
pub mod error;
pub mod figures;
pub mod input;
pub mod metrics;
pub mod render;
pub mod summary;
pub mod write;

pub use claims::{Claim, ClaimEvaluation, ClaimLayer, ClaimOutcome, NetworkClaim};
pub use error::{ReportError, Result};
pub use figures::{render_figures, Figure};
pub use input::{
    created_utc_now, shell_command_line, utc_rfc3339, Provenance, ReportInput, ResultsSource,
    WeightsChecksum,
};
pub use metrics::{load_metrics, parse_metrics, EpochMetrics, MetricsSeries};
pub use render::{render_csv, render_markdown, FEW_IMAGES};
pub use summary::{
    analyze, Baseline, Consensus, CumulativeCurve, Family, FigureNote, InputFile, LayerSummary,
    ModeSummary, NetworkSummary, SeedRecord, Stat, Summary, TrainingSummary,
};
pub use write::{read_summary, render_report, write_report, RenderedReport, ReportFiles};
