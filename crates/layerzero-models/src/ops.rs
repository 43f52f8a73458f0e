//! Numerical primitives. Every convolution, batch norm, linear layer and pooling of the crate
//! goes through here, so that faster kernels (the `layerzero-kernels` crate) can replace
//! candle's generic ops in one place without touching the architectures.
//!
//! All tensors are `(batch, channels, height, width)` F32; per-channel vectors are `(channels)`.

use candle_core::{DType, Tensor, D};

use crate::error::{ModelError, Result};

/// 2-D convolution without bias, square kernel, same stride and padding in both directions.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    // Fast CPU custom ops (with gradients) by default; candle's own ops on other devices or
    // with LAYERZERO_KERNELS=reference.
    Ok(layerzero_kernels::conv2d(x, w, stride, padding)?)
}

/// Spatial output size of a convolution or pooling window; `None` when the window does not fit.
pub(crate) fn conv_out(size: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = size + 2 * padding;
    if stride == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

/// Adds a per-channel bias to an `(N, C, H, W)` tensor.
pub(crate) fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let c = bias.dim(0)?;
    Ok(x.broadcast_add(&bias.reshape((1, c, 1, 1))?)?)
}

/// Eval-mode batch norm with running statistics, optionally followed by ReLU:
/// `y = (x − mean) / √(var + eps) · γ + β`, computed as one scale and one shift per channel.
pub(crate) fn batch_norm_eval(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let c = gamma.dim(0)?;
    let scale = gamma.div(&(running_var + eps)?.sqrt()?)?;
    let shift = beta.sub(&running_mean.mul(&scale)?)?;
    let y = x
        .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
        .broadcast_add(&shift.reshape((1, c, 1, 1))?)?;
    if relu {
        Ok(y.relu()?)
    } else {
        Ok(y)
    }
}

/// Statistics of one training batch, for the running averages.
#[derive(Debug)]
pub(crate) struct BatchStats {
    /// Per-channel mean over batch and space.
    pub(crate) mean: Tensor,
    /// Per-channel unbiased variance (divided by n − 1), as PyTorch uses for `running_var`.
    pub(crate) var_unbiased: Tensor,
}

/// Training-mode batch norm: normalises with the batch's own mean and biased variance (as
/// PyTorch), optionally followed by ReLU. Gradients flow through the statistics. Returns the
/// detached batch statistics for the running averages.
pub(crate) fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchStats)> {
    let count = values_per_channel(x)?;
    let out = layerzero_kernels::batch_norm_train(x, gamma, beta, eps, relu)?;
    Ok((out.y, batch_stats(&out.mean, &out.var, count)?))
}

/// Training-mode `relu(batch_norm(x) + residual)` in one fused op (the end of a post-activation
/// residual block); otherwise like [`batch_norm_train`]. Gradients flow to `x`, `gamma`, `beta`
/// and `residual`.
pub(crate) fn batch_norm_add_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    let count = values_per_channel(x)?;
    let out = layerzero_kernels::batch_norm_add_relu_train(x, gamma, beta, residual, eps)?;
    Ok((out.y, batch_stats(&out.mean, &out.var, count)?))
}

/// Training batch norm (with `residual`: `relu(bn(x) + residual)`) whose kernel also updates the
/// running statistics in place, where the kernels have such a path (a GPU with the cuDNN build);
/// `None` elsewhere, and the caller takes [`batch_norm_train`] and its own averaging.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train_in_place(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: Option<&Tensor>,
    eps: f64,
    relu: bool,
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f64,
) -> Result<Option<Tensor>> {
    let mut ts = vec![x, gamma, beta, running_mean, running_var];
    ts.extend(residual);
    if !layerzero_kernels::in_place_update_handles(&ts) {
        return Ok(None);
    }
    values_per_channel(x)?;
    let running = layerzero_kernels::RunningStats {
        mean: running_mean,
        var: running_var,
        momentum,
    };
    Ok(Some(layerzero_kernels::batch_norm_train_update_running(
        x, gamma, beta, residual, eps, relu, running,
    )?))
}

/// Values per channel of a training batch (N·H·W), refusing fewer than two.
fn values_per_channel(x: &Tensor) -> Result<usize> {
    let (n, _c, h, w) = x.dims4()?;
    let count = n * h * w;
    if count < 2 {
        // PyTorch refuses too: the unbiased variance of one value is undefined.
        return Err(ModelError::BadInput(format!(
            "training-mode batch norm needs more than one value per channel, got input {:?}",
            x.dims()
        )));
    }
    Ok(count)
}

/// The running-average inputs from the kernels' batch mean and biased variance: running
/// statistics take the unbiased variance, as PyTorch does.
fn batch_stats(mean: &Tensor, var_biased: &Tensor, count: usize) -> Result<BatchStats> {
    let correction = count as f64 / (count - 1) as f64;
    Ok(BatchStats {
        mean: mean.detach().flatten_all()?,
        var_unbiased: (var_biased.detach().flatten_all()? * correction)?,
    })
}

/// Whether every image of a CPU f32 batch `(N, …)` with N ≥ 2 equals the first, bit for bit.
/// Stops at the first difference, so a batch of real images costs a few comparisons; tensors
/// on other devices or of other types answer `false`.
pub(crate) fn images_identical(x: &Tensor) -> Result<bool> {
    let n = match x.dims().first() {
        Some(&n) if n >= 2 => n,
        _ => return Ok(false),
    };
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return Ok(false);
    }
    let (storage, layout) = x.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((lo, hi))) = (&*storage, layout.contiguous_offsets())
    else {
        return Ok(false);
    };
    let data = &cpu.as_slice::<f32>()?[lo..hi];
    let per = data.len() / n;
    let (first, rest) = data.split_at(per);
    Ok(rest.chunks_exact(per).all(|img| {
        img.iter()
            .zip(first)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    }))
}

/// Fully connected layer: `x · wᵀ + b` for `x` of shape `(N, in)`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => Ok(y.broadcast_add(b)?),
        None => Ok(y),
    }
}

/// ReLU.
pub(crate) fn relu(x: &Tensor) -> Result<Tensor> {
    Ok(x.relu()?)
}

/// Global average pooling `(N, C, H, W) → (N, C)`, PyTorch's `x.mean((2, 3))`.
pub(crate) fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.dims4()?;
    Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
}

/// Max pooling with a square window and stride equal to the window.
pub(crate) fn max_pool2d(x: &Tensor, kernel: usize) -> Result<Tensor> {
    Ok(x.max_pool2d(kernel)?)
}

/// Option-A shortcut of He et al.: keep every `stride`-th pixel (starting at 0) and pad the
/// channels with `pad` zero channels before and `pad` after, i.e. PyTorch's
/// `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))` for stride 2 (the kernels crate's op: one
/// parallel pass each way on the CPU, candle's ops elsewhere).
pub(crate) fn shortcut_pad(x: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    Ok(layerzero_kernels::shortcut_pad(x, stride, pad)?)
}

/// Zeros with the given shape on the device of `like`, in F32.
pub(crate) fn zeros_like_shape(like: &Tensor, shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::zeros(shape, DType::F32, like.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn shortcut_takes_even_indices_like_pytorch() {
        let x = Tensor::arange(0f32, 2.0 * 5.0 * 5.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 5, 5))
            .unwrap();
        let y = shortcut_pad(&x, 2, 0).unwrap();
        assert_eq!(y.dims(), &[1, 2, 3, 3]);
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        // x[0, c, i, j] = 25c + 5i + j for i, j in {0, 2, 4}.
        let expect: Vec<f32> = (0..2)
            .flat_map(|c| {
                [0, 2, 4].into_iter().flat_map(move |i| {
                    [0, 2, 4]
                        .into_iter()
                        .map(move |j| (25 * c + 5 * i + j) as f32)
                })
            })
            .collect();
        assert_eq!(v, expect);
    }

    #[test]
    fn shortcut_pad_places_input_channels_in_the_middle() {
        let x = Tensor::ones((1, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let y = shortcut_pad(&x, 2, 1).unwrap();
        assert_eq!(y.dims(), &[1, 4, 2, 2]);
        let per_channel: Vec<f32> = y.sum((0, 2, 3)).unwrap().to_vec1().unwrap();
        assert_eq!(per_channel, vec![0.0, 4.0, 4.0, 0.0]);
    }

    #[test]
    fn train_batch_norm_normalises_and_reports_unbiased_variance() {
        // One channel, values 1..=4: mean 2.5, biased var 1.25, unbiased var 5/3.
        let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 2))
            .unwrap();
        let g = Tensor::new(&[2f32], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
        let (y, stats) = batch_norm_train(&x, &g, &b, 1e-5, false).unwrap();
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let sd = (1.25f64 + 1e-5).sqrt();
        for (got, v) in y.iter().zip([1.0, 2.0, 3.0, 4.0]) {
            let want = (v - 2.5) / sd * 2.0 + 0.5;
            assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
        }
        let m: Vec<f32> = stats.mean.to_vec1().unwrap();
        let v: Vec<f32> = stats.var_unbiased.to_vec1().unwrap();
        assert!((m[0] - 2.5).abs() < 1e-6);
        assert!((v[0] - 5.0 / 3.0).abs() < 1e-5);
    }

    #[test]
    fn train_batch_norm_rejects_single_value() {
        let x = Tensor::ones((1, 3, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let g = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        assert!(batch_norm_train(&x, &g, &b, 1e-5, true).is_err());
    }

    #[test]
    fn conv_out_matches_pytorch_formula() {
        assert_eq!(conv_out(32, 3, 1, 1), Some(32));
        assert_eq!(conv_out(32, 3, 2, 1), Some(16));
        assert_eq!(conv_out(32, 1, 2, 0), Some(16));
        assert_eq!(conv_out(1, 3, 1, 0), None);
    }
}
