//! Winograd F(2×2, 3×3) convolution for 3×3, stride-1 layers: the forward pass and, through
//! the flipped kernel, the input gradient.
//!
//! Why: the direct kernel already runs at about three quarters of this machine's fp32 GEMM
//! peak, so the only way to make a 3×3 convolution much faster is to do fewer multiplies.
//! F(2×2, 3×3) computes each 2×2 block of outputs from a 4×4 block of inputs with 16
//! multiplies per (input, output) channel pair instead of 36 (2.25× fewer); the transforms
//! are only additions. Its rounding error is a few ulps larger than the direct sum's (no
//! constant other than ½ appears), far inside the 1e-4 the tests allow.
//!
//! Layout. With tiles of 2 output columns, tile `tx` reads padded columns 2·tx … 2·tx+3. Each
//! padded input row is stored split by column parity (like the direct kernel's stride
//! phases), so for 8 consecutive tiles the k-th column of each sits in 8 consecutive floats:
//! the input transform is 16 unaligned loads and 32 additions per 8 tiles and channel, all
//! vectorised. The transformed input V and the products M live in `[channel][ξ][tile]`
//! order (ξ = the 16 transform points), so the multiply is 16 independent GEMMs
//! M[ξ] = U[ξ] · V[ξ] (U: the transformed weights, Cout × Cin) over the tiles of a task,
//! with the same broadcast-and-FMA register tile as the direct kernel, and the output
//! transform of one channel reads 16 adjacent rows. It interleaves even and odd columns back
//! into NCHW rows and applies the epilogue (bias, residual, ReLU) before the only store.
//!
//! A task is a group of whole images, or one image cut into bands of tile rows, sized so that
//! V and M stay in the L2 cache; tasks depend only on the shape, so the result does not
//! depend on the number of threads.

use rayon::prelude::*;

use super::direct::{ImgEpi, Isa};
use super::Epilogue;
use crate::scratch::with_scratch;

/// f32 lanes per vector.
const L: usize = 8;
/// Transform points of F(2×2, 3×3): a 4×4 grid.
const XI: usize = 16;

/// Whether a convolution takes the Winograd path: 3×3, stride 1, padding below 3, and enough
/// channels on both sides for the transforms to pay for themselves. `LAYERZERO_WINOGRAD=0`
/// turns it off (the direct kernel then runs every convolution).
pub(crate) fn supported(
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var("LAYERZERO_WINOGRAD").is_ok_and(|v| v == "0")) {
        return false;
    }
    kh == 3 && kw == 3 && stride == 1 && pad <= 2 && cin >= MIN_CHANNELS && cout >= MIN_CHANNELS
}

/// Channel count below which the direct kernel is faster. Measured at batch 128 on the 2-core
/// Zen 4 VM (ms, direct → Winograd, forward): 16 channels at 32×32 3.16–3.26 → 3.18–3.65 (the
/// transforms cost as much as the multiplies they save), 32 at 16×16 2.90–2.96 → 2.28–2.66,
/// 64 at 8×8 2.86–2.97 → 2.45–2.64.
const MIN_CHANNELS: usize = 32;

/// Bytes of V + M one group may use: half of a 1 MiB L2.
const GROUP_BYTES: usize = 512 << 10;

/// Shape bookkeeping of one Winograd convolution.
#[derive(Debug, Clone, Copy)]
struct Wino {
    cin: usize,
    h: usize,
    w: usize,
    pad: usize,
    cout: usize,
    ho: usize,
    wo: usize,
    /// Tile rows and columns (2×2 outputs each; the last ones may hang over an odd edge).
    nty: usize,
    ntx: usize,
    /// 8-tile vectors per tile row.
    vpr: usize,
    /// Floats per parity row of the padded buffer.
    rs: usize,
    /// Padded rows the tiles read.
    hp: usize,
    /// Images per group (1 when an image is split into bands).
    group: usize,
    /// Tile rows per band: `nty` unless one image's V and M would overflow the cache budget
    /// (then `group` is 1).
    band: usize,
    /// Floats per (ξ, channel) row of V and M: the group's tiles, rounded up, plus slack for
    /// the vector stores that run past the end of a tile row.
    ps: usize,
}

impl Wino {
    fn new(cin: usize, h: usize, w: usize, pad: usize, cout: usize, n: usize) -> Self {
        let (ho, wo) = (h + 2 * pad - 2, w + 2 * pad - 2);
        let (nty, ntx) = (ho.div_ceil(2), wo.div_ceil(2));
        let vpr = ntx.div_ceil(L);
        let tiles = nty * ntx;
        let per_tile_bytes = XI * (cin + cout) * 4;
        let group = (GROUP_BYTES / (per_tile_bytes * tiles)).clamp(1, n.max(1));
        // An image too large for the budget is cut into bands of tile rows instead.
        let band = if per_tile_bytes * tiles > GROUP_BYTES {
            (GROUP_BYTES / (per_tile_bytes * ntx)).clamp(1, nty)
        } else {
            nty
        };
        let p = if band < nty {
            band * ntx
        } else {
            group * tiles
        };
        let ps = p.next_multiple_of(L * NV_MAX) + L * NV_MAX;
        Self {
            cin,
            h,
            w,
            pad,
            cout,
            ho,
            wo,
            nty,
            ntx,
            vpr,
            rs: vpr * L + 1,
            hp: 2 * nty + 2,
            group,
            band,
            ps,
        }
    }

    /// Floats of one padded channel.
    fn plane_len(&self) -> usize {
        self.hp * 2 * self.rs
    }

    /// Where the even- and odd-indexed input columns go: (parity row, first column).
    fn column_slots(&self) -> ((usize, usize), (usize, usize)) {
        let p = self.pad;
        ((p % 2, p / 2), ((p + 1) % 2, p.div_ceil(2)))
    }
}

/// Largest NV of the compiled GEMM tiles (sizes the slack of V and M).
const NV_MAX: usize = 4;

/// U[ξ][co][ci] = (G · w[co][ci] · Gᵀ)[ξ] packed for the GEMM tile: upack[ξ][cb][ci][c].
fn transform_weights(w: &[f32], cout: usize, cin: usize, cob: usize) -> Vec<f32> {
    let nblk = cout.div_ceil(cob);
    let mut u = vec![0.0f32; XI * nblk * cin * cob];
    for co in 0..cout {
        for ci in 0..cin {
            let g = &w[(co * cin + ci) * 9..][..9];
            // G·g: 4 rows of 3.
            let mut t = [[0.0f32; 3]; 4];
            for c in 0..3 {
                let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
                t[0][c] = g0;
                t[1][c] = 0.5 * (g0 + g1 + g2);
                t[2][c] = 0.5 * (g0 - g1 + g2);
                t[3][c] = g2;
            }
            for (i, r) in t.iter().enumerate() {
                let row = [
                    r[0],
                    0.5 * (r[0] + r[1] + r[2]),
                    0.5 * (r[0] - r[1] + r[2]),
                    r[2],
                ];
                for (j, &v) in row.iter().enumerate() {
                    let xi = i * 4 + j;
                    let (cb, c) = (co / cob, co % cob);
                    u[((xi * nblk + cb) * cin + ci) * cob + c] = v;
                }
            }
        }
    }
    u
}

/// The per-instruction-set kernels: input transform, GEMM, output transform.
macro_rules! wino_kernels {
    ($m:ident, $feat:literal) => {
        mod $m {
            #[cfg(target_arch = "x86_64")]
            use std::arch::x86_64::*;

            use super::{ImgEpi, Wino, L, XI};

            /// Copies channel `xc` (h × w) of one image into the padded, parity-split buffer.
            /// Only the interior is written: the caller zeroes the buffer once per task, and
            /// every channel of a shape writes the same positions.
            ///
            /// # Safety
            /// CPU features as enabled; sizes are asserted.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn fill(g: &Wino, xc: &[f32], buf: &mut [f32]) {
                let (h, w, rs) = (g.h, g.w, g.rs);
                assert!(xc.len() >= h * w && buf.len() >= g.plane_len());
                let ((pe, qe), (po, qo)) = g.column_slots();
                let (ne, no) = (w.div_ceil(2), w / 2);
                assert!(qe + ne <= rs && qo + no <= rs && h + g.pad <= g.hp);
                for iy in 0..h {
                    let row = &xc[iy * w..][..w];
                    let r = &mut buf[(iy + g.pad) * 2 * rs..][..2 * rs];
                    let (de, dof) = (pe * rs + qe, po * rs + qo);
                    let full = w / 16;
                    for k in 0..full {
                        // SAFETY: 16·k + 16 ≤ w; the stores end at 8·k + 8 ≤ ne, no.
                        unsafe {
                            let a = _mm256_loadu_ps(row.as_ptr().add(16 * k));
                            let b = _mm256_loadu_ps(row.as_ptr().add(16 * k + 8));
                            // [a0 a2 b0 b2 | a4 a6 b4 b6] → [a0 a2 a4 a6 b0 b2 b4 b6]
                            let ev = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                            let od = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                            let ev = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                                _mm256_castps_pd(ev),
                            ));
                            let od = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                                _mm256_castps_pd(od),
                            ));
                            _mm256_storeu_ps(r.as_mut_ptr().add(de + 8 * k), ev);
                            _mm256_storeu_ps(r.as_mut_ptr().add(dof + 8 * k), od);
                        }
                    }
                    for ix in 16 * full..w {
                        let d = if ix % 2 == 0 {
                            de + ix / 2
                        } else {
                            dof + ix / 2
                        };
                        r[d] = row[ix];
                    }
                }
            }

            /// V[ξ][ci][p0 + l] for the 8 tiles of every vector of every tile row of one
            /// channel (already in `buf`). Writes run up to 7 floats past the row's last
            /// tile; later rows (and the slack) absorb them.
            ///
            /// # Safety
            /// CPU features as enabled; `v` must hold XI·cin·ps floats, `buf` the padded
            /// channel.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn input_transform(
                g: &Wino,
                buf: &[f32],
                ci: usize,
                rows: (usize, usize),
                p_img: usize,
                v: &mut [f32],
            ) {
                assert!(buf.len() >= g.plane_len());
                assert!(v.len() >= XI * g.cin * g.ps);
                assert!(rows.0 <= rows.1 && rows.1 <= g.nty);
                assert!(p_img + (rows.1 - rows.0) * g.ntx + L <= g.ps);
                let rs = g.rs;
                let bp = buf.as_ptr();
                let vp = v.as_mut_ptr();
                for ty in rows.0..rows.1 {
                    for vv in 0..g.vpr {
                        // Row transform (Bᵀ along x) of padded row 2·ty + r: the 4 columns of
                        // 8 tiles, from the even and odd parity rows.
                        // SAFETY: row 2·ty + r < hp; columns vv·8 + 9 ≤ rs.
                        let row = |r: usize| unsafe {
                            let e = bp.add((2 * ty + r) * 2 * rs + vv * L);
                            let o = e.add(rs);
                            let (d0, d1) = (_mm256_loadu_ps(e), _mm256_loadu_ps(o));
                            let (d2, d3) = (_mm256_loadu_ps(e.add(1)), _mm256_loadu_ps(o.add(1)));
                            [
                                _mm256_sub_ps(d0, d2),
                                _mm256_add_ps(d1, d2),
                                _mm256_sub_ps(d2, d1),
                                _mm256_sub_ps(d1, d3),
                            ]
                        };
                        let (t0, t1, t2, t3) = (row(0), row(1), row(2), row(3));
                        let p0 = p_img + (ty - rows.0) * g.ntx + vv * L;
                        // SAFETY: p0 + 8 ≤ p_img + band tiles + 8 ≤ ps (asserted).
                        let dst = unsafe { vp.add(ci * XI * g.ps + p0) };
                        let ps = g.ps;
                        for j in 0..4 {
                            // Column transform (Bᵀ along y); ξ = 4·i + j.
                            // SAFETY: ξ < 16 rows of channel ci.
                            unsafe {
                                _mm256_storeu_ps(dst.add(j * ps), _mm256_sub_ps(t0[j], t2[j]));
                                _mm256_storeu_ps(
                                    dst.add((4 + j) * ps),
                                    _mm256_add_ps(t1[j], t2[j]),
                                );
                                _mm256_storeu_ps(
                                    dst.add((8 + j) * ps),
                                    _mm256_sub_ps(t2[j], t1[j]),
                                );
                                _mm256_storeu_ps(
                                    dst.add((12 + j) * ps),
                                    _mm256_sub_ps(t1[j], t3[j]),
                                );
                            }
                        }
                    }
                }
            }

            /// M[ξ] = U[ξ] · V[ξ] for `nvec` vectors of tiles (rounded up to NV).
            ///
            /// # Safety
            /// CPU features as enabled; sizes are asserted.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn gemm<const COB: usize, const NV: usize>(
                g: &Wino,
                upack: &[f32],
                v: &[f32],
                nvec: usize,
                m: &mut [f32],
            ) {
                let (cin, cout, ps) = (g.cin, g.cout, g.ps);
                let nblk = cout.div_ceil(COB);
                assert!(upack.len() >= XI * nblk * cin * COB);
                assert!(v.len() >= XI * cin * ps && m.len() >= XI * cout * ps);
                assert!(nvec.next_multiple_of(NV) * L <= ps);
                for xi in 0..XI {
                    let vx = v[xi * ps..].as_ptr();
                    let mx = m[xi * ps..].as_mut_ptr();
                    let ux = &upack[xi * nblk * cin * COB..];
                    let mut pv = 0;
                    while pv < nvec {
                        for cb in 0..nblk {
                            let mut acc = [[_mm256_setzero_ps(); NV]; COB];
                            let mut up = ux[cb * cin * COB..].as_ptr();
                            for ci in 0..cin {
                                let mut xv = [_mm256_setzero_ps(); NV];
                                for (k, x) in xv.iter_mut().enumerate() {
                                    // SAFETY: (pv + k)·8 + 8 ≤ ps (asserted).
                                    *x = unsafe {
                                        _mm256_loadu_ps(vx.add(ci * XI * ps + (pv + k) * L))
                                    };
                                }
                                for row in acc.iter_mut() {
                                    // SAFETY: up walks this block's cin·COB weights.
                                    let wc = unsafe { _mm256_set1_ps(*up) };
                                    up = unsafe { up.add(1) };
                                    for (a, x) in row.iter_mut().zip(&xv) {
                                        *a = _mm256_fmadd_ps(wc, *x, *a);
                                    }
                                }
                            }
                            for (c, row) in acc.iter().enumerate() {
                                let co = cb * COB + c;
                                if co >= cout {
                                    break;
                                }
                                for (k, a) in row.iter().enumerate() {
                                    // SAFETY: as for the loads.
                                    unsafe {
                                        _mm256_storeu_ps(mx.add(co * XI * ps + (pv + k) * L), *a)
                                    };
                                }
                            }
                        }
                        pv += NV;
                    }
                }
            }

            /// Output transform of channel `co` of one image: y = epilogue(Aᵀ·M·A), rows
            /// interleaved back from tiles into the (ho, wo) plane `out`.
            ///
            /// # Safety
            /// CPU features as enabled; sizes are asserted.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn output_transform(
                g: &Wino,
                m: &[f32],
                co: usize,
                rows: (usize, usize),
                p_img: usize,
                epi: &ImgEpi<'_>,
                out: &mut [f32],
            ) {
                let (ho, wo, ps) = (g.ho, g.wo, g.ps);
                assert!(rows.0 <= rows.1 && rows.1 <= g.nty);
                assert!(m.len() >= XI * g.cout * ps && p_img + (rows.1 - rows.0) * g.ntx + L <= ps);
                assert!(out.len() >= ho * wo);
                let plane = ho * wo;
                let res = epi.residual.map(|r| &r[co * plane..][..plane]);
                let b = epi.bias.map_or(0.0, |b| b[co]);
                let bv = _mm256_set1_ps(b);
                let zero = _mm256_setzero_ps();
                let mp = m.as_ptr();
                let ps = g.ps;
                for ty in rows.0..rows.1 {
                    for vv in 0..g.vpr {
                        let p0 = p_img + (ty - rows.0) * g.ntx + vv * L;
                        // SAFETY: p0 + 8 ≤ ps; the 16 ξ rows of channel co exist.
                        let base = unsafe { mp.add(co * XI * ps + p0) };
                        // Aᵀ along y for column j: (m0 + m1 + m2, m1 − m2 − m3).
                        let col = |j: usize| unsafe {
                            let m0 = _mm256_loadu_ps(base.add(j * ps));
                            let m1 = _mm256_loadu_ps(base.add((4 + j) * ps));
                            let m2 = _mm256_loadu_ps(base.add((8 + j) * ps));
                            let m3 = _mm256_loadu_ps(base.add((12 + j) * ps));
                            (
                                _mm256_add_ps(m0, _mm256_add_ps(m1, m2)),
                                _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3),
                            )
                        };
                        let (c0, c1, c2, c3) = (col(0), col(1), col(2), col(3));
                        // Aᵀ along x: even and odd output columns of rows 2·ty and 2·ty + 1.
                        let rows = [
                            (
                                _mm256_add_ps(c0.0, _mm256_add_ps(c1.0, c2.0)),
                                _mm256_sub_ps(_mm256_sub_ps(c1.0, c2.0), c3.0),
                            ),
                            (
                                _mm256_add_ps(c0.1, _mm256_add_ps(c1.1, c2.1)),
                                _mm256_sub_ps(_mm256_sub_ps(c1.1, c2.1), c3.1),
                            ),
                        ];
                        for (a, &(even, odd)) in rows.iter().enumerate() {
                            let oy = 2 * ty + a;
                            if oy >= ho {
                                break;
                            }
                            let lo = _mm256_unpacklo_ps(even, odd);
                            let hi = _mm256_unpackhi_ps(even, odd);
                            let halves = [
                                _mm256_permute2f128_ps::<0x20>(lo, hi),
                                _mm256_permute2f128_ps::<0x31>(lo, hi),
                            ];
                            for (half, &yv) in halves.iter().enumerate() {
                                let xs = 2 * vv * L + half * L;
                                if xs >= wo {
                                    break;
                                }
                                let o = oy * wo + xs;
                                let mut yv = _mm256_add_ps(yv, bv);
                                if xs + L <= wo {
                                    if let Some(r) = res {
                                        let r = &r[o..o + L];
                                        // SAFETY: bounds-checked slice of 8 floats.
                                        yv = _mm256_add_ps(yv, unsafe {
                                            _mm256_loadu_ps(r.as_ptr())
                                        });
                                    }
                                    if epi.relu {
                                        yv = _mm256_max_ps(yv, zero);
                                    }
                                    let dst = &mut out[o..o + L];
                                    // SAFETY: bounds-checked slice of 8 floats.
                                    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), yv) };
                                } else {
                                    let n = wo - xs;
                                    let mut lanes = [0.0f32; L];
                                    // SAFETY: `lanes` holds 8 floats.
                                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), yv) };
                                    for (l, &v) in lanes[..n].iter().enumerate() {
                                        let y = v + res.map_or(0.0, |r| r[o + l]);
                                        out[o + l] = if epi.relu { y.max(0.0) } else { y };
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
wino_kernels!(avx2, "avx2,fma");
#[cfg(target_arch = "x86_64")]
wino_kernels!(avx512, "avx2,fma,avx512f,avx512vl");

/// Calls the kernel `$f` of the instruction set `$isa` (from `detect_isa`, which checked the
/// CPU features at run time; the kernels assert their buffer sizes).
macro_rules! on_isa {
    ($isa:expr, $f:ident($($a:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see above.
        unsafe {
            match $isa {
                Isa::Avx2 => avx2::$f($($a),*),
                Isa::Avx512 => avx512::$f($($a),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = ($isa, $($a),*);
    }};
}

/// GEMM register tiles (COB output channels, NV vectors of 8 tiles) compiled per instruction
/// set, the default first. `LAYERZERO_WINO_TILE=COBxNV` picks another (for tuning).
const AVX2_TILES: &[(usize, usize)] = &[(3, 4), (4, 3), (2, 4)];
const AVX512_TILES: &[(usize, usize)] = &[(4, 4), (6, 4), (8, 3), (4, 3), (8, 2)];

/// The GEMM register tile for an instruction set.
fn gemm_tile(isa: Isa) -> (usize, usize) {
    let compiled: &[(usize, usize)] = match isa {
        Isa::Avx2 => AVX2_TILES,
        Isa::Avx512 => AVX512_TILES,
    };
    static FORCED: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| {
        let s = std::env::var("LAYERZERO_WINO_TILE").ok()?;
        let (a, b) = s.split_once('x')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    });
    forced
        .filter(|t| compiled.contains(t))
        .unwrap_or(compiled[0])
}

/// Stride-1 3×3 convolution of `n` images x (cin, h, w) with w (cout, cin, 3, 3) and zero
/// padding `pad`, through F(2×2, 3×3); y (cout, h + 2·pad − 2, w + 2·pad − 2) is fully
/// overwritten with `epilogue(conv)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_fwd(
    isa: Isa,
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    pad: usize,
    x: &[f32],
    wt: &[f32],
    cout: usize,
    epi: &Epilogue<'_>,
    y: &mut [f32],
) {
    let g = Wino::new(cin, h, w, pad, cout, n);
    let tile = gemm_tile(isa);
    let upack = transform_weights(wt, cout, cin, tile.0);
    let in_img = cin * h * w;
    let out_img = cout * g.ho * g.wo;
    if n == 0 || out_img == 0 {
        return;
    }
    let plane = g.ho * g.wo;
    let bands: Vec<(usize, usize)> = (0..g.nty)
        .step_by(g.band)
        .map(|t0| (t0, (t0 + g.band).min(g.nty)))
        .collect();
    y.par_chunks_mut(out_img * g.group)
        .zip(x.par_chunks(in_img * g.group))
        .enumerate()
        .for_each(|(t, (ys, xs))| {
            with_scratch(0, XI * cin * g.ps, |v| {
                with_scratch(1, XI * cout * g.ps, |m| {
                    with_scratch(2, cin * g.plane_len(), |buf| {
                        buf.fill(0.0);
                        for (b, &rows) in bands.iter().enumerate() {
                            let band_tiles = (rows.1 - rows.0) * g.ntx;
                            for (gi, xi) in xs.chunks_exact(in_img).enumerate() {
                                for (ci, pl) in buf.chunks_exact_mut(g.plane_len()).enumerate() {
                                    // Padded once per image: several bands mean one image.
                                    if b == 0 {
                                        on_isa!(isa, fill(&g, &xi[ci * h * w..][..h * w], pl));
                                    }
                                    let p_img = gi * band_tiles;
                                    on_isa!(isa, input_transform(&g, pl, ci, rows, p_img, v));
                                }
                            }
                            let nvec = (ys.len() / out_img * band_tiles).div_ceil(L);
                            gemm(isa, tile, &g, &upack, v, nvec, m);
                            for (gi, yi) in ys.chunks_exact_mut(out_img).enumerate() {
                                let epi = epi.image(t * g.group + gi, out_img);
                                let p_img = gi * band_tiles;
                                for (co, out) in yi.chunks_exact_mut(plane).enumerate() {
                                    on_isa!(
                                        isa,
                                        output_transform(&g, m, co, rows, p_img, &epi, out)
                                    );
                                }
                            }
                        }
                    })
                })
            });
        });
}

fn gemm(
    isa: Isa,
    tile: (usize, usize),
    g: &Wino,
    upack: &[f32],
    v: &[f32],
    nvec: usize,
    m: &mut [f32],
) {
    macro_rules! go {
        ($m:ident, $(($c:literal, $v:literal)),*) => {
            match tile {
                // SAFETY: as in `input_transform`.
                $( ($c, $v) => unsafe { $m::gemm::<$c, $v>(g, upack, v, nvec, m) }, )*
                _ => unreachable!("Winograd tile {tile:?} not compiled"),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx2 => go!(avx2, (3, 4), (4, 3), (2, 4)),
        Isa::Avx512 => go!(avx512, (4, 4), (6, 4), (8, 3), (4, 3), (8, 2)),
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (isa, tile, g, upack, v, nvec, m);
}
