//! SGD with momentum in place over the flat parameter: `cudnnOpTensor` (C = α₁·A + α₂·B + β·C)
//! for the momentum buffer with weight decay, `cudnnAddTensor` (C = α·A + β·C) for it without,
//! and for the weight.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;

use candle_core::cuda::cudarc::cudnn::sys;
use candle_core::cuda::cudarc::driver::{CudaStream, DevicePtrMut};
use candle_core::{CudaDevice, CudaStorage, Layout, Result, Tensor};

use super::*;
use crate::KernelError;
const SGD: &str = "cudnn-sgd-momentum";

thread_local! {
    // (1, n, 1, 1) descriptors by (stream, n): one per parameter shape.
    static VEC_DESCS: RefCell<HashMap<(usize, usize), Rc<TensorDesc>>> = RefCell::new(HashMap::new());
}

fn vec_desc(dev: &CudaDevice, n: usize) -> Result<Rc<TensorDesc>> {
    let key = (stream_key(dev), n);
    if let Some(d) = VEC_DESCS.with(|m| m.borrow().get(&key).cloned()) {
        return Ok(d);
    }
    let d = Rc::new(TensorDesc::nchw([1, n, 1, 1])?);
    VEC_DESCS.with(|m| m.borrow_mut().insert(key, d.clone()));
    Ok(d)
}

fn check_same(op: &'static str, dst: &Layout, src: &Layout) -> Result<usize> {
    let n = dst.shape().elem_count();
    if src.shape().elem_count() != n || !dst.is_contiguous() || !src.is_contiguous() {
        return Err(KernelError::shape(
            op,
            format!(
                "in-place update of {:?} from {:?} (both must be contiguous, same size)",
                dst.dims(),
                src.dims()
            ),
        )
        .into());
    }
    Ok(n)
}

/// Address of `l`'s first element in a storage being written in place.
fn ptr_inplace<'a>(
    s: &'a mut CudaStorage,
    l: &Layout,
    stream: &'a CudaStream,
) -> Result<(*mut c_void, impl Drop + 'a)> {
    let slice = s.as_cuda_slice_mut::<f32>()?;
    let (p, guard) = slice.device_ptr_mut(stream);
    Ok(((p as usize + 4 * l.start_offset()) as *mut c_void, guard))
}

struct OpTensorDesc(sys::cudnnOpTensorDescriptor_t);

impl Drop for OpTensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by `cudnnCreateOpTensorDescriptor`, destroyed once.
        unsafe {
            let _ = sys::cudnnDestroyOpTensorDescriptor(self.0);
        }
    }
}

thread_local! {
    static OP_ADD: RefCell<Option<Rc<OpTensorDesc>>> = const { RefCell::new(None) };
}

/// The descriptor of cudnnOpTensor's addition in f32 (NaNs propagate), made once per thread.
fn op_tensor_add() -> Result<Rc<OpTensorDesc>> {
    if let Some(d) = OP_ADD.with(|d| d.borrow().clone()) {
        return Ok(d);
    }
    let mut raw = std::mem::MaybeUninit::uninit();
    // SAFETY: create, then set the descriptor just created.
    let d = unsafe {
        sys::cudnnCreateOpTensorDescriptor(raw.as_mut_ptr())
            .result()
            .map_err(err)?;
        let d = OpTensorDesc(raw.assume_init());
        sys::cudnnSetOpTensorDescriptor(
            d.0,
            sys::cudnnOpTensorOp_t::CUDNN_OP_TENSOR_ADD,
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
        )
        .result()
        .map_err(err)?;
        Rc::new(d)
    };
    OP_ADD.with(|slot| *slot.borrow_mut() = Some(d.clone()));
    Ok(d)
}

/// b ← μ·b + ∇ + λ·w (λ ≠ 0), in place on the momentum buffer b, in one `cudnnOpTensor`.
struct SgdMomentum {
    momentum: f32,
    decay: f32,
}

impl candle_core::InplaceOp3 for SgdMomentum {
    fn name(&self) -> &'static str {
        SGD
    }

    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        Err(KernelError::unsupported(SGD, "CPU tensors take candle's ops").into())
    }

    fn cuda_fwd(
        &self,
        bs: &mut CudaStorage,
        bl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<()> {
        let n = check_same(SGD, bl, gl)?;
        check_same(SGD, bl, wl)?;
        let dev = bs.device.clone();
        let h = handle(&dev)?;
        let d = vec_desc(&dev, n)?;
        let stream = dev.cuda_stream();
        let (gp, _g1) = ptr(SGD, gs, gl, &stream)?;
        let (wp, _g2) = ptr(SGD, ws, wl, &stream)?;
        let (bp, _g3) = ptr_inplace(bs, bl, &stream)?;
        let (mom, decay) = (self.momentum, self.decay);
        let mom_p = &mom as *const f32 as *const c_void;
        let decay_p = &decay as *const f32 as *const c_void;
        let add = op_tensor_add()?;
        // SAFETY: all three are contiguous f32 buffers of n elements (checked), described by
        // the same (1, n, 1, 1) descriptor, and C (the buffer) is neither A nor B.
        unsafe {
            sys::cudnnOpTensor(h.0, add.0, one(), d.0, gp, decay_p, d.0, wp, mom_p, d.0, bp)
                .result()
                .map_err(err)?;
        }
        Ok(())
    }
}

/// y ← a·x + b·y, in place on y, in one `cudnnAddTensor`: the SGD step's `w ← w − lr·buf`, and
/// its `buf ← μ·buf + ∇` without weight decay.
struct ScaleAdd {
    a: f32,
    b: f32,
}

impl candle_core::InplaceOp2 for ScaleAdd {
    fn name(&self) -> &'static str {
        SGD
    }

    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        Err(KernelError::unsupported(SGD, "CPU tensors take candle's ops").into())
    }

    fn cuda_fwd(
        &self,
        ys: &mut CudaStorage,
        yl: &Layout,
        xs: &CudaStorage,
        xl: &Layout,
    ) -> Result<()> {
        let n = check_same(SGD, yl, xl)?;
        let dev = ys.device.clone();
        let h = handle(&dev)?;
        let d = vec_desc(&dev, n)?;
        let stream = dev.cuda_stream();
        let (xp, _g1) = ptr(SGD, xs, xl, &stream)?;
        let (yp, _g2) = ptr_inplace(ys, yl, &stream)?;
        let (a, b) = (self.a, self.b);
        // SAFETY: as in `SgdMomentum`.
        unsafe {
            sys::cudnnAddTensor(
                h.0,
                &a as *const f32 as *const c_void,
                d.0,
                xp,
                &b as *const f32 as *const c_void,
                d.0,
                yp,
            )
            .result()
            .map_err(err)?;
        }
        Ok(())
    }
}

/// See [`crate::sgd_momentum_step`]: two cuDNN calls in place instead of seven candle ops
/// (each with its own allocation) per parameter.
pub(crate) fn sgd_momentum_step(
    w: &Tensor,
    grad: &Tensor,
    buf: &Tensor,
    lr: f64,
    momentum: f64,
    decay: f64,
) -> Result<()> {
    let grad = grad.contiguous()?;
    if decay != 0.0 {
        buf.inplace_op3(
            &grad,
            w,
            &SgdMomentum {
                momentum: momentum as f32,
                decay: decay as f32,
            },
        )?;
    } else {
        buf.inplace_op2(
            &grad,
            &ScaleAdd {
                a: 1.0,
                b: momentum as f32,
            },
        )?;
    }
    w.inplace_op2(
        buf,
        &ScaleAdd {
            a: -lr as f32,
            b: 1.0,
        },
    )?;
    count();
    Ok(())
}

/// How many parameters one launch of the multi-tensor kernel takes: its table is passed by
/// value as a kernel argument, 32 bytes a parameter, and 64 of them (2 KiB) stay well inside
/// the 4 KiB every CUDA version accepts. ResNet-20's 59 parameters take one launch,
/// ResNet-56's 167 three.
const MULTI_MAX_PARAMS: usize = 64;

/// Threads per block of the multi-tensor kernel.
const MULTI_THREADS: u32 = 256;

/// The multi-tensor kernel, compiled with NVRTC on first use. Block row `blockIdx.y` updates
/// parameter `y` of the table; its blocks stride over that parameter's elements. The update is
/// the per-tensor path's: `b ← μ·b + (g + λ·w)`, `w ← w − lr·b`.
const MULTI_SRC: &str = r#"
struct SgdParam { float* w; const float* g; float* b; unsigned int n; float decay; };
struct SgdTable { SgdParam p[64]; };
extern "C" __global__ void layerzero_sgd_momentum_multi(SgdTable t, float lr, float momentum) {
    const SgdParam s = t.p[blockIdx.y];
    const unsigned int stride = gridDim.x * blockDim.x;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < s.n; i += stride) {
        const float g = s.g[i] + s.decay * s.w[i];
        const float b = momentum * s.b[i] + g;
        s.b[i] = b;
        s.w[i] = s.w[i] - lr * b;
    }
}
"#;

/// One row of the kernel's table; the layout matches `SgdParam` in [`MULTI_SRC`].
#[repr(C)]
#[derive(Clone, Copy)]
struct MultiParam {
    w: u64,
    g: u64,
    b: u64,
    n: u32,
    decay: f32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MultiTable {
    p: [MultiParam; MULTI_MAX_PARAMS],
}

// SAFETY: plain old data with the C layout of the kernel's `SgdTable`, passed by value.
unsafe impl candle_core::cuda::cudarc::driver::DeviceRepr for MultiTable {}

fn multi_func(dev: &CudaDevice) -> Result<CudaFunction> {
    let [f] = nvrtc_functions(dev, MULTI_SRC, ["layerzero_sgd_momentum_multi"])?;
    Ok(f)
}

/// The device address of `l`'s first element in `s`, with the guard that must outlive its use.
fn address<'a>(
    op: &'static str,
    s: &'a Storage,
    l: &Layout,
    stream: &'a CudaStream,
) -> Result<(u64, SyncOnDrop<'a>)> {
    match s {
        Storage::Cuda(cs) => {
            let (p, guard) = ptr(op, cs, l, stream)?;
            Ok((p as u64, guard))
        }
        _ => Err(KernelError::unsupported(op, "tensor is not on a CUDA device").into()),
    }
}

/// See [`crate::sgd_momentum_step_multi`]: the whole optimiser step in one kernel launch per
/// [`MULTI_MAX_PARAMS`] parameters, instead of two cuDNN calls per parameter.
pub(crate) fn sgd_momentum_step_multi(
    items: &[crate::SgdParamStep<'_>],
    lr: f64,
    momentum: f64,
) -> Result<()> {
    use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
    const OP: &str = "multi-tensor-sgd-momentum";
    let Some(first) = items.first() else {
        return Ok(());
    };
    let candle_core::Device::Cuda(dev) = first.weight.device() else {
        return Err(KernelError::unsupported(OP, "tensor is not on a CUDA device").into());
    };
    let func = multi_func(dev)?;
    let stream = dev.cuda_stream();
    // Gradients are fresh tensors of the backward pass; a view (rare) is made contiguous here so
    // that the kernel can index it flat.
    let grads = items
        .iter()
        .map(|it| it.grad.contiguous())
        .collect::<Result<Vec<_>>>()?;
    for (chunk, chunk_grads) in items
        .chunks(MULTI_MAX_PARAMS)
        .zip(grads.chunks(MULTI_MAX_PARAMS))
    {
        // Read guards on every storage of the chunk, then their addresses: the guards (and the
        // event records of cudarc's `SyncOnDrop`) live until after the launch. The kernel writes
        // through addresses taken from read guards: candle runs every op of a device on one
        // stream, so the launch is ordered after the ops that made the gradients and before any
        // later reader of the weights, as an in-place op's would be.
        let storages = chunk
            .iter()
            .zip(chunk_grads)
            .map(|(it, grad)| {
                // One table, one stream: every tensor must live on the first one's device.
                for t in [it.weight, grad, it.momentum_buffer] {
                    if !t.device().same_device(first.weight.device()) {
                        return Err(KernelError::unsupported(
                            OP,
                            "tensors on more than one device in one step",
                        )
                        .into());
                    }
                }
                let (ws, wl) = it.weight.storage_and_layout();
                let (gs, gl) = grad.storage_and_layout();
                let (bs, bl) = it.momentum_buffer.storage_and_layout();
                let n = check_same(OP, wl, gl)?;
                check_same(OP, wl, bl)?;
                // Below 2³¹, so that the kernel's u32 index plus its stride cannot wrap.
                let n = i32::try_from(n).map_err(|_| {
                    KernelError::shape(OP, format!("{n} elements, more than the kernel's 2^31 - 1"))
                })? as u32;
                Ok(([(ws, wl), (gs, gl), (bs, bl)], n, it.weight_decay as f32))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut guards = Vec::with_capacity(3 * storages.len());
        let mut table = MultiTable {
            p: [MultiParam {
                w: 0,
                g: 0,
                b: 0,
                n: 0,
                decay: 0.0,
            }; MULTI_MAX_PARAMS],
        };
        let mut max_n = 0u32;
        for (row, ([w, g, b], n, decay)) in table.p.iter_mut().zip(&storages) {
            let (w, gw) = address(OP, &w.0, w.1, &stream)?;
            let (g, gg) = address(OP, &g.0, g.1, &stream)?;
            let (b, gb) = address(OP, &b.0, b.1, &stream)?;
            guards.extend([gw, gg, gb]);
            *row = MultiParam {
                w,
                g,
                b,
                n: *n,
                decay: *decay,
            };
            max_n = max_n.max(*n);
        }
        // Enough blocks that the largest parameter's threads take about four elements each;
        // rows of smaller parameters leave their surplus blocks idle at once.
        let blocks_x = max_n.div_ceil(4 * MULTI_THREADS).clamp(1, 1024);
        let cfg = LaunchConfig {
            grid_dim: (blocks_x, storages.len() as u32, 1),
            block_dim: (MULTI_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (lr, momentum) = (lr as f32, momentum as f32);
        let mut launch = stream.launch_builder(&func);
        launch.arg(&table).arg(&lr).arg(&momentum);
        // SAFETY: the table's rows address `n` contiguous f32 elements each (checked above),
        // kept alive by `storages`; rows past `storages.len()` are never read (grid.y).
        unsafe { launch.launch(cfg) }.map_err(candle_core::Error::wrap)?;
        drop(guards);
        count();
    }
    Ok(())
}
