//! Access to the f32 data behind candle tensors and storages.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Storage};

use crate::error::KernelError;

/// The contiguous f32 slice a CPU storage + layout describe.
pub(crate) fn cpu_f32<'a>(
    op: &'static str,
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<&'a [f32], KernelError> {
    let CpuStorage::F32(v) = s else {
        return Err(KernelError::unsupported(
            op,
            format!("dtype {:?}, only f32 is implemented", s.dtype()),
        ));
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(KernelError::unsupported(
            op,
            "non-contiguous layout (the public functions make inputs contiguous first)",
        )),
    }
}

/// The contiguous f32 data of a tensor's storage (from `Tensor::storage_and_layout`, whose read
/// guard the caller keeps alive while using the slice).
pub(crate) fn storage_f32<'a>(
    op: &'static str,
    s: &'a Storage,
    l: &Layout,
) -> Result<&'a [f32], KernelError> {
    match s {
        Storage::Cpu(cs) => cpu_f32(op, cs, l),
        _ => Err(KernelError::unsupported(op, "tensor is not on the CPU")),
    }
}

pub(crate) use crate::alloc::{alloc_out, alloc_uninit};
