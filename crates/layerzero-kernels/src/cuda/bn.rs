//! Training batch norm: `cudnnBatchNormalizationForwardTraining` / `…Backward`, with the
//! residual add and ReLU in place (`cudnnAddTensor`, `cudnnActivationForward`/`Backward`).

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use candle_core::cuda::cudarc::cudnn::sys;
use candle_core::cuda::cudarc::driver::{CudaSlice, DevicePtr, SyncOnDrop};
use candle_core::{CudaStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};

use super::*;
use crate::KernelError;
const BN: &str = "cudnn-batch-norm";

/// What the forward pass keeps for the backward pass and for the caller.
struct BnSaved {
    /// Batch mean, as cuDNN saves it for its backward pass.
    mean: CudaSlice<f32>,
    /// 1/√(biased variance + ε), likewise.
    inv_std: CudaSlice<f32>,
    /// Unbiased batch variance: cuDNN's running variance after an update with factor 1
    /// (`Running::Return` only).
    var_unbiased: Option<CudaSlice<f32>>,
    /// The batch mean again, for the caller (moved out once; `Running::Return` only).
    mean_out: Option<CudaSlice<f32>>,
}

/// Where cuDNN's running-statistics update goes.
#[derive(Debug)]
enum Running {
    /// Into the layer's own (C,) running mean and variance, with PyTorch's rule
    /// (`running ← (1 − momentum)·running + momentum·batch`, unbiased variance): cuDNN's
    /// exponential average factor is the momentum. The forward call writes them through the
    /// device pointers of read guards: a custom op can lock only its inputs for writing, and
    /// these are not inputs. Every later use of them is queued on the same stream, after this
    /// call, so no reader sees a half-written buffer.
    InPlace {
        mean: Tensor,
        var: Tensor,
        momentum: f64,
    },
    /// Into fresh zeroed buffers with factor 1, which leaves the batch mean and unbiased
    /// variance there for the caller ([`crate::BatchNormTrainOutput`]).
    Return,
}

/// What the op's three inputs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inputs {
    /// (x, γ, β): the layer's own (C,) tensors, so nothing is copied to call cuDNN.
    Split,
    /// (x, [γ; β] stacked as (2, C), residual): a candle custom op takes at most three inputs,
    /// so with a residual γ and β share one. cuDNN takes two pointers into the stacked buffer.
    StackedWithResidual,
}

/// Training batch norm, then optionally `+ residual` and ReLU, over the inputs [`Inputs`]
/// describes.
#[derive(Debug)]
struct CudnnBatchNorm {
    inputs: Inputs,
    eps: f64,
    relu: bool,
    running: Running,
    saved: Arc<Mutex<Option<BnSaved>>>,
}

/// γ and β as cuDNN reads them: two (C,) f32 regions, possibly of one storage.
struct AffineParams<'a> {
    gamma: (&'a CudaStorage, Layout),
    beta: (&'a CudaStorage, Layout),
}

impl<'a> AffineParams<'a> {
    /// γ and β as two (C,) tensors ([`Inputs::Split`]).
    fn split(
        c: usize,
        (gs, gl): (&'a CudaStorage, &Layout),
        (bs, bl): (&'a CudaStorage, &Layout),
    ) -> Result<Self> {
        for (what, l) in [("γ", gl), ("β", bl)] {
            if l.dims() != [c] {
                return Err(KernelError::shape(
                    BN,
                    format!("{what} {:?}, expected ({c},)", l.dims()),
                )
                .into());
            }
        }
        Ok(Self {
            gamma: (gs, gl.clone()),
            beta: (bs, bl.clone()),
        })
    }

    /// γ and β as the rows of one (2, C) tensor ([`Inputs::StackedWithResidual`]).
    fn stacked(c: usize, (s, l): (&'a CudaStorage, &Layout)) -> Result<Self> {
        if l.dims() != [2, c] {
            return Err(KernelError::shape(
                BN,
                format!("parameters {:?}, expected (2, {c})", l.dims()),
            )
            .into());
        }
        Ok(Self {
            gamma: (s, l.narrow(0, 0, 1)?),
            beta: (s, l.narrow(0, 1, 1)?),
        })
    }
}

impl std::fmt::Debug for BnSaved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BnSaved")
    }
}

impl CudnnBatchNorm {
    fn forward(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        params: AffineParams<'_>,
        residual: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = dims4(xl.dims())?;
        // Checked before any kernel is queued: cuDNN would read past a smaller residual.
        if let Some((_, rl)) = residual {
            crate::check_residual(BN, xl.dims(), rl.dims())?;
        }
        let c = dims[1];
        let dev = &xs.device;
        let plan = bn_plan(dev, dims)?;
        let h = handle(dev)?;
        let stream = dev.cuda_stream();
        let len = dims.iter().product::<usize>();
        // SAFETY: cuDNN writes every element of y and of the saved statistics.
        let mut y = unsafe { dev.alloc::<f32>(len)? };
        let mut mean = unsafe { dev.alloc::<f32>(c)? };
        let mut inv_std = unsafe { dev.alloc::<f32>(c)? };
        let in_place = match &self.running {
            Running::InPlace {
                mean: m,
                var: v,
                momentum,
            } => Some((m.storage_and_layout(), v.storage_and_layout(), *momentum)),
            Running::Return => None,
        };
        // For `Return`: cuDNN reads the running buffers too ((1 − factor)·old), so zeros.
        let mut fresh = match in_place {
            Some(_) => None,
            None => Some((dev.alloc_zeros::<f32>(c)?, dev.alloc_zeros::<f32>(c)?)),
        };
        {
            let mut guards: Vec<SyncOnDrop<'_>> = Vec::new();
            let (rmp, rvp, factor) = match (&in_place, fresh.as_mut()) {
                (Some(((ms, ml), (vs, vl), momentum)), _) => {
                    let (Storage::Cuda(ms), Storage::Cuda(vs)) = (&**ms, &**vs) else {
                        return Err(KernelError::unsupported(
                            BN,
                            "running statistics are not on a CUDA device",
                        )
                        .into());
                    };
                    if ml.dims() != [c] || vl.dims() != [c] {
                        return Err(KernelError::shape(
                            BN,
                            format!(
                                "running statistics {:?} and {:?}, expected ({c},)",
                                ml.dims(),
                                vl.dims()
                            ),
                        )
                        .into());
                    }
                    let (mp, g1) = ptr(BN, ms, ml, &stream)?;
                    let (vp, g2) = ptr(BN, vs, vl, &stream)?;
                    guards.extend([g1, g2]);
                    (mp as *mut c_void, vp as *mut c_void, *momentum)
                }
                (None, Some((rm, rv))) => {
                    let (mp, g1) = ptr_mut(rm, &stream);
                    let (vp, g2) = ptr_mut(rv, &stream);
                    guards.extend([g1, g2]);
                    (mp, vp, 1.0)
                }
                (None, None) => unreachable!("fresh buffers exist unless updating in place"),
            };
            let (xp, _g1) = ptr(BN, xs, xl, &stream)?;
            let (gammap, _g2) = ptr(BN, params.gamma.0, &params.gamma.1, &stream)?;
            let (betap, _g6) = ptr(BN, params.beta.0, &params.beta.1, &stream)?;
            let (yp, _g3) = ptr_mut(&mut y, &stream);
            let (mp, _g4) = ptr_mut(&mut mean, &stream);
            let (ip, _g5) = ptr_mut(&mut inv_std, &stream);
            // SAFETY: descriptors match the shapes checked above; all pointers are live for
            // the calls, which are queued on the tensors' stream.
            unsafe {
                sys::cudnnBatchNormalizationForwardTraining(
                    h.0,
                    sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL,
                    one(),
                    zero(),
                    plan.x.0,
                    xp,
                    plan.x.0,
                    yp,
                    plan.params.0,
                    gammap,
                    betap,
                    factor,
                    rmp,
                    rvp,
                    self.eps,
                    mp,
                    ip,
                )
                .result()
                .map_err(err)?;
                if let Some((rs, rl)) = residual {
                    let (rp, _g8) = ptr(BN, rs, rl, &stream)?;
                    sys::cudnnAddTensor(h.0, one(), plan.x.0, rp, one(), plan.x.0, yp)
                        .result()
                        .map_err(err)?;
                }
                if self.relu {
                    sys::cudnnActivationForward(
                        h.0,
                        plan.relu.0,
                        one(),
                        plan.x.0,
                        yp,
                        zero(),
                        plan.x.0,
                        yp,
                    )
                    .result()
                    .map_err(err)?;
                }
            }
        }
        drop(in_place);
        count();
        let (mean_out, var_unbiased) = match fresh {
            Some((_, run_var)) => (
                Some(stream.clone_dtod(&mean).map_err(candle_core::Error::wrap)?),
                Some(run_var),
            ),
            None => (None, None),
        };
        *self
            .saved
            .lock()
            .map_err(|_| KernelError::unsupported(BN, "poisoned lock"))? = Some(BnSaved {
            mean,
            inv_std,
            var_unbiased,
            mean_out,
        });
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            xl.shape().clone(),
        ))
    }

    /// Returns (dx, d[γ; β] as (2, C), d residual): the ReLU's mask is read from the output
    /// `y`. `gamma` is γ's C values, a (C,) tensor or a row of the stacked parameters.
    fn backward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        y: &Tensor,
        grad: &Tensor,
        want_residual: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .map_err(|_| KernelError::unsupported(BN, "poisoned lock"))?;
        let saved = saved
            .as_ref()
            .ok_or_else(|| KernelError::unsupported(BN, "backward before forward"))?;
        let dims = dims4(x.dims())?;
        let c = dims[1];
        let len = dims.iter().product::<usize>();
        let grad = grad.contiguous()?;
        let gamma = gamma.contiguous()?;
        let x = x.contiguous()?;
        with_cuda(BN, &x, |xs, xl| {
            with_cuda(BN, &grad, |gs, gl| {
                with_cuda(BN, y, |ys, yl| {
                    with_cuda(BN, &gamma, |gs_, gl_| {
                        let dev = &xs.device;
                        let plan = bn_plan(dev, dims)?;
                        let h = handle(dev)?;
                        let stream = dev.cuda_stream();
                        // SAFETY: every element is written by cuDNN before it is read.
                        let mut g_pre = if self.relu {
                            Some(unsafe { dev.alloc::<f32>(len)? })
                        } else {
                            None
                        };
                        let mut dx = unsafe { dev.alloc::<f32>(len)? };
                        let mut dgb = unsafe { dev.alloc::<f32>(2 * c)? };
                        {
                            let (xp, _g1) = ptr(BN, xs, xl, &stream)?;
                            let (gp, _g2) = ptr(BN, gs, gl, &stream)?;
                            let (yp, _g3) = ptr(BN, ys, yl, &stream)?;
                            let (gammap, _g4) = ptr(BN, gs_, gl_, &stream)?;
                            let (dxp, _g5) = ptr_mut(&mut dx, &stream);
                            let (dgbp, _g6) = ptr_mut(&mut dgb, &stream);
                            let dbetap = (dgbp as usize + 4 * c) as *mut c_void;
                            let (mp, _g7) = saved.mean.device_ptr(&stream);
                            let (ip, _g8) = saved.inv_std.device_ptr(&stream);
                            let mut pre_guard = None;
                            let dyp = match g_pre.as_mut() {
                                Some(buf) => {
                                    let (p, g) = ptr_mut(buf, &stream);
                                    pre_guard = Some(g);
                                    // SAFETY: y, grad and g_pre all have the activation's
                                    // shape; ReLU's derivative is read from y (y > 0 exactly
                                    // where its input was).
                                    unsafe {
                                        sys::cudnnActivationBackward(
                                            h.0,
                                            plan.relu.0,
                                            one(),
                                            plan.x.0,
                                            yp,
                                            plan.x.0,
                                            gp,
                                            plan.x.0,
                                            yp,
                                            zero(),
                                            plan.x.0,
                                            p,
                                        )
                                        .result()
                                        .map_err(err)?;
                                    }
                                    p as *const c_void
                                }
                                None => gp,
                            };
                            // SAFETY: as in the forward pass; the saved statistics come from
                            // the forward call of this same op.
                            unsafe {
                                sys::cudnnBatchNormalizationBackward(
                                    h.0,
                                    sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL,
                                    one(),
                                    zero(),
                                    one(),
                                    zero(),
                                    plan.x.0,
                                    xp,
                                    plan.x.0,
                                    dyp,
                                    plan.x.0,
                                    dxp,
                                    plan.params.0,
                                    gammap,
                                    dgbp,
                                    dbetap,
                                    self.eps,
                                    mp as usize as *const c_void,
                                    ip as usize as *const c_void,
                                )
                                .result()
                                .map_err(err)?;
                            }
                            drop(pre_guard);
                        }
                        count();
                        let shape = Shape::from(x.dims());
                        let dres = match (want_residual, g_pre) {
                            (true, Some(p)) => Some(tensor(p, dev, shape.clone())),
                            _ => None,
                        };
                        Ok((tensor(dx, dev, shape), tensor(dgb, dev, (2, c)), dres))
                    })
                })
            })
        })
    }
}

fn dims4(d: &[usize]) -> Result<[usize; 4]> {
    match *d {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(KernelError::shape(BN, format!("expected NCHW, got {d:?}")).into()),
    }
}

impl CustomOp3 for CudnnBatchNorm {
    fn name(&self) -> &'static str {
        BN
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        Err(KernelError::unsupported(BN, "CPU tensors take the CPU kernels").into())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let c = dims4(xl.dims())?[1];
        match self.inputs {
            Inputs::Split => {
                self.forward(xs, xl, AffineParams::split(c, (s2, l2), (s3, l3))?, None)
            }
            Inputs::StackedWithResidual => {
                self.forward(xs, xl, AffineParams::stacked(c, (s2, l2))?, Some((s3, l3)))
            }
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        a2: &Tensor,
        a3: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match self.inputs {
            Inputs::Split => {
                let (dx, dgb, _) = self.backward(x, a2, res, grad, false)?;
                // Rows of one buffer: views, no copies.
                Ok((Some(dx), Some(dgb.get(0)?), Some(dgb.get(1)?)))
            }
            Inputs::StackedWithResidual => {
                let (dx, dgb, dres) = self.backward(x, &a2.get(0)?, res, grad, a3.track_op())?;
                Ok((Some(dx), Some(dgb), dres))
            }
        }
    }
}

/// Applies a batch norm with these settings to x, γ, β and the residual if any. γ and β are
/// stacked into one (2, C) tensor only where the residual takes the op's third input; stacking
/// is differentiable, so both still receive their gradients.
fn apply(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: Option<&Tensor>,
    eps: f64,
    relu: bool,
    running: Running,
) -> Result<(Tensor, Arc<Mutex<Option<BnSaved>>>)> {
    let x = x.contiguous()?;
    let saved = Arc::new(Mutex::new(None));
    let op = |inputs| CudnnBatchNorm {
        inputs,
        eps,
        relu,
        running,
        saved: saved.clone(),
    };
    let y = match residual {
        Some(r) => x.apply_op3(
            &Tensor::stack(&[gamma, beta], 0)?,
            &r.contiguous()?,
            op(Inputs::StackedWithResidual),
        )?,
        None => x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op(Inputs::Split))?,
    };
    Ok((y, saved))
}

/// [`crate::batch_norm_train`] on CUDA through cuDNN.
pub(crate) fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<crate::BatchNormTrainOutput> {
    let (y, saved) = apply(x, gamma, beta, None, eps, relu, Running::Return)?;
    finish(x, y, &saved)
}

/// [`crate::batch_norm_add_relu_train`] on CUDA through cuDNN.
pub(crate) fn batch_norm_add_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: &Tensor,
    eps: f64,
) -> Result<crate::BatchNormTrainOutput> {
    let (y, saved) = apply(x, gamma, beta, Some(residual), eps, true, Running::Return)?;
    finish(x, y, &saved)
}

/// See [`crate::batch_norm_train_update_running`]: the running statistics are updated by the
/// batch-norm kernel itself, so no statistics tensors are made and no averaging ops run.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train_running(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: Option<&Tensor>,
    eps: f64,
    relu: bool,
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f64,
) -> Result<Tensor> {
    let running = Running::InPlace {
        mean: running_mean.clone(),
        var: running_var.clone(),
        momentum,
    };
    let relu = relu || residual.is_some();
    Ok(apply(x, gamma, beta, residual, eps, relu, running)?.0)
}

/// The caller's mean and biased variance (both (C,)), moved out of the forward call's saved
/// state (`Running::Return`).
fn finish(
    x: &Tensor,
    y: Tensor,
    saved: &Mutex<Option<BnSaved>>,
) -> Result<crate::BatchNormTrainOutput> {
    let (n, _, h, w) = x.dims4()?;
    let m = n * h * w;
    let candle_core::Device::Cuda(dev) = x.device() else {
        return Err(KernelError::unsupported(BN, "tensor is not on a CUDA device").into());
    };
    let mut saved = saved
        .lock()
        .map_err(|_| KernelError::unsupported(BN, "poisoned lock"))?;
    let saved = saved
        .as_mut()
        .ok_or_else(|| KernelError::unsupported(BN, "forward did not run"))?;
    let c = saved.mean.len();
    let mean = saved.mean_out.take().map(|s| tensor(s, dev, c));
    let var = saved.var_unbiased.take().map(|s| tensor(s, dev, c));
    match (mean, var) {
        (Some(mean), Some(var)) => {
            // Unbiased → biased: the trainer's running statistics expect the batch's own
            // variance (as the CPU kernels return it).
            let var = var.affine((m as f64 - 1.0) / m as f64, 0.0)?;
            Ok(crate::BatchNormTrainOutput { y, mean, var })
        }
        _ => Err(KernelError::unsupported(BN, "statistics already taken").into()),
    }
}
