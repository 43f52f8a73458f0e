//! Fast convolution vs candle's reference: forward, input gradient, weight gradient.

mod common;

use candle_core::{Result, Tensor, Var};
use common::{assert_close, conv2d_unfold, rand_tensor};
use layerzero_kernels::{fast, reference};
use proptest::prelude::*;

const TOL: f32 = 1e-4;

#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

/// Compares the forward output with candle's conv2d and both gradients (through candle's
/// backprop) with the gather + matmul formulation.
fn check(c: Case, seed: u64) -> Result<()> {
    let x0 = rand_tensor(&[c.n, c.cin, c.h, c.w], seed, 1.0)?;
    let w0 = rand_tensor(&[c.cout, c.cin, c.k, c.k], seed + 1, 0.5)?;
    let xv_f = Var::from_tensor(&x0)?;
    let wv_f = Var::from_tensor(&w0)?;
    let xv_r = Var::from_tensor(&x0)?;
    let wv_r = Var::from_tensor(&w0)?;
    let yf = fast::conv2d(xv_f.as_tensor(), wv_f.as_tensor(), c.stride, c.pad)?;
    let yc = reference::conv2d(&x0, &w0, c.stride, c.pad)?;
    assert_eq!(yf.dims(), yc.dims(), "{c:?}");
    assert_close(&format!("forward {c:?}"), &yf, &yc, TOL);
    let yr = conv2d_unfold(xv_r.as_tensor(), wv_r.as_tensor(), c.stride, c.pad)?;
    assert_close(&format!("unfold reference {c:?}"), &yr, &yc, TOL);
    // A random projection of the output makes the output gradient a random tensor.
    let r = rand_tensor(yr.dims(), seed + 2, 1.0)?;
    let gf = (yf * &r)?.sum_all()?.backward()?;
    let gr = (yr * &r)?.sum_all()?.backward()?;
    assert_close(
        &format!("dx {c:?}"),
        gf.get(xv_f.as_tensor()).unwrap(),
        gr.get(xv_r.as_tensor()).unwrap(),
        TOL,
    );
    assert_close(
        &format!("dw {c:?}"),
        gf.get(wv_f.as_tensor()).unwrap(),
        gr.get(wv_r.as_tensor()).unwrap(),
        TOL,
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn case(
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    s: usize,
    p: usize,
) -> Case {
    Case {
        n,
        cin,
        h,
        w,
        cout,
        k,
        stride: s,
        pad: p,
    }
}

#[test]
fn resnet_shapes() -> Result<()> {
    check(case(2, 3, 32, 32, 16, 3, 1, 1), 1)?;
    check(case(2, 16, 32, 32, 16, 3, 1, 1), 2)?;
    check(case(2, 16, 32, 32, 32, 3, 2, 1), 3)?;
    check(case(2, 32, 16, 16, 32, 3, 1, 1), 4)?;
    check(case(2, 32, 16, 16, 64, 3, 2, 1), 5)?;
    check(case(2, 64, 8, 8, 64, 3, 1, 1), 6)?;
    check(case(2, 16, 32, 32, 32, 1, 2, 0), 7)?;
    Ok(())
}

/// On ResNet's shapes candle's own conv2d backward works too: compare against it directly.
#[test]
fn resnet_shapes_vs_candle_backward() -> Result<()> {
    for (i, c) in [
        case(2, 16, 32, 32, 16, 3, 1, 1),
        case(2, 16, 32, 32, 32, 3, 2, 1),
        case(2, 64, 8, 8, 64, 3, 1, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let x = Var::from_tensor(&rand_tensor(&[c.n, c.cin, c.h, c.w], 70 + i as u64, 1.0)?)?;
        let w = Var::from_tensor(&rand_tensor(&[c.cout, c.cin, 3, 3], 80 + i as u64, 0.5)?)?;
        let yf = fast::conv2d(x.as_tensor(), w.as_tensor(), c.stride, c.pad)?;
        let yr = reference::conv2d(x.as_tensor(), w.as_tensor(), c.stride, c.pad)?;
        let r = rand_tensor(yr.dims(), 90 + i as u64, 1.0)?;
        let gf = (yf * &r)?.sum_all()?.backward()?;
        let gr = (yr * &r)?.sum_all()?.backward()?;
        for t in [x.as_tensor(), w.as_tensor()] {
            assert_close(
                &format!("{c:?}"),
                gf.get(t).unwrap(),
                gr.get(t).unwrap(),
                TOL,
            );
        }
    }
    Ok(())
}

#[test]
fn odd_shapes() -> Result<()> {
    check(case(1, 3, 7, 5, 4, 3, 1, 1), 10)?;
    check(case(1, 1, 1, 1, 1, 1, 1, 0), 11)?;
    check(case(3, 5, 9, 11, 7, 1, 1, 0), 12)?;
    check(case(2, 6, 9, 11, 8, 1, 2, 0), 13)?;
    check(case(2, 4, 6, 6, 5, 3, 1, 0), 14)?;
    check(case(2, 4, 7, 6, 5, 3, 2, 0), 15)?;
    check(case(1, 2, 5, 5, 3, 5, 1, 2), 16)?;
    check(case(1, 3, 8, 9, 4, 2, 2, 0), 17)?;
    check(case(1, 3, 13, 13, 9, 3, 2, 1), 18)?;
    check(case(1, 2, 3, 3, 2, 3, 1, 2), 19)?;
    Ok(())
}

#[test]
fn wide_channels() -> Result<()> {
    check(case(1, 512, 4, 4, 16, 3, 1, 1), 20)?;
    check(case(1, 16, 4, 4, 512, 3, 1, 1), 21)?;
    check(case(2, 128, 6, 6, 256, 3, 2, 1), 22)?;
    Ok(())
}

#[test]
fn non_contiguous_inputs() -> Result<()> {
    // A transposed view: same values as a contiguous tensor, different layout.
    let x = rand_tensor(&[2, 3, 9, 8], 30, 1.0)?.transpose(2, 3)?;
    let w = rand_tensor(&[4, 3, 3, 3], 31, 0.5)?.transpose(2, 3)?;
    assert!(!x.is_contiguous());
    let yf = fast::conv2d(&x, &w, 1, 1)?;
    let yr = reference::conv2d(&x.contiguous()?, &w.contiguous()?, 1, 1)?;
    assert_close("non-contiguous", &yf, &yr, TOL);
    // Also with a start offset (a narrowed batch).
    let xb = rand_tensor(&[4, 3, 8, 8], 32, 1.0)?.narrow(0, 1, 2)?;
    let w = rand_tensor(&[4, 3, 3, 3], 33, 0.5)?;
    let yf = fast::conv2d(&xb, &w, 2, 1)?;
    let yr = reference::conv2d(&xb, &w, 2, 1)?;
    assert_close("offset", &yf, &yr, TOL);
    Ok(())
}

#[test]
fn direct_gradient_functions() -> Result<()> {
    let c = case(3, 8, 10, 12, 6, 3, 2, 1);
    let x = rand_tensor(&[c.n, c.cin, c.h, c.w], 40, 1.0)?;
    let w = rand_tensor(&[c.cout, c.cin, 3, 3], 41, 0.5)?;
    let y = reference::conv2d(&x, &w, c.stride, c.pad)?;
    let dy = rand_tensor(y.dims(), 42, 1.0)?;
    let xv = Var::from_tensor(&x)?;
    let wv = Var::from_tensor(&w)?;
    let g = (reference::conv2d(xv.as_tensor(), wv.as_tensor(), c.stride, c.pad)? * &dy)?
        .sum_all()?
        .backward()?;
    let dx = fast::conv2d_input_grad(&dy, &w, x.dims(), c.stride, c.pad)?;
    let dw = fast::conv2d_weight_grad(&x, &dy, w.dims(), c.stride, c.pad)?;
    assert_close("dx", &dx, g.get(xv.as_tensor()).unwrap(), TOL);
    assert_close("dw", &dw, g.get(wv.as_tensor()).unwrap(), TOL);
    Ok(())
}

#[test]
fn bad_shapes_are_errors() -> Result<()> {
    let x = rand_tensor(&[1, 3, 4, 4], 50, 1.0)?;
    let w = rand_tensor(&[2, 4, 3, 3], 51, 1.0)?;
    assert!(
        layerzero_kernels::conv2d(&x, &w, 1, 1).is_err(),
        "channel mismatch"
    );
    let w = rand_tensor(&[2, 3, 7, 7], 52, 1.0)?;
    assert!(
        layerzero_kernels::conv2d(&x, &w, 1, 1).is_err(),
        "kernel too large"
    );
    let w = rand_tensor(&[2, 3, 3, 3], 53, 1.0)?;
    assert!(layerzero_kernels::conv2d(&x, &w, 0, 1).is_err(), "stride 0");
    let x3 = rand_tensor(&[3, 4, 4], 54, 1.0)?;
    assert!(layerzero_kernels::conv2d(&x3, &w, 1, 1).is_err(), "rank 3");
    let dy = rand_tensor(&[1, 2, 5, 5], 55, 1.0)?;
    assert!(
        fast::conv2d_input_grad(&dy, &w, x.dims(), 1, 1).is_err(),
        "dy shape"
    );
    let xf64 = x.to_dtype(candle_core::DType::F64)?;
    assert!(
        fast::conv2d(&xf64, &w, 1, 1).is_err(),
        "f64 on the fast path"
    );
    Ok(())
}

/// Central finite differences of a non-linear loss through conv → batch norm (no ReLU kinks).
#[test]
fn finite_difference() -> Result<()> {
    let x = rand_tensor(&[2, 2, 5, 5], 60, 1.0)?;
    let w0 = rand_tensor(&[3, 2, 3, 3], 61, 0.5)?;
    let gamma = Tensor::new(&[1.0f32, 0.5, 2.0], &candle_core::Device::Cpu)?;
    let beta = Tensor::new(&[0.1f32, -0.2, 0.3], &candle_core::Device::Cpu)?;
    let r = rand_tensor(&[2, 3, 5, 5], 62, 1.0)?;
    let loss = |w: &Tensor, x: &Tensor| -> Result<Tensor> {
        let y = fast::conv2d(x, w, 1, 1)?;
        let bn = fast::batch_norm_train(&y, &gamma, &beta, 1e-5, false)?;
        (bn.y.sqr()? * &r)?.sum_all()
    };
    let wv = Var::from_tensor(&w0)?;
    let xv = Var::from_tensor(&x)?;
    let grads = loss(wv.as_tensor(), xv.as_tensor())?.backward()?;
    let gw: Vec<f32> = grads
        .get(wv.as_tensor())
        .unwrap()
        .flatten_all()?
        .to_vec1()?;
    let gx: Vec<f32> = grads
        .get(xv.as_tensor())
        .unwrap()
        .flatten_all()?
        .to_vec1()?;
    let h = 1e-2f32;
    let fd = |base: &Tensor, i: usize, other: &Tensor, is_w: bool| -> Result<f32> {
        let mut v: Vec<f32> = base.flatten_all()?.to_vec1()?;
        let orig = v[i];
        let mut eval = |delta: f32| -> Result<f32> {
            v[i] = orig + delta;
            let t = Tensor::from_vec(v.clone(), base.dims(), base.device())?;
            let l = if is_w {
                loss(&t, other)?
            } else {
                loss(other, &t)?
            };
            l.to_scalar::<f32>()
        };
        Ok((eval(h)? - eval(-h)?) / (2.0 * h))
    };
    let gmax = gw.iter().fold(0f32, |m, v| m.max(v.abs()));
    for i in (0..gw.len()).step_by(5) {
        let d = fd(&w0, i, &x, true)?;
        assert!(
            (d - gw[i]).abs() <= 2e-2 * gmax,
            "dw[{i}]: fd {d} vs {}",
            gw[i]
        );
    }
    let gmax = gx.iter().fold(0f32, |m, v| m.max(v.abs()));
    for i in (0..gx.len()).step_by(7) {
        let d = fd(&x, i, &w0, false)?;
        assert!(
            (d - gx[i]).abs() <= 2e-2 * gmax,
            "dx[{i}]: fd {d} vs {}",
            gx[i]
        );
    }
    Ok(())
}

fn shape_strategy() -> impl Strategy<Value = Case> {
    (
        1usize..4,
        1usize..20,
        1usize..12,
        1usize..12,
        1usize..20,
        prop_oneof![Just(1usize), Just(3usize)],
        1usize..3,
        0usize..2,
    )
        .prop_filter(
            "kernel fits the padded input",
            |&(_, _, h, w, _, k, _, p)| h + 2 * p >= k && w + 2 * p >= k,
        )
        .prop_map(|(n, cin, h, w, cout, k, stride, pad)| case(n, cin, h, w, cout, k, stride, pad))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn prop_matches_reference(c in shape_strategy(), seed in 0u64..1000) {
        check(c, seed).unwrap();
    }
}

/// Shapes that take the Winograd path (3×3, stride 1, at least 32 channels on both sides):
/// odd heights and widths (tiles hanging over the edge), padding 0, 1 and 2, tile rows longer
/// than one vector of 8 tiles and not a multiple of it, batches that leave a partial group of
/// images, and images large enough to be cut into bands of tile rows.
#[test]
fn winograd_shapes() -> Result<()> {
    check(case(1, 32, 1, 1, 32, 3, 1, 1), 40)?;
    check(case(2, 32, 3, 3, 33, 3, 1, 0), 41)?;
    check(case(3, 33, 5, 7, 32, 3, 1, 1), 42)?;
    check(case(2, 36, 9, 11, 34, 3, 1, 2), 43)?;
    check(case(1, 32, 33, 17, 32, 3, 1, 1), 44)?;
    check(case(2, 32, 20, 36, 32, 3, 1, 0), 45)?;
    check(case(5, 64, 8, 8, 64, 3, 1, 1), 46)?;
    check(case(9, 32, 6, 6, 48, 3, 1, 1), 47)?;
    // 32×32 with 32 channels: one image's V and M exceed the cache budget, so bands.
    check(case(2, 32, 32, 32, 32, 3, 1, 1), 48)?;
    check(case(1, 32, 31, 30, 40, 3, 1, 1), 49)?;
    // The weight gradient takes Winograd from 16 channels: odd sizes there, and an image whose
    // V and dM exceed its (larger) budget, so bands.
    check(case(3, 16, 7, 9, 17, 3, 1, 1), 50)?;
    check(case(2, 16, 5, 5, 16, 3, 1, 2), 51)?;
    check(case(1, 64, 34, 34, 64, 3, 1, 1), 52)?;
    // Rows of 4 tiles are transformed two tile rows per vector: an odd number of tile rows
    // leaves a single one (5 rows of 8), and 16-channel 8×8 for the weight gradient.
    check(case(2, 32, 5, 8, 32, 3, 1, 1), 53)?;
    check(case(3, 16, 8, 8, 16, 3, 1, 1), 54)?;
    // F(4×4, 3×3) takes outputs at least 13 wide, from 16 channels: the 4-phase copy's whole
    // blocks of 32 columns (32, 64), its half block (16, 48) and scalar tail (13, 17, 37);
    // rows of 4 tiles paired (16 wide, an odd tile-row count at 20 high) or not (13, 14
    // wide); two vectors of tiles per row (40); paddings 0 and 2; and the input gradient of
    // each through the same path.
    check(case(2, 16, 32, 32, 16, 3, 1, 1), 55)?;
    check(case(1, 16, 20, 16, 16, 3, 1, 1), 56)?;
    check(case(2, 17, 13, 13, 16, 3, 1, 1), 57)?;
    check(case(1, 16, 9, 16, 24, 3, 1, 0), 58)?;
    check(case(1, 16, 11, 37, 16, 3, 1, 2), 59)?;
    check(case(1, 20, 7, 64, 16, 3, 1, 1), 60)?;
    check(case(2, 16, 6, 48, 18, 3, 1, 1), 61)?;
    check(case(1, 16, 5, 40, 16, 3, 1, 1), 62)?;
    check(case(3, 48, 16, 16, 40, 3, 1, 1), 63)?;
    // Wide channels through F(4×4, 3×3): its rounding error grows with the sum's length.
    check(case(1, 384, 16, 16, 32, 3, 1, 1), 64)?;
    // The weight gradient takes F(4×4, 3×3) from 29 columns (the 32-, 37-, 40-, 48- and
    // 64-wide cases above); here an image whose V and dM exceed its budget, so bands.
    check(case(1, 64, 40, 64, 64, 3, 1, 1), 65)?;
    // F(2×2, 3×3)'s weight gradient (narrower than 29) with bands.
    check(case(1, 96, 28, 28, 96, 3, 1, 1), 66)?;
    Ok(())
}
