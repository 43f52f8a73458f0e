//! The process-wide backend switch (its own test binary: it flips global state).

mod common;

use candle_core::{Result, Var};
use common::{assert_close, rand_tensor};
use layerzero_kernels::{backend, parse_backend, set_backend, KernelBackend};

#[test]
fn switch_selects_implementation_and_both_agree() -> Result<()> {
    assert_eq!(parse_backend("reference"), Some(KernelBackend::Reference));
    assert_eq!(parse_backend("FAST"), Some(KernelBackend::Fast));
    assert_eq!(parse_backend("cuda"), None);

    let x = rand_tensor(&[2, 4, 8, 8], 1, 1.0)?;
    let w = Var::from_tensor(&rand_tensor(&[4, 4, 3, 3], 2, 0.5)?)?;
    let g = Var::from_tensor(&(rand_tensor(&[4], 3, 0.5)? + 1.0)?)?;
    let b = Var::from_tensor(&rand_tensor(&[4], 4, 0.5)?)?;
    let mut outs = Vec::new();
    for be in [KernelBackend::Reference, KernelBackend::Fast] {
        set_backend(be);
        assert_eq!(backend(), be);
        // What the CLI prints and bench.json records follows the switch.
        let said = layerzero_kernels::describe_path(&candle_core::Device::Cpu);
        match be {
            KernelBackend::Fast => assert!(said.starts_with("layerzero CPU kernels ("), "{said}"),
            KernelBackend::Reference => assert!(said.starts_with("candle's ops"), "{said}"),
        }
        let before = layerzero_kernels::fast_op_count();
        let y = layerzero_kernels::conv2d(&x, w.as_tensor(), 1, 1)?;
        let bn = layerzero_kernels::batch_norm_train(&y, g.as_tensor(), b.as_tensor(), 1e-5, true)?;
        let loss = bn.y.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        outs.push((
            bn.y.clone(),
            grads.get(w.as_tensor()).unwrap().clone(),
            grads.get(g.as_tensor()).unwrap().clone(),
        ));
        // conv, batch norm, and their two backward kernels (conv dw; x needs no gradient).
        let ran = layerzero_kernels::fast_op_count() - before;
        match be {
            KernelBackend::Fast => assert_eq!(ran, 4, "fast kernels run"),
            KernelBackend::Reference => assert_eq!(ran, 0, "no fast kernel runs"),
        }
    }
    assert_close("y", &outs[1].0, &outs[0].0, 1e-4);
    assert_close("dw", &outs[1].1, &outs[0].1, 1e-4);
    assert_close("dgamma", &outs[1].2, &outs[0].2, 1e-4);
    Ok(())
}
