//! Eval path: batch-norm folding and the fused conv + bias (+ residual) (+ ReLU) kernel.

mod common;

use candle_core::Result;
use common::{assert_close, rand_tensor};
use layerzero_kernels::{fast, fold_batch_norm, reference};

const TOL: f32 = 1e-4;

#[test]
fn folded_conv_matches_conv_then_bn() -> Result<()> {
    let x = rand_tensor(&[3, 8, 9, 9], 1, 1.0)?;
    let w = rand_tensor(&[6, 8, 3, 3], 2, 0.5)?;
    let gamma = (rand_tensor(&[6], 3, 0.5)? + 1.0)?;
    let beta = rand_tensor(&[6], 4, 0.5)?;
    let mean = rand_tensor(&[6], 5, 0.5)?;
    let var = (rand_tensor(&[6], 6, 0.5)? + 1.0)?;
    let eps = 1e-5;
    let (wf, bf) = fold_batch_norm(&w, &gamma, &beta, &mean, &var, eps)?;
    // Reference: conv then the affine eval batch norm, then ReLU.
    let y = reference::conv2d(&x, &w, 1, 1)?;
    let scale = gamma.broadcast_div(&var.affine(1.0, eps)?.sqrt()?)?;
    let expect = y
        .broadcast_sub(&mean.reshape((1, 6, 1, 1))?)?
        .broadcast_mul(&scale.reshape((1, 6, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, 6, 1, 1))?)?
        .relu()?;
    let got = fast::conv2d_bias_act(&x, &wf, &bf, 1, 1, None, true)?;
    assert_close("folded", &got, &expect, TOL);
    Ok(())
}

#[test]
fn bias_act_matches_reference() -> Result<()> {
    for (i, &(n, cin, h, cout, k, s, p)) in [
        (2, 16, 32, 16, 3, 1, 1),
        (2, 16, 32, 32, 3, 2, 1),
        (3, 64, 8, 64, 3, 1, 1),
        (1, 3, 7, 5, 3, 1, 1),
        (2, 5, 9, 7, 1, 2, 0),
        (1, 4, 6, 3, 3, 1, 0),
    ]
    .iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let x = rand_tensor(&[n, cin, h, h], seed, 1.0)?;
        let w = rand_tensor(&[cout, cin, k, k], seed + 1, 0.5)?;
        let b = rand_tensor(&[cout], seed + 2, 0.5)?;
        let y = reference::conv2d(&x, &w, s, p)?;
        let res = rand_tensor(y.dims(), seed + 3, 1.0)?;
        for relu in [false, true] {
            for r in [None, Some(&res)] {
                let got = fast::conv2d_bias_act(&x, &w, &b, s, p, r, relu)?;
                let exp = reference::conv2d_bias_act(&x, &w, &b, s, p, r, relu)?;
                let what = format!("case {i} relu={relu} residual={}", r.is_some());
                assert_close(&what, &got, &exp, TOL);
            }
        }
    }
    Ok(())
}

#[test]
fn bad_shapes_are_errors() -> Result<()> {
    let x = rand_tensor(&[1, 3, 6, 6], 50, 1.0)?;
    let w = rand_tensor(&[4, 3, 3, 3], 51, 1.0)?;
    let b = rand_tensor(&[5], 52, 1.0)?;
    assert!(layerzero_kernels::conv2d_bias_act(&x, &w, &b, 1, 1, None, true).is_err());
    let b = rand_tensor(&[4], 53, 1.0)?;
    let r = rand_tensor(&[1, 4, 5, 6], 54, 1.0)?;
    assert!(layerzero_kernels::conv2d_bias_act(&x, &w, &b, 1, 1, Some(&r), true).is_err());
    let g = rand_tensor(&[3], 55, 1.0)?;
    assert!(fold_batch_norm(&w, &g, &b, &b, &b, 1e-5).is_err());
    Ok(())
}
