//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::Tensor;

/// The golden-fixture directory from `LAYERZERO_FIXTURES`, or `None` after printing why the
/// calling test is skipped.
pub fn fixtures_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("LAYERZERO_FIXTURES") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            eprintln!(
                "{test}: skipped: set LAYERZERO_FIXTURES=<dir with resnet20_*_random.safetensors> \
                 (e.g. ../shared/fixtures) to run it"
            );
            None
        }
    }
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("difference of two f32 tensors")
}

/// All values of a tensor as f32, flattened.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("f32 tensor")
}
