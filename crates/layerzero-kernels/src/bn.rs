//! Training-mode batch norm (optionally fused with ReLU) as a candle custom op.
//!
//! Forward: one pass for per-channel statistics (shifted sums, so a large mean does not cancel
//! the variance), one pass for `y = max(0, a·x + b)`. Backward: one pass for the per-channel
//! sums Σg and Σg·(x−μ) (g = dy masked by the ReLU, recomputed from x), one pass for dx.
//! Reductions run in parallel over channels, element-wise passes over images.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::error::KernelError;
use crate::prefetch;
use crate::storage::{alloc_uninit, cpu_f32, storage_f32};

const BN: &str = "layerzero-batch-norm";
const BN_BWD: &str = "layerzero-batch-norm-backward";

/// Elements summed in f32 lanes before flushing to f64: short enough that the f32 partial
/// sums stay accurate, long enough that the flush cost disappears.
const FLUSH: usize = 4096;
const LANES: usize = 16;

/// `avx2::$f(args)` when [`wide`], else 0: how many leading elements the AVX2 loop handled
/// (the scalar loop after it does the rest).
macro_rules! wide {
    ($f:ident($($a:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        let done = if wide() {
            // SAFETY: `wide` checked AVX2 at run time.
            unsafe { avx2::$f($($a),*) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = {
            let _ = ($($a),*);
            0
        };
        done
    }};
}

/// Whether the AVX2 loops below may run (the CPU has AVX2 and `LAYERZERO_KERNELS_ISA` is not
/// `portable`).
fn wide() -> bool {
    crate::conv::direct::detect_isa().is_some()
}

/// AVX2 versions of the hot loops: the same operations in the same order as the scalar code
/// they replace (no fused multiply-add; the 16 partial sums are two registers of 8), so the
/// results are the same bits. Each returns how many leading elements it handled; the caller's
/// scalar loop does the rest.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::LANES;

    /// The ReLU mask of [`super::masked`]: `dy` where `pre ≥ 0` (or no ReLU), else 0.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn masked(dy: __m256, pre: __m256, relu: bool) -> __m256 {
        if relu {
            _mm256_and_ps(dy, _mm256_cmp_ps::<_CMP_GE_OQ>(pre, _mm256_setzero_ps()))
        } else {
            dy
        }
    }

    /// a·x + b (+ r) for 8 elements at `i`.
    ///
    /// # Safety
    /// `i + 8` is within `x` and `r`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn pre(x: &[f32], r: Option<&[f32]>, i: usize, a: __m256, b: __m256) -> __m256 {
        // SAFETY: as documented.
        unsafe {
            let p = _mm256_add_ps(_mm256_mul_ps(a, _mm256_loadu_ps(x.as_ptr().add(i))), b);
            match r {
                Some(r) => _mm256_add_ps(p, _mm256_loadu_ps(r.as_ptr().add(i))),
                None => p,
            }
        }
    }

    /// The 16 partial sums as two registers of 8.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load16(a: &[f32; LANES]) -> [__m256; 2] {
        // SAFETY: 16 floats.
        unsafe {
            [
                _mm256_loadu_ps(a.as_ptr()),
                _mm256_loadu_ps(a.as_ptr().add(8)),
            ]
        }
    }

    /// Stores what [`load16`] loaded.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store16(a: &mut [f32; LANES], v: [__m256; 2]) {
        // SAFETY: 16 floats.
        unsafe {
            _mm256_storeu_ps(a.as_mut_ptr(), v[0]);
            _mm256_storeu_ps(a.as_mut_ptr().add(8), v[1]);
        }
    }

    /// Σ(x − k) and Σ(x − k)² lane by lane over the whole 16-element chunks of `seg`.
    #[target_feature(enable = "avx2")]
    pub(super) fn shifted_sums(
        seg: &[f32],
        k: f32,
        s: &mut [f32; LANES],
        q: &mut [f32; LANES],
    ) -> usize {
        let kv = _mm256_set1_ps(k);
        let (mut sv, mut qv) = (load16(s), load16(q));
        let full = seg.len() / LANES * LANES;
        for i in (0..full).step_by(LANES) {
            for h in 0..2 {
                // SAFETY: i + 8·h + 8 ≤ full ≤ the length of seg.
                let d = unsafe { _mm256_sub_ps(_mm256_loadu_ps(seg.as_ptr().add(i + 8 * h)), kv) };
                sv[h] = _mm256_add_ps(sv[h], d);
                qv[h] = _mm256_add_ps(qv[h], _mm256_mul_ps(d, d));
            }
        }
        store16(s, sv);
        store16(q, qv);
        full
    }

    /// Σg and Σg·(x − μ) lane by lane over the whole 16-element chunks, g being the masked
    /// output gradient of pre-activation a·x + b (+ r).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2")]
    pub(super) fn grad_sums(
        x: &[f32],
        dy: &[f32],
        r: Option<&[f32]>,
        (a, b, mu): (f32, f32, f32),
        relu: bool,
        sg: &mut [f32; LANES],
        sgx: &mut [f32; LANES],
    ) -> usize {
        assert!(dy.len() >= x.len() && r.is_none_or(|r| r.len() >= x.len()));
        let (av, bv, mv) = (_mm256_set1_ps(a), _mm256_set1_ps(b), _mm256_set1_ps(mu));
        let full = x.len() / LANES * LANES;
        let (mut p, mut q) = (load16(sg), load16(sgx));
        // SAFETY: loads stay below `full` ≤ the length of x, dy and r.
        unsafe {
            for i in (0..full).step_by(LANES) {
                for h in 0..2 {
                    let j = i + 8 * h;
                    let g = masked(
                        _mm256_loadu_ps(dy.as_ptr().add(j)),
                        pre(x, r, j, av, bv),
                        relu,
                    );
                    let xc = _mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(j)), mv);
                    p[h] = _mm256_add_ps(p[h], g);
                    q[h] = _mm256_add_ps(q[h], _mm256_mul_ps(g, xc));
                }
            }
        }
        store16(sg, p);
        store16(sgx, q);
        full
    }

    /// y = a·x + b (+ r), then max(0, ·) with the ReLU, over the whole 8-element vectors.
    #[target_feature(enable = "avx2")]
    pub(super) fn normalize(
        x: &[f32],
        r: Option<&[f32]>,
        (a, b): (f32, f32),
        relu: bool,
        y: &mut [f32],
    ) -> usize {
        assert!(y.len() >= x.len() && r.is_none_or(|r| r.len() >= x.len()));
        let (av, bv) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        let full = x.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 ≤ full ≤ the length of x, r and y.
            unsafe {
                let mut v = pre(x, r, i, av, bv);
                if relu {
                    v = _mm256_max_ps(v, _mm256_setzero_ps());
                }
                _mm256_storeu_ps(y.as_mut_ptr().add(i), v);
            }
        }
        full
    }

    /// dx = a·g + k1·(x − μ) + k0 over the whole 8-element vectors (g as in [`grad_sums`]).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2")]
    pub(super) fn input_grad(
        x: &[f32],
        dy: &[f32],
        r: Option<&[f32]>,
        (a, b, mu): (f32, f32, f32),
        (k1, k0): (f32, f32),
        relu: bool,
        out: &mut [f32],
    ) -> usize {
        assert!(dy.len() >= x.len() && out.len() >= x.len());
        assert!(r.is_none_or(|r| r.len() >= x.len()));
        let (av, bv, mv) = (_mm256_set1_ps(a), _mm256_set1_ps(b), _mm256_set1_ps(mu));
        let (k1v, k0v) = (_mm256_set1_ps(k1), _mm256_set1_ps(k0));
        let full = x.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 ≤ full ≤ the length of x, dy, r and out.
            unsafe {
                let g = masked(
                    _mm256_loadu_ps(dy.as_ptr().add(i)),
                    pre(x, r, i, av, bv),
                    relu,
                );
                let xc = _mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), mv);
                let v = _mm256_add_ps(
                    _mm256_add_ps(_mm256_mul_ps(av, g), _mm256_mul_ps(k1v, xc)),
                    k0v,
                );
                _mm256_storeu_ps(out.as_mut_ptr().add(i), v);
            }
        }
        full
    }

    /// The masked output gradient (the residual's gradient) over the whole 8-element vectors.
    #[target_feature(enable = "avx2")]
    pub(super) fn masked_grad(
        x: &[f32],
        dy: &[f32],
        r: &[f32],
        (a, b): (f32, f32),
        relu: bool,
        out: &mut [f32],
    ) -> usize {
        assert!(dy.len() >= x.len() && r.len() >= x.len() && out.len() >= x.len());
        let (av, bv) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        let full = x.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 ≤ full ≤ the length of x, dy, r and out.
            unsafe {
                let g = masked(
                    _mm256_loadu_ps(dy.as_ptr().add(i)),
                    pre(x, Some(r), i, av, bv),
                    relu,
                );
                _mm256_storeu_ps(out.as_mut_ptr().add(i), g);
            }
        }
        full
    }
}

/// Per-channel statistics of one forward call, kept for the backward pass.
#[derive(Debug, Clone)]
pub(crate) struct BnStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub invstd: Vec<f32>,
    /// y = a·x + b before the ReLU.
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// (N, C, H·W) of an NCHW tensor, or an error.
pub(crate) fn nchw(
    op: &'static str,
    dims: &[usize],
) -> std::result::Result<(usize, usize, usize), KernelError> {
    match *dims {
        [n, c, h, w] => Ok((n, c, h * w)),
        _ => Err(KernelError::shape(
            op,
            format!("input must be rank 4 (N, C, H, W), got {dims:?}"),
        )),
    }
}

/// Σ(v − k) and Σ(v − k)² over a slice, in f32 lanes flushed to f64.
fn shifted_sums(seg: &[f32], k: f32) -> (f64, f64) {
    let (mut s, mut ss) = (0.0f64, 0.0f64);
    for block in seg.chunks(FLUSH) {
        let mut a = [0.0f32; LANES];
        let mut q = [0.0f32; LANES];
        let done = wide!(shifted_sums(block, k, &mut a, &mut q));
        let mut chunks = block[done..].chunks_exact(LANES);
        for ch in &mut chunks {
            for l in 0..LANES {
                let d = ch[l] - k;
                a[l] += d;
                q[l] += d * d;
            }
        }
        for &v in chunks.remainder() {
            let d = v - k;
            a[0] += d;
            q[0] += d * d;
        }
        s += a.iter().map(|&v| v as f64).sum::<f64>();
        ss += q.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s, ss)
}

/// Splits NCHW data into, per channel, its N contiguous H·W segments (so channels can be
/// processed in parallel with safe, disjoint mutable borrows).
fn channel_segments_mut(y: &mut [f32], c: usize, hw: usize) -> Vec<Vec<&mut [f32]>> {
    let mut per: Vec<Vec<&mut [f32]>> = (0..c).map(|_| Vec::new()).collect();
    if hw > 0 {
        for (i, seg) in y.chunks_exact_mut(hw).enumerate() {
            per[i % c].push(seg);
        }
    }
    per
}

/// Per-channel statistics (mean, biased variance, 1/σ, a = γ/σ, b = β − μ·a) of NCHW data.
fn channel_stats(
    x: &[f32],
    (n, c, hw): (usize, usize, usize),
    ch: usize,
    gamma: f32,
    beta: f32,
    eps: f64,
) -> [f32; 5] {
    let m = (n * hw) as f64;
    if n * hw == 0 {
        return [0.0, 0.0, 0.0, 0.0, beta];
    }
    // Shift by one sample of the channel: Σ(x−k)² − (Σ(x−k))²/M does not cancel
    // catastrophically when k is close to the mean, unlike Σx² − (Σx)²/M.
    let k = x[ch * hw];
    let (mut s, mut ss) = (0.0f64, 0.0f64);
    for img in 0..n {
        // The channel's next plane is a jump away: ask for it now (see `prefetch`).
        prefetch::lines_at(x, ((img + 1) * c + ch) * hw, hw);
        let (a, b) = shifted_sums(&x[(img * c + ch) * hw..][..hw], k);
        s += a;
        ss += b;
    }
    let mean = k as f64 + s / m;
    let var = ((ss - s * s / m) / m).max(0.0);
    let invstd = 1.0 / (var + eps).sqrt();
    let a = gamma as f64 * invstd;
    let b = beta as f64 - mean * a;
    [mean as f32, var as f32, invstd as f32, a as f32, b as f32]
}

/// Arguments of one channel's forward pass.
struct FwdChannel<'a> {
    x: &'a [f32],
    dims: (usize, usize, usize),
    ch: usize,
    gamma: f32,
    beta: f32,
    residual: Option<&'a [f32]>,
    eps: f64,
    relu: bool,
}

/// One channel of the forward pass: statistics, then the normalised output segments.
fn forward_channel(p: &FwdChannel<'_>, ys: &mut [&mut [f32]]) -> [f32; 5] {
    let FwdChannel {
        x,
        dims,
        ch,
        gamma,
        beta,
        residual,
        eps,
        relu,
    } = *p;
    let (_, c, hw) = dims;
    let st = channel_stats(x, dims, ch, gamma, beta, eps);
    let (a, b) = (st[3], st[4]);
    for (img, ys) in ys.iter_mut().enumerate() {
        let off = (img * c + ch) * hw;
        let rs = residual.map(|r| &r[off..][..hw]);
        let done = wide!(normalize(&x[off..][..hw], rs, (a, b), relu, ys));
        let xs = &x[off + done..][..hw - done];
        let ys = &mut ys[done..];
        match (rs, relu) {
            (Some(r), _) => {
                for ((yv, &xv), &rv) in ys.iter_mut().zip(xs).zip(&r[done..]) {
                    let pre = a * xv + b + rv;
                    *yv = if relu { pre.max(0.0) } else { pre };
                }
            }
            (None, true) => {
                for (yv, &xv) in ys.iter_mut().zip(xs) {
                    *yv = (a * xv + b).max(0.0);
                }
            }
            (None, false) => {
                for (yv, &xv) in ys.iter_mut().zip(xs) {
                    *yv = a * xv + b;
                }
            }
        }
    }
    st
}

/// Training batch-norm forward: statistics, then y = a·x + b (+ ReLU). Each channel runs as
/// one parallel task, so its second pass over x finds the data in cache (a channel of a
/// 128×16×32×32 batch is 512 KiB, within L2).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    x: &[f32],
    dims: (usize, usize, usize),
    gamma: &[f32],
    beta: &[f32],
    residual: Option<&[f32]>,
    eps: f64,
    relu: bool,
    y: &mut [f32],
) -> BnStats {
    let (_, c, hw) = dims;
    let segs = channel_segments_mut(y, c, hw);
    let per: Vec<[f32; 5]> = segs
        .into_par_iter()
        .enumerate()
        .map(|(ch, mut ys)| {
            let args = FwdChannel {
                x,
                dims,
                ch,
                gamma: gamma[ch],
                beta: beta[ch],
                residual,
                eps,
                relu,
            };
            forward_channel(&args, &mut ys)
        })
        .collect();
    BnStats {
        mean: per.iter().map(|t| t[0]).collect(),
        var: per.iter().map(|t| t[1]).collect(),
        invstd: per.iter().map(|t| t[2]).collect(),
        a: per.iter().map(|t| t[3]).collect(),
        b: per.iter().map(|t| t[4]).collect(),
    }
}

/// The ReLU-masked gradient: candle's ReLU passes the gradient where its input is ≥ 0.
#[inline(always)]
fn masked(dy: f32, pre: f32, relu: bool) -> f32 {
    if !relu || pre >= 0.0 {
        dy
    } else {
        0.0
    }
}

/// One channel's (Σg, Σg·(x−μ)), g being the (ReLU-masked) output gradient.
#[allow(clippy::too_many_arguments)]
fn channel_grad_sums(
    x: &[f32],
    dy: &[f32],
    residual: Option<&[f32]>,
    (n, c, hw): (usize, usize, usize),
    ch: usize,
    st: &BnStats,
    relu: bool,
) -> (f64, f64) {
    if let Some(r) = residual {
        // The ReLU mask needs the residual; fold it into the output gradient first, segment by
        // segment (this path is the fused block end; masking is its only use of r).
        return channel_grad_sums_residual(x, dy, r, (n, c, hw), ch, st, relu);
    }
    let (a, b, mu) = (st.a[ch], st.b[ch], st.mean[ch]);
    let (mut sg, mut sgx) = (0.0f64, 0.0f64);
    for img in 0..n {
        let next = ((img + 1) * c + ch) * hw;
        prefetch::lines_at(x, next, hw);
        prefetch::lines_at(dy, next, hw);
        let xs = &x[(img * c + ch) * hw..][..hw];
        let ds = &dy[(img * c + ch) * hw..][..hw];
        for (xb, db) in xs.chunks(FLUSH).zip(ds.chunks(FLUSH)) {
            let mut p = [0.0f32; LANES];
            let mut q = [0.0f32; LANES];
            let done = wide!(grad_sums(xb, db, None, (a, b, mu), relu, &mut p, &mut q));
            let mut xc = xb[done..].chunks_exact(LANES);
            let mut dc = db[done..].chunks_exact(LANES);
            for (xv, dv) in (&mut xc).zip(&mut dc) {
                for l in 0..LANES {
                    let g = masked(dv[l], a * xv[l] + b, relu);
                    p[l] += g;
                    q[l] += g * (xv[l] - mu);
                }
            }
            for (&xv, &dv) in xc.remainder().iter().zip(dc.remainder()) {
                let g = masked(dv, a * xv + b, relu);
                p[0] += g;
                q[0] += g * (xv - mu);
            }
            sg += p.iter().map(|&v| v as f64).sum::<f64>();
            sgx += q.iter().map(|&v| v as f64).sum::<f64>();
        }
    }
    (sg, sgx)
}

/// [`channel_grad_sums`] when the pre-activation also includes a residual.
fn channel_grad_sums_residual(
    x: &[f32],
    dy: &[f32],
    r: &[f32],
    (n, c, hw): (usize, usize, usize),
    ch: usize,
    st: &BnStats,
    relu: bool,
) -> (f64, f64) {
    let (a, b, mu) = (st.a[ch], st.b[ch], st.mean[ch]);
    let (mut sg, mut sgx) = (0.0f64, 0.0f64);
    for img in 0..n {
        let next = ((img + 1) * c + ch) * hw;
        for data in [x, dy, r] {
            prefetch::lines_at(data, next, hw);
        }
        let off = (img * c + ch) * hw;
        let (xs, ds, rs) = (&x[off..][..hw], &dy[off..][..hw], &r[off..][..hw]);
        for ((xb, db), rb) in xs.chunks(FLUSH).zip(ds.chunks(FLUSH)).zip(rs.chunks(FLUSH)) {
            let mut p = [0.0f32; LANES];
            let mut q = [0.0f32; LANES];
            let done = wide!(grad_sums(
                xb,
                db,
                Some(rb),
                (a, b, mu),
                relu,
                &mut p,
                &mut q
            ));
            let mut xc = xb[done..].chunks_exact(LANES);
            let mut dc = db[done..].chunks_exact(LANES);
            let mut rc = rb[done..].chunks_exact(LANES);
            for ((xv, dv), rv) in (&mut xc).zip(&mut dc).zip(&mut rc) {
                for l in 0..LANES {
                    let g = masked(dv[l], a * xv[l] + b + rv[l], relu);
                    p[l] += g;
                    q[l] += g * (xv[l] - mu);
                }
            }
            let tail = xc
                .remainder()
                .iter()
                .zip(dc.remainder())
                .zip(rc.remainder());
            for ((&xv, &dv), &rv) in tail {
                let g = masked(dv, a * xv + b + rv, relu);
                p[0] += g;
                q[0] += g * (xv - mu);
            }
            sg += p.iter().map(|&v| v as f64).sum::<f64>();
            sgx += q.iter().map(|&v| v as f64).sum::<f64>();
        }
    }
    (sg, sgx)
}

/// Arguments of one channel's backward pass.
struct BwdChannel<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    residual: Option<&'a [f32]>,
    dims: (usize, usize, usize),
    ch: usize,
    st: &'a BnStats,
    relu: bool,
}

/// One channel of the backward pass: the two gradient sums, then dx (and the residual's
/// gradient) segment by segment.
fn backward_channel(
    p: &BwdChannel<'_>,
    outs: &mut [&mut [f32]],
    routs: &mut [&mut [f32]],
) -> (f64, f64) {
    let BwdChannel {
        x,
        dy,
        residual,
        dims,
        ch,
        st,
        relu,
    } = *p;
    let (n, c, hw) = dims;
    let m = (n * hw) as f64;
    let (sg, sgx) = channel_grad_sums(x, dy, residual, dims, ch, st, relu);
    // dx = a·(g − Σg/M − x̂·Σ(g·x̂)/M) = a·g + k1·(x − μ) + k0
    let (a, b, mu) = (st.a[ch], st.b[ch], st.mean[ch]);
    let is = st.invstd[ch] as f64;
    let k1 = (-(a as f64) * is * is * sgx / m) as f32;
    let k0 = (-(a as f64) * sg / m) as f32;
    for (img, os) in outs.iter_mut().enumerate() {
        let off = (img * c + ch) * hw;
        let rseg = residual.map(|r| &r[off..][..hw]);
        let (xs, ds) = (&x[off..][..hw], &dy[off..][..hw]);
        let done = wide!(input_grad(xs, ds, rseg, (a, b, mu), (k1, k0), relu, os));
        let (xs, ds, os) = (&xs[done..], &ds[done..], &mut os[done..]);
        match rseg {
            Some(r) => {
                let rs = &r[done..];
                for (((o, &xv), &dv), &rv) in os.iter_mut().zip(xs).zip(ds).zip(rs) {
                    let g = masked(dv, a * xv + b + rv, relu);
                    *o = a * g + k1 * (xv - mu) + k0;
                }
            }
            None => {
                for ((o, &xv), &dv) in os.iter_mut().zip(xs).zip(ds) {
                    let g = masked(dv, a * xv + b, relu);
                    *o = a * g + k1 * (xv - mu) + k0;
                }
            }
        }
    }
    if let Some(r) = residual {
        // The residual's gradient is the masked output gradient.
        for (img, os) in routs.iter_mut().enumerate() {
            let off = (img * c + ch) * hw;
            let (xs, ds, rs) = (&x[off..][..hw], &dy[off..][..hw], &r[off..][..hw]);
            let done = wide!(masked_grad(xs, ds, rs, (a, b), relu, os));
            let (xs, ds, rs, os) = (&xs[done..], &ds[done..], &rs[done..], &mut os[done..]);
            for (((o, &xv), &dv), &rv) in os.iter_mut().zip(xs).zip(ds).zip(rs) {
                *o = masked(dv, a * xv + b + rv, relu);
            }
        }
    }
    (sg, sgx)
}

/// Gradients of a batch-norm backward pass.
#[derive(Debug)]
pub(crate) struct BnGrads {
    pub dx: Option<Vec<f32>>,
    /// Gradient of the residual (the masked output gradient), when one was added.
    pub dres: Option<Vec<f32>>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

/// Batch-norm backward (optionally through `+ residual` before the ReLU). Like the forward
/// pass, one parallel task per channel, whose second pass re-reads x and dy from cache.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &[f32],
    dy: &[f32],
    residual: Option<&[f32]>,
    dims: (usize, usize, usize),
    st: &BnStats,
    relu: bool,
    want_dx: bool,
    want_dres: bool,
) -> BnGrads {
    crate::count_fast_op();
    let (_, c, hw) = dims;
    // SAFETY (both buffers): the per-channel loop below writes every (image, channel) segment.
    let mut dx = if want_dx {
        Some(unsafe { alloc_uninit(x.len()) })
    } else {
        None
    };
    let mut dres = if want_dres && residual.is_some() {
        Some(unsafe { alloc_uninit(x.len()) })
    } else {
        None
    };
    let segs = match dx.as_mut() {
        Some(d) => channel_segments_mut(d, c, hw),
        None => (0..c).map(|_| Vec::new()).collect(),
    };
    let rsegs = match dres.as_mut() {
        Some(d) => channel_segments_mut(d, c, hw),
        None => (0..c).map(|_| Vec::new()).collect(),
    };
    let sums: Vec<(f64, f64)> = segs
        .into_par_iter()
        .zip(rsegs)
        .enumerate()
        .map(|(ch, (mut outs, mut routs))| {
            let args = BwdChannel {
                x,
                dy,
                residual,
                dims,
                ch,
                st,
                relu,
            };
            backward_channel(&args, &mut outs, &mut routs)
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums
        .iter()
        .zip(&st.invstd)
        .map(|(s, &is)| (s.1 * is as f64) as f32)
        .collect();
    BnGrads {
        dx,
        dres,
        dgamma,
        dbeta,
    }
}

/// Candle custom op over (x, gamma, beta); the statistics of the forward call are shared with
/// the caller (to return them) and with `bwd` (to avoid recomputing them).
#[derive(Debug)]
pub(crate) struct BatchNormTrainOp {
    pub eps: f64,
    pub relu: bool,
    pub stats: Arc<Mutex<Option<Arc<BnStats>>>>,
}

impl CustomOp3 for BatchNormTrainOp {
    fn name(&self) -> &'static str {
        BN
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = nchw(BN, l1.dims())?;
        let x = cpu_f32(BN, s1, l1)?;
        let gamma = cpu_f32(BN, s2, l2)?;
        let beta = cpu_f32(BN, s3, l3)?;
        if gamma.len() != dims.1 || beta.len() != dims.1 {
            return Err(KernelError::shape(BN, "gamma/beta length differs from channels").into());
        }
        crate::count_fast_op();
        // SAFETY: `forward` writes every (image, channel) segment of y.
        let mut y = unsafe { alloc_uninit(x.len()) };
        let st = forward(x, dims, gamma, beta, None, self.eps, self.relu, &mut y);
        *self
            .stats
            .lock()
            .map_err(|_| KernelError::unsupported(BN, "poisoned lock"))? = Some(Arc::new(st));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let st = self
            .stats
            .lock()
            .map_err(|_| KernelError::unsupported(BN_BWD, "poisoned lock"))?
            .clone()
            .ok_or_else(|| KernelError::unsupported(BN_BWD, "backward before forward"))?;
        let dims = nchw(BN_BWD, x.dims())?;
        let grad = grad.contiguous()?;
        let BnGrads {
            dx, dgamma, dbeta, ..
        } = {
            let (xs, xl) = x.storage_and_layout();
            let (gs, gl) = grad.storage_and_layout();
            let xf = storage_f32(BN_BWD, &xs, xl)?;
            let gf = storage_f32(BN_BWD, &gs, gl)?;
            backward(xf, gf, None, dims, &st, self.relu, x.track_op(), false)
        };
        let dev = x.device();
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape().clone(), dev))
            .transpose()?;
        let c = dims.1;
        Ok((
            dx,
            Some(Tensor::from_vec(dgamma, c, dev)?),
            Some(Tensor::from_vec(dbeta, c, dev)?),
        ))
    }
}

/// Fast-path training batch norm; see [`crate::batch_norm_train`].
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<crate::BatchNormTrainOutput> {
    let (_, c, _) = nchw(BN, x.dims())?;
    crate::check_bn_params(BN, c, gamma, beta)?;
    for t in [x, gamma, beta] {
        if !t.device().is_cpu() || t.dtype() != candle_core::DType::F32 {
            return Err(KernelError::unsupported(BN, "fast path needs f32 CPU tensors").into());
        }
    }
    let x = x.contiguous()?;
    let gamma = gamma.contiguous()?;
    let beta = beta.contiguous()?;
    let stats = Arc::new(Mutex::new(None));
    let y = x.apply_op3(
        &gamma,
        &beta,
        BatchNormTrainOp {
            eps,
            relu,
            stats: stats.clone(),
        },
    )?;
    let st = stats
        .lock()
        .map_err(|_| KernelError::unsupported(BN, "poisoned lock"))?
        .clone()
        .ok_or_else(|| KernelError::unsupported(BN, "forward did not run"))?;
    let dev = x.device();
    Ok(crate::BatchNormTrainOutput {
        y,
        mean: Tensor::from_vec(st.mean.clone(), c, dev)?,
        var: Tensor::from_vec(st.var.clone(), c, dev)?,
    })
}

const BN_ADD: &str = "layerzero-batch-norm-add-relu";

/// Candle custom op over (x, [gamma; beta] stacked as (2, C), residual):
/// y = max(0, bn(x) + residual).
#[derive(Debug)]
pub(crate) struct BatchNormAddReluOp {
    pub eps: f64,
    pub stats: Arc<Mutex<Option<Arc<BnStats>>>>,
}

impl CustomOp3 for BatchNormAddReluOp {
    fn name(&self) -> &'static str {
        BN_ADD
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = nchw(BN_ADD, l1.dims())?;
        let x = cpu_f32(BN_ADD, s1, l1)?;
        let gb = cpu_f32(BN_ADD, s2, l2)?;
        let r = cpu_f32(BN_ADD, s3, l3)?;
        if gb.len() != 2 * dims.1 || r.len() != x.len() {
            return Err(KernelError::shape(BN_ADD, "parameter or residual shape mismatch").into());
        }
        crate::count_fast_op();
        let (gamma, beta) = gb.split_at(dims.1);
        // SAFETY: `forward` writes every (image, channel) segment of y.
        let mut y = unsafe { alloc_uninit(x.len()) };
        let st = forward(x, dims, gamma, beta, Some(r), self.eps, true, &mut y);
        *self
            .stats
            .lock()
            .map_err(|_| KernelError::unsupported(BN_ADD, "poisoned lock"))? = Some(Arc::new(st));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _gb: &Tensor,
        r: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let st = self
            .stats
            .lock()
            .map_err(|_| KernelError::unsupported(BN_ADD, "poisoned lock"))?
            .clone()
            .ok_or_else(|| KernelError::unsupported(BN_ADD, "backward before forward"))?;
        let dims = nchw(BN_ADD, x.dims())?;
        let grad = grad.contiguous()?;
        let grads = {
            let (xs, xl) = x.storage_and_layout();
            let (gs, gl) = grad.storage_and_layout();
            let (rs, rl) = r.storage_and_layout();
            let xf = storage_f32(BN_ADD, &xs, xl)?;
            let gf = storage_f32(BN_ADD, &gs, gl)?;
            let rf = storage_f32(BN_ADD, &rs, rl)?;
            backward(
                xf,
                gf,
                Some(rf),
                dims,
                &st,
                true,
                x.track_op(),
                r.track_op(),
            )
        };
        let dev = x.device();
        let shape = x.shape().clone();
        let dx = grads
            .dx
            .map(|v| Tensor::from_vec(v, shape.clone(), dev))
            .transpose()?;
        let dres = grads
            .dres
            .map(|v| Tensor::from_vec(v, shape.clone(), dev))
            .transpose()?;
        let mut gb = grads.dgamma;
        gb.extend_from_slice(&grads.dbeta);
        Ok((dx, Some(Tensor::from_vec(gb, (2, dims.1), dev)?), dres))
    }
}

/// Fast-path fused batch norm + residual + ReLU; see [`crate::batch_norm_add_relu_train`].
pub fn batch_norm_add_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    residual: &Tensor,
    eps: f64,
) -> Result<crate::BatchNormTrainOutput> {
    let (_, c, _) = nchw(BN_ADD, x.dims())?;
    crate::check_bn_params(BN_ADD, c, gamma, beta)?;
    crate::check_residual(BN_ADD, x.dims(), residual.dims())?;
    for t in [x, gamma, beta, residual] {
        if !t.device().is_cpu() || t.dtype() != candle_core::DType::F32 {
            return Err(KernelError::unsupported(BN_ADD, "fast path needs f32 CPU tensors").into());
        }
    }
    let x = x.contiguous()?;
    let residual = residual.contiguous()?;
    // One (2, C) parameter tensor keeps the op at three inputs; stacking is differentiable,
    // so gamma and beta still receive their gradients.
    let gb = Tensor::stack(&[gamma, beta], 0)?;
    let stats = Arc::new(Mutex::new(None));
    let y = x.apply_op3(
        &gb,
        &residual,
        BatchNormAddReluOp {
            eps,
            stats: stats.clone(),
        },
    )?;
    let st = stats
        .lock()
        .map_err(|_| KernelError::unsupported(BN_ADD, "poisoned lock"))?
        .clone()
        .ok_or_else(|| KernelError::unsupported(BN_ADD, "forward did not run"))?;
    let dev = x.device();
    Ok(crate::BatchNormTrainOutput {
        y,
        mean: Tensor::from_vec(st.mean.clone(), c, dev)?,
        var: Tensor::from_vec(st.var.clone(), c, dev)?,
    })
}
