//! Opening a CUDA device the way layerzero uses it.

use candle_core::{Device, Result};

/// Opens CUDA device `ordinal` as [`Device::new_cuda`] does, then sets two things on it that
/// save driver work per tensor. Both leave every result as it was.
///
/// * **cudarc's event tracking goes off** (`LAYERZERO_CUDA_EVENTS=1` keeps it on). cudarc
///   creates two CUDA events with every allocation and destroys them with it, so that tensors
///   shared between streams can be synchronised. It records and waits on them only once its
///   context has a second stream (`CudaContext::is_managing_stream_synchronization`, raised
///   only by `new_stream` and `fork`). candle's `Device::new_cuda` queues everything on the
///   per-thread default stream and makes no other stream, and neither does layerzero, so
///   those events are never used. A training step allocates hundreds of tensors, and that is
///   four driver calls each. Tensors allocated before the call keep their events, which is
///   harmless.
/// * **The device's memory pool keeps what it has reserved** (`LAYERZERO_CUDA_POOL_RELEASE=1`
///   leaves the driver's default). cudarc allocates with `cuMemAllocAsync` from the device's
///   default pool, whose release threshold is 0 by default. With that threshold, every stream
///   or context synchronisation (each loss readback, each benchmarked step) hands the unused
///   memory back to the driver, and the next step has to reserve it again. With the threshold
///   at its maximum, the pool keeps it, as PyTorch's caching allocator keeps its blocks. The
///   cost is that freed GPU memory is not returned to other processes while this one runs.
///
/// Built without the `cuda` feature, this is [`Device::new_cuda`] (which then fails).
pub fn open_cuda(ordinal: usize) -> Result<Device> {
    let device = Device::new_cuda(ordinal)?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &device {
        if !switch_on("LAYERZERO_CUDA_EVENTS") {
            // SAFETY: the conditions of `disable_event_tracking` concern several streams: a
            // tensor used on another stream before its allocation or last write finished, or
            // freed while another stream still uses it. This device has one stream (see above).
            unsafe { d.disable_event_tracking() };
        }
        if !switch_on("LAYERZERO_CUDA_POOL_RELEASE") {
            // Only a saving: where the driver refuses, the device still works as it would
            // have, and `describe_path`, which the binaries print, shows the pool's setting.
            let _ = pool::set_release_threshold(d, u64::MAX);
        }
    }
    Ok(device)
}

#[cfg(feature = "cuda")]
fn switch_on(name: &str) -> bool {
    std::env::var(name).as_deref() == Ok("1")
}

/// The device's default memory pool (the one `cuMemAllocAsync` uses unless another is set).
#[cfg(feature = "cuda")]
mod pool {
    use std::ffi::c_void;

    use candle_core::cuda::cudarc::driver::sys;
    use candle_core::{CudaDevice, Result};

    const THRESHOLD: sys::CUmemPool_attribute =
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;

    /// `None` where the device has no memory pools (cudarc then allocates synchronously).
    fn default_pool(d: &CudaDevice) -> Result<Option<sys::CUmemoryPool>> {
        let ctx = d.cuda_stream().context().clone();
        if !ctx.has_async_alloc() {
            return Ok(None);
        }
        ctx.bind_to_thread().map_err(candle_core::Error::wrap)?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: `pool` is a valid out-pointer; the device handle comes from a live context.
        unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }
            .result()
            .map_err(candle_core::Error::wrap)?;
        Ok(Some(pool))
    }

    pub(super) fn set_release_threshold(d: &CudaDevice, bytes: u64) -> Result<()> {
        if let Some(pool) = default_pool(d)? {
            let mut value = bytes;
            // SAFETY: the attribute's value type is cuuint64_t, which `value` is.
            unsafe {
                sys::cuMemPoolSetAttribute(pool, THRESHOLD, &mut value as *mut u64 as *mut c_void)
            }
            .result()
            .map_err(candle_core::Error::wrap)?;
        }
        Ok(())
    }

    /// The pool's release threshold, `None` without a pool (or if the driver will not say).
    pub(super) fn release_threshold(d: &CudaDevice) -> Option<u64> {
        let pool = default_pool(d).ok()??;
        let mut value = 0u64;
        // SAFETY: as in `set_release_threshold`.
        unsafe {
            sys::cuMemPoolGetAttribute(pool, THRESHOLD, &mut value as *mut u64 as *mut c_void)
        }
        .result()
        .ok()?;
        Some(value)
    }
}

/// What [`open_cuda`] would have changed but finds as the driver and cudarc left it, as
/// `", …"` phrases (nothing when both are as `open_cuda` sets them, or on other devices): part
/// of [`crate::describe_path`], so that benchmark records say which way they ran.
pub(crate) fn defaults_note(device: &Device) -> String {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let mut note = String::new();
        if d.is_event_tracking() {
            note.push_str(", cudarc event tracking on");
        }
        if pool::release_threshold(d) == Some(0) {
            note.push_str(", memory pool released at each sync");
        }
        return note;
    }
    let _ = device;
    String::new()
}

#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    #[test]
    fn without_the_cuda_feature_open_cuda_fails_as_candle_does() {
        let e = super::open_cuda(0).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("cuda"), "{e}");
    }
}
