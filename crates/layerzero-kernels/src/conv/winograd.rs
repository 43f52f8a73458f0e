//! Winograd F(2×2, 3×3) convolution for 3×3, stride-1 layers: the forward pass, through the
//! flipped kernel the input gradient, and the weight gradient. Planes at least 13 wide take
//! F(4×4, 3×3) for the forward pass and input gradient instead, and planes at least 29 wide
//! for the weight gradient ([`f43`]), with the same GEMM and task layout.
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
//! `M[ξ] = U[ξ] · V[ξ]` (U: the transformed weights, Cout × Cin) over the tiles of a task,
//! with the same broadcast-and-FMA register tile as the direct kernel, and the output
//! transform of one channel reads 16 adjacent rows. It interleaves even and odd columns back
//! into NCHW rows and applies the epilogue (bias, residual, ReLU) before the only store.
//!
//! A task is a group of whole images, or one image cut into bands of tile rows, sized so that
//! V and M stay in the L2 cache; tasks depend only on the shape, so the result does not
//! depend on the number of threads.
//!
//! Weight gradient. Differentiating y = Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A gives, summed over tiles,
//! dg = Gᵀ·[Σ (A·dy·Aᵀ) ⊙ (Bᵀ·d·B)]·G: the same input transform V, a transform of each 2×2
//! block of the output gradient into dM (additions only), and 16 GEMMs
//! `dU[ξ] = dM[ξ] · V[ξ]ᵀ` that reduce over the tiles (a register tile of output × input
//! channels, 8 tiles per lane, summed across lanes once per group). There is no output
//! transform, which is why it pays from 16 channels on. Groups are larger than the forward
//! pass's (its GEMM walks one ξ at a time, so only a sixteenth of V and dM must stay in L2),
//! and the images are split into a fixed number of tasks whose partial sums are added in
//! order, so again the thread count does not change the result.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::direct::{env_pair, ImgEpi, Isa};
use super::Epilogue;
use crate::geom::ConvGeom;
use crate::scratch::with_scratch;

mod f43;

/// f32 lanes per vector.
const L: usize = 8;
/// Transform points of F(2×2, 3×3): a 4×4 grid.
const XI: usize = 16;

/// Which computation of a convolution asks for the Winograd path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// The forward pass.
    Forward,
    /// The input gradient: the forward pass of the flipped kernel over the output gradient,
    /// with the channel counts swapped and the input's width as its output width.
    InputGrad,
    /// The weight gradient ([`conv_dw`]).
    WeightGrad,
}

/// Whether a pass of the convolution `g` takes the Winograd path: 3×3, stride 1, padding
/// below 3, and enough channels on both sides for the transforms to pay for themselves, a
/// threshold that depends on the variant (F(2×2, 3×3) or, for outputs at least 13 wide in the
/// forward pass and input gradient, F(4×4, 3×3)). `LAYERZERO_WINOGRAD=0` turns it off (the
/// direct kernel then runs every convolution).
pub(crate) fn supported(pass: Pass, g: &ConvGeom) -> bool {
    let (cin, cout, min) = match pass {
        Pass::Forward => (g.cin, g.cout, fwd_min_channels(g.wo)),
        Pass::InputGrad => (g.cout, g.cin, fwd_min_channels(g.w)),
        Pass::WeightGrad => (g.cin, g.cout, MIN_DW_CHANNELS),
    };
    eligible(g.kh, g.kw, g.stride, g.pad) && cin >= min && cout >= min
}

/// The forward pass's channel threshold for an output width `wo`.
fn fwd_min_channels(wo: usize) -> usize {
    if fwd_tile_size(wo) == 4 {
        MIN_F43_CHANNELS
    } else {
        MIN_CHANNELS
    }
}

/// Outputs per tile side of the forward pass (and input gradient) for an output width `wo`:
/// 4 (F(4×4, 3×3)) when a row has at least 4 tiles of 4, so that a vector of 8 tiles is at
/// least half full before pairing tile rows; else 2. `LAYERZERO_WINO_F43=0` keeps 2.
fn fwd_tile_size(wo: usize) -> usize {
    if f43_enabled() && wo >= 13 {
        4
    } else {
        2
    }
}

/// The same for the weight gradient: 4 only from 8 tiles of 4 per row (outputs at least 29
/// wide). Its GEMM reduces over the tiles and ends each register tile with horizontal sums,
/// so it needs many tiles per group; with F(4×4, 3×3)'s 36 points and a quarter of the
/// tiles, 16×16 planes have too few. Measured (dw, batch 128, 2 threads, ms, F(2×2, 3×3) →
/// F(4×4, 3×3), four alternating runs): 16 channels at 32×32 3.5–4.5 → 2.5–2.7; 32 channels
/// at 16×16 2.5–2.8 → 2.7–4.6.
fn dw_tile_size(wo: usize) -> usize {
    if f43_enabled() && wo >= 29 {
        4
    } else {
        2
    }
}

/// False when `LAYERZERO_WINO_F43=0` (read once) keeps every pass on F(2×2, 3×3).
fn f43_enabled() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    !*OFF.get_or_init(|| std::env::var("LAYERZERO_WINO_F43").is_ok_and(|v| v == "0"))
}

fn eligible(kh: usize, kw: usize, stride: usize, pad: usize) -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    if *OFF.get_or_init(|| std::env::var("LAYERZERO_WINOGRAD").is_ok_and(|v| v == "0")) {
        return false;
    }
    kh == 3 && kw == 3 && stride == 1 && pad <= 2
}

/// Channel count below which the direct kernel is faster than F(2×2, 3×3). Measured at batch
/// 128 on the 2-core Zen 4 VM (ms, direct → Winograd, forward): 16 channels at 32×32
/// 3.16–3.26 → 3.18–3.65 (the transforms cost as much as the multiplies they save), 32 at
/// 16×16 2.90–2.96 → 2.28–2.66, 64 at 8×8 2.86–2.97 → 2.45–2.64.
const MIN_CHANNELS: usize = 32;

/// The same threshold for F(4×4, 3×3), whose transforms carry 44 % less data per output.
/// Measured like [`MIN_CHANNELS`] (eval conv + bias + ReLU, 2 threads, three alternating runs):
/// 16 channels at 32×32, direct 3.29–4.02 → 2.32–2.51; 32 at 16×16, F(2×2, 3×3) 2.68–2.77 →
/// F(4×4, 3×3) 1.92–2.01.
const MIN_F43_CHANNELS: usize = 16;

/// The same threshold for the weight gradient.
const MIN_DW_CHANNELS: usize = 16;

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
    /// Outputs per tile side: 2 for F(2×2, 3×3), 4 for F(4×4, 3×3) ([`f43`]).
    m: usize,
    /// Transform points per tile, (m + 2)²: the rows of V and M per channel.
    xi: usize,
    /// Tile rows and columns (m×m outputs each; the last ones may hang over the edge).
    nty: usize,
    ntx: usize,
    /// 8-tile vectors per tile row.
    vpr: usize,
    /// Floats per phase row of the padded buffer (m phase rows per padded row).
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
    /// The bookkeeping of one convolution with m×m output tiles whose V + M per group may
    /// use `budget` bytes.
    #[allow(clippy::too_many_arguments)]
    fn new(
        m: usize,
        cin: usize,
        h: usize,
        w: usize,
        pad: usize,
        cout: usize,
        n: usize,
        budget: usize,
    ) -> Self {
        let (ho, wo) = (h + 2 * pad - 2, w + 2 * pad - 2);
        let (nty, ntx) = (ho.div_ceil(m), wo.div_ceil(m));
        let vpr = ntx.div_ceil(L);
        let tiles = nty * ntx;
        let xi = (m + 2) * (m + 2);
        let per_tile_bytes = xi * (cin + cout) * 4;
        let group = (budget / (per_tile_bytes * tiles)).clamp(1, n.max(1));
        // An image too large for the budget is cut into bands of tile rows instead.
        let band = if per_tile_bytes * tiles > budget {
            (budget / (per_tile_bytes * ntx)).clamp(1, nty)
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
            m,
            xi,
            nty,
            ntx,
            vpr,
            rs: vpr * L + 1,
            hp: m * nty + 2,
            group,
            band,
            ps,
        }
    }

    /// The bands of tile rows, as (first, end) pairs: one band unless an image is cut up.
    fn bands(&self) -> Vec<(usize, usize)> {
        (0..self.nty)
            .step_by(self.band)
            .map(|t0| (t0, (t0 + self.band).min(self.nty)))
            .collect()
    }

    /// Floats of one padded channel.
    fn plane_len(&self) -> usize {
        self.hp * self.m * self.rs
    }

    /// Where the input columns ≡ q (mod m) go: (phase row, first column). Input column x is
    /// padded column x + pad, which sits in phase row (x + pad) mod m at (x + pad) div m.
    fn column_slot(&self, q: usize) -> (usize, usize) {
        ((q + self.pad) % self.m, (q + self.pad) / self.m)
    }

    /// [`column_slot`](Self::column_slot) of the even and odd input columns (m = 2).
    fn column_slots(&self) -> ((usize, usize), (usize, usize)) {
        debug_assert_eq!(self.m, 2);
        (self.column_slot(0), self.column_slot(1))
    }
}

/// Largest NV of the compiled GEMM tiles (sizes the slack of V and M).
const NV_MAX: usize = 4;

/// `U[ξ][co][ci] = (G · w[co][ci] · Gᵀ)[ξ]` packed for the GEMM tile: `upack[ξ][cb][ci][c]`.
fn transform_weights(w: &[f32], cout: usize, cin: usize, cob: usize) -> Vec<f32> {
    pack_weights::<XI>(w, cout, cin, cob, |g| {
        // G·g: 4 rows of 3.
        let mut t = [[0.0f32; 3]; 4];
        for c in 0..3 {
            let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
            t[0][c] = g0;
            t[1][c] = 0.5 * (g0 + g1 + g2);
            t[2][c] = 0.5 * (g0 - g1 + g2);
            t[3][c] = g2;
        }
        let mut u = [0.0f32; XI];
        for (i, r) in t.iter().enumerate() {
            let row = [
                r[0],
                0.5 * (r[0] + r[1] + r[2]),
                0.5 * (r[0] - r[1] + r[2]),
                r[2],
            ];
            u[i * 4..][..4].copy_from_slice(&row);
        }
        u
    })
}

/// The transformed kernels `U[ξ][co][ci] = transform(w[co][ci])[ξ]` (`transform` takes the 9
/// taps of one 3×3 kernel) packed for a GEMM tile of `cob` output channels as
/// `upack[ξ][cb][ci][c]`, co = cb·cob + c, with zeros for the channels past `cout` in the last
/// block.
///
/// The transforms run in parallel over the output channels, then the packing in parallel over
/// ξ: run on the calling thread alone, they were the longest stretch of a training step with
/// only one core busy (each convolution transforms its kernel twice a step, for the forward
/// pass and the input gradient). Each value is computed by the same code either way.
pub(super) fn pack_weights<const N: usize>(
    w: &[f32],
    cout: usize,
    cin: usize,
    cob: usize,
    transform: impl Fn(&[f32]) -> [f32; N] + Sync,
) -> Vec<f32> {
    let nblk = cout.div_ceil(cob);
    let mut per_kernel = vec![[0.0f32; N]; cout * cin];
    if cin > 0 {
        per_kernel
            .par_chunks_mut(cin)
            .zip(w.par_chunks(cin * 9))
            .for_each(|(out, wc)| {
                for (u, g) in out.iter_mut().zip(wc.chunks_exact(9)) {
                    *u = transform(g);
                }
            });
    }
    let mut u = vec![0.0f32; N * nblk * cin * cob];
    if !u.is_empty() {
        u.par_chunks_mut(nblk * cin * cob)
            .enumerate()
            .for_each(|(xi, ux)| {
                for co in 0..cout {
                    let (cb, c) = (co / cob, co % cob);
                    for ci in 0..cin {
                        ux[(cb * cin + ci) * cob + c] = per_kernel[co * cin + ci][xi];
                    }
                }
            });
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
                assert!(g.m == 2 && xc.len() >= h * w && buf.len() >= g.plane_len());
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
                            let (ev, od) = deinterleave(a, b);
                            _mm256_storeu_ps(r.as_mut_ptr().add(de + 8 * k), ev);
                            _mm256_storeu_ps(r.as_mut_ptr().add(dof + 8 * k), od);
                        }
                    }
                    let mut done = 16 * full;
                    if w - done >= L {
                        // Half a block (the whole row of an 8-wide image): 4 even, 4 odd.
                        // SAFETY: done + 8 ≤ w; the stores end at 8·full + 4 ≤ ne, no.
                        unsafe {
                            let a = _mm256_loadu_ps(row.as_ptr().add(done));
                            let (ev, od) = deinterleave(a, a);
                            _mm_storeu_ps(
                                r.as_mut_ptr().add(de + 8 * full),
                                _mm256_castps256_ps128(ev),
                            );
                            _mm_storeu_ps(
                                r.as_mut_ptr().add(dof + 8 * full),
                                _mm256_castps256_ps128(od),
                            );
                        }
                        done += L;
                    }
                    for ix in done..w {
                        let d = if ix % 2 == 0 {
                            de + ix / 2
                        } else {
                            dof + ix / 2
                        };
                        r[d] = row[ix];
                    }
                }
            }

            /// `V[ξ][ci][p0 + l]` for the 8 tiles of every vector of every tile row of one
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
                assert!(g.m == 2 && buf.len() >= g.plane_len());
                assert!(v.len() >= XI * g.cin * g.ps);
                assert!(rows.0 <= rows.1 && rows.1 <= g.nty);
                assert!(p_img + (rows.1 - rows.0) * g.ntx + L <= g.ps);
                let rs = g.rs;
                let bp = buf.as_ptr();
                let vp = v.as_mut_ptr();
                let mut ty = rows.0;
                while ty < rows.1 {
                    // Rows of 4 tiles: one vector takes tile rows ty (lanes 0–3) and ty + 1
                    // (lanes 4–7), whose padded rows start 2 rows (4·rs floats) further.
                    let pair = g.ntx == L / 2 && ty + 1 < rows.1;
                    for vv in 0..g.vpr {
                        // Row transform (Bᵀ along x) of padded row 2·ty + r: the 4 columns of
                        // 8 tiles, from the even and odd parity rows.
                        // SAFETY: row 2·ty + r (+ 2 for a pair) < hp; columns vv·8 + 9 ≤ rs.
                        let row = |r: usize| unsafe {
                            let e = bp.add((2 * ty + r) * 2 * rs + vv * L);
                            let o = e.add(rs);
                            let ld = |p: *const f32| {
                                if pair {
                                    _mm256_loadu2_m128(p.add(4 * rs), p)
                                } else {
                                    _mm256_loadu_ps(p)
                                }
                            };
                            let (d0, d1) = (ld(e), ld(o));
                            let (d2, d3) = (ld(e.add(1)), ld(o.add(1)));
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
                    ty += if pair { 2 } else { 1 };
                }
            }

            /// `M[ξ] = U[ξ] · V[ξ]` for `nvec` vectors of tiles (rounded up to NV).
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
                let (cin, cout, ps, nxi) = (g.cin, g.cout, g.ps, g.xi);
                let nblk = cout.div_ceil(COB);
                assert!(upack.len() >= nxi * nblk * cin * COB);
                assert!(v.len() >= nxi * cin * ps && m.len() >= nxi * cout * ps);
                assert!(nvec.next_multiple_of(NV) * L <= ps);
                for xi in 0..nxi {
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
                                        _mm256_loadu_ps(vx.add(ci * nxi * ps + (pv + k) * L))
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
                                        _mm256_storeu_ps(mx.add(co * nxi * ps + (pv + k) * L), *a)
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
                assert!(g.m == 2 && rows.0 <= rows.1 && rows.1 <= g.nty);
                assert!(m.len() >= XI * g.cout * ps && p_img + (rows.1 - rows.0) * g.ntx + L <= ps);
                assert!(out.len() >= ho * wo);
                let st = Store::new(epi, co, ho * wo);
                let mp = m.as_ptr();
                // SAFETY (callers): o + 8 ≤ ho·wo ≤ out.len().
                let put = |o: usize, yv: __m256, out: &mut [f32]| unsafe { st.put(o, yv, out) };
                // Aᵀ·M·A for the 8 tiles at p0: the even and odd output columns of the
                // tiles' two output rows.
                let tiles = |p0: usize| -> [(__m256, __m256); 2] {
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
                    // Aᵀ along x.
                    [
                        (
                            _mm256_add_ps(c0.0, _mm256_add_ps(c1.0, c2.0)),
                            _mm256_sub_ps(_mm256_sub_ps(c1.0, c2.0), c3.0),
                        ),
                        (
                            _mm256_add_ps(c0.1, _mm256_add_ps(c1.1, c2.1)),
                            _mm256_sub_ps(_mm256_sub_ps(c1.1, c2.1), c3.1),
                        ),
                    ]
                };
                // Even and odd columns back into order: [first 8 outputs, next 8 outputs].
                let interleave = |even: __m256, odd: __m256| -> [__m256; 2] {
                    let lo = _mm256_unpacklo_ps(even, odd);
                    let hi = _mm256_unpackhi_ps(even, odd);
                    [
                        _mm256_permute2f128_ps::<0x20>(lo, hi),
                        _mm256_permute2f128_ps::<0x31>(lo, hi),
                    ]
                };
                let mut ty = rows.0;
                while ty < rows.1 {
                    let p_row = p_img + (ty - rows.0) * g.ntx;
                    if g.ntx == L / 2 && wo == L && ty + 1 < rows.1 && 2 * ty + 3 < ho {
                        // Rows of 4 tiles (8-wide outputs): one vector holds tile rows ty
                        // (lanes 0–3) and ty + 1 (lanes 4–7), whose interleaved halves are
                        // whole output rows.
                        for (a, &(even, odd)) in tiles(p_row).iter().enumerate() {
                            let [first, second] = interleave(even, odd);
                            put((2 * ty + a) * wo, first, out);
                            put((2 * ty + 2 + a) * wo, second, out);
                        }
                        ty += 2;
                        continue;
                    }
                    for vv in 0..g.vpr {
                        let rows2 = tiles(p_row + vv * L);
                        // Whole vectors of 8 output columns this tile vector covers (the
                        // first column 16·vv is always inside the plane).
                        let xs0 = 2 * L * vv;
                        let whole = ((wo - xs0) / L).min(2);
                        if 2 * ty + 1 < ho && (whole == 2 || xs0 + whole * L == wo) {
                            // Both rows inside the plane and no partial vector: no per-store
                            // bounds or lane loop.
                            for (a, &(even, odd)) in rows2.iter().enumerate() {
                                let o = (2 * ty + a) * wo + xs0;
                                for (half, &yv) in interleave(even, odd)[..whole].iter().enumerate()
                                {
                                    put(o + half * L, yv, out);
                                }
                            }
                            continue;
                        }
                        for (a, &(even, odd)) in rows2.iter().enumerate() {
                            let oy = 2 * ty + a;
                            if oy >= ho {
                                break;
                            }
                            for (half, &yv) in interleave(even, odd).iter().enumerate() {
                                let xs = xs0 + half * L;
                                if xs >= wo {
                                    break;
                                }
                                let o = oy * wo + xs;
                                if xs + L <= wo {
                                    put(o, yv, out);
                                } else {
                                    st.put_lanes(o, yv, wo - xs, out);
                                }
                            }
                        }
                    }
                    ty += 1;
                }
            }

            /// The epilogue (bias, residual, ReLU) and store of one output channel's plane.
            pub(in super::super) struct Store<'a> {
                res: Option<&'a [f32]>,
                b: f32,
                relu: bool,
            }

            impl<'a> Store<'a> {
                /// The epilogue of channel `co` of an image whose planes hold `plane` floats.
                pub(in super::super) fn new(epi: &ImgEpi<'a>, co: usize, plane: usize) -> Self {
                    Self {
                        res: epi.residual.map(|r| &r[co * plane..][..plane]),
                        b: epi.bias.map_or(0.0, |b| b[co]),
                        relu: epi.relu,
                    }
                }

                /// epilogue(yv) into out[o … o + 8].
                ///
                /// # Safety
                /// CPU features as enabled; o + 8 ≤ the plane's length ≤ `out.len()`.
                #[inline]
                #[target_feature(enable = $feat)]
                pub(in super::super) unsafe fn put(&self, o: usize, yv: __m256, out: &mut [f32]) {
                    debug_assert!(o + L <= out.len());
                    // SAFETY: see above.
                    unsafe {
                        let mut yv = _mm256_add_ps(yv, _mm256_set1_ps(self.b));
                        if let Some(r) = self.res {
                            yv = _mm256_add_ps(yv, _mm256_loadu_ps(r.as_ptr().add(o)));
                        }
                        if self.relu {
                            yv = _mm256_max_ps(yv, _mm256_setzero_ps());
                        }
                        _mm256_storeu_ps(out.as_mut_ptr().add(o), yv);
                    }
                }

                /// epilogue of the first `n` lanes of `yv` into out[o … o + n] (bounds-checked).
                #[target_feature(enable = $feat)]
                pub(in super::super) fn put_lanes(
                    &self,
                    o: usize,
                    yv: __m256,
                    n: usize,
                    out: &mut [f32],
                ) {
                    let mut lanes = [0.0f32; L];
                    // SAFETY: `lanes` holds 8 floats.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), yv) };
                    for (l, &v) in lanes[..n].iter().enumerate() {
                        let y = v + self.b + self.res.map_or(0.0, |r| r[o + l]);
                        out[o + l] = if self.relu { y.max(0.0) } else { y };
                    }
                }
            }

            /// Splits 16 consecutive floats into their even- and odd-indexed halves.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn deinterleave(a: __m256, b: __m256) -> (__m256, __m256) {
                // [a0 a2 b0 b2 | a4 a6 b4 b6] → [a0 a2 a4 a6 b0 b2 b4 b6]
                let ev = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                let od = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                let fix = |v: __m256| {
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
                };
                (fix(ev), fix(od))
            }

            /// `dM[co][ξ] = (A·dy·Aᵀ)[ξ]` for the 2×2 output-gradient blocks of the 8 tiles of
            /// every vector of every tile row of channel `co` (the (ho, wo) plane `dyc`);
            /// outputs past the plane's edge count as zero. Like the input transform, writes
            /// run up to 7 floats past a row's last tile.
            ///
            /// # Safety
            /// CPU features as enabled; sizes are asserted.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn dy_transform(
                g: &Wino,
                dyc: &[f32],
                co: usize,
                rows: (usize, usize),
                p_img: usize,
                m: &mut [f32],
            ) {
                let (ho, wo, ps) = (g.ho, g.wo, g.ps);
                assert!(g.m == 2 && dyc.len() >= ho * wo && m.len() >= XI * g.cout * ps);
                assert!(rows.0 <= rows.1 && rows.1 <= g.nty);
                assert!(p_img + (rows.1 - rows.0) * g.ntx + L <= ps);
                let zero = _mm256_setzero_ps();
                // Even and odd columns 16·vv … 16·vv + 15 of output row `oy`.
                let load = |oy: usize, vv: usize| -> (__m256, __m256) {
                    let x0 = 2 * L * vv;
                    if oy >= ho || x0 >= wo {
                        return (zero, zero);
                    }
                    let row = &dyc[oy * wo..][..wo];
                    if x0 + 2 * L <= wo {
                        // SAFETY: 16 floats of the row, bounds-checked above.
                        unsafe {
                            let p = row.as_ptr().add(x0);
                            deinterleave(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(L)))
                        }
                    } else {
                        let mut t = [0.0f32; 2 * L];
                        t[..wo - x0].copy_from_slice(&row[x0..]);
                        // SAFETY: `t` holds 16 floats.
                        unsafe {
                            deinterleave(
                                _mm256_loadu_ps(t.as_ptr()),
                                _mm256_loadu_ps(t.as_ptr().add(L)),
                            )
                        }
                    }
                };
                // Rows of 4 tiles (8-wide outputs) with both tile rows inside the plane: one
                // vector takes output rows 2·ty + r (lanes 0–3) and 2·ty + 2 + r (lanes 4–7).
                let pair_load = |oy: usize| -> (__m256, __m256) {
                    // SAFETY: oy + 2 < ho (checked by the caller) and wo = 8.
                    unsafe {
                        let p = dyc.as_ptr().add(oy * wo);
                        deinterleave(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(2 * wo)))
                    }
                };
                let mp = m.as_mut_ptr();
                let mut ty = rows.0;
                while ty < rows.1 {
                    let pair = g.ntx == L / 2 && wo == L && ty + 1 < rows.1 && 2 * ty + 3 < ho;
                    for vv in 0..g.vpr {
                        let ((e0, o0), (e1, o1)) = if pair {
                            (pair_load(2 * ty), pair_load(2 * ty + 1))
                        } else {
                            (load(2 * ty, vv), load(2 * ty + 1, vv))
                        };
                        // A along y: rows d0, d0 + d1, d0 − d1, −d1 (even and odd columns).
                        let ys = [
                            (e0, o0),
                            (_mm256_add_ps(e0, e1), _mm256_add_ps(o0, o1)),
                            (_mm256_sub_ps(e0, e1), _mm256_sub_ps(o0, o1)),
                            (_mm256_sub_ps(zero, e1), _mm256_sub_ps(zero, o1)),
                        ];
                        let p0 = p_img + (ty - rows.0) * g.ntx + vv * L;
                        // SAFETY: p0 + 8 ≤ ps (asserted); the 16 ξ rows of channel co exist.
                        let dst = unsafe { mp.add(co * XI * ps + p0) };
                        for (i, &(c0, c1)) in ys.iter().enumerate() {
                            // A along x: c0, c0 + c1, c0 − c1, −c1; ξ = 4·i + j.
                            unsafe {
                                _mm256_storeu_ps(dst.add(4 * i * ps), c0);
                                _mm256_storeu_ps(dst.add((4 * i + 1) * ps), _mm256_add_ps(c0, c1));
                                _mm256_storeu_ps(dst.add((4 * i + 2) * ps), _mm256_sub_ps(c0, c1));
                                _mm256_storeu_ps(
                                    dst.add((4 * i + 3) * ps),
                                    _mm256_sub_ps(zero, c1),
                                );
                            }
                        }
                    }
                    ty += if pair { 2 } else { 1 };
                }
            }

            /// `dU[ξ][co][ci] += Σ_p dM[co][ξ][p] · V[ci][ξ][p]` over `nvec` vectors of tiles
            /// (the caller zeroes both past the last tile).
            ///
            /// # Safety
            /// CPU features as enabled; sizes are asserted.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn dw_gemm<const COB: usize, const CIB: usize>(
                g: &Wino,
                m: &[f32],
                v: &[f32],
                nvec: usize,
                du: &mut [f32],
            ) {
                let (cin, cout, ps, nxi) = (g.cin, g.cout, g.ps, g.xi);
                assert!(v.len() >= nxi * cin * ps && m.len() >= nxi * cout * ps);
                assert!(nvec * L <= ps && du.len() >= nxi * cout * cin);
                for xi in 0..nxi {
                    for cb in (0..cout).step_by(COB) {
                        // Rows past the last channel repeat it; their sums are dropped.
                        let mrow: [*const f32; COB] = std::array::from_fn(|c| {
                            m[((cb + c).min(cout - 1) * nxi + xi) * ps..].as_ptr()
                        });
                        for ib in (0..cin).step_by(CIB) {
                            let vrow: [*const f32; CIB] = std::array::from_fn(|k| {
                                v[((ib + k).min(cin - 1) * nxi + xi) * ps..].as_ptr()
                            });
                            let mut acc = [[_mm256_setzero_ps(); CIB]; COB];
                            for pv in 0..nvec {
                                // SAFETY: pv·8 + 8 ≤ ps (asserted) within each row.
                                let vs: [__m256; CIB] = std::array::from_fn(|k| unsafe {
                                    _mm256_loadu_ps(vrow[k].add(pv * L))
                                });
                                for (c, row) in acc.iter_mut().enumerate() {
                                    let mv = unsafe { _mm256_loadu_ps(mrow[c].add(pv * L)) };
                                    for (a, x) in row.iter_mut().zip(&vs) {
                                        *a = _mm256_fmadd_ps(mv, *x, *a);
                                    }
                                }
                            }
                            for (c, row) in acc.iter().enumerate() {
                                let co = cb + c;
                                if co >= cout {
                                    break;
                                }
                                for (k, a) in row.iter().enumerate() {
                                    let ci = ib + k;
                                    if ci >= cin {
                                        break;
                                    }
                                    let q = _mm_add_ps(
                                        _mm256_castps256_ps128(*a),
                                        _mm256_extractf128_ps::<1>(*a),
                                    );
                                    let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
                                    let q = _mm_add_ss(q, _mm_movehdup_ps(q));
                                    du[(xi * cout + co) * cin + ci] += _mm_cvtss_f32(q);
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
    (@go $isa:expr, [$($v:tt)*], $f:ident($($a:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see above.
        unsafe {
            match $isa {
                Isa::Avx2 => $($v)* avx2::$f($($a),*),
                Isa::Avx512 => $($v)* avx512::$f($($a),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = ($isa, $($a),*);
    }};
    // The kernel `$f` of the variant of `$g` (a `Wino`): F(4×4, 3×3)'s in `f43` when its
    // tiles are 4 wide, else this module's F(2×2, 3×3) one of the same name and arguments.
    ($isa:expr, variant of $g:expr, $f:ident($($a:expr),* $(,)?)) => {
        if $g.m == 4 {
            on_isa!(@go $isa, [f43::], $f($($a),*))
        } else {
            on_isa!(@go $isa, [], $f($($a),*))
        }
    };
    ($isa:expr, $f:ident($($a:expr),* $(,)?)) => {
        on_isa!(@go $isa, [], $f($($a),*))
    };
}

/// V for the tile rows `rows` of one image `ximg` (cin, h, w), its tiles starting at `p_img`:
/// each channel padded into `buf` (on the first band only: later bands of the same image
/// find it there), then input-transformed.
#[allow(clippy::too_many_arguments)]
fn transform_image(
    isa: Isa,
    g: &Wino,
    ximg: &[f32],
    first_band: bool,
    rows: (usize, usize),
    p_img: usize,
    buf: &mut [f32],
    v: &mut [f32],
) {
    let hw = g.h * g.w;
    for (ci, pl) in buf.chunks_exact_mut(g.plane_len()).enumerate() {
        if first_band {
            // The next channel's plane, from memory while this one is transformed.
            crate::prefetch::lines_at(ximg, (ci + 1) * hw, hw);
            on_isa!(isa, variant of g, fill(g, &ximg[ci * hw..][..hw], pl));
        }
        on_isa!(isa, variant of g, input_transform(g, pl, ci, rows, p_img, v));
    }
}

/// Defines, from one list of the register tiles compiled per instruction set (the default
/// first), that list as `$tiles`, `$choose(isa)`: the tile to use (the default, unless the environment variable
/// `$var`, "AxB" read once, names another listed one), and `$run(isa, tile, args…)`: calls
/// `$kernel::<A, B>(args…)` of that instruction set's kernel module for a listed tile.
macro_rules! register_tiles {
    ($(#[$doc:meta])* $choose:ident, $run:ident, $tiles:ident, $var:literal,
     $kernel:ident($($arg:ident: $ty:ty),* $(,)?),
     avx2: [$(($a2:literal, $b2:literal)),*], avx512: [$(($a5:literal, $b5:literal)),*]) => {
        #[doc = concat!(
            "The compiled tiles of [`", stringify!($choose), "`]: AVX2's, then AVX-512's."
        )]
        const $tiles: [&[(usize, usize)]; 2] = [&[$(($a2, $b2)),*], &[$(($a5, $b5)),*]];

        $(#[$doc])*
        fn $choose(isa: Isa) -> (usize, usize) {
            static FORCED: OnceLock<Option<(usize, usize)>> = OnceLock::new();
            pick_tile(isa, $tiles, &FORCED, $var)
        }

        fn $run(isa: Isa, tile: (usize, usize), $($arg: $ty),*) {
            register_tiles!(@call isa, tile, $kernel, ($($arg),*),
                avx2: [$(($a2, $b2)),*], avx512: [$(($a5, $b5)),*]);
        }
    };
    // The call's arguments as one token tree, so that the tile lists can repeat around it.
    (@call $isa:ident, $tile:ident, $kernel:ident, $args:tt,
     avx2: [$(($a2:literal, $b2:literal)),*], avx512: [$(($a5:literal, $b5:literal)),*]) => {
        #[cfg(target_arch = "x86_64")]
        match ($isa, $tile) {
            // SAFETY: features checked by `detect_isa`; the kernels assert their sizes.
            $( (Isa::Avx2, ($a2, $b2)) => unsafe { avx2::$kernel::<$a2, $b2> $args }, )*
            $( (Isa::Avx512, ($a5, $b5)) => unsafe { avx512::$kernel::<$a5, $b5> $args }, )*
            (_, t) => unreachable!("Winograd tile {t:?} not compiled"),
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = ($isa, $tile, $args);
    };
}

register_tiles!(
    /// The GEMM register tile (COB output channels, NV vectors of 8 tiles) for an instruction
    /// set. `LAYERZERO_WINO_TILE=COBxNV` picks another compiled one (for tuning).
    gemm_tile,
    run_gemm,
    GEMM_TILES,
    "LAYERZERO_WINO_TILE",
    gemm(g: &Wino, upack: &[f32], v: &[f32], nvec: usize, m: &mut [f32]),
    avx2: [(3, 4), (4, 3), (2, 4)],
    avx512: [(4, 4), (6, 4), (8, 3), (4, 3), (8, 2)]
);

/// The first (default) tile of the instruction set's compiled list (`tiles`: AVX2's, then
/// AVX-512's), unless the environment variable `var` ("AxB", read once) names another
/// compiled one.
fn pick_tile(
    isa: Isa,
    tiles: [&[(usize, usize)]; 2],
    forced: &'static OnceLock<Option<(usize, usize)>>,
    var: &str,
) -> (usize, usize) {
    let compiled = tiles[isa_index(isa)];
    forced
        .get_or_init(|| env_pair(var))
        .filter(|t| compiled.contains(t))
        .unwrap_or(compiled[0])
}

/// Where an instruction set's entry is in a per-instruction-set pair.
fn isa_index(isa: Isa) -> usize {
    match isa {
        Isa::Avx2 => 0,
        Isa::Avx512 => 1,
    }
}

/// Stride-1 3×3 convolution of `n` images x (cin, h, w) with w (cout, cin, 3, 3) and zero
/// padding `pad`, through F(4×4, 3×3) or F(2×2, 3×3) (`fwd_tile_size`); y (cout,
/// h + 2·pad − 2, w + 2·pad − 2) is fully overwritten with `epilogue(conv)`.
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
    let tile = gemm_tile(isa);
    conv_fwd_tile(isa, tile, n, cin, h, w, pad, x, wt, cout, epi, y)
}

/// [`conv_fwd`] with an explicit GEMM register tile (one of `GEMM_TILES`).
#[allow(clippy::too_many_arguments)]
fn conv_fwd_tile(
    isa: Isa,
    tile: (usize, usize),
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
    let m = fwd_tile_size(w + 2 * pad - 2);
    let g = Wino::new(m, cin, h, w, pad, cout, n, GROUP_BYTES);
    let upack = if m == 4 {
        f43::transform_weights(wt, cout, cin, tile.0)
    } else {
        transform_weights(wt, cout, cin, tile.0)
    };
    let in_img = cin * h * w;
    let out_img = cout * g.ho * g.wo;
    if n == 0 || out_img == 0 {
        return;
    }
    let plane = g.ho * g.wo;
    let bands = g.bands();
    y.par_chunks_mut(out_img * g.group)
        .zip(x.par_chunks(in_img * g.group))
        .enumerate()
        .for_each(|(t, (ys, xs))| {
            with_scratch(0, g.xi * cin * g.ps, |v| {
                with_scratch(1, g.xi * cout * g.ps, |m| {
                    with_scratch(2, cin * g.plane_len(), |buf| {
                        buf.fill(0.0);
                        for (b, &rows) in bands.iter().enumerate() {
                            let band_tiles = (rows.1 - rows.0) * g.ntx;
                            for (gi, ximg) in xs.chunks_exact(in_img).enumerate() {
                                let p_img = gi * band_tiles;
                                transform_image(isa, &g, ximg, b == 0, rows, p_img, buf, v);
                            }
                            let nvec = (ys.len() / out_img * band_tiles).div_ceil(L);
                            run_gemm(isa, tile, &g, &upack, v, nvec, m);
                            for (gi, yi) in ys.chunks_exact_mut(out_img).enumerate() {
                                let epi = epi.image(t * g.group + gi, out_img);
                                let p_img = gi * band_tiles;
                                for (co, out) in yi.chunks_exact_mut(plane).enumerate() {
                                    on_isa!(
                                        isa,
                                        variant of g,
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

/// Bytes of V + dM one group of the weight gradient may use. Its GEMM walks one ξ at a time,
/// so only a sixteenth of that (128 KiB) must stay in L2; larger groups mean longer sums
/// between the horizontal reductions.
const DW_GROUP_BYTES: usize = 2 << 20;

/// Tasks the weight gradient's images are split into (equal shares), summed in order
/// afterwards: a count that depends only on the shape, so the result does not depend on the
/// number of threads.
const DW_TASKS: usize = 8;

register_tiles!(
    /// The dW register tile (COB output × CIB input channels) for an instruction set.
    /// `LAYERZERO_WINO_DW_TILE=COBxCIB` picks another compiled one (for tuning).
    dw_tile,
    run_dw_gemm,
    DW_TILES,
    "LAYERZERO_WINO_DW_TILE",
    dw_gemm(g: &Wino, m: &[f32], v: &[f32], nvec: usize, du: &mut [f32]),
    avx2: [(3, 3), (2, 4)],
    avx512: [(4, 4), (4, 5), (2, 8)]
);

/// Weight gradient of a stride-1 3×3 convolution through F(2×2, 3×3) or F(4×4, 3×3)
/// (`dw_tile_size`): with V = Bᵀ·x·B (the forward's input transform) and dM = A·dy·Aᵀ per
/// tile, `dw[co][ci] = Gᵀ · (Σ_tiles dM[co] ⊙ V[ci]) · G`. The sums over tiles are 16 (or 36)
/// GEMMs (Cout × tiles) · (tiles × Cin); `dw` (cout, cin, 3, 3) is fully overwritten.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_dw(
    isa: Isa,
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    pad: usize,
    x: &[f32],
    dy: &[f32],
    cout: usize,
    dw: &mut [f32],
) {
    conv_dw_tile(isa, dw_tile(isa), n, cin, h, w, pad, x, dy, cout, dw)
}

/// [`conv_dw`] with an explicit register tile (one of `DW_TILES`).
#[allow(clippy::too_many_arguments)]
fn conv_dw_tile(
    isa: Isa,
    tile: (usize, usize),
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    pad: usize,
    x: &[f32],
    dy: &[f32],
    cout: usize,
    dw: &mut [f32],
) {
    let m = dw_tile_size(w + 2 * pad - 2);
    let g = Wino::new(m, cin, h, w, pad, cout, n, DW_GROUP_BYTES);
    let (in_img, plane) = (cin * h * w, g.ho * g.wo);
    let out_img = cout * plane;
    let du_len = g.xi * cout * cin;
    // Equal shares of the images per task (so that two threads finish together), each cut
    // into equal groups of at most `g.group`.
    let tasks = DW_TASKS.min(n).max(1);
    let bands = g.bands();
    if n == 0 || out_img == 0 {
        // No tiles: Gᵀ·0·G.
        dw.fill(0.0);
        return;
    }
    let partials: Vec<Vec<f32>> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let mut du = vec![0.0f32; du_len];
            with_scratch(0, g.xi * cin * g.ps, |v| {
                with_scratch(1, g.xi * cout * g.ps, |m| {
                    with_scratch(2, cin * g.plane_len(), |buf| {
                        buf.fill(0.0);
                        let (first, end) = (t * n / tasks, (t + 1) * n / tasks);
                        let size = (end - first).div_ceil((end - first).div_ceil(g.group));
                        for i0 in (first..end).step_by(size.max(1)) {
                            let gn = size.min(end - i0);
                            for (b, &rows) in bands.iter().enumerate() {
                                let band_tiles = (rows.1 - rows.0) * g.ntx;
                                for j in 0..gn {
                                    let ximg = &x[(i0 + j) * in_img..][..in_img];
                                    let p_img = j * band_tiles;
                                    transform_image(isa, &g, ximg, b == 0, rows, p_img, buf, v);
                                    let dyi = &dy[(i0 + j) * out_img..][..out_img];
                                    for (co, dyc) in dyi.chunks_exact(plane).enumerate() {
                                        on_isa!(
                                            isa,
                                            variant of g,
                                            dy_transform(&g, dyc, co, rows, p_img, m)
                                        );
                                    }
                                }
                                // Past the last tile both operands hold overrun or stale
                                // values; zeros there keep them out of the sums.
                                let used = gn * band_tiles;
                                let nvec = used.div_ceil(L);
                                for r in v[..g.xi * cin * g.ps].chunks_exact_mut(g.ps) {
                                    r[used..nvec * L].fill(0.0);
                                }
                                for r in m[..g.xi * cout * g.ps].chunks_exact_mut(g.ps) {
                                    r[used..nvec * L].fill(0.0);
                                }
                                run_dw_gemm(isa, tile, &g, m, v, nvec, &mut du);
                            }
                        }
                    })
                })
            });
            du
        })
        .collect();
    let mut du = vec![0.0f32; du_len];
    for p in &partials {
        for (a, b) in du.iter_mut().zip(p) {
            *a += b;
        }
    }
    if g.m == 4 {
        f43::weight_grad_from_sums(&du, cout, cin, dw);
    } else {
        weight_grad_from_sums(&du, cout, cin, dw);
    }
}

/// `dw[co][ci] = Gᵀ · dU[·][co][ci] · G` (the 16 sums of the weight gradient, in `du` as
/// `[ξ][co][ci]`) into `dw` (cout, cin, 3, 3).
fn weight_grad_from_sums(du: &[f32], cout: usize, cin: usize, dw: &mut [f32]) {
    // dw = Gᵀ·dU·G, with G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
    for_each_kernel(dw, cin, |co, ci, out| {
        let u = |i: usize, j: usize| du[((4 * i + j) * cout + co) * cin + ci];
        // Gᵀ along y: rows u0 + ½(u1 + u2), ½(u1 − u2), ½(u1 + u2) + u3.
        let col = |j: usize| {
            let (u0, u1, u2, u3) = (u(0, j), u(1, j), u(2, j), u(3, j));
            [u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3]
        };
        let c = [col(0), col(1), col(2), col(3)];
        let t: [[f32; 4]; 3] = std::array::from_fn(|a| std::array::from_fn(|j| c[j][a]));
        // G along x, the same combinations.
        for (a, r) in t.iter().enumerate() {
            out[3 * a] = r[0] + 0.5 * (r[1] + r[2]);
            out[3 * a + 1] = 0.5 * (r[1] - r[2]);
            out[3 * a + 2] = 0.5 * (r[1] + r[2]) + r[3];
        }
    });
}

/// Writes each 3×3 kernel of `dw` (cout, cin, 3, 3) with `kernel(co, ci, its 9 taps)`, in
/// parallel over the output channels (see [`pack_weights`] for why).
pub(super) fn for_each_kernel(
    dw: &mut [f32],
    cin: usize,
    kernel: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    if cin == 0 {
        return;
    }
    dw.par_chunks_mut(cin * 9)
        .enumerate()
        .for_each(|(co, dwc)| {
            for (ci, out) in dwc.chunks_exact_mut(9).enumerate() {
                kernel(co, ci, out);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::direct::{self, detect_isa};
    use crate::conv::test_util::{close, rand};

    /// Every compiled GEMM and weight-gradient tile of every available instruction set, on
    /// an F(4×4, 3×3) shape (16 channels, 32 wide) and an F(2×2, 3×3) one (8×8), against the
    /// direct kernel. CI runs only the default tiles otherwise.
    #[test]
    fn every_compiled_tile() {
        let Some(best) = detect_isa() else { return };
        let isas: &[Isa] = match best {
            Isa::Avx512 => &[Isa::Avx2, Isa::Avx512],
            Isa::Avx2 => &[Isa::Avx2],
        };
        for &(n, c, hw, co) in &[(2, 16, 32, 24), (3, 32, 8, 36)] {
            let g = ConvGeom::new("test", &[n, c, hw, hw], &[co, c, 3, 3], 1, 1).unwrap();
            let x = rand(n * c * hw * hw, 1);
            let wt = rand(co * c * 9, 2);
            let dy = rand(n * co * hw * hw, 3);
            let epi = Epilogue::default();
            let mut y_ref = vec![0.0; dy.len()];
            direct::conv_fwd(best, &g, &x, &wt, &epi, &mut y_ref);
            let mut dw_ref = vec![0.0; wt.len()];
            direct::conv_dw(best, &g, &x, &dy, &mut dw_ref);
            for &isa in isas {
                for &tile in GEMM_TILES[isa_index(isa)] {
                    let mut y = vec![f32::NAN; dy.len()];
                    conv_fwd_tile(isa, tile, n, c, hw, hw, 1, &x, &wt, co, &epi, &mut y);
                    close(&y, &y_ref, &format!("fwd {isa:?} {tile:?} {c}ch {hw}²"));
                }
                for &tile in DW_TILES[isa_index(isa)] {
                    let mut dw = vec![f32::NAN; wt.len()];
                    conv_dw_tile(isa, tile, n, c, hw, hw, 1, &x, &dy, co, &mut dw);
                    close(&dw, &dw_ref, &format!("dw {isa:?} {tile:?} {c}ch {hw}²"));
                }
            }
        }
    }
}
