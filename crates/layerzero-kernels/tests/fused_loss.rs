//! The fused training loss is GPU-only: on CPU tensors `cross_entropy_train` declines (the
//! trainer then uses candle's ops) and `cross_entropy_fused` refuses, naming itself. Its CUDA
//! results are checked against candle's ops in the workspace's `tests/cuda.rs`.

use candle_core::{Device, Tensor};
use layerzero_kernels as k;

#[test]
fn fused_loss_declines_cpu_tensors() {
    let logits = Tensor::new(&[[1.0f32, 2.0, 3.0], [0.0, 0.0, 1.0]], &Device::Cpu).unwrap();
    let labels = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
    for smoothing in [0.0, 0.1] {
        assert!(k::cross_entropy_train(&logits, &labels, smoothing)
            .unwrap()
            .is_none());
    }
    let e = k::cross_entropy_fused(&logits, &labels, 0.0).unwrap_err();
    assert!(e.to_string().contains("cross_entropy_fused"), "{e}");
    assert!(e.to_string().contains("CUDA"), "{e}");
}
