//! candle's own ops: the correctness reference, and the path used off the CPU.

use candle_core::{Result, Tensor};

use crate::BatchNormTrainOutput;

/// `x.conv2d(w)` with candle's kernels (note candle's argument order: padding before stride).
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.conv2d(w, padding, stride, 1, 1)
}

/// Training batch norm written with broadcast arithmetic: y = (x − μ)/√(σ² + ε)·γ + β.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormTrainOutput> {
    let (_, c, _, _) = x.dims4()?;
    let mean = x.mean_keepdim((0, 2, 3))?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
    let y = xc
        .broadcast_div(&var.affine(1.0, eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    let y = if relu { y.relu()? } else { y };
    Ok(BatchNormTrainOutput {
        y,
        mean: mean.flatten_all()?.detach(),
        var: var.flatten_all()?.detach(),
    })
}

/// conv2d, `+ bias` per channel, `+ residual`, then ReLU, with candle's ops.
pub fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let c = bias.dim(0)?;
    let y = conv2d(x, w, stride, padding)?.broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
    let y = match residual {
        Some(r) => (y + r)?,
        None => y,
    };
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// `relu(batch_norm_train(x) + residual)` with candle's ops.
pub fn batch_norm_add_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: &Tensor,
    eps: f64,
) -> Result<BatchNormTrainOutput> {
    let o = batch_norm_train(x, gamma, beta, eps, false)?;
    Ok(BatchNormTrainOutput {
        y: (o.y + residual)?.relu()?,
        mean: o.mean,
        var: o.var,
    })
}

/// He et al.'s option-A shortcut with candle's ops: `x[:, :, ::s, ::s]` (as a pad up to a
/// multiple of `stride`, a reshape and two narrows, since candle has no strided slice), then
/// `pad` zero channels on each side.
pub fn shortcut_pad(x: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if stride == 0 {
        candle_core::bail!("shortcut_pad: stride must be at least 1, got 0");
    }
    let sub = if stride == 1 {
        x.clone()
    } else {
        let (hp, wp) = (h.div_ceil(stride) * stride, w.div_ceil(stride) * stride);
        x.pad_with_zeros(2, 0, hp - h)?
            .pad_with_zeros(3, 0, wp - w)?
            .reshape((n, c, hp / stride, stride, wp / stride, stride))?
            .narrow(3, 0, 1)?
            .narrow(5, 0, 1)?
            .reshape((n, c, hp / stride, wp / stride))?
    };
    sub.pad_with_zeros(1, pad, pad)
}
