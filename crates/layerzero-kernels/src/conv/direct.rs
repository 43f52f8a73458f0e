//! Direct convolution kernels for x86-64 (AVX2 + FMA; the same code compiled with AVX-512VL
//! gets 32 vector registers and larger tiles).
//!
//! Each image is copied once into a zero-padded buffer whose columns are split by phase
//! (column index mod stride). In that buffer the input element a tap (ci, ky, kx) needs for
//! output (oy, ox) sits at `taps[k] + oy·row_step + ox`: for a fixed tap, 8 consecutive output
//! columns read 8 consecutive floats, whatever the stride. So the convolution becomes a GEMM
//! whose right-hand side is read straight from the buffer with unaligned vector loads (no
//! im2col matrix, no packing), and the register tile (COB output channels × NV vectors of 8
//! output columns) accumulates over all K = Cin·KH·KW taps before one store, where the
//! epilogue (bias, residual, ReLU) is applied for free.
//!
//! The input gradient at stride 1 is the same kernel run on the output gradient with the
//! flipped, transposed weight. The weight gradient is the transposed product: a tile of COB
//! output channels × TB taps accumulates Σ dy·x over all positions of a group of images.

use rayon::prelude::*;

use super::Epilogue;
use crate::geom::ConvGeom;
use crate::scratch::with_scratch;

/// f32 lanes per vector (one 256-bit register).
pub(crate) const L: usize = 8;

/// Instruction sets the direct kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX2 + FMA, 16 vector registers.
    Avx2,
    /// The same 256-bit code with AVX-512F/VL enabled: 32 registers, embedded broadcasts.
    Avx512,
}

/// The best instruction set this CPU supports, or `None` (use the portable GEMM path).
///
/// `LAYERZERO_KERNELS_ISA=avx2|portable` caps it, to benchmark or test the other paths.
pub(crate) fn detect_isa() -> Option<Isa> {
    static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = std::env::var("LAYERZERO_KERNELS_ISA").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            if cap == "portable" {
                return None;
            }
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 =
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl");
            if avx2 && avx512 && cap != "avx2" {
                return Some(Isa::Avx512);
            }
            if avx2 {
                return Some(Isa::Avx2);
            }
        }
        let _ = cap;
        None
    })
}

/// Layout of one image's padded, phase-split buffer and of the vectorised output positions.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// f32 lanes per output vector (8, or 16 for the 512-bit forward kernel).
    pub lanes: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    /// Buffer row / column of input row / column 0 (negative: the input is cropped).
    pub pad_top: isize,
    pub pad_left: isize,
    /// Buffer rows (padded input rows the kernel reads).
    pub hp: usize,
    pub s: usize,
    pub ho: usize,
    pub wo: usize,
    /// Columns per phase row: ceil((W + 2·pad_w) / s).
    pub wq: usize,
    pub chan_step: usize,
    pub buf_len: usize,
    /// Buffer offset of tap k = (ci·KH + ky)·KW + kx, the weight's own memory order.
    pub taps: Vec<usize>,
    /// Vectors per output row and in total.
    pub vpr: usize,
    pub nvec: usize,
    /// Buffer offset of output vector v (row v / vpr, columns 8·(v % vpr)..).
    pub vbase: Vec<usize>,
    /// Offset of output vector v within an output plane, and its number of valid lanes.
    pub vout: Vec<(usize, usize)>,
}

impl Plan {
    /// The plan of an ordinary convolution: symmetric zero padding, output size implied.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cin: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        s: usize,
        pad_h: usize,
        pad_w: usize,
    ) -> Self {
        Self::new_lanes(cin, h, w, kh, kw, s, pad_h, pad_w, L)
    }

    /// [`Plan::new`] for output vectors of `lanes` floats.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_lanes(
        cin: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        s: usize,
        pad_h: usize,
        pad_w: usize,
        lanes: usize,
    ) -> Self {
        let ho = (h + 2 * pad_h - kh) / s + 1;
        let wo = (w + 2 * pad_w - kw) / s + 1;
        Self::general(
            cin,
            h,
            w,
            kh,
            kw,
            s,
            pad_h as isize,
            pad_w as isize,
            ho,
            wo,
            lanes,
        )
    }

    /// A plan with explicit output size and top/left padding, which may be negative (the
    /// input is then cropped): input row iy lands in buffer row iy + pad_top. Zero padding
    /// fills whatever the output needs beyond the input.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn general(
        cin: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        s: usize,
        pad_top: isize,
        pad_left: isize,
        ho: usize,
        wo: usize,
        lanes: usize,
    ) -> Self {
        let hp = s * (ho - 1) + kh;
        let wp = s * (wo - 1) + kw;
        let wq = wp.div_ceil(s);
        // Buffer distance between consecutive output rows: s padded rows of s phases each.
        let row_step = s * s * wq;
        let chan_step = hp * s * wq;
        let mut taps = Vec::with_capacity(cin * kh * kw);
        for ci in 0..cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    taps.push(ci * chan_step + ky * s * wq + (kx % s) * wq + kx / s);
                }
            }
        }
        let vpr = wo.div_ceil(lanes);
        let nvec = ho * vpr;
        let vbase: Vec<usize> = (0..nvec)
            .map(|v| (v / vpr) * row_step + (v % vpr) * lanes)
            .collect();
        let vout: Vec<(usize, usize)> = (0..nvec)
            .map(|v| {
                let x0 = (v % vpr) * lanes;
                ((v / vpr) * wo + x0, lanes.min(wo - x0))
            })
            .collect();
        let max_read = taps.iter().max().copied().unwrap_or(0)
            + vbase.iter().max().copied().unwrap_or(0)
            + lanes;
        let data_len = cin * chan_step;
        Plan {
            lanes,
            cin,
            h,
            w,
            pad_top,
            pad_left,
            hp,
            s,
            ho,
            wo,
            wq,
            chan_step,
            buf_len: max_read.max(data_len),
            taps,
            vpr,
            nvec,
            vbase,
            vout,
        }
    }

    /// Zeroes a whole buffer: the padding and slack that [`Plan::fill_interior`] never writes.
    /// Done once per task, not per image: many small memsets per row cost more than the
    /// kernel's own work on the smallest images.
    pub(crate) fn zero(&self, buf: &mut [f32]) {
        buf[..self.buf_len].fill(0.0);
    }

    /// Writes one image (Cin, H, W) into `buf`, which must have been [`Plan::zero`]ed for this
    /// plan (only the positions holding image data are written).
    pub(crate) fn fill_interior(&self, x: &[f32], buf: &mut [f32]) {
        let (h, w, s, wq) = (self.h, self.w, self.s, self.wq);
        // Buffer columns [c_lo, c_hi) hold input columns [c_lo − pad_left, c_hi − pad_left).
        let c_lo = self.pad_left.max(0) as usize;
        let c_hi = (self.pad_left + w as isize).clamp(0, (s * wq) as isize) as usize;
        if c_hi <= c_lo {
            return;
        }
        let ix_lo = (c_lo as isize - self.pad_left) as usize;
        let n = c_hi - c_lo;
        // One padded input row for strided plans; only [c_lo, c_hi) is ever written, so the
        // rest stays zero.
        let mut padded = [0.0f32; 512];
        for ci in 0..self.cin {
            let plane = &x[ci * h * w..][..h * w];
            let dst = &mut buf[ci * self.chan_step..][..self.chan_step];
            // (rows above and below, and columns left and right, stay zero)
            for (iy, src) in plane.chunks_exact(w).enumerate() {
                let r = iy as isize + self.pad_top;
                if r < 0 || r >= self.hp as isize {
                    continue;
                }
                let rows = &mut dst[r as usize * s * wq..][..s * wq];
                let src = &src[ix_lo..ix_lo + n];
                if s == 1 {
                    copy_short(&mut rows[c_lo..c_hi], src);
                } else if s * wq <= padded.len() {
                    // Pad the row, then split it into phases in one pass, a pattern the
                    // compiler vectorises (a per-phase strided gather does not).
                    let padded = &mut padded[..s * wq];
                    copy_short(&mut padded[c_lo..c_hi], src);
                    let (p0, rest) = rows.split_at_mut(wq);
                    if s == 2 {
                        for ((e, o), pair) in p0
                            .iter_mut()
                            .zip(rest.iter_mut())
                            .zip(padded.as_chunks::<2>().0)
                        {
                            *e = pair[0];
                            *o = pair[1];
                        }
                    } else {
                        for (j, group) in padded.chunks_exact(s).enumerate() {
                            p0[j] = group[0];
                            for (phase, &v) in group[1..].iter().enumerate() {
                                rest[phase * wq + j] = v;
                            }
                        }
                    }
                } else {
                    // Very wide rows: element by element.
                    for (i, &v) in src.iter().enumerate() {
                        let c = c_lo + i;
                        rows[(c % s) * wq + c / s] = v;
                    }
                }
            }
        }
    }
}

/// Copies a short row with inline vector moves (`copy_from_slice` becomes a libc call per row,
/// which is slow for rows of 8–32 floats).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let (dc, dr) = dst.as_chunks_mut::<8>();
    let (sc, sr) = src.as_chunks::<8>();
    for (d, s) in dc.iter_mut().zip(sc) {
        *d = *s;
    }
    for (d, s) in dr.iter_mut().zip(sr) {
        *d = *s;
    }
}

/// The epilogue restricted to one image: `residual` is that image's (cout, ho, wo).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImgEpi<'a> {
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) relu: bool,
}

/// The forward kernel for one vector width (`$lanes` f32 lanes, with that width's
/// intrinsics), instantiated inside each instruction-set module.
macro_rules! fwd_kernel {
    ($name:ident, $feat:literal, $lanes:literal, $zero:ident, $load:ident, $set1:ident,
     $fma:ident, $add:ident, $max:ident, $store:ident) => {
        /// One image's forward pass: `out(cout, ho, wo) = epilogue(Σ_k wpack · buf[taps])`.
        ///
        /// # Safety
        /// The CPU must support the enabled target features. `buf` must hold at least
        /// `p.buf_len` elements written by `p.fill` (checked), `wpack` ⌈cout/COB⌉·K·COB.
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $name<const COB: usize, const NV: usize>(
            p: &Plan,
            buf: &[f32],
            wpack: &[f32],
            cout: usize,
            epi: ImgEpi<'_>,
            out: &mut [f32],
        ) {
            assert_eq!(p.lanes, $lanes, "plan built for another vector width");
            let k = p.taps.len();
            let nblk = cout.div_ceil(COB);
            assert!(buf.len() >= p.buf_len && wpack.len() >= nblk * k * COB);
            assert!(out.len() >= cout * p.ho * p.wo && p.nvec > 0);
            let plane = p.ho * p.wo;
            let mut v0 = 0;
            while v0 < p.nvec {
                // Pointers to this tile's NV output vectors (the last tile repeats its
                // final vector rather than reading past the image).
                let mut xp = [buf.as_ptr(); NV];
                for (v, ptr) in xp.iter_mut().enumerate() {
                    // SAFETY: vbase < buf_len by construction of the plan.
                    *ptr = unsafe { ptr.add(p.vbase[(v0 + v).min(p.nvec - 1)]) };
                }
                for cb in 0..nblk {
                    let mut acc = [[$zero(); NV]; COB];
                    let mut wk = wpack[cb * k * COB..].as_ptr();
                    for &t in &p.taps {
                        let mut xv = [$zero(); NV];
                        for v in 0..NV {
                            // SAFETY: t + vbase + $lanes ≤ buf_len (the plan sizes the buffer
                            // for its largest tap and vector offsets).
                            xv[v] = unsafe { $load(xp[v].add(t)) };
                        }
                        for c in 0..COB {
                            // SAFETY: wk walks K·COB packed weights of block cb.
                            let wc = unsafe { $set1(*wk.add(c)) };
                            for v in 0..NV {
                                acc[c][v] = $fma(wc, xv[v], acc[c][v]);
                            }
                        }
                        // SAFETY: stays within (or one past) the block's K·COB weights.
                        wk = unsafe { wk.add(COB) };
                    }
                    for c in 0..COB {
                        let co = cb * COB + c;
                        if co >= cout {
                            break;
                        }
                        let b = epi.bias.map_or(0.0, |b| b[co]);
                        let bv = $set1(b);
                        for v in 0..NV {
                            let vi = v0 + v;
                            if vi >= p.nvec {
                                break;
                            }
                            let (off, n) = p.vout[vi];
                            let o = co * plane + off;
                            if n == $lanes {
                                // The common case, in registers: bias, residual, ReLU.
                                let mut y = $add(acc[c][v], bv);
                                if let Some(r) = epi.residual {
                                    let r = &r[o..o + $lanes];
                                    // SAFETY: `r` is a bounds-checked slice of $lanes floats.
                                    y = $add(y, unsafe { $load(r.as_ptr()) });
                                }
                                if epi.relu {
                                    y = $max(y, $zero());
                                }
                                let dst = &mut out[o..o + $lanes];
                                // SAFETY: `dst` is a bounds-checked slice of $lanes floats.
                                unsafe { $store(dst.as_mut_ptr(), y) };
                                continue;
                            }
                            // A row's last, partial vector: lane by lane.
                            let mut lanes = [0.0f32; $lanes];
                            // SAFETY: `lanes` is $lanes floats.
                            unsafe { $store(lanes.as_mut_ptr(), acc[c][v]) };
                            for (l, &a) in lanes[..n].iter().enumerate() {
                                let mut y = a + b;
                                if let Some(r) = epi.residual {
                                    y += r[o + l];
                                }
                                out[o + l] = if epi.relu { y.max(0.0) } else { y };
                            }
                        }
                    }
                }
                v0 += NV;
            }
        }
    };
}

macro_rules! isa_kernels {
    ($m:ident, $feat:literal) => {
        pub(crate) mod $m {
            #[cfg(target_arch = "x86_64")]
            use std::arch::x86_64::*;

            use super::{ImgEpi, Plan, L};

            fwd_kernel!(
                fwd_image,
                $feat,
                8,
                _mm256_setzero_ps,
                _mm256_loadu_ps,
                _mm256_set1_ps,
                _mm256_fmadd_ps,
                _mm256_add_ps,
                _mm256_max_ps,
                _mm256_storeu_ps
            );

            /// Weight-gradient partial sums for a group of images: for every block of COB
            /// output channels × TB taps, `acc[·][·][lane] += Σ_images Σ_v dy·x`.
            ///
            /// `dys[g]` is image g's output gradient laid out as (cout, nvec·L) with zero lanes
            /// past `wo` in every row; `acc` holds ⌈cout/COB⌉·⌈K/TB⌉·COB·TB·L floats.
            ///
            /// # Safety
            /// The CPU must support the enabled target features; every `bufs[g]` must hold
            /// `p.buf_len` elements written by `p.fill` (checked).
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn dw_group<const COB: usize, const TB: usize>(
                p: &Plan,
                bufs: &[&[f32]],
                dys: &[&[f32]],
                cout: usize,
                acc: &mut [f32],
            ) {
                let k = p.taps.len();
                let (nbc, nbt) = (cout.div_ceil(COB), k.div_ceil(TB));
                let grid = p.nvec * L;
                assert!(acc.len() >= nbc * nbt * COB * TB * L && bufs.len() == dys.len());
                for (b, d) in bufs.iter().zip(dys) {
                    assert!(b.len() >= p.buf_len && d.len() >= cout * grid);
                }
                for cb in 0..nbc {
                    for tb in 0..nbt {
                        let tile = &mut acc[(cb * nbt + tb) * COB * TB * L..][..COB * TB * L];
                        let mut a = [[_mm256_setzero_ps(); TB]; COB];
                        for c in 0..COB {
                            for t in 0..TB {
                                // SAFETY: tile has COB·TB·L floats.
                                a[c][t] =
                                    unsafe { _mm256_loadu_ps(tile.as_ptr().add((c * TB + t) * L)) };
                            }
                        }
                        // Taps / channels past the end repeat the last one; their sums are
                        // never read back.
                        let mut taps = [0usize; TB];
                        for (t, tap) in taps.iter_mut().enumerate() {
                            *tap = p.taps[(tb * TB + t).min(k - 1)];
                        }
                        for (buf, dy) in bufs.iter().zip(dys) {
                            let mut xt = [buf.as_ptr(); TB];
                            for t in 0..TB {
                                // SAFETY: taps < buf_len.
                                xt[t] = unsafe { xt[t].add(taps[t]) };
                            }
                            let mut dc = [dy.as_ptr(); COB];
                            for c in 0..COB {
                                // SAFETY: channel index clamped below cout; dy has cout·grid.
                                dc[c] = unsafe { dc[c].add((cb * COB + c).min(cout - 1) * grid) };
                            }
                            for (v, &base) in p.vbase.iter().enumerate() {
                                let mut xv = [_mm256_setzero_ps(); TB];
                                for t in 0..TB {
                                    // SAFETY: tap + vbase + L ≤ buf_len.
                                    xv[t] = unsafe { _mm256_loadu_ps(xt[t].add(base)) };
                                }
                                for c in 0..COB {
                                    // SAFETY: v·L + L ≤ grid.
                                    let d = unsafe { _mm256_loadu_ps(dc[c].add(v * L)) };
                                    for t in 0..TB {
                                        a[c][t] = _mm256_fmadd_ps(d, xv[t], a[c][t]);
                                    }
                                }
                            }
                        }
                        for c in 0..COB {
                            for t in 0..TB {
                                // SAFETY: as for the loads above.
                                unsafe {
                                    _mm256_storeu_ps(
                                        tile.as_mut_ptr().add((c * TB + t) * L),
                                        a[c][t],
                                    )
                                };
                            }
                        }
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
isa_kernels!(avx2, "avx2,fma");
#[cfg(target_arch = "x86_64")]
isa_kernels!(avx512, "avx2,fma,avx512f,avx512vl");

/// Register tiles (COB output channels, NV vectors) the forward kernel is compiled for.
/// AVX2 has 16 registers (≤ 12 accumulators), AVX-512VL 32 (≤ 24).
const AVX2_FWD_TILES: &[(usize, usize)] = &[(3, 4), (4, 3), (2, 4), (4, 2)];
const AVX512_FWD_TILES: &[(usize, usize)] = &[(4, 4), (8, 3), (6, 4), (4, 6), (8, 2)];
/// (COB, TB) for the weight gradient.
const AVX2_DW_TILES: &[(usize, usize)] = &[(3, 3), (4, 2), (2, 4)];
const AVX512_DW_TILES: &[(usize, usize)] = &[(4, 5), (4, 4), (4, 6), (6, 4), (8, 3), (3, 8)];

/// The forward tiles compiled for an instruction set and vector width.
fn fwd_tiles(isa: Isa, lanes: usize) -> &'static [(usize, usize)] {
    debug_assert_eq!(lanes, L);
    match isa {
        Isa::Avx2 => AVX2_FWD_TILES,
        Isa::Avx512 => AVX512_FWD_TILES,
    }
}

/// Vector width of the forward kernel. 512-bit vectors (16 columns, half the loads and
/// broadcasts per multiply-add) were tried on Zen 4: 5–7% faster in an L1-resident
/// micro-benchmark, no faster in the real kernels, so every plan uses 256-bit vectors.
fn fwd_lanes(_isa: Isa, _wo: usize) -> usize {
    L
}

/// Picks the forward tile that wastes the fewest multiply-adds on padding (channel blocks past
/// `cout`, vector slots past `nvec`); ties go to the earlier entry of the list, which is
/// ordered by measured speed (on Zen 4, 4×4 beat 8×3 and 8×2 on every ResNet shape).
/// `LAYERZERO_FWD_TILE=COBxNV` forces one (for tuning).
fn fwd_tile(isa: Isa, lanes: usize, cout: usize, nvec: usize) -> (usize, usize) {
    let tiles = fwd_tiles(isa, lanes);
    static FORCED: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| {
        let v = std::env::var("LAYERZERO_FWD_TILE").ok()?;
        let (a, b) = v.split_once('x')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    });
    if let Some(t) = forced.filter(|t| tiles.contains(t)) {
        return t;
    }
    let cost = |&(c, v): &(usize, usize)| {
        let slots = cout.div_ceil(c) * c * nvec.div_ceil(v) * v;
        // Waste in parts per thousand.
        slots * 1000 / (cout * nvec)
    };
    tiles.iter().copied().min_by_key(cost).unwrap_or(tiles[0])
}

/// `wpack[cb][k][c] = w[cb·COB + c][k]` (zero past cout): the COB weights one tap broadcasts
/// are adjacent.
fn pack_weights(w: &[f32], cout: usize, k: usize, cob: usize) -> Vec<f32> {
    let nblk = cout.div_ceil(cob);
    let mut p = vec![0.0f32; nblk * k * cob];
    for co in 0..cout {
        let (cb, c) = (co / cob, co % cob);
        for (kk, &v) in w[co * k..][..k].iter().enumerate() {
            p[(cb * k + kk) * cob + c] = v;
        }
    }
    p
}

#[allow(clippy::too_many_arguments)]
fn fwd_image_dispatch(
    isa: Isa,
    tile: (usize, usize),
    p: &Plan,
    buf: &[f32],
    wpack: &[f32],
    cout: usize,
    epi: ImgEpi<'_>,
    out: &mut [f32],
) {
    macro_rules! go {
        ($m:ident, $(($c:literal, $v:literal)),*) => {
            match tile {
                // SAFETY: `isa` comes from `detect_isa`, which checked the target features at
                // run time; the kernel checks its buffer sizes.
                $( ($c, $v) => unsafe { $m::fwd_image::<$c, $v>(p, buf, wpack, cout, epi, out) }, )*
                // `fwd_tile` only returns listed tiles; wpack was packed for `tile.0`.
                // Unreachable: tiles only come from the compiled lists (an internal bug, not
                // bad input; silently skipping would leave the output unwritten).
                _ => unreachable!("tile {tile:?} not compiled"),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx2 => go!(avx2, (3, 4), (4, 3), (2, 4), (4, 2)),
        Isa::Avx512 => go!(avx512, (4, 4), (8, 3), (6, 4), (4, 6), (8, 2)),
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (isa, tile, p, buf, wpack, cout, epi, out);
}

/// Stride-s forward convolution of a batch through the direct kernel. `w` is (cout, K) with
/// K in (ci, ky, kx) order matching `plan.taps`; `x` holds n images of (cin, h, w).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_fwd_plan(
    isa: Isa,
    tile: Option<(usize, usize)>,
    plan: &Plan,
    n: usize,
    x: &[f32],
    w: &[f32],
    cout: usize,
    epi: &Epilogue<'_>,
    y: &mut [f32],
) {
    let k = plan.taps.len();
    let tile = tile.unwrap_or_else(|| fwd_tile(isa, plan.lanes, cout, plan.nvec));
    let wpack = pack_weights(w, cout, k, tile.0);
    let in_img = plan.cin * plan.h * plan.w;
    let out_img = cout * plan.ho * plan.wo;
    if n == 0 || out_img == 0 {
        return;
    }
    // Tasks of several images share one scratch buffer, zeroed once per task.
    let per_task = n.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
    y.par_chunks_mut(out_img * per_task)
        .zip(x.par_chunks(in_img * per_task))
        .enumerate()
        .for_each(|(t, (ys, xs))| {
            with_scratch(0, plan.buf_len, |buf| {
                plan.zero(buf);
                for (j, (yi, xi)) in ys
                    .chunks_exact_mut(out_img)
                    .zip(xs.chunks_exact(in_img))
                    .enumerate()
                {
                    let i = t * per_task + j;
                    plan.fill_interior(xi, buf);
                    let img_epi = epi.image(i, out_img);
                    fwd_image_dispatch(isa, tile, plan, buf, &wpack, cout, img_epi, yi);
                }
            })
        });
}

/// Forward convolution through the direct kernel.
pub(crate) fn conv_fwd(
    isa: Isa,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    epi: &Epilogue<'_>,
    y: &mut [f32],
) {
    let lanes = fwd_lanes(isa, g.wo);
    let plan = Plan::new_lanes(g.cin, g.h, g.w, g.kh, g.kw, g.stride, g.pad, g.pad, lanes);
    conv_fwd_plan(isa, None, &plan, g.n, x, w, g.cout, epi, y);
}

/// Whether the input gradient can run as a stride-1 direct convolution of dy.
pub(crate) fn dx_supported(g: &ConvGeom) -> bool {
    g.stride == 1 && g.pad < g.kh && g.pad < g.kw
}

/// The weight of the input gradient at stride 1:
/// `wt[ci][co][ky][kx] = w[co][ci][kh−1−ky][kw−1−kx]`.
pub(crate) fn flip_transpose(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    let (kh, kw) = (g.kh, g.kw);
    let mut wt = vec![0.0f32; w.len()];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    wt[((ci * g.cout + co) * kh + ky) * kw + kx] =
                        w[((co * g.cin + ci) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)];
                }
            }
        }
    }
    wt
}

/// Input gradient at stride 1: dx = conv(dy, flip(w)ᵀ) with padding (KH−1−pad, KW−1−pad).
pub(crate) fn conv_dx(isa: Isa, g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    debug_assert!(dx_supported(g));
    let (kh, kw) = (g.kh, g.kw);
    let wt = flip_transpose(g, w);
    let plan = Plan::new_lanes(
        g.cout,
        g.ho,
        g.wo,
        kh,
        kw,
        1,
        kh - 1 - g.pad,
        kw - 1 - g.pad,
        fwd_lanes(isa, g.w),
    );
    debug_assert_eq!((plan.ho, plan.wo), (g.h, g.w));
    conv_fwd_plan(
        isa,
        None,
        &plan,
        g.n,
        dy,
        &wt,
        g.cin,
        &Epilogue::default(),
        dx,
    );
}

/// One output phase (rows ≡ ry, columns ≡ rx mod stride) of a strided input gradient.
struct DxPhase {
    ry: usize,
    rx: usize,
    /// Rows and columns of dx in this phase.
    ha: usize,
    wb: usize,
    /// None when no kernel tap reaches this phase (kernel smaller than the stride): zeros.
    plan: Option<Plan>,
    tile: (usize, usize),
    wpack: Vec<f32>,
    /// Offset of this phase's buffer in the task's scratch.
    buf_off: usize,
}

/// Input gradient at stride s > 1, by sub-pixel decomposition: the dx pixels of one phase
/// (iy ≡ ry, ix ≡ rx mod s) only meet the taps ky ≡ ry + pad, kx ≡ rx + pad (mod s), and for
/// them the transposed convolution is an ordinary stride-1 correlation of dy with a flipped
/// sub-kernel. Each phase runs through the forward kernel; the phases are then interleaved.
pub(crate) fn conv_dx_strided(isa: Isa, g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (s, p) = (g.stride, g.pad);
    let mut phases = Vec::with_capacity(s * s);
    let mut buf_total = 0;
    for ry in 0..s {
        for rx in 0..s {
            let ha = g.h.saturating_sub(ry).div_ceil(s);
            let wb = g.w.saturating_sub(rx).div_ceil(s);
            let (ky0, kx0) = ((ry + p) % s, (rx + p) % s);
            let ty = g.kh.saturating_sub(ky0).div_ceil(s);
            let tx = g.kw.saturating_sub(kx0).div_ceil(s);
            let mut ph = DxPhase {
                ry,
                rx,
                ha,
                wb,
                plan: None,
                tile: (1, 1),
                wpack: Vec::new(),
                buf_off: buf_total,
            };
            if ha > 0 && wb > 0 && ty > 0 && tx > 0 {
                // dx[s·a + ry] gathers dy[a + cy − t] through tap ky0 + s·t: a correlation
                // with the flipped sub-kernel and top padding ty − 1 − cy.
                let (cy, cx) = ((ry + p - ky0) / s, (rx + p - kx0) / s);
                let pad_top = ty as isize - 1 - cy as isize;
                let pad_left = tx as isize - 1 - cx as isize;
                let lanes = fwd_lanes(isa, wb);
                let plan = Plan::general(
                    g.cout, g.ho, g.wo, ty, tx, 1, pad_top, pad_left, ha, wb, lanes,
                );
                let kp = g.cout * ty * tx;
                let mut wph = vec![0.0f32; g.cin * kp];
                for ci in 0..g.cin {
                    for co in 0..g.cout {
                        for t in 0..ty {
                            for u in 0..tx {
                                let (ky, kx) = (ky0 + s * (ty - 1 - t), kx0 + s * (tx - 1 - u));
                                wph[ci * kp + (co * ty + t) * tx + u] =
                                    w[((co * g.cin + ci) * g.kh + ky) * g.kw + kx];
                            }
                        }
                    }
                }
                ph.tile = fwd_tile(isa, plan.lanes, g.cin, plan.nvec);
                ph.wpack = pack_weights(&wph, g.cin, kp, ph.tile.0);
                buf_total += plan.buf_len;
                ph.plan = Some(plan);
            }
            phases.push(ph);
        }
    }
    let out_max = phases
        .iter()
        .map(|ph| g.cin * ph.ha * ph.wb)
        .max()
        .unwrap_or(0);
    let (in_img, dx_img) = (g.out_img(), g.in_img());
    if g.n == 0 || dx_img == 0 {
        return;
    }
    let per_task = g.n.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
    dx.par_chunks_mut(dx_img * per_task)
        .zip(dy.par_chunks(in_img * per_task))
        .for_each(|(dxs, dys)| {
            with_scratch(0, buf_total.max(1), |bufs| {
                for ph in &phases {
                    if let Some(plan) = &ph.plan {
                        plan.zero(&mut bufs[ph.buf_off..]);
                    }
                }
                with_scratch(1, out_max * s, |outs| {
                    for (dxi, dyi) in dxs.chunks_exact_mut(dx_img).zip(dys.chunks_exact(in_img)) {
                        for ry in 0..s {
                            // The s column phases of this row phase, side by side in `outs`.
                            for rx in 0..s {
                                let ph = &phases[ry * s + rx];
                                let out = &mut outs[rx * out_max..][..g.cin * ph.ha * ph.wb];
                                match &ph.plan {
                                    Some(plan) => {
                                        let buf = &mut bufs[ph.buf_off..][..plan.buf_len];
                                        plan.fill_interior(dyi, buf);
                                        let none = ImgEpi {
                                            bias: None,
                                            residual: None,
                                            relu: false,
                                        };
                                        fwd_image_dispatch(
                                            isa, ph.tile, plan, buf, &ph.wpack, g.cin, none, out,
                                        );
                                    }
                                    None => out.fill(0.0),
                                }
                            }
                            interleave_phases(g, &phases[ry * s..][..s], outs, out_max, dxi);
                        }
                    }
                });
            });
        });
}

/// Writes the s column phases of one row phase into dx (rows s·a + ry, columns s·b + rx).
fn interleave_phases(
    g: &ConvGeom,
    row_phases: &[DxPhase],
    outs: &[f32],
    out_max: usize,
    dx: &mut [f32],
) {
    let s = g.stride;
    let ry = row_phases[0].ry;
    let ha = row_phases[0].ha;
    for ci in 0..g.cin {
        for a in 0..ha {
            let drow = &mut dx[(ci * g.h + s * a + ry) * g.w..][..g.w];
            if s == 2 {
                let (p0, p1) = (&row_phases[0], &row_phases[1]);
                let r0 = &outs[(ci * p0.ha + a) * p0.wb..][..p0.wb];
                let r1 = &outs[out_max + (ci * p1.ha + a) * p1.wb..][..p1.wb];
                // The vectorisable common part, then an odd width's last column.
                for ((d, &e), &o) in drow.as_chunks_mut::<2>().0.iter_mut().zip(r0).zip(r1) {
                    *d = [e, o];
                }
                if g.w % 2 == 1 {
                    drow[g.w - 1] = r0[p0.wb - 1];
                }
            } else {
                for ph in row_phases {
                    let r = &outs[ph.rx * out_max + (ci * ph.ha + a) * ph.wb..][..ph.wb];
                    for (b, &v) in r.iter().enumerate() {
                        drow[s * b + ph.rx] = v;
                    }
                }
            }
        }
    }
}

/// Env override "AxB" for tuning runs (read once).
pub(crate) fn env_pair(name: &str) -> Option<(usize, usize)> {
    let v = std::env::var(name).ok()?;
    let (a, b) = v.split_once('x')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn dw_tile(isa: Isa) -> (usize, usize) {
    static FORCED: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| env_pair("LAYERZERO_DW_TILE"));
    let tiles = match isa {
        Isa::Avx2 => AVX2_DW_TILES,
        Isa::Avx512 => AVX512_DW_TILES,
    };
    forced.filter(|t| tiles.contains(t)).unwrap_or(tiles[0])
}

fn dw_group_dispatch(
    isa: Isa,
    tile: (usize, usize),
    p: &Plan,
    bufs: &[&[f32]],
    dys: &[&[f32]],
    cout: usize,
    acc: &mut [f32],
) {
    macro_rules! go {
        ($m:ident, $(($c:literal, $t:literal)),*) => {
            match tile {
                // SAFETY: features checked by `detect_isa`; the kernel checks buffer sizes.
                $( ($c, $t) => unsafe { $m::dw_group::<$c, $t>(p, bufs, dys, cout, acc) }, )*
                // Unreachable: tiles only come from the compiled lists (an internal bug, not
                // bad input; silently skipping would leave the output unwritten).
                _ => unreachable!("tile {tile:?} not compiled"),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx2 => go!(avx2, (4, 2), (3, 3), (2, 4)),
        Isa::Avx512 => go!(avx512, (4, 5), (4, 4), (4, 6), (6, 4), (8, 3), (3, 8)),
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (isa, tile, p, bufs, dys, cout, acc);
}

/// Weight gradient through the direct kernel: dw (cout, K) = Σ_images dy · im2col(x)ᵀ.
pub(crate) fn conv_dw(isa: Isa, g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    conv_dw_tile(isa, dw_tile(isa), g, x, dy, dw)
}

/// Chunks of images the weight gradient is split into, each a task with its own partial sum
/// (reduced over the vector lanes at the chunk's end, cout × taps floats): a count that
/// depends only on the batch keeps the result independent of the number of threads, and 8
/// keeps the partial sums of wide layers small (512 × 2,304 taps: 4.7 MB each). Against one
/// chunk per thread it costs about 5–10 % on 2 threads (more accumulators to zero and reduce):
/// ResNet-20's strided weight gradients at batch 128, best of 15, five alternating runs,
/// 2.28–2.47 → 2.39–2.65 ms (16 → 32 channels) and 2.10–2.87 → 2.40–2.82 ms (32 → 64; the
/// new one slower by 0.1–0.3 ms in four of the five pairs).
pub(crate) const DW_CHUNKS: usize = 8;

/// [`conv_dw`] with an explicit register tile (COB, TB).
fn conv_dw_tile(
    isa: Isa,
    (cob, tb): (usize, usize),
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let plan = Plan::new(g.cin, g.h, g.w, g.kh, g.kw, g.stride, g.pad, g.pad);
    let k = plan.taps.len();
    let acc_len = g.cout.div_ceil(cob) * k.div_ceil(tb) * cob * tb * L;
    let grid = plan.nvec * L;
    // Images per kernel call: enough output vectors that loading and storing the accumulator
    // tiles is small next to the FMAs, few enough that the group's buffers stay in L2.
    let group = match env_pair("LAYERZERO_DW_GROUP") {
        Some((a, b)) => (a / plan.nvec).clamp(1, b.max(1)),
        None => (256 / plan.nvec).clamp(1, 16),
    };
    // A chunk count that depends only on the batch, and partial sums added in chunk order:
    // the result does not depend on the number of threads.
    let chunks = DW_CHUNKS.min(g.n).max(1);
    let per = g.n.div_ceil(chunks);
    let dy_direct = g.wo.is_multiple_of(L);
    let out_img = g.out_img();
    let in_img = g.in_img();
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let (lo, hi) = (c * per, ((c + 1) * per).min(g.n));
            if lo >= hi {
                return vec![0.0f32; g.cout * k];
            }
            let mut acc = vec![0.0f32; acc_len];
            let gmax = group.min(hi - lo);
            // One scratch borrow per chunk: the image buffers are zeroed once and only their
            // interiors rewritten per group.
            with_scratch(0, gmax * plan.buf_len, |bufs| {
                for b in bufs.chunks_exact_mut(plan.buf_len) {
                    plan.zero(b);
                }
                let mut i0 = lo;
                while i0 < hi {
                    let gn = group.min(hi - i0);
                    for (j, b) in bufs.chunks_exact_mut(plan.buf_len).take(gn).enumerate() {
                        plan.fill_interior(&x[(i0 + j) * in_img..][..in_img], b);
                    }
                    let buf_refs: Vec<&[f32]> = bufs.chunks_exact(plan.buf_len).take(gn).collect();
                    if dy_direct {
                        let dys: Vec<&[f32]> = (0..gn)
                            .map(|j| &dy[(i0 + j) * out_img..][..out_img])
                            .collect();
                        dw_group_dispatch(isa, (cob, tb), &plan, &buf_refs, &dys, g.cout, &mut acc);
                    } else {
                        // Rows padded to whole vectors with zeros, so the lanes past `wo`
                        // contribute nothing.
                        with_scratch(1, gn * g.cout * grid, |grids| {
                            for (j, gr) in grids.chunks_exact_mut(g.cout * grid).enumerate() {
                                let src = &dy[(i0 + j) * out_img..][..out_img];
                                for (row_dst, row_src) in gr
                                    .chunks_exact_mut(plan.vpr * L)
                                    .zip(src.chunks_exact(g.wo))
                                {
                                    row_dst[..g.wo].copy_from_slice(row_src);
                                    row_dst[g.wo..].fill(0.0);
                                }
                            }
                            let dys: Vec<&[f32]> = grids.chunks_exact(g.cout * grid).collect();
                            dw_group_dispatch(
                                isa,
                                (cob, tb),
                                &plan,
                                &buf_refs,
                                &dys,
                                g.cout,
                                &mut acc,
                            );
                        });
                    }
                    i0 += gn;
                }
            });
            // The chunk's sum per (output channel, tap): its lanes added in order.
            let nbt = k.div_ceil(tb);
            let mut part = vec![0.0f32; g.cout * k];
            for (co, row) in part.chunks_exact_mut(k).enumerate() {
                let (cb, c) = (co / cob, co % cob);
                for (kk, out) in row.iter_mut().enumerate() {
                    let (tbk, t) = (kk / tb, kk % tb);
                    let off = ((cb * nbt + tbk) * cob * tb + c * tb + t) * L;
                    *out = acc[off..off + L].iter().sum::<f32>();
                }
            }
            part
        })
        .collect();
    // The chunks' sums added in chunk order, in parallel over output channels.
    dw.par_chunks_mut(k).enumerate().for_each(|(co, row)| {
        for (kk, out) in row.iter_mut().enumerate() {
            let mut s = 0.0f32;
            for part in &partials {
                s += part[co * k + kk];
            }
            *out = s;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::gemm_path;
    use crate::conv::test_util::{close, rand};

    /// Every available ISA against the portable GEMM path, on shapes that exercise tile
    /// remainders, strides, row tails and the fused epilogue.
    #[test]
    fn direct_matches_gemm_path() {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
                if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                    isas.push(Isa::Avx512);
                }
            }
        }
        let shapes = [
            // n, cin, h, w, cout, k, s, p
            (2, 16, 32, 32, 16, 3, 1, 1),
            (2, 16, 32, 32, 32, 3, 2, 1),
            (3, 64, 8, 8, 64, 3, 1, 1),
            (1, 3, 7, 5, 9, 3, 1, 1),
            (2, 5, 9, 11, 7, 1, 1, 0),
            (2, 6, 9, 11, 8, 1, 2, 0),
            (1, 4, 13, 10, 5, 3, 2, 0),
            (1, 2, 5, 6, 3, 5, 1, 2),
            (1, 3, 9, 8, 4, 2, 2, 0),
            (1, 2, 3, 3, 2, 3, 1, 2),
            (2, 3, 9, 7, 4, 3, 3, 1),
            (1, 2, 7, 5, 3, 5, 2, 2),
            (1, 2, 5, 5, 3, 1, 3, 0),
            (1, 2, 1, 1, 3, 3, 2, 1),
            (2, 3, 6, 6, 4, 2, 2, 1),
        ];
        for isa in isas {
            for (i, &(n, cin, h, w, cout, k, s, p)) in shapes.iter().enumerate() {
                let g = ConvGeom::new("t", &[n, cin, h, w], &[cout, cin, k, k], s, p).unwrap();
                let x = rand(n * g.in_img(), i as u32 * 3 + 1);
                let wt = rand(cout * g.k(), i as u32 * 3 + 2);
                let bias = rand(cout, i as u32 * 3 + 3);
                let res = rand(n * g.out_img(), i as u32 * 3 + 4);
                let what = format!("{isa:?} {:?}", shapes[i]);

                let mut y_ref = vec![0.0; n * g.out_img()];
                gemm_path::conv_fwd(&g, &x, &wt, &mut y_ref);
                for (j, v) in y_ref.iter_mut().enumerate() {
                    *v = (*v + bias[(j / g.p_out()) % cout] + res[j]).max(0.0);
                }
                let epi = Epilogue {
                    bias: Some(&bias),
                    residual: Some(&res),
                    relu: true,
                };
                let widths: &[usize] = &[L];
                for &lanes in widths {
                    let plan =
                        Plan::new_lanes(g.cin, g.h, g.w, g.kh, g.kw, g.stride, g.pad, g.pad, lanes);
                    for &tile in fwd_tiles(isa, lanes) {
                        let mut y = vec![f32::NAN; n * g.out_img()];
                        conv_fwd_plan(isa, Some(tile), &plan, n, &x, &wt, cout, &epi, &mut y);
                        close(
                            &y,
                            &y_ref,
                            &format!("fwd {what} lanes {lanes} tile {tile:?}"),
                        );
                    }
                }

                let dy = rand(n * g.out_img(), i as u32 * 3 + 5);
                let mut dx_ref = vec![0.0; n * g.in_img()];
                gemm_path::conv_dx(&g, &dy, &wt, &mut dx_ref);
                let mut dx = vec![f32::NAN; n * g.in_img()];
                if dx_supported(&g) {
                    conv_dx(isa, &g, &dy, &wt, &mut dx);
                } else {
                    conv_dx_strided(isa, &g, &dy, &wt, &mut dx);
                }
                close(&dx, &dx_ref, &format!("dx {what}"));
                let mut dw_ref = vec![0.0; cout * g.k()];
                gemm_path::conv_dw(&g, &x, &dy, &mut dw_ref);
                let dw_tiles = match isa {
                    Isa::Avx2 => AVX2_DW_TILES,
                    Isa::Avx512 => AVX512_DW_TILES,
                };
                for &tile in dw_tiles {
                    let mut dw = vec![f32::NAN; cout * g.k()];
                    conv_dw_tile(isa, tile, &g, &x, &dy, &mut dw);
                    close(&dw, &dw_ref, &format!("dw {what} tile {tile:?}"));
                }
            }
        }
    }
}
