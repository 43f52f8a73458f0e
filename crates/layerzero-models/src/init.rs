//! Seeded, deterministic weight initialisation.
//!
//! Every layer draws from its own random stream, seeded from the model seed and the layer's
//! PyTorch name. That makes initial weights independent of construction order and lets
//! [`crate::Network::rerandomize`] give one layer exactly the values it had at epoch 0 (same
//! seed) or fresh ones (other seed) without touching any other layer.
//!
//! Distributions (as torchvision's CIFAR/ImageNet ResNets and VGGs):
//! - convolution weight: Kaiming normal, `mode="fan_out"`, `nonlinearity="relu"`, i.e.
//!   N(0, 2 / (out_channels · k · k)); convolution bias: 0;
//! - linear weight and bias: PyTorch's default, U(−1/√fan_in, 1/√fan_in);
//! - batch norm: weight 1, bias 0, running mean 0, running variance 1, `num_batches_tracked` 0.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::inventory::{LayerInfo, LayerKind};
use crate::params::TensorRole;

/// How a newly built network's tensors are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Random initial values from the given seed; the same seed gives bit-identical weights.
    Seeded(u64),
    /// All weights zero (batch-norm weights and running variances one). Cheap: use it when the
    /// weights will be loaded from a file anyway, or only the inventory is wanted.
    Zeros,
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and statistically good enough for weight
/// initialisation; implemented here so that values never change with a dependency upgrade.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal by Box–Muller; one value per call keeps the stream simple to reason about.
    pub(crate) fn next_normal(&mut self) -> f64 {
        // 1 − u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Seed of one layer's random stream: FNV-1a of the name mixed into the model seed, so that
/// streams of different layers (and of different model seeds) do not overlap in practice.
pub(crate) fn layer_seed(seed: u64, layer_name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in layer_name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut mix = SplitMix64::new(seed ^ h.rotate_left(17));
    mix.next_u64()
}

/// Initial values of every tensor of one layer, in PyTorch's `state_dict()` order: weight then
/// bias; for batch norms γ, β, the running mean and variance and the batch counter.
pub(crate) fn layer_tensors(
    info: &LayerInfo,
    init: Init,
    device: &Device,
) -> Result<Vec<(TensorRole, Tensor)>> {
    let mut out = Vec::new();
    match info.kind {
        LayerKind::Conv2d { kernel, .. } => {
            let shape = (info.out_channels, info.in_channels, kernel, kernel);
            let n = info.out_channels * info.in_channels * kernel * kernel;
            let w = match init {
                Init::Zeros => Tensor::zeros(shape, candle_core::DType::F32, device)?,
                Init::Seeded(seed) => {
                    let fan_out = (info.out_channels * kernel * kernel).max(1) as f64;
                    let std = (2.0 / fan_out).sqrt();
                    let mut rng = SplitMix64::new(layer_seed(seed, &info.name));
                    let v: Vec<f32> = (0..n).map(|_| (rng.next_normal() * std) as f32).collect();
                    Tensor::from_vec(v, shape, device)?
                }
            };
            out.push((TensorRole::Weight, w));
            if info.bias {
                out.push((
                    TensorRole::Bias,
                    Tensor::zeros(info.out_channels, candle_core::DType::F32, device)?,
                ));
            }
        }
        LayerKind::Linear => {
            let shape = (info.out_channels, info.in_channels);
            match init {
                Init::Zeros => {
                    out.push((
                        TensorRole::Weight,
                        Tensor::zeros(shape, candle_core::DType::F32, device)?,
                    ));
                    if info.bias {
                        out.push((
                            TensorRole::Bias,
                            Tensor::zeros(info.out_channels, candle_core::DType::F32, device)?,
                        ));
                    }
                }
                Init::Seeded(seed) => {
                    let bound = 1.0 / (info.in_channels.max(1) as f64).sqrt();
                    let mut rng = SplitMix64::new(layer_seed(seed, &info.name));
                    let mut uniform = |n: usize| -> Vec<f32> {
                        (0..n)
                            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                            .collect()
                    };
                    let w = uniform(info.out_channels * info.in_channels);
                    out.push((TensorRole::Weight, Tensor::from_vec(w, shape, device)?));
                    if info.bias {
                        let b = uniform(info.out_channels);
                        out.push((
                            TensorRole::Bias,
                            Tensor::from_vec(b, info.out_channels, device)?,
                        ));
                    }
                }
            }
        }
        LayerKind::BatchNorm2d { .. } => {
            // Deterministic whatever the init: PyTorch's reset_parameters + reset_running_stats.
            let c = info.out_channels;
            let f32 = candle_core::DType::F32;
            out.push((TensorRole::BnWeight, Tensor::ones(c, f32, device)?));
            out.push((TensorRole::BnBias, Tensor::zeros(c, f32, device)?));
            out.push((TensorRole::RunningMean, Tensor::zeros(c, f32, device)?));
            out.push((TensorRole::RunningVar, Tensor::ones(c, f32, device)?));
            out.push((
                TensorRole::NumBatchesTracked,
                Tensor::zeros((), candle_core::DType::I64, device)?,
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_values() {
        // Reference outputs of SplitMix64 seeded with 1234567 (from the original C code).
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut r = SplitMix64::new(7);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| r.next_normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }

    #[test]
    fn layer_seeds_differ_by_name_and_seed() {
        assert_ne!(layer_seed(0, "conv1"), layer_seed(0, "conv2"));
        assert_ne!(layer_seed(0, "conv1"), layer_seed(1, "conv1"));
        assert_eq!(layer_seed(5, "fc"), layer_seed(5, "fc"));
    }
}
