//! The fast option-A shortcut against candle's ops: forward values and input gradients must be
//! equal bit for bit (both only move values).

mod common;

use candle_core::{Result, Tensor, Var};
use common::rand_tensor;
use layerzero_kernels::{fast, reference};

/// Output and input gradient (through a random upstream gradient) of one implementation.
fn run(
    f: fn(&Tensor, usize, usize) -> Result<Tensor>,
    x: &Var,
    stride: usize,
    pad: usize,
    seed: u64,
) -> Result<(Vec<f32>, Vec<usize>, Vec<f32>)> {
    let y = f(x.as_tensor(), stride, pad)?;
    let up = rand_tensor(y.dims(), seed, 1.0)?;
    let grads = (&y * &up)?.sum_all()?.backward()?;
    let dx = grads.get(x.as_tensor()).expect("a gradient for x");
    Ok((
        y.flatten_all()?.to_vec1()?,
        y.dims().to_vec(),
        dx.flatten_all()?.to_vec1()?,
    ))
}

#[test]
fn fast_matches_candle_ops() -> Result<()> {
    let mut seed = 1;
    // ResNet's shapes, odd sizes, strides 1–3, no padding, batch 1, an empty batch.
    for &(dims, stride, pad) in &[
        ([4, 16, 32, 32], 2, 8),
        ([3, 32, 16, 16], 2, 16),
        ([2, 3, 5, 7], 2, 1),
        ([1, 2, 7, 5], 3, 2),
        ([2, 4, 6, 6], 1, 3),
        ([2, 5, 9, 4], 2, 0),
        ([1, 1, 1, 1], 2, 1),
        ([1, 2, 2, 3], 3, 1),
        ([0, 3, 4, 4], 2, 1),
        ([2, 0, 4, 4], 2, 1),
    ] {
        seed += 1;
        let x = Var::from_tensor(&rand_tensor(&dims, seed, 1.0)?)?;
        let want = run(reference::shortcut_pad, &x, stride, pad, seed + 100)?;
        let got = run(fast::shortcut_pad, &x, stride, pad, seed + 100)?;
        let what = format!("{dims:?} stride {stride} pad {pad}");
        assert_eq!(got.1, want.1, "output shape, {what}");
        assert_eq!(got.0, want.0, "output, {what}");
        assert_eq!(got.2, want.2, "input gradient, {what}");
    }
    Ok(())
}

#[test]
fn non_contiguous_input() -> Result<()> {
    // A transposed view: the op must read it as the tensor it is, not as its storage.
    let base = Var::from_tensor(&rand_tensor(&[2, 3, 6, 8], 7, 1.0)?)?;
    let x = base.as_tensor().transpose(2, 3)?;
    assert!(!x.is_contiguous());
    let want = reference::shortcut_pad(&x, 2, 1)?;
    let got = fast::shortcut_pad(&x, 2, 1)?;
    assert_eq!(got.dims(), &[2, 5, 4, 3]);
    assert_eq!(
        got.flatten_all()?.to_vec1::<f32>()?,
        want.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let x = rand_tensor(&[1, 2, 4, 4], 3, 1.0)?;
    let err = layerzero_kernels::shortcut_pad(&x, 0, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("stride must be at least 1"), "{err}");
    let flat = rand_tensor(&[2, 4, 4], 3, 1.0)?;
    let err = layerzero_kernels::shortcut_pad(&flat, 2, 1)
        .unwrap_err()
        .to_string();
    // "rank 4" from the fast path, "unexpected rank" from candle's ops.
    assert!(err.contains("rank"), "{err}");
    Ok(())
}

#[test]
fn the_public_function_takes_the_fast_path_on_the_cpu() -> Result<()> {
    if layerzero_kernels::backend() != layerzero_kernels::KernelBackend::Fast {
        return Ok(());
    }
    let x = Var::from_tensor(&rand_tensor(&[2, 3, 4, 4], 5, 1.0)?)?;
    let before = layerzero_kernels::fast_op_count();
    let y = layerzero_kernels::shortcut_pad(x.as_tensor(), 2, 1)?;
    y.sum_all()?.backward()?;
    // Forward and backward each count one (other tests in this binary only add to it).
    assert!(layerzero_kernels::fast_op_count() >= before + 2);
    Ok(())
}
