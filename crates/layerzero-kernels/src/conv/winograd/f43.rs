//! Winograd F(4×4, 3×3): each 4×4 block of outputs from a 6×6 block of inputs, with 36
//! multiplies per (input, output) channel pair instead of 144 (4× fewer, against F(2×2, 3×3)'s
//! 2.25×), and 36 transformed values per 16 outputs instead of 64, so V and M carry 44 % less
//! data through the cache as well.
//!
//! The weight gradient uses it too, through the transpose of the output transform on the
//! output gradient (A·dy·Aᵀ) and Gᵀ·dU·G on the sums, but only for planes of at least 8 tiles
//! per row (see `dw_tile_size`).
//!
//! Why it is not the only variant: its tiles are 4 outputs wide, so an 8×8 plane has 2 tiles
//! per row and fills a quarter of a vector; F(2×2, 3×3) keeps those planes.
//!
//! Rounding: the transform constants (4, 5, 2, 8 in Bᵀ and Aᵀ; sixths in G, applied once to
//! the weights in f64) enlarge the error a little: a few 1e-6 of the output's magnitude in the
//! tests (3e-6 at 16 channels on 32×32), inside their 1e-4.
//!
//! Layout, as in the parent module but with 4 column phases: padded column c of a row sits in
//! phase row c mod 4 at c div 4, so column k (0 … 5) of 8 consecutive tiles is one unaligned
//! load from phase row k mod 4 at offset k div 4. With 4 tiles per row (a 16-wide plane) a
//! vector takes two tile rows, lanes 0–3 and 4–7, like the parent's rows of 4 tiles.

use super::{Wino, L};

/// G of F(4×4, 3×3) (Lavin and Gray, 2016): the weight transform, 6 rows of 3 taps. Bᵀ and
/// Aᵀ appear as the 1-D transforms `bt`, `at` and `a` of the kernels below.
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `U[ξ][co][ci] = (G · w[co][ci] · Gᵀ)[ξ]`, computed in f64, packed for the GEMM tile as
/// `upack[ξ][cb][ci][c]` (the parent's layout with 36 points, by its `pack_weights`).
pub(super) fn transform_weights(w: &[f32], cout: usize, cin: usize, cob: usize) -> Vec<f32> {
    super::pack_weights::<36>(w, cout, cin, cob, |g| {
        // G·g: 6 rows of 3.
        let t: [[f64; 3]; 6] = std::array::from_fn(|i| {
            std::array::from_fn(|c| (0..3).map(|a| G[i][a] * f64::from(g[3 * a + c])).sum())
        });
        let mut u = [0.0f32; 36];
        for (i, r) in t.iter().enumerate() {
            for (j, gj) in G.iter().enumerate() {
                let v: f64 = (0..3).map(|c| r[c] * gj[c]).sum();
                u[i * 6 + j] = v as f32;
            }
        }
        u
    })
}

/// `dw[co][ci] = Gᵀ · dU[·][co][ci] · G` (the 36 sums of the weight gradient, in `du` as
/// `[ξ][co][ci]`) into `dw` (cout, cin, 3, 3), computed in f64, in parallel over the output
/// channels.
pub(super) fn weight_grad_from_sums(du: &[f32], cout: usize, cin: usize, dw: &mut [f32]) {
    super::for_each_kernel(dw, cin, |co, ci, out| {
        let u = |xi: usize| f64::from(du[(xi * cout + co) * cin + ci]);
        // Gᵀ along y: 3 rows of 6.
        let t: [[f64; 6]; 3] = std::array::from_fn(|a| {
            std::array::from_fn(|j| (0..6).map(|i| G[i][a] * u(6 * i + j)).sum())
        });
        for (a, r) in t.iter().enumerate() {
            for b in 0..3 {
                out[3 * a + b] = (0..6).map(|j| r[j] * G[j][b]).sum::<f64>() as f32;
            }
        }
    });
}

/// The per-instruction-set kernels: padded copy, input transform, output transform.
macro_rules! f43_kernels {
    ($m:ident, $feat:literal) => {
        pub(super) mod $m {
            #[cfg(target_arch = "x86_64")]
            use std::arch::x86_64::*;

            use super::super::$m::Store;
            use super::super::ImgEpi;
            use super::{Wino, L};

            /// Transposes the 4×4 blocks of the two 128-bit halves: row r of the result holds
            /// element r of each input's half, in input order.
            #[inline]
            #[target_feature(enable = $feat)]
            fn transpose4(a: __m256, b: __m256, c: __m256, d: __m256) -> [__m256; 4] {
                let t0 = _mm256_unpacklo_ps(a, b);
                let t1 = _mm256_unpackhi_ps(a, b);
                let t2 = _mm256_unpacklo_ps(c, d);
                let t3 = _mm256_unpackhi_ps(c, d);
                [
                    _mm256_shuffle_ps::<0b01_00_01_00>(t0, t2),
                    _mm256_shuffle_ps::<0b11_10_11_10>(t0, t2),
                    _mm256_shuffle_ps::<0b01_00_01_00>(t1, t3),
                    _mm256_shuffle_ps::<0b11_10_11_10>(t1, t3),
                ]
            }

            /// 32 consecutive floats (a, b, c, d) split by index mod 4: phase q holds
            /// `x[q]`, `x[q + 4]`, …, `x[q + 28]`.
            #[inline]
            #[target_feature(enable = $feat)]
            fn split4(a: __m256, b: __m256, c: __m256, d: __m256) -> [__m256; 4] {
                // After the transpose, phase q is [a_q b_q c_q d_q | a_q+4 b_q+4 c_q+4 d_q+4].
                let idx = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                let t = transpose4(a, b, c, d);
                [
                    _mm256_permutevar8x32_ps(t[0], idx),
                    _mm256_permutevar8x32_ps(t[1], idx),
                    _mm256_permutevar8x32_ps(t[2], idx),
                    _mm256_permutevar8x32_ps(t[3], idx),
                ]
            }

            /// The inverse of [`split4`]: 4 phases back into 32 consecutive floats.
            #[inline]
            #[target_feature(enable = $feat)]
            fn merge4(p: [__m256; 4]) -> [__m256; 4] {
                let idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
                transpose4(
                    _mm256_permutevar8x32_ps(p[0], idx),
                    _mm256_permutevar8x32_ps(p[1], idx),
                    _mm256_permutevar8x32_ps(p[2], idx),
                    _mm256_permutevar8x32_ps(p[3], idx),
                )
            }

            /// Bᵀ·d of 6 values: the input transform along one axis. The rows of Bᵀ:
            /// (4, 0, −5, 0, 1, 0), (0, −4, −4, 1, 1, 0), (0, 4, −4, −1, 1, 0),
            /// (0, −2, −1, 2, 1, 0), (0, 2, −1, −2, 1, 0), (0, 4, 0, −5, 0, 1).
            #[inline]
            #[target_feature(enable = $feat)]
            fn bt(d: [__m256; 6]) -> [__m256; 6] {
                let (four, five, two) = (
                    _mm256_set1_ps(4.0),
                    _mm256_set1_ps(5.0),
                    _mm256_set1_ps(2.0),
                );
                let s12 = _mm256_add_ps(d[1], d[2]);
                let s34 = _mm256_add_ps(d[3], d[4]);
                let m12 = _mm256_sub_ps(d[1], d[2]);
                let m43 = _mm256_sub_ps(d[4], d[3]);
                let m31 = _mm256_sub_ps(d[3], d[1]);
                let m42 = _mm256_sub_ps(d[4], d[2]);
                [
                    _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4])),
                    _mm256_fnmadd_ps(four, s12, s34),
                    _mm256_fmadd_ps(four, m12, m43),
                    _mm256_fmadd_ps(two, m31, m42),
                    _mm256_fnmadd_ps(two, m31, m42),
                    _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5])),
                ]
            }

            /// Aᵀ·m of 6 values: the output transform along one axis. The rows of Aᵀ:
            /// (1, 1, 1, 1, 1, 0), (0, 1, −1, 2, −2, 0), (0, 1, 1, 4, 4, 0), (0, 1, −1, 8, −8, 1).
            #[inline]
            #[target_feature(enable = $feat)]
            fn at(m: [__m256; 6]) -> [__m256; 4] {
                let a = _mm256_add_ps(m[1], m[2]);
                let b = _mm256_sub_ps(m[1], m[2]);
                let c = _mm256_add_ps(m[3], m[4]);
                let d = _mm256_sub_ps(m[3], m[4]);
                [
                    _mm256_add_ps(m[0], _mm256_add_ps(a, c)),
                    _mm256_fmadd_ps(_mm256_set1_ps(2.0), d, b),
                    _mm256_fmadd_ps(_mm256_set1_ps(4.0), c, a),
                    _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0), d, b), m[5]),
                ]
            }

            /// Copies channel `xc` (h × w) of one image into the padded, 4-phase buffer. Only
            /// the interior is written: the caller zeroes the buffer once per task, and every
            /// channel of a shape writes the same positions.
            ///
            /// # Safety
            /// CPU features as enabled; sizes are asserted.
            #[target_feature(enable = $feat)]
            pub(in super::super) unsafe fn fill(g: &Wino, xc: &[f32], buf: &mut [f32]) {
                let (h, w, rs) = (g.h, g.w, g.rs);
                assert!(g.m == 4 && xc.len() >= h * w && buf.len() >= g.plane_len());
                assert!(h + g.pad <= g.hp);
                // Offset of input phase q in a padded row, and its column count.
                let dst: [usize; 4] = std::array::from_fn(|q| {
                    let (ph, first) = g.column_slot(q);
                    assert!(first + (w + 3 - q) / 4 <= rs);
                    ph * rs + first
                });
                for iy in 0..h {
                    let row = &xc[iy * w..][..w];
                    let r = &mut buf[(iy + g.pad) * 4 * rs..][..4 * rs];
                    let full = w / 32;
                    for k in 0..full {
                        // SAFETY: 32·k + 32 ≤ w; the stores end at dst[q] + 8·k + 8, within
                        // phase q's w/4 columns (asserted).
                        unsafe {
                            let p = row.as_ptr().add(32 * k);
                            let ph = split4(
                                _mm256_loadu_ps(p),
                                _mm256_loadu_ps(p.add(8)),
                                _mm256_loadu_ps(p.add(16)),
                                _mm256_loadu_ps(p.add(24)),
                            );
                            for (q, v) in ph.iter().enumerate() {
                                _mm256_storeu_ps(r.as_mut_ptr().add(dst[q] + 8 * k), *v);
                            }
                        }
                    }
                    let mut done = 32 * full;
                    if w - done >= 2 * L {
                        // Half a block (the whole row of a 16-wide image): 4 per phase.
                        // SAFETY: done + 16 ≤ w; each phase gets 4 floats of its columns.
                        unsafe {
                            let p = row.as_ptr().add(done);
                            let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
                            for (q, v) in split4(a, b, a, b).iter().enumerate() {
                                _mm_storeu_ps(
                                    r.as_mut_ptr().add(dst[q] + 8 * full),
                                    _mm256_castps256_ps128(*v),
                                );
                            }
                        }
                        done += 2 * L;
                    }
                    for ix in done..w {
                        r[dst[ix % 4] + ix / 4] = row[ix];
                    }
                }
            }

            /// `V[ci][ξ][p0 + l]` (ξ = 6·i + j) for the 8 tiles of every vector of every tile row
            /// of one channel (already in `buf`). Writes run up to 7 floats past the row's last
            /// tile; later rows (and the slack) absorb them.
            ///
            /// # Safety
            /// CPU features as enabled; `v` must hold 36·cin·ps floats, `buf` the padded
            /// channel.
            #[target_feature(enable = $feat)]
            pub(in super::super) unsafe fn input_transform(
                g: &Wino,
                buf: &[f32],
                ci: usize,
                rows: (usize, usize),
                p_img: usize,
                v: &mut [f32],
            ) {
                assert!(g.m == 4 && g.xi == 36 && buf.len() >= g.plane_len());
                assert!(v.len() >= g.xi * g.cin * g.ps);
                assert!(rows.0 <= rows.1 && rows.1 <= g.nty);
                assert!(p_img + (rows.1 - rows.0) * g.ntx + L <= g.ps);
                let (rs, ps) = (g.rs, g.ps);
                let bp = buf.as_ptr();
                let vp = v.as_mut_ptr();
                let mut ty = rows.0;
                while ty < rows.1 {
                    // Rows of 4 tiles: one vector takes tile rows ty (lanes 0–3) and ty + 1
                    // (lanes 4–7), whose padded rows start 4 rows (16·rs floats) further.
                    let pair = g.ntx == L / 2 && ty + 1 < rows.1;
                    for vv in 0..g.vpr {
                        // Bᵀ along x of padded row 4·ty + r: the 6 columns of 8 tiles.
                        // SAFETY: row 4·ty + r (+ 4 for a pair) < hp = 4·nty + 2; column
                        // offsets vv·8 + 1 + 8 ≤ rs.
                        let ld = |p: *const f32| unsafe {
                            if pair {
                                _mm256_loadu2_m128(p.add(16 * rs), p)
                            } else {
                                _mm256_loadu_ps(p)
                            }
                        };
                        let mut t = [[_mm256_setzero_ps(); 6]; 6];
                        for (r, tr) in t.iter_mut().enumerate() {
                            // SAFETY: see above.
                            let e = unsafe { bp.add((4 * ty + r) * 4 * rs + vv * L) };
                            let ph = |q: usize| unsafe { e.add(q * rs) };
                            *tr = bt([
                                ld(ph(0)),
                                ld(ph(1)),
                                ld(ph(2)),
                                ld(ph(3)),
                                ld(unsafe { ph(0).add(1) }),
                                ld(unsafe { ph(1).add(1) }),
                            ]);
                        }
                        let p0 = p_img + (ty - rows.0) * g.ntx + vv * L;
                        // SAFETY: p0 + 8 ≤ ps (asserted); 36 ξ rows of channel ci.
                        let dst = unsafe { vp.add(ci * 36 * ps + p0) };
                        for j in 0..6 {
                            // Bᵀ along y.
                            let col = bt([t[0][j], t[1][j], t[2][j], t[3][j], t[4][j], t[5][j]]);
                            for (i, c) in col.iter().enumerate() {
                                // SAFETY: as above.
                                unsafe { _mm256_storeu_ps(dst.add((6 * i + j) * ps), *c) };
                            }
                        }
                    }
                    ty += if pair { 2 } else { 1 };
                }
            }

            /// A·d of 4 values: the output-gradient transform along one axis (the transpose of
            /// [`at`]).
            #[inline]
            #[target_feature(enable = $feat)]
            fn a(d: [__m256; 4]) -> [__m256; 6] {
                let s02 = _mm256_add_ps(d[0], d[2]);
                let s13 = _mm256_add_ps(d[1], d[3]);
                // d0 + 4·d2 and 2·d1 + 8·d3.
                let e = _mm256_fmadd_ps(_mm256_set1_ps(4.0), d[2], d[0]);
                let o = _mm256_mul_ps(
                    _mm256_set1_ps(2.0),
                    _mm256_fmadd_ps(_mm256_set1_ps(4.0), d[3], d[1]),
                );
                [
                    d[0],
                    _mm256_add_ps(s02, s13),
                    _mm256_sub_ps(s02, s13),
                    _mm256_add_ps(e, o),
                    _mm256_sub_ps(e, o),
                    d[3],
                ]
            }

            /// `dM[co][ξ] = (A·dy·Aᵀ)[ξ]` for the 4×4 output-gradient blocks of the 8 tiles of
            /// every vector of every tile row of channel `co` (the (ho, wo) plane `dyc`);
            /// outputs past the plane's edge count as zero. Like the input transform, writes
            /// run up to 7 floats past a row's last tile.
            ///
            /// # Safety
            /// CPU features as enabled; sizes are asserted.
            #[target_feature(enable = $feat)]
            pub(in super::super) unsafe fn dy_transform(
                g: &Wino,
                dyc: &[f32],
                co: usize,
                rows: (usize, usize),
                p_img: usize,
                m: &mut [f32],
            ) {
                let (ho, wo, ps) = (g.ho, g.wo, g.ps);
                assert!(g.m == 4 && dyc.len() >= ho * wo && m.len() >= 36 * g.cout * ps);
                assert!(rows.0 <= rows.1 && rows.1 <= g.nty);
                assert!(p_img + (rows.1 - rows.0) * g.ntx + L <= ps);
                // Columns 32·vv … 32·vv + 31 of output row `oy` (zeros past the plane), as
                // four vectors.
                let load = |oy: usize, vv: usize| -> [__m256; 4] {
                    let x0 = 4 * L * vv;
                    let mut t = [_mm256_setzero_ps(); 4];
                    if oy >= ho || x0 >= wo {
                        return t;
                    }
                    let row = &dyc[oy * wo..][..wo];
                    if x0 + 4 * L <= wo {
                        for (k, v) in t.iter_mut().enumerate() {
                            // SAFETY: 32 floats of the row, bounds-checked above.
                            *v = unsafe { _mm256_loadu_ps(row.as_ptr().add(x0 + k * L)) };
                        }
                    } else {
                        let mut buf = [0.0f32; 4 * L];
                        buf[..wo - x0].copy_from_slice(&row[x0..]);
                        for (k, v) in t.iter_mut().enumerate() {
                            // SAFETY: `buf` holds 32 floats.
                            *v = unsafe { _mm256_loadu_ps(buf.as_ptr().add(k * L)) };
                        }
                    }
                    t
                };
                let mp = m.as_mut_ptr();
                // The weight gradient takes F(4×4, 3×3) only for rows of at least 8 tiles
                // (`dw_tile_size`), so unlike the input transform this one has no paired
                // tile rows: narrower planes are still correct, with part-empty vectors.
                for ty in rows.0..rows.1 {
                    for vv in 0..g.vpr {
                        // d[r][k]: column k of the tiles' output row r.
                        let mut d = [[_mm256_setzero_ps(); 4]; 4];
                        for (r, dr) in d.iter_mut().enumerate() {
                            let t = load(4 * ty + r, vv);
                            *dr = split4(t[0], t[1], t[2], t[3]);
                        }
                        // A along y, for each column k.
                        let mut cols = [[_mm256_setzero_ps(); 6]; 4];
                        for (k, c) in cols.iter_mut().enumerate() {
                            *c = a([d[0][k], d[1][k], d[2][k], d[3][k]]);
                        }
                        let p0 = p_img + (ty - rows.0) * g.ntx + vv * L;
                        // SAFETY: p0 + 8 ≤ ps (asserted); the 36 ξ rows of channel co exist.
                        let dst = unsafe { mp.add(co * 36 * ps + p0) };
                        for i in 0..6 {
                            // A along x; ξ = 6·i + j.
                            let row = a([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
                            for (j, v) in row.iter().enumerate() {
                                // SAFETY: as above.
                                unsafe { _mm256_storeu_ps(dst.add((6 * i + j) * ps), *v) };
                            }
                        }
                    }
                }
            }

            /// Output transform of channel `co` of one image: y = epilogue(Aᵀ·M·A), the 4
            /// column phases merged back into the (ho, wo) plane `out`.
            ///
            /// # Safety
            /// CPU features as enabled; sizes are asserted.
            #[target_feature(enable = $feat)]
            pub(in super::super) unsafe fn output_transform(
                g: &Wino,
                m: &[f32],
                co: usize,
                rows: (usize, usize),
                p_img: usize,
                epi: &ImgEpi<'_>,
                out: &mut [f32],
            ) {
                let (ho, wo, ps) = (g.ho, g.wo, g.ps);
                assert!(g.m == 4 && rows.0 <= rows.1 && rows.1 <= g.nty);
                assert!(m.len() >= 36 * g.cout * ps && p_img + (rows.1 - rows.0) * g.ntx + L <= ps);
                assert!(out.len() >= ho * wo);
                let st = Store::new(epi, co, ho * wo);
                let mp = m.as_ptr();
                // Aᵀ·M·A for the 8 tiles at p0: for each of the 4 output rows of the tiles,
                // their 32 outputs in order.
                let tiles = |p0: usize| -> [[__m256; 4]; 4] {
                    // SAFETY: p0 + 8 ≤ ps; the 36 ξ rows of channel co exist.
                    let base = unsafe { mp.add(co * 36 * ps + p0) };
                    // Aᵀ along y for column j.
                    let mut cols = [[_mm256_setzero_ps(); 4]; 6];
                    for (j, c) in cols.iter_mut().enumerate() {
                        // SAFETY: see above.
                        let ld = |i: usize| unsafe { _mm256_loadu_ps(base.add((6 * i + j) * ps)) };
                        *c = at([ld(0), ld(1), ld(2), ld(3), ld(4), ld(5)]);
                    }
                    // Aᵀ along x, then the phases merged.
                    let mut rows4 = [[_mm256_setzero_ps(); 4]; 4];
                    for (a, r) in rows4.iter_mut().enumerate() {
                        let x = [
                            cols[0][a], cols[1][a], cols[2][a], cols[3][a], cols[4][a], cols[5][a],
                        ];
                        *r = merge4(at(x));
                    }
                    rows4
                };
                let mut ty = rows.0;
                while ty < rows.1 {
                    let p_row = p_img + (ty - rows.0) * g.ntx;
                    if g.ntx == L / 2 && wo == 4 * L / 2 && ty + 1 < rows.1 && 4 * ty + 7 < ho {
                        // Rows of 4 tiles (16-wide outputs): lanes 0–3 are tile row ty, 4–7
                        // tile row ty + 1; each merged half is a whole output row.
                        for (a, r) in tiles(p_row).iter().enumerate() {
                            for (half, oy) in [4 * ty + a, 4 * ty + 4 + a].into_iter().enumerate() {
                                // SAFETY: oy < ho, so oy·16 + 16 ≤ ho·wo.
                                unsafe {
                                    st.put(oy * wo, r[2 * half], out);
                                    st.put(oy * wo + L, r[2 * half + 1], out);
                                }
                            }
                        }
                        ty += 2;
                        continue;
                    }
                    for vv in 0..g.vpr {
                        let rs4 = tiles(p_row + vv * L);
                        let xs0 = 4 * L * vv;
                        for (a, r) in rs4.iter().enumerate() {
                            let oy = 4 * ty + a;
                            if oy >= ho {
                                break;
                            }
                            for (q, &yv) in r.iter().enumerate() {
                                let xs = xs0 + q * L;
                                if xs >= wo {
                                    break;
                                }
                                let o = oy * wo + xs;
                                if xs + L <= wo {
                                    // SAFETY: o + 8 ≤ ho·wo.
                                    unsafe { st.put(o, yv, out) };
                                } else {
                                    st.put_lanes(o, yv, wo - xs, out);
                                }
                            }
                        }
                    }
                    ty += 1;
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
f43_kernels!(avx2, "avx2,fma");
#[cfg(target_arch = "x86_64")]
f43_kernels!(avx512, "avx2,fma,avx512f,avx512vl");
