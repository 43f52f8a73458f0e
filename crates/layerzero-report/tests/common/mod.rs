//! Hand-made results files built with `layerzero_ablate`'s own types, so that every record
//! is a real measurement and validates.
#![allow(dead_code)]

use layerzero_ablate::{
    measure, AblationMode, Evaluation, LayerInfo, LayerRecord, ResultsFile, VerdictRule, WeightsRef,
};
use layerzero_report::{EpochMetrics, MetricsSeries, Provenance, ReportInput, ResultsSource};

/// Images per evaluation; the baseline gets the first `BASE_RIGHT` right.
pub const N: usize = 1000;
pub const BASE_RIGHT: usize = 900;

/// Flips (right→wrong, wrong→right) that give a clearly trivial record: Δ = −0.1 pp, p = 1.
pub const TRIVIAL: (usize, usize) = (3, 2);
/// Clearly non-trivial: Δ = −5.5 pp, p ≈ 1e-12.
pub const HURTS: (usize, usize) = (60, 5);
/// Destroys the network: Δ = −80 pp.
pub const KILLS: (usize, usize) = (800, 0);

pub fn baseline() -> Evaluation {
    evaluation((0, 0))
}

/// The baseline with `b` of its right images made wrong and `c` of its wrong images made
/// right.
pub fn evaluation((b, c): (usize, usize)) -> Evaluation {
    assert!(b <= BASE_RIGHT && c <= N - BASE_RIGHT);
    let top1: Vec<bool> = (0..N)
        .map(|i| {
            if i < BASE_RIGHT {
                i >= b
            } else {
                i - BASE_RIGHT < c
            }
        })
        .collect();
    Evaluation::new(top1, vec![true; N], vec![0.4; N]).unwrap()
}

/// One layer of a fixture network.
#[derive(Clone, Debug)]
pub struct Layer {
    pub name: String,
    pub kind: &'static str,
    pub role: &'static str,
    pub changes_channels: bool,
    pub params: u64,
}

/// The 20 weight layers of a CIFAR ResNet-20 (option A shortcuts: no projection convs), or
/// of its no-shortcut twin when `plain` is set.
pub fn resnet20_layers(plain: bool) -> Vec<Layer> {
    let mut layers = vec![Layer {
        name: "conv1".into(),
        kind: "conv",
        role: "stem",
        changes_channels: true,
        params: 432,
    }];
    let widths = [16u64, 32, 64];
    for (s, &w) in widths.iter().enumerate() {
        for b in 0..3 {
            for c in 1..=2 {
                let cin = if s > 0 && b == 0 && c == 1 { w / 2 } else { w };
                layers.push(Layer {
                    name: format!("layer{}.{b}.conv{c}", s + 1),
                    kind: "conv",
                    role: if plain { "plain" } else { "residual-branch" },
                    changes_channels: cin != w,
                    params: cin * w * 9,
                });
            }
        }
    }
    layers.push(Layer {
        name: "fc".into(),
        kind: "linear",
        role: "classifier",
        changes_channels: true,
        params: 650,
    });
    layers
}

pub fn sha(tag: u8) -> String {
    format!("{tag:02x}").repeat(32)
}

/// A results file for `arch` in `mode`, one record per layer with the given flips.
pub fn results(
    arch: &str,
    mode: AblationMode,
    seed: Option<u64>,
    layers: &[Layer],
    flips: &[(usize, usize)],
) -> ResultsFile {
    assert_eq!(layers.len(), flips.len());
    let rule = VerdictRule::default();
    let base = baseline();
    let records: Vec<LayerRecord> = layers
        .iter()
        .zip(flips)
        .enumerate()
        .map(|(index, (l, &f))| {
            let info = LayerInfo {
                index,
                name: l.name.clone(),
                kind: l.kind.into(),
                role: l.role.into(),
                changes_channels: l.changes_channels,
                params: l.params,
            };
            LayerRecord::new(&info, &measure(&base, &evaluation(f), &rule).unwrap())
        })
        .collect();
    file(arch, mode, seed, records)
}

/// Wraps records into a complete, valid results file.
pub fn file(
    arch: &str,
    mode: AblationMode,
    seed: Option<u64>,
    mut layers: Vec<LayerRecord>,
) -> ResultsFile {
    let rule = VerdictRule::default();
    let tag = arch.len() as u8 * 16 + seed.unwrap_or(0) as u8;
    let mut rf = ResultsFile {
        schema: 1,
        arch: arch.into(),
        weights: WeightsRef {
            path: format!("runs/{arch}/seed{}/final.safetensors", seed.unwrap_or(0)),
            sha256: sha(tag),
        },
        dataset: "cifar10".into(),
        split: "test".into(),
        n_images: N as u64,
        selection_images: None,
        init_weights: None,
        train_seed: None,
        command: None,
        selection_baseline: None,
        mode,
        seed,
        baseline: baseline().metrics(),
        verdict_rule: rule.describe(),
        verdict_thresholds: rule,
        n_ablations: layers.len(),
        shard: None,
        layers: Vec::new(),
        elapsed_s: 12.5,
        threads: 4,
    };
    layers.sort_by(LayerRecord::canonical_cmp);
    rf.layers = layers;
    rf.validate("fixture").unwrap();
    rf
}

/// Flips for resnet20: stem kills, the two stage-transition convs hurt, every other branch
/// conv trivial except `layer1.0.conv1` (hurts), classifier kills.
pub fn resnet20_flips() -> Vec<(usize, usize)> {
    resnet20_layers(false)
        .iter()
        .map(|l| match l.name.as_str() {
            "conv1" | "fc" => KILLS,
            "layer1.0.conv1" => HURTS,
            _ if l.changes_channels => HURTS,
            _ => TRIVIAL,
        })
        .collect()
}

/// Flips for plain20: everything hurts.
pub fn plain20_flips() -> Vec<(usize, usize)> {
    resnet20_layers(true)
        .iter()
        .map(|l| match l.name.as_str() {
            "conv1" | "fc" => KILLS,
            _ => HURTS,
        })
        .collect()
}

pub fn source(path: &str, results: ResultsFile) -> ResultsSource {
    ResultsSource::new(path, results)
}

pub fn provenance() -> Provenance {
    Provenance {
        layerzero_version: "0.1.0".into(),
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        seeds: vec![1],
        commands: vec![
            "layerzero train --arch resnet20 --seed 1".into(),
            "layerzero ablate --mode zero-kernel --weights runs/resnet20/seed1/final.safetensors"
                .into(),
        ],
        weights: vec![],
        created_utc: "2025-01-02T03:04:05Z".into(),
    }
}

pub fn input(results: Vec<ResultsSource>) -> ReportInput {
    ReportInput {
        results,
        metrics: vec![],
        provenance: provenance(),
    }
}

/// The standard single-seed study: resnet20 and plain20, zero-kernel.
pub fn standard() -> ReportInput {
    input(vec![
        source(
            "runs/resnet20/zero-kernel.json",
            results(
                "resnet20",
                AblationMode::ZeroKernel,
                None,
                &resnet20_layers(false),
                &resnet20_flips(),
            ),
        ),
        source(
            "runs/plain20/zero-kernel.json",
            results(
                "plain20",
                AblationMode::ZeroKernel,
                None,
                &resnet20_layers(true),
                &plain20_flips(),
            ),
        ),
    ])
}

/// A training curve of `epochs` epochs that improves steadily.
pub fn training(arch: &str, seed: Option<u64>, epochs: u64, final_top1: f64) -> MetricsSeries {
    MetricsSeries {
        arch: arch.into(),
        seed,
        path: format!("runs/{arch}/metrics.jsonl").into(),
        epochs: (1..=epochs)
            .map(|e| {
                let t = e as f64 / epochs as f64;
                EpochMetrics {
                    epoch: e,
                    step: Some(e * 390),
                    lr: Some(0.1),
                    train_loss: 2.0 * (1.0 - t) + 0.05,
                    train_top1: (0.3 + 0.69 * t).min(1.0),
                    test_loss: 1.8 * (1.0 - t) + 0.3,
                    test_top1: 0.3 + (final_top1 - 0.3) * t.sqrt(),
                    test_top5: Some(0.99),
                    images_per_s: Some(1000.0),
                    wall_s: Some(30.0 * e as f64),
                    image_side: None,
                }
            })
            .collect(),
    }
}
