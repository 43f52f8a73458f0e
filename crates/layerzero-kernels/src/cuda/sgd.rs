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
