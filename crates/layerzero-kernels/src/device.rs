//! Opening a CUDA device the way layerzero uses it.

use candle_core::{Device, Result};

/// Opens CUDA device `ordinal` as [`Device::new_cuda`] does, and turns off cudarc's event
/// tracking on it unless `LAYERZERO_CUDA_EVENTS=1`.
///
/// Why: cudarc creates two CUDA events with every allocation and destroys them with it, so that
/// tensors shared between streams can be synchronised. It records and waits on them only once
/// its context has a second stream (`CudaContext::is_managing_stream_synchronization`, raised
/// only by `new_stream` and `fork`). candle's `Device::new_cuda` queues everything on the
/// per-thread default stream and makes no other stream, and neither does layerzero, so those
/// events are never used. A training step allocates hundreds of tensors, and that is four
/// driver calls each. Tensors allocated before the call keep their events, which is harmless.
///
/// Built without the `cuda` feature, this is [`Device::new_cuda`] (which then fails).
pub fn open_cuda(ordinal: usize) -> Result<Device> {
    let device = Device::new_cuda(ordinal)?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &device {
        if std::env::var("LAYERZERO_CUDA_EVENTS").as_deref() != Ok("1") {
            // SAFETY: the conditions of `disable_event_tracking` concern several streams: a
            // tensor used on another stream before its allocation or last write finished, or
            // freed while another stream still uses it. This device has one stream (see above).
            unsafe { d.disable_event_tracking() };
        }
    }
    Ok(device)
}

/// `", cudarc event tracking on"` for a CUDA device that has it, else nothing: part of
/// [`crate::describe_path`], so that benchmark records say which way they ran.
pub(crate) fn event_tracking_note(device: &Device) -> &'static str {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        if d.is_event_tracking() {
            return ", cudarc event tracking on";
        }
    }
    let _ = device;
    ""
}

#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    #[test]
    fn without_the_cuda_feature_open_cuda_fails_as_candle_does() {
        let e = super::open_cuda(0).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("cuda"), "{e}");
    }
}
