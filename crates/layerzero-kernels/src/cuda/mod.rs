//! cuDNN kernels for f32 tensors on a CUDA device (cargo feature `cudnn`).
//!
//! Why: candle's own CUDA convolution is im2col + cuBLAS, its input gradient a generic
//! `conv_transpose2d` kernel and its weight gradient another im2col convolution over
//! (Cin, N)-transposed tensors; its batch norm is a dozen broadcast kernels each way. Here every
//! convolution pass is one cuDNN call (forward, backward-data, backward-filter), and training
//! batch norm is `cudnnBatchNormalizationForwardTraining` / `…Backward`, with the residual add
//! and ReLU applied in place by `cudnnAddTensor` and `cudnnActivationForward`.
//!
//! Descriptors and the algorithms cuDNN's heuristics pick are made once per shape and kept per
//! thread (a cuDNN handle is not `Send`). Convolutions use `CUDNN_FMA_MATH`: plain fp32, no TF32
//! tensor cores, so results stay within fp32 rounding of the CPU kernels (PyTorch allows TF32
//! for cuDNN convolutions by default). `LAYERZERO_CUDNN_TF32=1` lets cuDNN use TF32 as well;
//! `LAYERZERO_CUDNN=0` turns this module off (candle's ops run instead). cuDNN may pick
//! non-deterministic algorithms (atomics in the weight gradient), so two CUDA runs can differ in
//! the last bits; the CPU's determinism guarantees do not extend to the GPU.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::rc::Rc;

use candle_core::cuda::cudarc::cudnn::{result as dnn, sys, CudnnError};
use candle_core::cuda::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, SyncOnDrop,
};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage, Tensor};

use crate::{ConvGeom, KernelBackend, KernelError};

mod bn;
mod conv;
mod sgd;
mod xent;

pub(crate) use bn::{batch_norm_add_relu_train, batch_norm_train, batch_norm_train_running};
pub(crate) use conv::{conv2d, conv2d_bias_act};
pub(crate) use sgd::{sgd_momentum_step, sgd_momentum_step_multi};
pub(crate) use xent::cross_entropy_train;

/// Whether this module handles these tensors: all f32 on CUDA, the fast backend selected and
/// `LAYERZERO_CUDNN` not `0`.
pub(crate) fn handles(ts: &[&Tensor]) -> bool {
    enabled()
        && crate::backend() == KernelBackend::Fast
        && ts
            .iter()
            .all(|t| t.device().is_cuda() && t.dtype() == DType::F32)
}

/// `LAYERZERO_CUDNN` is not `0`.
pub(crate) fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("LAYERZERO_CUDNN").as_deref() != Ok("0"))
}

/// The optimiser step takes the multi-tensor kernel ([`crate::sgd_momentum_step_many`]) unless
/// `LAYERZERO_SGD_MULTI=0`. On by default since its first GPU run (2026-11-27, an H200): its
/// tests passed and it made the step's update 24–27 times faster than the per-parameter cuDNN
/// calls (docs/cuda.md, run 8).
pub(crate) fn multi_sgd() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| std::env::var("LAYERZERO_SGD_MULTI").as_deref() != Ok("0"))
}

/// The trainer's loss and correct count take the fused kernels ([`crate::cross_entropy_train`])
/// unless `LAYERZERO_FUSED_LOSS=0`. On by default since the same run (docs/cuda.md, run 8).
pub(crate) fn fused_loss() -> bool {
    static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FUSED.get_or_init(|| std::env::var("LAYERZERO_FUSED_LOSS").as_deref() != Ok("0"))
}

/// See [`crate::describe_path`].
pub(crate) fn describe() -> String {
    let math = if tf32() { "TF32 allowed" } else { "fp32" };
    // Named so that bench records of the two optimiser paths can be told apart.
    let sgd = if multi_sgd() {
        ", multi-tensor SGD"
    } else {
        ""
    };
    let loss = if fused_loss() { ", fused loss" } else { "" };
    let v = dnn::get_version();
    format!(
        "cuDNN {}.{}.{} ({math}{sgd}{loss})",
        v / 10_000,
        v / 100 % 100,
        v % 100
    )
}

fn tf32() -> bool {
    static TF32: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TF32.get_or_init(|| std::env::var("LAYERZERO_CUDNN_TF32").as_deref() == Ok("1"))
}

static CUDNN_OPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many cuDNN kernels (forward or backward) this process has run, with the launches of this
/// module's own NVRTC kernels (multi-tensor SGD, fused loss): lets tests check that the CUDA
/// path really went through this module rather than candle's ops.
pub fn cudnn_op_count() -> u64 {
    CUDNN_OPS.load(std::sync::atomic::Ordering::Relaxed)
}

fn count() {
    CUDNN_OPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// Handles and descriptors (RAII over cuDNN's C objects).

struct Handle(sys::cudnnHandle_t);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by `create_handle`, destroyed once.
        unsafe {
            let _ = dnn::destroy_handle(self.0);
        }
    }
}

struct TensorDesc(sys::cudnnTensorDescriptor_t);

impl TensorDesc {
    fn nchw(dims: [usize; 4]) -> Result<Self> {
        let d = TensorDesc(dnn::create_tensor_descriptor().map_err(err)?);
        // SAFETY: `d.0` was just created.
        unsafe {
            dnn::set_tensor4d_descriptor(
                d.0,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                dims.map(|v| v as c_int),
            )
            .map_err(err)?;
        }
        Ok(d)
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by `create_tensor_descriptor`, destroyed once.
        unsafe {
            let _ = dnn::destroy_tensor_descriptor(self.0);
        }
    }
}

struct FilterDesc(sys::cudnnFilterDescriptor_t);

impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created by `create_filter_descriptor`, destroyed once.
        unsafe {
            let _ = dnn::destroy_filter_descriptor(self.0);
        }
    }
}

struct ConvDesc(sys::cudnnConvolutionDescriptor_t);

impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created by `create_convolution_descriptor`, destroyed once.
        unsafe {
            let _ = dnn::destroy_convolution_descriptor(self.0);
        }
    }
}

struct ActDesc(sys::cudnnActivationDescriptor_t);

impl Drop for ActDesc {
    fn drop(&mut self) {
        // SAFETY: created by `create_activation_descriptor`, destroyed once.
        unsafe {
            let _ = sys::cudnnDestroyActivationDescriptor(self.0);
        }
    }
}

fn err(e: CudnnError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// Everything cuDNN needs for one convolution geometry: descriptors and the algorithm (with
/// its workspace size) of each pass.
struct ConvPlan {
    x: TensorDesc,
    w: FilterDesc,
    y: TensorDesc,
    conv: ConvDesc,
    /// (1, Cout, 1, 1), for the eval path's bias.
    bias: TensorDesc,
    relu: ActDesc,
    identity: ActDesc,
    /// Workspace of `IMPLICIT_PRECOMP_GEMM`, the one algorithm cuDNN's fused
    /// convolution + bias + activation accepts with the identity activation.
    precomp_ws: usize,
    fwd: (sys::cudnnConvolutionFwdAlgo_t, usize),
    bwd_data: (sys::cudnnConvolutionBwdDataAlgo_t, usize),
    bwd_filter: (sys::cudnnConvolutionBwdFilterAlgo_t, usize),
}

/// Descriptors for one batch-norm shape: the activation, the (1, C, 1, 1) parameters, ReLU.
struct BnPlan {
    x: TensorDesc,
    params: TensorDesc,
    relu: ActDesc,
}

type ConvKey = (usize, [usize; 9]);
type BnKey = (usize, [usize; 4]);

thread_local! {
    // Keyed by the stream (one per candle CudaDevice): a handle is bound to its stream.
    static HANDLES: RefCell<HashMap<usize, Rc<Handle>>> = RefCell::new(HashMap::new());
    static CONV_PLANS: RefCell<HashMap<ConvKey, Rc<ConvPlan>>> = RefCell::new(HashMap::new());
    static BN_PLANS: RefCell<HashMap<BnKey, Rc<BnPlan>>> = RefCell::new(HashMap::new());
}

fn stream_key(dev: &CudaDevice) -> usize {
    dev.cuda_stream().cu_stream() as usize
}

fn handle(dev: &CudaDevice) -> Result<Rc<Handle>> {
    let key = stream_key(dev);
    if let Some(h) = HANDLES.with(|m| m.borrow().get(&key).cloned()) {
        return Ok(h);
    }
    let stream = dev.cuda_stream();
    stream
        .context()
        .bind_to_thread()
        .map_err(candle_core::Error::wrap)?;
    let h = Handle(dnn::create_handle().map_err(err)?);
    // SAFETY: both the handle and the stream are live; the stream outlives the handle's use
    // because the device (which owns it) is held by every tensor we are called with.
    unsafe { dnn::set_stream(h.0, stream.cu_stream() as sys::cudaStream_t).map_err(err)? };
    let h = Rc::new(h);
    HANDLES.with(|m| m.borrow_mut().insert(key, h.clone()));
    Ok(h)
}

fn conv_plan(dev: &CudaDevice, g: &ConvGeom) -> Result<Rc<ConvPlan>> {
    // The math mode (`tf32()`) is fixed for the process, so the shape alone keys the plan.
    let key = (
        stream_key(dev),
        [g.n, g.cin, g.h, g.w, g.cout, g.kh, g.kw, g.stride, g.pad],
    );
    if let Some(p) = CONV_PLANS.with(|m| m.borrow().get(&key).cloned()) {
        return Ok(p);
    }
    let h = handle(dev)?;
    let x = TensorDesc::nchw([g.n, g.cin, g.h, g.w])?;
    let y = TensorDesc::nchw([g.n, g.cout, g.ho, g.wo])?;
    let w = FilterDesc(dnn::create_filter_descriptor().map_err(err)?);
    let conv = ConvDesc(dnn::create_convolution_descriptor().map_err(err)?);
    let math = if tf32() {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
    } else {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    };
    // SAFETY: every descriptor was just created; the heuristics only read them.
    unsafe {
        dnn::set_filter4d_descriptor(
            w.0,
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            [g.cout, g.cin, g.kh, g.kw].map(|v| v as c_int),
        )
        .map_err(err)?;
        dnn::set_convolution2d_descriptor(
            conv.0,
            g.pad as c_int,
            g.pad as c_int,
            g.stride as c_int,
            g.stride as c_int,
            1,
            1,
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        )
        .map_err(err)?;
        dnn::set_convolution_math_type(conv.0, math).map_err(err)?;

        let mut n: c_int = 0;
        let mut f: [sys::cudnnConvolutionFwdAlgoPerf_t; 8] = std::mem::zeroed();
        dnn::get_convolution_forward_algorithm(
            h.0,
            x.0,
            w.0,
            conv.0,
            y.0,
            f.len() as c_int,
            &mut n,
            f.as_mut_ptr(),
        )
        .map_err(err)?;
        let fa = f[..n as usize]
            .iter()
            .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
            .map(|p| p.algo)
            .ok_or_else(|| no_algo("forward", g))?;
        let fws = dnn::get_convolution_forward_workspace_size(h.0, x.0, w.0, conv.0, y.0, fa)
            .map_err(err)?;

        let mut d: [sys::cudnnConvolutionBwdDataAlgoPerf_t; 8] = std::mem::zeroed();
        dnn::get_convolution_backward_data_algorithm(
            h.0,
            w.0,
            y.0,
            conv.0,
            x.0,
            d.len() as c_int,
            &mut n,
            d.as_mut_ptr(),
        )
        .map_err(err)?;
        let da = d[..n as usize]
            .iter()
            .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
            .map(|p| p.algo)
            .ok_or_else(|| no_algo("backward-data", g))?;
        let dws = dnn::get_convolution_backward_data_workspace_size(h.0, w.0, y.0, conv.0, x.0, da)
            .map_err(err)?;

        let mut b: [sys::cudnnConvolutionBwdFilterAlgoPerf_t; 8] = std::mem::zeroed();
        dnn::get_convolution_backward_filter_algorithm(
            h.0,
            x.0,
            y.0,
            conv.0,
            w.0,
            b.len() as c_int,
            &mut n,
            b.as_mut_ptr(),
        )
        .map_err(err)?;
        let ba = b[..n as usize]
            .iter()
            .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
            .map(|p| p.algo)
            .ok_or_else(|| no_algo("backward-filter", g))?;
        let bws =
            dnn::get_convolution_backward_filter_workspace_size(h.0, x.0, y.0, conv.0, w.0, ba)
                .map_err(err)?;

        let precomp_ws = dnn::get_convolution_forward_workspace_size(
            h.0,
            x.0,
            w.0,
            conv.0,
            y.0,
            sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        )
        .map_err(err)?;
        let plan = Rc::new(ConvPlan {
            x,
            w,
            y,
            conv,
            bias: TensorDesc::nchw([1, g.cout, 1, 1])?,
            relu: activation(sys::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU)?,
            identity: activation(sys::cudnnActivationMode_t::CUDNN_ACTIVATION_IDENTITY)?,
            precomp_ws,
            fwd: (fa, fws),
            bwd_data: (da, dws),
            bwd_filter: (ba, bws),
        });
        CONV_PLANS.with(|m| m.borrow_mut().insert(key, plan.clone()));
        Ok(plan)
    }
}

fn no_algo(pass: &str, g: &ConvGeom) -> candle_core::Error {
    KernelError::unsupported(
        "cudnn-conv2d",
        format!("cuDNN offers no {pass} algorithm for {g:?}"),
    )
    .into()
}

fn activation(mode: sys::cudnnActivationMode_t) -> Result<ActDesc> {
    let a = ActDesc(dnn::create_activation_descriptor().map_err(err)?);
    // SAFETY: the descriptor was just created. NaNs propagate so that a diverging run is
    // caught by the trainer's loss check rather than masked by ReLU.
    unsafe {
        dnn::set_activation_descriptor(
            a.0,
            mode,
            sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
            0.0,
        )
        .map_err(err)?;
    }
    Ok(a)
}

fn bn_plan(dev: &CudaDevice, dims: [usize; 4]) -> Result<Rc<BnPlan>> {
    let key = (stream_key(dev), dims);
    if let Some(p) = BN_PLANS.with(|m| m.borrow().get(&key).cloned()) {
        return Ok(p);
    }
    let x = TensorDesc::nchw(dims)?;
    let params = TensorDesc::nchw([1, dims[1], 1, 1])?;
    let relu = activation(sys::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU)?;
    let plan = Rc::new(BnPlan { x, params, relu });
    BN_PLANS.with(|m| m.borrow_mut().insert(key, plan.clone()));
    Ok(plan)
}

// ---------------------------------------------------------------------------------------------
// Raw device pointers of candle storage.

const ONE: f32 = 1.0;
const ZERO: f32 = 0.0;

fn one() -> *const c_void {
    &ONE as *const f32 as *const c_void
}

fn zero() -> *const c_void {
    &ZERO as *const f32 as *const c_void
}

thread_local! {
    // Kernels this module compiles with NVRTC, by (stream, source): compiled once per process
    // and device, on first use, like the cuDNN handles.
    static NVRTC_FUNCS: RefCell<HashMap<(usize, usize), Vec<CudaFunction>>> =
        RefCell::new(HashMap::new());
}

/// The functions `names` of the CUDA source `src`, compiled with NVRTC and loaded on `dev`'s
/// context the first time they are asked for there.
fn nvrtc_functions<const N: usize>(
    dev: &CudaDevice,
    src: &'static str,
    names: [&'static str; N],
) -> Result<[CudaFunction; N]> {
    let key = (stream_key(dev), src.as_ptr() as usize);
    let funcs = match NVRTC_FUNCS.with(|m| m.borrow().get(&key).cloned()) {
        Some(f) => f,
        None => {
            let ptx = candle_core::cuda::cudarc::nvrtc::compile_ptx(src)
                .map_err(candle_core::Error::wrap)?;
            let module = dev
                .cuda_stream()
                .context()
                .load_module(ptx)
                .map_err(candle_core::Error::wrap)?;
            let f = names
                .iter()
                .map(|name| module.load_function(name).map_err(candle_core::Error::wrap))
                .collect::<Result<Vec<_>>>()?;
            NVRTC_FUNCS.with(|m| m.borrow_mut().insert(key, f.clone()));
            f
        }
    };
    funcs
        .try_into()
        .map_err(|_| candle_core::Error::Msg("NVRTC functions asked for by two name lists".into()))
}

/// Address of the first element of `l` in `s` (f32), with the guard that must outlive its use.
fn ptr<'a>(
    op: &'static str,
    s: &'a CudaStorage,
    l: &Layout,
    stream: &'a CudaStream,
) -> Result<(*const c_void, SyncOnDrop<'a>)> {
    typed_ptr::<f32>(op, s, l, stream)
}

/// [`ptr`] for a storage of another element type (e.g. u32 labels).
fn typed_ptr<'a, T: candle_core::cuda::CudaDType + 'static>(
    op: &'static str,
    s: &'a CudaStorage,
    l: &Layout,
    stream: &'a CudaStream,
) -> Result<(*const c_void, SyncOnDrop<'a>)> {
    if !l.is_contiguous() {
        return Err(KernelError::unsupported(op, "non-contiguous layout").into());
    }
    let slice = s.as_cuda_slice::<T>()?;
    let (p, guard) = slice.device_ptr(stream);
    let offset = std::mem::size_of::<T>() * l.start_offset();
    Ok(((p as usize + offset) as *const c_void, guard))
}

fn ptr_mut<'a>(s: &'a mut CudaSlice<f32>, stream: &'a CudaStream) -> (*mut c_void, SyncOnDrop<'a>) {
    let (p, guard) = s.device_ptr_mut(stream);
    (p as usize as *mut c_void, guard)
}

/// Runs `f` on the CUDA storage behind `t` (which must be on a CUDA device).
fn with_cuda<R>(
    op: &'static str,
    t: &Tensor,
    f: impl FnOnce(&CudaStorage, &Layout) -> Result<R>,
) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cuda(cs) => f(cs, l),
        _ => Err(KernelError::unsupported(op, "tensor is not on a CUDA device").into()),
    }
}

fn tensor(slice: CudaSlice<f32>, dev: &CudaDevice, shape: impl Into<Shape>) -> Tensor {
    Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone())),
        shape,
        BackpropOp::none(),
        false,
    )
}

fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    // SAFETY: cuDNN only uses the workspace as scratch.
    Ok(Some(unsafe { dev.alloc::<u8>(bytes)? }))
}

/// The workspace's address (null without one) and its guard.
fn workspace_ptr<'a>(
    ws: &'a mut Option<CudaSlice<u8>>,
    stream: &'a CudaStream,
) -> (*mut c_void, Option<impl Drop + 'a>) {
    match ws.as_mut() {
        Some(b) => {
            let (p, g) = b.device_ptr_mut(stream);
            (p as usize as *mut c_void, Some(g))
        }
        None => (std::ptr::null_mut(), None),
    }
}
