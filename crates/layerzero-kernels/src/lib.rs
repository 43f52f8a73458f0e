//! Fast f32 CPU kernels for the CIFAR CNNs of layerzero: NCHW convolution (forward, input
//! gradient, weight gradient), training-mode batch norm fused with ReLU (and optionally with
//! the residual add that ends a ResNet block), and an eval path that folds batch norm into the
//! convolution.
//!
//! The kernels are [candle](candle_core) custom ops, so candle's autograd differentiates
//! through them. Each public function dispatches on [`backend()`]:
//!
//! * [`KernelBackend::Fast`] (the default) runs this crate's kernels for f32 tensors on the CPU,
//!   and, built with the `cudnn` feature, cuDNN for f32 tensors on a CUDA device (convolution
//!   passes, the fused eval convolution, training batch norm, including
//!   [`batch_norm_train_update_running`], and [`sgd_momentum_step`]; see
//!   `src/cuda/` and docs/cuda.md; `LAYERZERO_CUDNN=0` turns it off;
//!   [`sgd_momentum_step_many`] is one multi-tensor kernel there unless `LAYERZERO_SGD_MULTI=0`,
//!   and [`cross_entropy_train`] two fused kernels unless `LAYERZERO_FUSED_LOSS=0`);
//! * [`KernelBackend::Reference`] runs candle's own ops ([`reference`](mod@reference)); this is
//!   also what any other device (CUDA without `cudnn`, Metal) or dtype gets, so GPU code keeps
//!   working unchanged.
//!
//! [`open_cuda`] opens a GPU the way layerzero's binaries do: with cudarc's per-allocation event
//! tracking off and the memory pool keeping its reservations (both save driver calls; its
//! documentation says why that is safe here).
//!
//! The environment variable `LAYERZERO_KERNELS=reference|fast` selects the backend at start-up;
//! [`set_backend`] overrides it. The [`fast`] and [`reference`](mod@reference) modules call one
//! path directly, which is how the tests compare them.
//!
//! # How the kernels work
//!
//! * **Convolution** (x86-64 with AVX2+FMA; AVX-512VL builds of the same code get 32
//!   registers): each image is copied into a zero-padded buffer whose columns are split by
//!   phase (column mod stride), so for every kernel tap the inputs of 8 consecutive output
//!   columns are 8 consecutive floats. A register tile of output channels × 8-wide output
//!   vectors then accumulates over all Cin·KH·KW taps with unaligned loads straight from that
//!   buffer (an implicit GEMM: no im2col matrix, no packing), and the epilogue adds bias,
//!   residual and ReLU before the single store. The input gradient at stride 1 is the same
//!   kernel on the output gradient with the flipped, transposed weight; at stride s it is split
//!   into s² sub-pixel phases, each an ordinary stride-1 correlation. The weight gradient
//!   accumulates dy·x over all positions of a group of images in a tile of output channels ×
//!   taps. Threads: rayon over images (weight gradient: up to 8 chunks of images, a count
//!   independent of the thread count, each with its own partial sum, added in chunk order).
//!   Without AVX2 (or `LAYERZERO_KERNELS_ISA=portable`) im2col/col2im + the `gemm` crate
//!   handle every geometry (its weight gradient in the same 8 chunks).
//! * **Winograd** for 3×3, stride-1 convolutions, as one GEMM per transform point over the
//!   tiles of a group of images. The forward pass and the input gradient (through the flipped
//!   kernel) use F(4×4, 3×3) (36 multiplies per 4×4 outputs instead of 144) where the output
//!   is at least 13 wide, from 16 channels on both sides: about 30 % faster than F(2×2, 3×3)
//!   at 32 channels on 16×16 and than the direct kernel at 16 channels on 32×32. Narrower
//!   planes (ResNet's 8×8) use F(2×2, 3×3) (16 multiplies per 2×2 outputs) from 32 channels.
//!   The weight gradient (dw = Gᵀ·Σ(A·dy·Aᵀ ⊙ Bᵀ·x·B)·G, no output transform) takes
//!   Winograd from 16 channels: F(4×4, 3×3) from 29 columns (16 channels at 32×32: 3.5–4.5 →
//!   2.5–2.7 ms), else F(2×2, 3×3). `LAYERZERO_WINOGRAD=0` turns Winograd off,
//!   `LAYERZERO_WINO_F43=0` only F(4×4, 3×3).
//! * **Batch norm**: per channel (one rayon task each) shifted sums for mean/variance, then
//!   `y = max(0, a·x + b [+ residual])` while the channel's data is still in cache; backward
//!   likewise: Σg and Σg·(x−μ) with the ReLU mask recomputed from x, then dx. The loops have
//!   AVX2 versions that do the same operations in the same order (same bits; the forward pass
//!   1.6–1.9× faster than the compiler's SSE2 code).
//! * **Option-A shortcut** ([`shortcut_pad`]): every s-th pixel between zero channels, and
//!   back, in one pass over the images in parallel.
//! * **Memory**: outputs the kernels overwrite are not zeroed, per-thread scratch buffers are
//!   reused, and [`configure_allocator`] (called automatically, see its docs) keeps glibc from
//!   returning freed tensors to the OS, which otherwise re-faults every activation each step.
//!   Where a loop moves from one (image, channel) plane to the next (the Winograd input copy,
//!   whose 32×32 planes are a page each; batch norm's first pass, whose next plane of a
//!   channel is a whole image away), it prefetches the next plane while it works on this one:
//!   the hardware prefetcher does not follow into a new page on its own.
//! * **Threads**: rayon's global pool. [`on_worker_thread`] runs a caller's sequence of kernels
//!   (a training step) on one of its workers, so the caller takes part in each kernel instead
//!   of sleeping through it.
//!
//! Tuning knobs (environment, read once): `LAYERZERO_KERNELS_ISA=avx2|portable` caps the
//! instruction set; `LAYERZERO_FWD_TILE=4x4`, `LAYERZERO_DW_TILE=4x5`, `LAYERZERO_WINO_TILE=4x4`
//! force register tiles,
//! `LAYERZERO_DW_GROUP=256x16` the weight gradient's image grouping (output vectors per
//! group × at most that many images); `LAYERZERO_MALLOC_TUNE=0` leaves the allocator alone.
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &dev)?;
//! let w = Var::randn(0f32, 0.1, (4, 3, 3, 3), &dev)?;
//! let gamma = Var::ones(4, candle_core::DType::F32, &dev)?;
//! let beta = Var::zeros(4, candle_core::DType::F32, &dev)?;
//!
//! // conv (3×3, stride 1, padding 1) → batch norm + ReLU, then a scalar loss.
//! let y = layerzero_kernels::conv2d(&x, &w, 1, 1)?;
//! let bn = layerzero_kernels::batch_norm_train(&y, &gamma, &beta, 1e-5, true)?;
//! assert_eq!(bn.mean.dims(), &[4]);
//! let loss = bn.y.sqr()?.mean_all()?;
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), &[4, 3, 3, 3]);
//!
//! // Eval: fold the batch norm into the convolution, then one fused kernel.
//! let (wf, bf) = layerzero_kernels::fold_batch_norm(&w, &gamma, &beta, &bn.mean, &bn.var, 1e-5)?;
//! let z = layerzero_kernels::conv2d_bias_act(&x, &wf, &bf, 1, 1, None, true)?;
//! let z_ref = layerzero_kernels::reference::conv2d_bias_act(&x, &wf, &bf, 1, 1, None, true)?;
//! let err = (z - z_ref)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(err < 1e-4);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod alloc;
mod backend;
mod bn;
mod conv;
#[cfg(feature = "cudnn")]
mod cuda;
mod device;
mod error;
mod geom;
mod peak;
mod prefetch;
pub mod reference;
mod scratch;
mod shortcut;
mod storage;
mod threads;

use candle_core::{DType, Result, Tensor};

pub use alloc::configure_allocator;
pub use backend::{backend, parse_backend, set_backend, KernelBackend};
pub use device::open_cuda;
pub use error::KernelError;
pub use geom::ConvGeom;
pub use peak::{gemm_gflops, measure_gemm_peak_gflops};
pub use threads::on_worker_thread;

#[cfg(feature = "cudnn")]
pub use cuda::cudnn_op_count;

/// Which implementation the public functions run for f32 tensors on `device`, in words, for logs
/// and benchmark records: e.g. `layerzero CPU kernels (AVX-512VL)`, `cuDNN 9.19.0 (fp32,
/// multi-tensor SGD, fused loss)`, `candle's CUDA ops`. It follows the same rules as the dispatch (backend, cargo features, environment
/// switches).
pub fn describe_path(device: &candle_core::Device) -> String {
    if backend() == KernelBackend::Reference {
        return "candle's ops (LAYERZERO_KERNELS=reference)".into();
    }
    match device {
        candle_core::Device::Cpu => match conv::direct::detect_isa() {
            Some(conv::direct::Isa::Avx512) => "layerzero CPU kernels (AVX-512VL)".into(),
            Some(conv::direct::Isa::Avx2) => "layerzero CPU kernels (AVX2)".into(),
            None => "layerzero CPU kernels (portable im2col + gemm)".into(),
        },
        #[cfg(feature = "cudnn")]
        candle_core::Device::Cuda(_) if cuda::enabled() => {
            format!("{}{}", cuda::describe(), device::defaults_note(device))
        }
        candle_core::Device::Cuda(_) => {
            format!("candle's CUDA ops{}", device::defaults_note(device))
        }
        _ => "candle's ops".into(),
    }
}

/// Whether the cuDNN path (feature `cudnn`) handles these tensors; always false without it.
fn use_cudnn(ts: &[&Tensor]) -> bool {
    #[cfg(feature = "cudnn")]
    {
        cuda::handles(ts)
    }
    #[cfg(not(feature = "cudnn"))]
    {
        let _ = ts;
        false
    }
}

/// Calls the cuDNN implementation when the feature is on; unreachable otherwise (guarded by
/// [`use_cudnn`]).
macro_rules! cudnn {
    ($f:ident($($a:expr),*)) => {{
        #[cfg(feature = "cudnn")]
        {
            cuda::$f($($a),*)
        }
        #[cfg(not(feature = "cudnn"))]
        {
            let _ = ($(&$a),*);
            unreachable!("use_cudnn is false without the cudnn feature")
        }
    }};
}

static FAST_OPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one fast-kernel invocation (see [`fast_op_count`]).
pub(crate) fn count_fast_op() {
    FAST_OPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// How many fast kernels (forward or backward) this process has run: lets callers check which
/// backend actually executed.
pub fn fast_op_count() -> u64 {
    FAST_OPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// This crate's kernels, called directly (errors unless every tensor is f32 on the CPU).
pub mod fast {
    pub use crate::bn::{batch_norm_add_relu_train, batch_norm_train};
    pub use crate::conv::{conv2d, conv2d_bias_act, conv2d_input_grad, conv2d_weight_grad};
    pub use crate::shortcut::shortcut_pad;
}

/// Output of [`batch_norm_train`].
#[derive(Debug, Clone)]
pub struct BatchNormTrainOutput {
    /// Normalised (and, if asked, ReLU'd) output, same shape as the input; differentiable.
    pub y: Tensor,
    /// Per-channel batch mean, shape (C,), detached.
    pub mean: Tensor,
    /// Per-channel biased batch variance, shape (C,), detached.
    pub var: Tensor,
}

/// Whether the fast kernels handle these tensors under the current backend.
fn use_fast(ts: &[&Tensor]) -> bool {
    backend() == KernelBackend::Fast
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// He et al.'s option-A shortcut for CIFAR ResNets, differentiable: every `stride`-th row and
/// column of `x` (N, C, H, W), starting at the first, between `pad` zero channels on each side,
/// giving (N, C + 2·pad, ⌈H/stride⌉, ⌈W/stride⌉); PyTorch's
/// `F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, pad, pad))`. A stride of 0 is an error.
pub fn shortcut_pad(x: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    // Both paths check the rank and the stride themselves.
    if use_fast(&[x]) {
        fast::shortcut_pad(x, stride, pad)
    } else {
        reference::shortcut_pad(x, stride, pad)
    }
}

/// NCHW f32 convolution without bias, differentiable w.r.t. `x` and `w` (candle backprop works
/// through it). `x`: (N, Cin, H, W), `w`: (Cout, Cin, KH, KW); the same `stride` and zero
/// `padding` apply to both spatial axes.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    ConvGeom::new("conv2d", x.dims(), w.dims(), stride, padding)?;
    if use_fast(&[x, w]) {
        fast::conv2d(x, w, stride, padding)
    } else if use_cudnn(&[x, w]) {
        cudnn!(conv2d(x, w, stride, padding))
    } else {
        reference::conv2d(x, w, stride, padding)
    }
}

/// Shape checks for batch-norm parameters, shared by both backends.
pub(crate) fn check_bn_params(
    op: &'static str,
    c: usize,
    gamma: &Tensor,
    beta: &Tensor,
) -> std::result::Result<(), KernelError> {
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.dims() != [c] {
            return Err(KernelError::shape(
                op,
                format!("{name} has shape {:?}, expected ({c},)", t.dims()),
            ));
        }
    }
    Ok(())
}

/// The residual of a fused batch norm + add must have the input's shape; shared by every path.
pub(crate) fn check_residual(
    op: &'static str,
    x: &[usize],
    residual: &[usize],
) -> std::result::Result<(), KernelError> {
    if residual != x {
        return Err(KernelError::shape(
            op,
            format!("residual {residual:?} differs from input {x:?}"),
        ));
    }
    Ok(())
}

/// Training-mode batch norm over (N, H, W) per channel, optionally fused with ReLU;
/// differentiable w.r.t. `x`, `gamma` and `beta`. Returns `y` and the batch statistics (mean
/// and biased variance, shape (C,), detached) so the caller can update its running statistics.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormTrainOutput> {
    let (_, c, _) = bn::nchw("batch_norm_train", x.dims())?;
    check_bn_params("batch_norm_train", c, gamma, beta)?;
    if use_fast(&[x, gamma, beta]) {
        fast::batch_norm_train(x, gamma, beta, eps, relu)
    } else if use_cudnn(&[x, gamma, beta]) {
        cudnn!(batch_norm_train(x, gamma, beta, eps, relu))
    } else {
        reference::batch_norm_train(x, gamma, beta, eps, relu)
    }
}

/// The end of a ResNet basic block in one op: `y = relu(batch_norm_train(x) + residual)`,
/// differentiable w.r.t. `x`, `gamma`, `beta` and `residual` (same shape as `x`). Saves the
/// separate add and ReLU passes, their allocations and their backward passes. Returns the batch
/// statistics like [`batch_norm_train`].
pub fn batch_norm_add_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: &Tensor,
    eps: f64,
) -> Result<BatchNormTrainOutput> {
    const OP: &str = "batch_norm_add_relu_train";
    let (_, c, _) = bn::nchw(OP, x.dims())?;
    check_bn_params(OP, c, gamma, beta)?;
    check_residual(OP, x.dims(), residual.dims())?;
    if use_fast(&[x, gamma, beta, residual]) {
        fast::batch_norm_add_relu_train(x, gamma, beta, residual, eps)
    } else if use_cudnn(&[x, gamma, beta, residual]) {
        cudnn!(batch_norm_add_relu_train(x, gamma, beta, residual, eps))
    } else {
        reference::batch_norm_add_relu_train(x, gamma, beta, residual, eps)
    }
}

/// Whether the in-place update kernels ([`sgd_momentum_step`],
/// [`batch_norm_train_update_running`]) handle these tensors: f32 on CUDA with the `cudnn`
/// feature. Elsewhere callers use candle's ops, which on the CPU cost little next to the
/// convolutions; on a GPU each would be a kernel launch and an allocation.
pub fn in_place_update_handles(ts: &[&Tensor]) -> bool {
    use_cudnn(ts)
}

fn check_in_place(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    if in_place_update_handles(ts) {
        Ok(())
    } else {
        Err(KernelError::unsupported(
            op,
            "needs f32 CUDA tensors and the cudnn feature (see in_place_update_handles)",
        )
        .into())
    }
}

/// One step of SGD with momentum, in place (PyTorch's rule without Nesterov, the buffer starting
/// at zero): `buf ← μ·buf + grad + λ·w`, then `w ← w − lr·buf`. Only where
/// [`in_place_update_handles`] says so; `buf` must be owned by the caller alone (it is
/// overwritten), and `w` is changed in place, so every tensor sharing its storage (a `Var` and
/// its clones) sees the new value.
pub fn sgd_momentum_step(
    w: &Tensor,
    grad: &Tensor,
    buf: &Tensor,
    lr: f64,
    momentum: f64,
    decay: f64,
) -> Result<()> {
    check_in_place("sgd_momentum_step", &[w, grad, buf])?;
    cudnn!(sgd_momentum_step(w, grad, buf, lr, momentum, decay))
}

/// One parameter of [`sgd_momentum_step_many`]: the tensors and the weight decay of
/// [`sgd_momentum_step`].
#[derive(Debug, Clone, Copy)]
pub struct SgdParamStep<'a> {
    /// The weight, updated in place.
    pub weight: &'a Tensor,
    /// Its gradient.
    pub grad: &'a Tensor,
    /// Its momentum buffer, owned by the caller alone and updated in place.
    pub momentum_buffer: &'a Tensor,
    /// Weight decay λ for this parameter (0 for those excluded from decay).
    pub weight_decay: f64,
}

fn check_steps(op: &'static str, params: &[SgdParamStep<'_>]) -> Result<()> {
    params
        .iter()
        .try_for_each(|p| check_in_place(op, &[p.weight, p.grad, p.momentum_buffer]))
}

/// [`sgd_momentum_step`] for many parameters at once, with the same rule and the same
/// conditions ([`in_place_update_handles`] for every tensor). On a CUDA device it is one
/// multi-tensor kernel launch per 64 parameters (compiled with NVRTC on first use) instead of
/// two cuDNN calls per parameter, unless `LAYERZERO_SGD_MULTI=0`; then, and elsewhere, it calls
/// [`sgd_momentum_step`] for each.
pub fn sgd_momentum_step_many(params: &[SgdParamStep<'_>], lr: f64, momentum: f64) -> Result<()> {
    // Checked once here for every tensor; the paths below do not check again.
    check_steps("sgd_momentum_step_many", params)?;
    #[cfg(feature = "cudnn")]
    {
        if cuda::multi_sgd() {
            return cuda::sgd_momentum_step_multi(params, lr, momentum);
        }
        for p in params {
            let (w, grad, buf, decay) = (p.weight, p.grad, p.momentum_buffer, p.weight_decay);
            cuda::sgd_momentum_step(w, grad, buf, lr, momentum, decay)?;
        }
    }
    // Without the feature `check_steps` refused every tensor: only an empty list gets here.
    let _ = (lr, momentum);
    Ok(())
}

/// [`sgd_momentum_step_many`]'s multi-tensor kernel, whatever `LAYERZERO_SGD_MULTI` says: f32
/// CUDA tensors with the `cudnn` feature only (an error elsewhere). Each launch updates up to 64
/// parameters; the kernel is compiled with NVRTC (CUDA's runtime compiler, which the `cuda`
/// build already links) the first time a device needs it.
pub fn sgd_momentum_step_multi(params: &[SgdParamStep<'_>], lr: f64, momentum: f64) -> Result<()> {
    check_steps("sgd_momentum_step_multi", params)?;
    #[cfg(feature = "cudnn")]
    {
        cuda::sgd_momentum_step_multi(params, lr, momentum)
    }
    #[cfg(not(feature = "cudnn"))]
    {
        // No tensor passes `check_in_place` without the feature; an empty list is refused as
        // well, so that nothing looks as if it had run.
        let _ = (lr, momentum);
        Err(
            KernelError::unsupported("sgd_momentum_step_multi", "built without the cudnn feature")
                .into(),
        )
    }
}

/// Output of [`cross_entropy_train`] and [`cross_entropy_fused`].
#[derive(Debug, Clone)]
pub struct CrossEntropyOutput {
    /// The batch's mean loss, a scalar that is differentiable with respect to the logits.
    pub loss: Tensor,
    /// How many rows' argmax (the first of equal maxima) equals their label, as an f32 scalar
    /// on the logits' device; not differentiable.
    pub correct: Tensor,
}

/// The training loss in two kernel launches where they apply: the mean cross-entropy of (n, k)
/// logits against (n,) u32 labels, with label smoothing `smoothing` (the loss is
/// (1 − s)·NLL + s·mean over classes of −log p, as `layerzero_train::cross_entropy`), together
/// with the count of correct top-1 predictions; and the logits' gradient in one backward
/// kernel. `Ok(None)` where they do not apply, and the caller computes both with candle's ops:
/// anything but f32 logits and u32 labels on one CUDA device, a build without the `cudnn`
/// feature, the [`KernelBackend::Reference`] backend, `LAYERZERO_CUDNN=0`, and
/// `LAYERZERO_FUSED_LOSS=0` (which turns the fused kernels alone off). A label outside 0..k gives
/// a NaN loss.
pub fn cross_entropy_train(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f64,
) -> Result<Option<CrossEntropyOutput>> {
    #[cfg(feature = "cudnn")]
    {
        if cuda::fused_loss()
            && use_cudnn(&[logits])
            && labels.dtype() == DType::U32
            && labels.device().same_device(logits.device())
        {
            return cuda::cross_entropy_train(logits, labels, smoothing).map(Some);
        }
    }
    let _ = (logits, labels, smoothing);
    Ok(None)
}

/// [`cross_entropy_train`]'s kernels whatever `LAYERZERO_FUSED_LOSS` says: f32 logits and u32
/// labels on a CUDA device with the `cudnn` feature only (an error elsewhere).
pub fn cross_entropy_fused(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f64,
) -> Result<CrossEntropyOutput> {
    const OP: &str = "cross_entropy_fused";
    if !logits.device().is_cuda() || logits.dtype() != DType::F32 {
        return Err(KernelError::unsupported(OP, "needs f32 logits on a CUDA device").into());
    }
    #[cfg(feature = "cudnn")]
    {
        cuda::cross_entropy_train(logits, labels, smoothing)
    }
    #[cfg(not(feature = "cudnn"))]
    {
        let _ = (labels, smoothing);
        Err(KernelError::unsupported(OP, "built without the cudnn feature").into())
    }
}

/// Running statistics that a training batch norm updates in place: PyTorch's rule,
/// `running ← (1 − momentum)·running + momentum·batch`, with the unbiased batch variance.
#[derive(Debug, Clone, Copy)]
pub struct RunningStats<'a> {
    /// Per-channel running mean, shape (C,).
    pub mean: &'a Tensor,
    /// Per-channel running variance, shape (C,).
    pub var: &'a Tensor,
    /// Weight of the new batch (PyTorch's `momentum`, 0.1 by default).
    pub momentum: f64,
}

/// [`batch_norm_train`] (with `residual`: [`batch_norm_add_relu_train`], ReLU implied) whose
/// kernel also updates `running` in place, returning only the output: on a GPU that saves the
/// statistics tensors and the averaging ops, a dozen kernels per layer and step. Only where
/// [`in_place_update_handles`] says so for every tensor involved; every tensor sharing the
/// running statistics' storage sees the new values.
pub fn batch_norm_train_update_running(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: Option<&Tensor>,
    eps: f64,
    relu: bool,
    running: RunningStats<'_>,
) -> Result<Tensor> {
    const OP: &str = "batch_norm_train_update_running";
    let (_, c, _) = bn::nchw(OP, x.dims())?;
    check_bn_params(OP, c, gamma, beta)?;
    let mut ts = vec![x, gamma, beta, running.mean, running.var];
    if let Some(r) = residual {
        check_residual(OP, x.dims(), r.dims())?;
        ts.push(r);
    }
    check_in_place(OP, &ts)?;
    cudnn!(batch_norm_train_running(
        x,
        gamma,
        beta,
        residual,
        eps,
        relu,
        running.mean,
        running.var,
        running.momentum
    ))
}

/// Eval path: folds batch norm (`gamma`, `beta`, running `mean` and `var`, `eps`) into a
/// convolution weight `w` (Cout, Cin, KH, KW), returning the scaled weight and the bias (Cout,)
/// such that `conv(x, w') + b' = bn(conv(x, w))`.
pub fn fold_batch_norm(
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "fold_batch_norm";
    let c = match *w.dims() {
        [c, _, _, _] => c,
        _ => {
            return Err(KernelError::shape(
                OP,
                format!("weight must be rank 4, got {:?}", w.dims()),
            )
            .into())
        }
    };
    for (name, t) in [
        ("gamma", gamma),
        ("beta", beta),
        ("mean", mean),
        ("var", var),
    ] {
        if t.dims() != [c] {
            return Err(KernelError::shape(
                OP,
                format!("{name} has shape {:?}, expected ({c},)", t.dims()),
            )
            .into());
        }
    }
    // Tiny (C and C·K elements): candle's ops are fast enough and work on every device.
    let scale = gamma.broadcast_div(&var.affine(1.0, eps)?.sqrt()?)?;
    let wf = w.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
    let bf = (beta - mean.mul(&scale)?)?;
    Ok((wf, bf))
}

/// Eval-mode convolution + per-channel `bias` (+ optional `residual`, same shape as the output)
/// + optional ReLU, in one fused kernel on the fast path. No gradient.
pub fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    const OP: &str = "conv2d_bias_act";
    let g = ConvGeom::new(OP, x.dims(), w.dims(), stride, padding)?;
    conv::check_bias_residual(OP, &g, bias, residual)?;
    let ts: &[&Tensor] = match residual {
        Some(r) => &[x, w, bias, r],
        None => &[x, w, bias],
    };
    if use_fast(ts) {
        fast::conv2d_bias_act(x, w, bias, stride, padding, residual, relu)
    } else if use_cudnn(ts) {
        cudnn!(conv2d_bias_act(x, w, bias, stride, padding, residual, relu))
    } else {
        reference::conv2d_bias_act(x, w, bias, stride, padding, residual, relu)
    }
}
