//! Hand-made results for the integration tests.
#![allow(dead_code)]

use layerzero_ablate::{
    mcnemar_exact_p, paired_difference_wald, wilson_interval, AblationMode, Ci95, LayerRecord,
    Metrics, PairedCounts, ResultsFile, VerdictRule, WeightsRef, SCHEMA_VERSION, Z95,
};

pub const N_IMAGES: u64 = 10_000;
pub const BASELINE_CORRECT: u64 = 9_300;

pub fn baseline() -> Metrics {
    Metrics {
        top1: BASELINE_CORRECT as f64 / N_IMAGES as f64,
        top5: 0.998,
        loss: 0.291,
    }
}

/// A layer record with `b` right→wrong and `c` wrong→right flips, all derived fields
/// computed from those counts.
pub fn record(index: usize, name: &str, b: u64, c: u64) -> LayerRecord {
    let n = N_IMAGES;
    let counts = PairedCounts {
        n,
        both_right: BASELINE_CORRECT - b,
        right_to_wrong: b,
        wrong_to_right: c,
        both_wrong: n - BASELINE_CORRECT - c,
    };
    let correct = BASELINE_CORRECT - b + c;
    let delta = counts.delta();
    let p = mcnemar_exact_p(b, c);
    LayerRecord {
        index,
        layer: name.to_string(),
        kind: if name == "fc" { "linear" } else { "conv" }.to_string(),
        role: match name {
            "conv1" => "stem",
            "fc" => "classifier",
            n if n.contains("shortcut") => "shortcut",
            _ => "residual",
        }
        .to_string(),
        changes_channels: name.contains("shortcut") || name == "conv1",
        params: 9 * 16 * 16 + index as u64,
        level: None,
        zeroed: None,
        step: None,
        selection_top1: None,
        top1: correct as f64 / n as f64,
        top5: 0.99,
        loss: 0.3 + b as f64 / 1000.0,
        delta_top1: delta,
        ci95: Ci95 {
            top1: wilson_interval(correct, n, Z95).unwrap(),
            delta_top1: paired_difference_wald(&counts, Z95).unwrap(),
        },
        mcnemar_p: p,
        flips_right_to_wrong: b,
        flips_wrong_to_right: c,
        verdict: VerdictRule::default().verdict(delta, p),
    }
}

pub const LAYERS: [&str; 7] = [
    "conv1",
    "layer1.0.conv1",
    "layer1.0.conv2",
    "layer2.0.conv1",
    "layer2.0.conv2",
    "layer2.0.shortcut.0",
    "fc",
];

/// A complete (unsharded) run in canonical order; swept over `levels` when given.
pub fn unsharded(mode: AblationMode, levels: &[f64]) -> ResultsFile {
    let mut layers = Vec::new();
    for (i, name) in LAYERS.iter().enumerate() {
        let b = 3 + 37 * i as u64 % 200;
        let c = 1 + 11 * i as u64 % 30;
        if levels.is_empty() {
            layers.push(record(i, name, b, c));
        } else {
            for (l, &level) in levels.iter().enumerate() {
                layers.push(record(i, name, b * (l as u64 + 1), c).with_level(level));
            }
        }
    }
    let rule = VerdictRule::default();
    ResultsFile {
        schema: SCHEMA_VERSION,
        arch: "resnet20".into(),
        weights: WeightsRef {
            path: "runs/resnet20/final.safetensors".into(),
            sha256: "ab".repeat(32),
        },
        dataset: "cifar10".into(),
        split: "test".into(),
        n_images: N_IMAGES,
        selection_images: None,
        init_weights: None,
        train_seed: None,
        command: None,
        selection_baseline: None,
        mode,
        seed: None,
        baseline: baseline(),
        verdict_rule: rule.describe(),
        verdict_thresholds: rule,
        n_ablations: layers.len(),
        shard: None,
        layers,
        elapsed_s: 100.0,
        threads: 4,
    }
}
