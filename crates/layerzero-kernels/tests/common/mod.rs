//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{Device, Result, Tensor};

/// Deterministic uniform values in [-1, 1) from a seed (candle's own RNG is not seedable on CPU).
pub fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x1234_5678);
    (0..len)
        .map(|_| {
            // xorshift64*
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn rand_tensor(dims: &[usize], seed: u64, scale: f32) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = rand_vec(n, seed).into_iter().map(|x| x * scale).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// Normwise relative error: max |a − b| / max |b| (element-wise relative error is meaningless
/// for values near zero).
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(if scale == 0.0 { diff } else { diff / scale })
}

/// Like [`assert_close`], but relative to at least `floor`: for results that can cancel to
/// (almost) zero, e.g. the batch-norm input gradient with two samples per channel, which is
/// exactly 0 in exact arithmetic and pure rounding noise in both implementations.
pub fn assert_close_floor(what: &str, a: &Tensor, b: &Tensor, tol: f32, floor: f32) {
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(floor);
    assert!(
        diff / scale <= tol,
        "{what}: error {diff:e} relative to {scale:e} > {tol:e}"
    );
}

pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let e = rel_err(a, b).unwrap();
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

/// Convolution written as pad → gather (index_select) → matmul: slower than candle's conv2d but
/// every step has a correct candle backward, so it is the gradient reference. (candle 0.11's
/// conv2d backward returns a wrongly shaped input gradient when the stride does not divide
/// H + 2·pad − KH, e.g. 7×7 inputs at stride 2.)
pub fn conv2d_unfold(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, cin, h, wd) = x.dims4()?;
    let (cout, _, kh, kw) = w.dims4()?;
    let (hp, wp) = (h + 2 * pad, wd + 2 * pad);
    let ho = (hp - kh) / stride + 1;
    let wo = (wp - kw) / stride + 1;
    let xp = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    let xp = xp.reshape((n, cin, hp * wp))?;
    let mut idx = Vec::with_capacity(ho * wo * kh * kw);
    for oy in 0..ho {
        for ox in 0..wo {
            for ky in 0..kh {
                for kx in 0..kw {
                    idx.push(((oy * stride + ky) * wp + ox * stride + kx) as u32);
                }
            }
        }
    }
    let idx = Tensor::from_vec(idx, ho * wo * kh * kw, x.device())?;
    let cols = xp
        .index_select(&idx, 2)?
        .reshape((n, cin, ho * wo, kh * kw))?
        .permute((0, 2, 1, 3))?
        .reshape((n, ho * wo, cin * kh * kw))?;
    let wm = w.reshape((cout, cin * kh * kw))?.t()?.contiguous()?;
    cols.broadcast_matmul(&wm)?
        .transpose(1, 2)?
        .reshape((n, cout, ho, wo))
}
