//! Convolutions: forward, input gradient and weight gradient, each one cuDNN call, and the
//! eval path's fused convolution + bias (+ residual) + activation.

use std::ffi::c_void;

use candle_core::cuda::cudarc::cudnn::sys;
use candle_core::cuda::cudarc::driver::CudaSlice;
use candle_core::{CudaStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};

use super::*;
use crate::{ConvGeom, KernelError};
const CONV: &str = "cudnn-conv2d";

/// Differentiable f32 NCHW convolution on CUDA through cuDNN; see [`crate::conv2d`].
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    ConvGeom::new(CONV, x.dims(), w.dims(), stride, pad)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    x.apply_op2(&w, CudnnConv { stride, pad })
}

/// [`crate::conv2d_bias_act`] on CUDA: one `cudnnConvolutionBiasActivationForward`,
/// y = act(conv(x, w) + residual + bias), act = ReLU or identity. Evaluation only (no graph).
pub(crate) fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    pad: usize,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let g = ConvGeom::new(CONV, x.dims(), w.dims(), stride, pad)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let bias = bias.contiguous()?;
    let residual = residual.map(|r| r.contiguous()).transpose()?;
    with_cuda(CONV, &x, |xs, xl| {
        with_cuda(CONV, &w, |wst, wl| {
            with_cuda(CONV, &bias, |bs, bl| {
                let dev = &xs.device;
                let plan = conv_plan(dev, &g)?;
                let h = handle(dev)?;
                let stream = dev.cuda_stream();
                // Without a residual z = y with α₂ = 0: zeroed first, so that cuDNN never
                // multiplies uninitialised memory (0 · NaN is NaN).
                let mut y = if residual.is_some() {
                    // SAFETY: every element is written (β-free fused call).
                    unsafe { dev.alloc::<f32>(g.n * g.out_img())? }
                } else {
                    dev.alloc_zeros::<f32>(g.n * g.out_img())?
                };
                let (algo, ws) = if relu {
                    plan.fwd
                } else {
                    (
                        sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                        plan.precomp_ws,
                    )
                };
                let act = if relu { &plan.relu } else { &plan.identity };
                let mut ws_buf = workspace(dev, ws)?;
                let rguard = residual.as_ref().map(|r| r.storage_and_layout());
                {
                    let (xp, _g1) = ptr(CONV, xs, xl, &stream)?;
                    let (wp, _g2) = ptr(CONV, wst, wl, &stream)?;
                    let (bp, _g3) = ptr(CONV, bs, bl, &stream)?;
                    let (yp, _g4) = ptr_mut(&mut y, &stream);
                    let (wsp, _g5) = workspace_ptr(&mut ws_buf, &stream);
                    let (zp, alpha2, _g6) = match &rguard {
                        Some((rs, rl)) => {
                            let Storage::Cuda(rs) = &**rs else {
                                return Err(KernelError::unsupported(
                                    CONV,
                                    "residual is not on a CUDA device",
                                )
                                .into());
                            };
                            let (p, g) = ptr(CONV, rs, rl, &stream)?;
                            (p, one(), Some(g))
                        }
                        None => (yp as *const c_void, zero(), None),
                    };
                    // SAFETY: descriptors match the buffers (one ConvGeom); z is the residual
                    // (output-shaped) or y itself, which cuDNN allows to alias.
                    unsafe {
                        sys::cudnnConvolutionBiasActivationForward(
                            h.0,
                            one(),
                            plan.x.0,
                            xp,
                            plan.w.0,
                            wp,
                            plan.conv.0,
                            algo,
                            wsp,
                            ws,
                            alpha2,
                            plan.y.0,
                            zp,
                            plan.bias.0,
                            bp,
                            act.0,
                            plan.y.0,
                            yp,
                        )
                        .result()
                        .map_err(err)?;
                    }
                }
                count();
                Ok(tensor(y, dev, g.y_dims()))
            })
        })
    })
}

#[derive(Debug, Clone, Copy)]
struct CudnnConv {
    stride: usize,
    pad: usize,
}

impl CustomOp2 for CudnnConv {
    fn name(&self) -> &'static str {
        CONV
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        Err(KernelError::unsupported(CONV, "CPU tensors take the CPU kernels").into())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = ConvGeom::new(CONV, xl.dims(), wl.dims(), self.stride, self.pad)?;
        let y = conv_pass(ConvPass::Forward, &g, (xs, xl), (ws, wl))?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, xs.device.clone()),
            Shape::from(g.y_dims()),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeom::new(CONV, x.dims(), w.dims(), self.stride, self.pad)?;
        let grad = grad.contiguous()?;
        let dx = if x.track_op() {
            Some(conv_input_grad(&g, &grad, w)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(conv_weight_grad(&g, x, &grad)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// One cuDNN convolution pass into a fresh buffer. Operands: `Forward` (x, w) → y,
/// `InputGrad` (dy, w) → dx, `WeightGrad` (x, dy) → dw.
#[derive(Debug, Clone, Copy)]
enum ConvPass {
    Forward,
    InputGrad,
    WeightGrad,
}

fn conv_pass(
    pass: ConvPass,
    g: &ConvGeom,
    (a_s, a_l): (&CudaStorage, &Layout),
    (b_s, b_l): (&CudaStorage, &Layout),
) -> Result<CudaSlice<f32>> {
    let dev = &a_s.device;
    let plan = conv_plan(dev, g)?;
    let h = handle(dev)?;
    let stream = dev.cuda_stream();
    let (len, ws_bytes) = match pass {
        ConvPass::Forward => (g.n * g.out_img(), plan.fwd.1),
        ConvPass::InputGrad => (g.n * g.in_img(), plan.bwd_data.1),
        ConvPass::WeightGrad => (g.cout * g.k(), plan.bwd_filter.1),
    };
    // SAFETY: cuDNN writes every element (β = 0).
    let mut out = unsafe { dev.alloc::<f32>(len)? };
    let mut ws_buf = workspace(dev, ws_bytes)?;
    {
        let (a, _g1) = ptr(CONV, a_s, a_l, &stream)?;
        let (b, _g2) = ptr(CONV, b_s, b_l, &stream)?;
        let (o, _g3) = ptr_mut(&mut out, &stream);
        let (wsp, _g4) = workspace_ptr(&mut ws_buf, &stream);
        let (x, w, y, c) = (plan.x.0, plan.w.0, plan.y.0, plan.conv.0);
        // SAFETY: the descriptors come from the same ConvGeom as the buffers' sizes; the
        // pointers are live for the call, which is queued on the tensors' stream.
        let status = unsafe {
            match pass {
                ConvPass::Forward => sys::cudnnConvolutionForward(
                    h.0,
                    one(),
                    x,
                    a,
                    w,
                    b,
                    c,
                    plan.fwd.0,
                    wsp,
                    ws_bytes,
                    zero(),
                    y,
                    o,
                ),
                ConvPass::InputGrad => sys::cudnnConvolutionBackwardData(
                    h.0,
                    one(),
                    w,
                    b,
                    y,
                    a,
                    c,
                    plan.bwd_data.0,
                    wsp,
                    ws_bytes,
                    zero(),
                    x,
                    o,
                ),
                ConvPass::WeightGrad => sys::cudnnConvolutionBackwardFilter(
                    h.0,
                    one(),
                    x,
                    a,
                    y,
                    b,
                    c,
                    plan.bwd_filter.0,
                    wsp,
                    ws_bytes,
                    zero(),
                    w,
                    o,
                ),
            }
        };
        status.result().map_err(err)?;
    }
    count();
    Ok(out)
}

fn conv_input_grad(g: &ConvGeom, dy: &Tensor, w: &Tensor) -> Result<Tensor> {
    with_cuda(CONV, dy, |dys, dyl| {
        with_cuda(CONV, w, |ws, wl| {
            let dx = conv_pass(ConvPass::InputGrad, g, (dys, dyl), (ws, wl))?;
            Ok(tensor(dx, &dys.device, g.x_dims()))
        })
    })
}

fn conv_weight_grad(g: &ConvGeom, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    with_cuda(CONV, &x, |xs, xl| {
        with_cuda(CONV, dy, |dys, dyl| {
            let dw = conv_pass(ConvPass::WeightGrad, g, (xs, xl), (dys, dyl))?;
            Ok(tensor(dw, &xs.device, g.w_dims()))
        })
    })
}
