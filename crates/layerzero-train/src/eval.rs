//! Evaluation of a network on a CIFAR split, per image, with optional interventions.

use candle_core::{DType, Tensor};
use layerzero_data::{BatchConfig, Batcher, CifarSet};
use layerzero_models::{ForwardMode, Interventions, Network};

use crate::error::Result;

/// Per-image outcome of an evaluation, in the set's order.
#[derive(Debug, Clone, PartialEq)]
pub struct PerImage {
    /// Top-1 prediction (first index of the largest logit, as `argmax`) equals the label.
    pub top1: Vec<bool>,
    /// The label is among the 5 largest logits (ties broken by class index, as a stable sort).
    pub top5: Vec<bool>,
    /// Cross-entropy of the image, in nats.
    pub loss: Vec<f64>,
}

/// Summary of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalSummary {
    /// Fraction of images with a correct top-1 prediction.
    pub top1: f64,
    /// Fraction of images with the label in the top 5.
    pub top5: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Images evaluated.
    pub n_images: usize,
}

impl PerImage {
    /// Means over the images.
    pub fn summary(&self) -> EvalSummary {
        let n = self.top1.len().max(1) as f64;
        EvalSummary {
            top1: self.top1.iter().filter(|&&b| b).count() as f64 / n,
            top5: self.top5.iter().filter(|&&b| b).count() as f64 / n,
            loss: self.loss.iter().sum::<f64>() / n,
            n_images: self.top1.len(),
        }
    }

    fn extend_from_logits(&mut self, logits: &Tensor, labels: &[u32]) -> Result<()> {
        let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for (row, &y) in rows.iter().zip(labels) {
            let y = y as usize;
            let ly = row[y];
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(j, &l)| l > ly || (l == ly && j < y))
                .count();
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&l| (l as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            self.top1.push(rank == 0);
            self.top5.push(rank < 5);
            self.loss.push(lse - ly as f64);
        }
        Ok(())
    }
}

/// Evaluates `net` in eval mode on every image of `set`, in order, with `interventions` applied.
pub fn evaluate(
    net: &dyn Network,
    set: &CifarSet,
    batch_size: usize,
    interventions: &Interventions,
) -> Result<PerImage> {
    let device = net.params().device().clone();
    let batcher = Batcher::new(set, BatchConfig::eval(set.dataset(), batch_size), device)?;
    let mut out = PerImage {
        top1: Vec::with_capacity(set.len()),
        top5: Vec::with_capacity(set.len()),
        loss: Vec::with_capacity(set.len()),
    };
    for batch in batcher.epoch(0) {
        let batch = batch?;
        let logits = net.forward(&batch.images, ForwardMode::Eval, interventions)?;
        let labels: Vec<u32> = batch.labels.to_vec1()?;
        out.extend_from_logits(&logits, &labels)?;
    }
    Ok(out)
}

/// Logits → per-image outcome, for callers that run the network themselves (e.g. from cached
/// activations).
pub fn score_logits(logits: &Tensor, labels: &[u32]) -> Result<PerImage> {
    let mut out = PerImage {
        top1: Vec::new(),
        top5: Vec::new(),
        loss: Vec::new(),
    };
    out.extend_from_logits(logits, labels)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn ranks_ties_and_loss_like_pytorch() -> Result<()> {
        let logits = Tensor::new(
            &[
                [1.0f32, 3.0, 2.0, 0.0, 0.0, 0.0],
                [5.0, 5.0, 0.0, 0.0, 0.0, 0.0],
                [5.0, 5.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ],
            &Device::Cpu,
        )?;
        let s = score_logits(&logits, &[1, 0, 1, 5])?;
        // argmax picks the first of equal maxima: label 0 wins the tie, label 1 does not.
        assert_eq!(s.top1, vec![true, true, false, false]);
        // All-equal logits: label 5 ranks 6th behind indices 0..5.
        assert_eq!(s.top5, vec![true, true, true, false]);
        let lse = (1f64.exp() + 3f64.exp() + 2f64.exp() + 3.0).ln();
        assert!((s.loss[0] - (lse - 3.0)).abs() < 1e-6);
        assert!((s.loss[3] - 6f64.ln()).abs() < 1e-6);
        Ok(())
    }
}
