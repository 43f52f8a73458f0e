//! A full ResNet-20 (option A shortcuts) training step built from this crate's ops: the loss and
//! every parameter gradient of the fast path match the reference path.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use common::{assert_close_floor, rand_tensor};
use layerzero_kernels::{fast, reference, BatchNormTrainOutput};

type ConvFn = fn(&Tensor, &Tensor, usize, usize) -> Result<Tensor>;
type BnFn = fn(&Tensor, &Tensor, &Tensor, f64, bool) -> Result<BatchNormTrainOutput>;
type BnAddFn = fn(&Tensor, &Tensor, &Tensor, &Tensor, f64) -> Result<BatchNormTrainOutput>;

struct Ops {
    conv: ConvFn,
    bn: BnFn,
    bn_add_relu: BnAddFn,
}

struct Params {
    vars: Vec<Var>,
}

/// Deterministic parameters: conv weights (He-scaled), BN gammas near 1 and small betas, fc.
fn params() -> Result<Params> {
    let mut vars = Vec::new();
    let mut seed = 100u64;
    let mut conv = |cout: usize, cin: usize, vars: &mut Vec<Var>| -> Result<()> {
        seed += 1;
        let scale = (2.0 / (cin * 9) as f32).sqrt() * 1.7;
        vars.push(Var::from_tensor(&rand_tensor(
            &[cout, cin, 3, 3],
            seed,
            scale,
        )?)?);
        seed += 1;
        vars.push(Var::from_tensor(
            &(rand_tensor(&[cout], seed, 0.2)? + 1.0)?,
        )?);
        seed += 1;
        vars.push(Var::from_tensor(&rand_tensor(&[cout], seed, 0.2)?)?);
        Ok(())
    };
    conv(16, 3, &mut vars)?;
    let mut cin = 16;
    for cout in [16, 32, 64] {
        for _ in 0..3 {
            conv(cout, cin, &mut vars)?;
            conv(cout, cout, &mut vars)?;
            cin = cout;
        }
    }
    vars.push(Var::from_tensor(&rand_tensor(&[10, 64], 999, 0.3)?)?);
    vars.push(Var::from_tensor(&rand_tensor(&[10], 998, 0.1)?)?);
    Ok(Params { vars })
}

/// Option A shortcut: subsample by 2 and zero-pad the new channels.
fn shortcut(x: &Tensor, cout: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let sub = x
        .reshape((n, c, h / 2, 2, w / 2, 2))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((n, c, h / 2, w / 2))?;
    let pad = (cout - c) / 2;
    sub.pad_with_zeros(1, pad, pad)
}

fn loss(ops: &Ops, p: &Params, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let v = |i: usize| p.vars[i].as_tensor();
    let eps = 1e-5;
    let y = (ops.conv)(x, v(0), 1, 1)?;
    let mut h = (ops.bn)(&y, v(1), v(2), eps, true)?.y;
    let mut i = 3;
    let mut cin = 16;
    for cout in [16, 32, 64] {
        for b in 0..3 {
            let stride = if b == 0 && cout != cin { 2 } else { 1 };
            let y = (ops.conv)(&h, v(i), stride, 1)?;
            let y = (ops.bn)(&y, v(i + 1), v(i + 2), eps, true)?.y;
            let y = (ops.conv)(&y, v(i + 3), 1, 1)?;
            let sc = if stride == 2 {
                shortcut(&h, cout)?
            } else {
                h.clone()
            };
            h = (ops.bn_add_relu)(&y, v(i + 4), v(i + 5), &sc, eps)?.y;
            i += 6;
            cin = cout;
        }
    }
    let pooled = h.mean((2, 3))?;
    let logits = pooled.matmul(&v(i).t()?)?.broadcast_add(v(i + 1))?;
    // Cross-entropy with a numerically stable log-softmax.
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = shifted.broadcast_sub(&lse)?;
    let picked = logp.gather(&labels.unsqueeze(1)?, 1)?;
    picked.mean_all()?.neg()
}

#[test]
fn resnet20_training_step_matches_reference() -> Result<()> {
    let p = params()?;
    let x = rand_tensor(&[4, 3, 32, 32], 7, 1.0)?;
    let labels = Tensor::new(&[3u32, 7, 0, 9], &Device::Cpu)?;
    let fast_ops = Ops {
        conv: fast::conv2d,
        bn: fast::batch_norm_train,
        bn_add_relu: fast::batch_norm_add_relu_train,
    };
    let ref_ops = Ops {
        conv: reference::conv2d,
        bn: reference::batch_norm_train,
        bn_add_relu: reference::batch_norm_add_relu_train,
    };
    let lf = loss(&fast_ops, &p, &x, &labels)?;
    let lr = loss(&ref_ops, &p, &x, &labels)?;
    let (a, b) = (lf.to_scalar::<f32>()?, lr.to_scalar::<f32>()?);
    assert!((a - b).abs() <= 1e-4 * b.abs(), "loss {a} vs {b}");
    let gf = lf.backward()?;
    let gr = lr.backward()?;
    assert_eq!(p.vars.len(), 19 * 3 + 2);
    for (i, var) in p.vars.iter().enumerate() {
        let (f, r) = (gf.get(var.as_tensor()), gr.get(var.as_tensor()));
        let (f, r) = (f.expect("fast gradient"), r.expect("reference gradient"));
        assert_eq!(f.dtype(), DType::F32);
        // Normwise relative error (measured worst case: 1.6e-5); the tiny floor only guards
        // against a parameter whose gradient vanishes altogether.
        assert_close_floor(&format!("param {i}"), f, r, 1e-4, 1e-7);
    }
    Ok(())
}
