//! Process-wide choice between the fast kernels and candle's own ops.

use std::sync::atomic::{AtomicU8, Ordering};

/// Which implementation runs: the fast path (the default: this crate's kernels for f32 on the
/// CPU, and cuDNN for f32 on CUDA when built with the `cudnn` feature) or candle's own ops
/// (reference; also what every other device and dtype gets under either choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelBackend {
    /// This crate's CPU kernels (candle custom ops), and cuDNN on CUDA with the `cudnn` feature.
    Fast,
    /// candle's plain ops: the correctness reference, and the only path on Metal, on CUDA
    /// without the `cudnn` feature (or with `LAYERZERO_CUDNN=0`), and for dtypes other than f32.
    Reference,
}

const UNSET: u8 = 0;
const FAST: u8 = 1;
const REFERENCE: u8 = 2;

/// An atomic rather than a `OnceLock` so that [`set_backend`] can override the environment at
/// any time (tests flip it), while the hot path stays a single relaxed load.
static BACKEND: AtomicU8 = AtomicU8::new(UNSET);

fn encode(b: KernelBackend) -> u8 {
    match b {
        KernelBackend::Fast => FAST,
        KernelBackend::Reference => REFERENCE,
    }
}

/// Parses the value of `LAYERZERO_KERNELS`; `None` for values this crate does not know.
pub fn parse_backend(s: &str) -> Option<KernelBackend> {
    match s.trim().to_ascii_lowercase().as_str() {
        "fast" | "" => Some(KernelBackend::Fast),
        "reference" | "ref" | "candle" => Some(KernelBackend::Reference),
        _ => None,
    }
}

/// The backend in force: the last [`set_backend`] value, else the environment variable
/// `LAYERZERO_KERNELS` (`fast` or `reference`, read once; unknown values mean `fast`),
/// else [`KernelBackend::Fast`].
pub fn backend() -> KernelBackend {
    match BACKEND.load(Ordering::Relaxed) {
        FAST => KernelBackend::Fast,
        REFERENCE => KernelBackend::Reference,
        _ => {
            let from_env = std::env::var("LAYERZERO_KERNELS")
                .ok()
                .and_then(|v| parse_backend(&v))
                .unwrap_or(KernelBackend::Fast);
            // A concurrent `set_backend` wins over the environment: only replace UNSET.
            let _ = BACKEND.compare_exchange(
                UNSET,
                encode(from_env),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            match BACKEND.load(Ordering::Relaxed) {
                REFERENCE => KernelBackend::Reference,
                _ => KernelBackend::Fast,
            }
        }
    }
}

/// Overrides the backend for the whole process (tests and benchmarks use it).
pub fn set_backend(b: KernelBackend) {
    BACKEND.store(encode(b), Ordering::Relaxed);
}
