//! Convolution: candle custom op with backward, plus the eval-time fused conv + bias + act.

pub(crate) mod direct;
pub(crate) mod gemm_path;
pub(crate) mod winograd;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::error::KernelError;
use crate::geom::ConvGeom;
use crate::storage::{alloc_out, alloc_uninit, cpu_f32, storage_f32};
use winograd::Pass;

/// What to do with each output value after the convolution sum: `+ bias[c]`, `+ residual`,
/// then `max(0, ·)`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

impl<'a> Epilogue<'a> {
    /// The epilogue of image `i` of a batch whose outputs hold `out_img` floats each.
    pub(crate) fn image(&self, i: usize, out_img: usize) -> direct::ImgEpi<'a> {
        direct::ImgEpi {
            bias: self.bias,
            residual: self.residual.map(|r| &r[i * out_img..][..out_img]),
            relu: self.relu,
        }
    }

    fn is_identity(&self) -> bool {
        self.bias.is_none() && self.residual.is_none() && !self.relu
    }
}

/// Applies an epilogue in place over a whole NCHW output (used after the GEMM path, which
/// cannot fuse it).
fn apply_epilogue(g: &ConvGeom, epi: &Epilogue<'_>, y: &mut [f32]) {
    if epi.is_identity() {
        return;
    }
    let p = g.p_out();
    y.par_chunks_mut(p).enumerate().for_each(|(i, plane)| {
        let c = i % g.cout;
        let b = epi.bias.map_or(0.0, |b| b[c]);
        if let Some(r) = epi.residual {
            for (v, r) in plane.iter_mut().zip(&r[i * p..][..p]) {
                *v += b + r;
            }
        } else if b != 0.0 {
            for v in plane.iter_mut() {
                *v += b;
            }
        }
        if epi.relu {
            for v in plane.iter_mut() {
                *v = v.max(0.0);
            }
        }
    });
}

/// y = epilogue(conv(x, w)); `y` is fully overwritten.
pub(crate) fn forward_into(g: &ConvGeom, x: &[f32], w: &[f32], epi: &Epilogue<'_>, y: &mut [f32]) {
    crate::count_fast_op();
    match direct::detect_isa() {
        Some(isa) if winograd::supported(Pass::Forward, g) => {
            winograd::conv_fwd(isa, g.n, g.cin, g.h, g.w, g.pad, x, w, g.cout, epi, y)
        }
        Some(isa) => direct::conv_fwd(isa, g, x, w, epi, y),
        None => {
            gemm_path::conv_fwd(g, x, w, y);
            apply_epilogue(g, epi, y);
        }
    }
}

/// dx = ∂(Σ dy·conv(x, w))/∂x; `dx` must be zeroed.
pub(crate) fn input_grad_into(g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    crate::count_fast_op();
    match direct::detect_isa() {
        // At stride 1 the input gradient is the forward convolution of dy with the flipped,
        // transposed kernel and padding 2 − pad.
        Some(isa) if winograd::supported(Pass::InputGrad, g) => {
            let wt = direct::flip_transpose(g, w);
            let epi = Epilogue::default();
            winograd::conv_fwd(
                isa,
                g.n,
                g.cout,
                g.ho,
                g.wo,
                2 - g.pad,
                dy,
                &wt,
                g.cin,
                &epi,
                dx,
            )
        }
        Some(isa) if direct::dx_supported(g) => direct::conv_dx(isa, g, dy, w, dx),
        Some(isa) if g.stride > 1 => direct::conv_dx_strided(isa, g, dy, w, dx),
        _ => gemm_path::conv_dx(g, dy, w, dx),
    }
}

/// dw = ∂(Σ dy·conv(x, w))/∂w; `dw` is fully overwritten.
pub(crate) fn weight_grad_into(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    crate::count_fast_op();
    match direct::detect_isa() {
        Some(isa) if winograd::supported(Pass::WeightGrad, g) => {
            winograd::conv_dw(isa, g.n, g.cin, g.h, g.w, g.pad, x, dy, g.cout, dw)
        }
        Some(isa) => direct::conv_dw(isa, g, x, dy, dw),
        None => gemm_path::conv_dw(g, x, dy, dw),
    }
}

/// Candle custom op: f32 NCHW convolution of (x, w) without bias.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv2dOp {
    pub stride: usize,
    pub pad: usize,
}

const CONV: &str = "layerzero-conv2d";

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        CONV
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeom::new(CONV, l1.dims(), l2.dims(), self.stride, self.pad)?;
        let x = cpu_f32(CONV, s1, l1)?;
        let w = cpu_f32(CONV, s2, l2)?;
        // SAFETY: `forward_into` writes every output element (both paths).
        let mut y = unsafe { alloc_uninit(g.n * g.out_img()) };
        forward_into(&g, x, w, &Epilogue::default(), &mut y);
        Ok((CpuStorage::F32(y), Shape::from(g.y_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // A plain input (the image batch) needs no gradient: skip the most expensive part.
        let dx = if x.track_op() {
            Some(conv2d_input_grad(
                &grad,
                w,
                x.dims(),
                self.stride,
                self.pad,
            )?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(conv2d_weight_grad(
                x,
                &grad,
                w.dims(),
                self.stride,
                self.pad,
            )?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

pub(crate) fn check_fast(op: &'static str, ts: &[&Tensor]) -> std::result::Result<(), KernelError> {
    for t in ts {
        if !t.device().is_cpu() {
            return Err(KernelError::unsupported(op, "tensor is not on the CPU"));
        }
        if t.dtype() != candle_core::DType::F32 {
            return Err(KernelError::unsupported(
                op,
                format!("dtype {:?}, only f32 is implemented", t.dtype()),
            ));
        }
    }
    Ok(())
}

/// Fast-path convolution (differentiable); see [`crate::conv2d`].
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    ConvGeom::new(CONV, x.dims(), w.dims(), stride, padding)?;
    check_fast(CONV, &[x, w])?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    x.apply_op2(
        &w,
        Conv2dOp {
            stride,
            pad: padding,
        },
    )
}

const DX: &str = "layerzero-conv2d-input-grad";
const DW: &str = "layerzero-conv2d-weight-grad";

/// Gradient of a convolution with respect to its input `x` of shape `x_dims`, given the output
/// gradient `dy` and the weight `w` (not differentiable itself).
pub fn conv2d_input_grad(
    dy: &Tensor,
    w: &Tensor,
    x_dims: &[usize],
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = ConvGeom::new(DX, x_dims, w.dims(), stride, padding)?;
    check_fast(DX, &[dy, w])?;
    if dy.dims() != [g.n, g.cout, g.ho, g.wo] {
        return Err(KernelError::shape(
            DX,
            format!("output gradient {:?}, expected {:?}", dy.dims(), g.y_dims()),
        )
        .into());
    }
    let dy = dy.contiguous()?;
    let w = w.contiguous()?;
    let mut dx = if direct::detect_isa().is_some() && (direct::dx_supported(&g) || g.stride > 1) {
        // SAFETY: the direct input-gradient kernels write every element.
        unsafe { alloc_uninit(g.n * g.in_img()) }
    } else {
        // The GEMM path accumulates (col2im) into a zeroed buffer.
        alloc_out(g.n * g.in_img())
    };
    {
        let (dys, dyl) = dy.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let dyf = storage_f32(DX, &dys, dyl)?;
        let wf = storage_f32(DX, &ws, wl)?;
        input_grad_into(&g, dyf, wf, &mut dx);
    }
    Tensor::from_vec(dx, g.x_dims(), dy.device())
}

/// Gradient of a convolution with respect to its weight of shape `w_dims`, given the input `x`
/// and the output gradient `dy` (not differentiable itself).
pub fn conv2d_weight_grad(
    x: &Tensor,
    dy: &Tensor,
    w_dims: &[usize],
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = ConvGeom::new(DW, x.dims(), w_dims, stride, padding)?;
    check_fast(DW, &[x, dy])?;
    if dy.dims() != [g.n, g.cout, g.ho, g.wo] {
        return Err(KernelError::shape(
            DW,
            format!("output gradient {:?}, expected {:?}", dy.dims(), g.y_dims()),
        )
        .into());
    }
    let x = x.contiguous()?;
    let dy = dy.contiguous()?;
    // SAFETY: both weight-gradient paths write every element.
    let mut dw = unsafe { alloc_uninit(g.cout * g.k()) };
    {
        let (xs, xl) = x.storage_and_layout();
        let (dys, dyl) = dy.storage_and_layout();
        let xf = storage_f32(DW, &xs, xl)?;
        let dyf = storage_f32(DW, &dys, dyl)?;
        weight_grad_into(&g, xf, dyf, &mut dw);
    }
    Tensor::from_vec(dw, g.w_dims(), x.device())
}

const BIAS_ACT: &str = "layerzero-conv2d-bias-act";

/// Fast-path eval convolution with fused bias, residual and ReLU; see [`crate::conv2d_bias_act`].
pub fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let g = ConvGeom::new(BIAS_ACT, x.dims(), w.dims(), stride, padding)?;
    check_bias_residual(BIAS_ACT, &g, bias, residual)?;
    check_fast(BIAS_ACT, &[x, w, bias])?;
    if let Some(r) = residual {
        check_fast(BIAS_ACT, &[r])?;
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let bias = bias.contiguous()?;
    let residual = residual.map(|r| r.contiguous()).transpose()?;
    // SAFETY: `forward_into` writes every output element (both paths).
    let mut y = unsafe { alloc_uninit(g.n * g.out_img()) };
    {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (bs, bl) = bias.storage_and_layout();
        let xf = storage_f32(BIAS_ACT, &xs, xl)?;
        let wf = storage_f32(BIAS_ACT, &ws, wl)?;
        let bf = storage_f32(BIAS_ACT, &bs, bl)?;
        let rguard = residual.as_ref().map(|r| r.storage_and_layout());
        let rf = match &rguard {
            Some((rs, rl)) => Some(storage_f32(BIAS_ACT, rs, rl)?),
            None => None,
        };
        let epi = Epilogue {
            bias: Some(bf),
            residual: rf,
            relu,
        };
        forward_into(&g, xf, wf, &epi, &mut y);
    }
    Tensor::from_vec(y, g.y_dims(), x.device())
}

/// Shape checks for `conv2d_bias_act`, shared by both backends.
pub(crate) fn check_bias_residual(
    op: &'static str,
    g: &ConvGeom,
    bias: &Tensor,
    residual: Option<&Tensor>,
) -> std::result::Result<(), KernelError> {
    if bias.dims() != [g.cout] {
        return Err(KernelError::shape(
            op,
            format!("bias has shape {:?}, expected ({},)", bias.dims(), g.cout),
        ));
    }
    if let Some(r) = residual {
        if r.dims() != [g.n, g.cout, g.ho, g.wo] {
            return Err(KernelError::shape(
                op,
                format!(
                    "residual has shape {:?}, expected {:?}",
                    r.dims(),
                    g.y_dims()
                ),
            ));
        }
    }
    Ok(())
}

/// Helpers of the kernels' unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    /// `n` pseudo-random values in [−½, ½) from `seed` (xorshift).
    pub(crate) fn rand(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Normwise relative error max|a − b| / max|b| at most 1e-5.
    pub(crate) fn close(a: &[f32], b: &[f32], what: &str) {
        let m = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-20);
        let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d / m <= 1e-5, "{what}: rel err {}", d / m);
    }
}
