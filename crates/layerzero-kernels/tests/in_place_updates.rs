//! The in-place optimiser updates are GPU-only: on CPU tensors they refuse, naming the function
//! and what they need, rather than falling back silently (the trainer uses candle's ops there).
//! Their CUDA behaviour is checked against the CPU in the workspace's `tests/cuda.rs`.

use candle_core::{Device, Tensor};
use layerzero_kernels as k;

fn cpu(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

#[test]
fn in_place_sgd_refuses_cpu_tensors_and_leaves_them_alone() {
    let (w, g, b) = (cpu(&[1.0, 2.0]), cpu(&[0.5, 0.5]), cpu(&[0.0, 0.0]));
    assert!(!k::in_place_update_handles(&[&w, &g, &b]));

    let e = k::sgd_momentum_step(&w, &g, &b, 0.1, 0.9, 5e-4).unwrap_err();
    assert!(e.to_string().contains("sgd_momentum_step"), "{e}");

    let steps = [k::SgdParamStep {
        weight: &w,
        grad: &g,
        momentum_buffer: &b,
        weight_decay: 5e-4,
    }];
    for (name, e) in [
        (
            "sgd_momentum_step_many",
            k::sgd_momentum_step_many(&steps, 0.1, 0.9).unwrap_err(),
        ),
        (
            "sgd_momentum_step_multi",
            k::sgd_momentum_step_multi(&steps, 0.1, 0.9).unwrap_err(),
        ),
    ] {
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains("CUDA"), "{name}: {msg}");
    }
    // Refused before anything ran: the tensors are as they were.
    assert_eq!(w.to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    assert_eq!(b.to_vec1::<f32>().unwrap(), [0.0, 0.0]);
}
