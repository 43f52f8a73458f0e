//! Portable convolution kernels: im2col / col2im around the `gemm` crate.
//!
//! They handle every geometry (any kernel, stride and padding) and serve as the fallback where
//! the direct x86 kernels do not apply (no AVX2, or strided input gradients).

use gemm::Parallelism;
use rayon::prelude::*;

use super::direct::DW_CHUNKS;
use crate::geom::ConvGeom;
use crate::scratch::with_scratch;

/// Writes the (K, P) im2col matrix of one image: row (ci, ky, kx), column (oy, ox).
pub(crate) fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    let p = g.p_out();
    let (s, pad) = (g.stride as isize, g.pad as isize);
    let (h, w) = (g.h as isize, g.w as isize);
    for ci in 0..g.cin {
        let plane = &x[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut col[((ci * g.kh + ky) * g.kw + kx) * p..][..p];
                for oy in 0..g.ho {
                    let iy = oy as isize * s + ky as isize - pad;
                    let dst = &mut row[oy * g.wo..][..g.wo];
                    if iy < 0 || iy >= h {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..][..g.w];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let ix = ox as isize * s + kx as isize - pad;
                        *d = if ix >= 0 && ix < w {
                            src[ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// Adds the (K, P) column matrix back into one image's input gradient (the adjoint of im2col).
pub(crate) fn col2im_add(g: &ConvGeom, col: &[f32], dx: &mut [f32]) {
    let p = g.p_out();
    let (s, pad) = (g.stride as isize, g.pad as isize);
    let (h, w) = (g.h as isize, g.w as isize);
    for ci in 0..g.cin {
        let plane = &mut dx[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &col[((ci * g.kh + ky) * g.kw + kx) * p..][..p];
                for oy in 0..g.ho {
                    let iy = oy as isize * s + ky as isize - pad;
                    if iy < 0 || iy >= h {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..][..g.w];
                    for (ox, &v) in row[oy * g.wo..][..g.wo].iter().enumerate() {
                        let ix = ox as isize * s + kx as isize - pad;
                        if ix >= 0 && ix < w {
                            dst[ix as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// True when im2col would be the identity (1×1, stride 1, no padding): the GEMM reads `x`.
fn is_pointwise(g: &ConvGeom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0
}

/// Parallelism for a GEMM inside a per-image loop: images run on rayon's workers when there
/// are enough of them, otherwise the GEMM itself is split.
fn inner_par(n: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if n >= threads || threads == 1 {
        (true, Parallelism::None)
    } else {
        (false, Parallelism::Rayon(threads))
    }
}

/// dst(m×n) = lhs(m×k) · rhs(k×n) (+ dst when `acc`), all described by row/column strides.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The slices must cover the furthest element each strided view can touch.
    assert!(dst.len() >= (m - 1) * dst_rs + n);
    if k > 0 {
        assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
        assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    }
    // SAFETY: the asserts above bound every index the strided views reach inside their slices;
    // dst is uniquely borrowed and does not alias lhs/rhs (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Forward convolution: y = conv(x, w), with `y` holding N·Cout·Ho·Wo elements.
pub(crate) fn conv_fwd(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (k, p) = (g.k(), g.p_out());
    let (parallel_images, par) = inner_par(g.n);
    let one = |(xi, yi): (&[f32], &mut [f32])| {
        if is_pointwise(g) {
            sgemm(g.cout, p, k, yi, p, false, w, k, 1, xi, p, 1, par);
        } else {
            with_scratch(0, k * p, |col| {
                im2col(g, xi, col);
                sgemm(g.cout, p, k, yi, p, false, w, k, 1, col, p, 1, par);
            });
        }
    };
    if parallel_images {
        x.par_chunks_exact(g.in_img())
            .zip(y.par_chunks_exact_mut(g.out_img()))
            .for_each(one);
    } else {
        x.chunks_exact(g.in_img())
            .zip(y.chunks_exact_mut(g.out_img()))
            .for_each(one);
    }
}

/// Input gradient: dx = convᵀ(dy, w) via dcol = wᵀ·dy and col2im, `dx` zeroed by the caller.
pub(crate) fn conv_dx(g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (k, p) = (g.k(), g.p_out());
    let (parallel_images, par) = inner_par(g.n);
    let one = |(dyi, dxi): (&[f32], &mut [f32])| {
        if is_pointwise(g) {
            sgemm(k, p, g.cout, dxi, p, false, w, 1, k, dyi, p, 1, par);
        } else {
            with_scratch(0, k * p, |col| {
                sgemm(k, p, g.cout, col, p, false, w, 1, k, dyi, p, 1, par);
                col2im_add(g, col, dxi);
            });
        }
    };
    if parallel_images {
        dy.par_chunks_exact(g.out_img())
            .zip(dx.par_chunks_exact_mut(g.in_img()))
            .for_each(one);
    } else {
        dy.chunks_exact(g.out_img())
            .zip(dx.chunks_exact_mut(g.in_img()))
            .for_each(one);
    }
}

/// Weight gradient: dw = Σₙ dyₙ · colₙᵀ, written (not accumulated) into `dw` (Cout·K).
///
/// The images are cut into the direct kernel's fixed number of chunks ([`DW_CHUNKS`], not one
/// per thread), each summed on its own and the chunks' sums added in order, so the bits do not
/// depend on the number of threads. Where there are fewer chunks than threads, the GEMMs
/// inside a chunk take the threads instead; they split their output, not their sums.
pub(crate) fn conv_dw(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (k, p) = (g.k(), g.p_out());
    let chunks = DW_CHUNKS.min(g.n).max(1);
    let (_, par) = inner_par(chunks);
    // dw_acc += dy_i (Cout×P) · col_iᵀ (P×K)
    let add_image = |acc: &mut [f32], xi: &[f32], dyi: &[f32], first: bool| {
        if is_pointwise(g) {
            sgemm(g.cout, k, p, acc, k, !first, dyi, p, 1, xi, 1, p, par);
        } else {
            with_scratch(0, k * p, |col| {
                im2col(g, xi, col);
                sgemm(g.cout, k, p, acc, k, !first, dyi, p, 1, col, 1, p, par);
            });
        }
    };
    let per = g.n.div_ceil(chunks).max(1);
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![0.0f32; g.cout * k];
            let (lo, hi) = (c * per, ((c + 1) * per).min(g.n));
            for i in lo..hi {
                add_image(
                    &mut acc,
                    &x[i * g.in_img()..][..g.in_img()],
                    &dy[i * g.out_img()..][..g.out_img()],
                    i == lo,
                );
            }
            acc
        })
        .collect();
    dw.fill(0.0);
    for part in &partials {
        for (d, s) in dw.iter_mut().zip(part) {
            *d += s;
        }
    }
}
