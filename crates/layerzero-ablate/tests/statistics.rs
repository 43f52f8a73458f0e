//! Statistics against hand-computed values and against independent references.

use layerzero_ablate::{
    mcnemar_exact_p, measure, paired_difference_agresti_min, paired_difference_tango,
    paired_difference_wald, tango_min_pairs_within, wilson_interval, Evaluation, PairedCounts,
    Verdict, VerdictRule, Z95,
};
use proptest::prelude::*;

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs())
}

// ---------------------------------------------------------------- McNemar, hand values
// Up to b + c = 120 the p-value is computed exactly and correctly rounded, so dyadic
// values compare with `==`; beyond that, the log-space path is checked to a tolerance.

#[test]
fn mcnemar_small_counts_by_hand() {
    // b=0, c=5: 2 · C(5,0) / 2^5 = 2/32.
    assert_eq!(mcnemar_exact_p(0, 5), 0.0625);
    // b=1, c=9: 2 · (1 + 10) / 2^10 = 22/1024.
    assert_eq!(mcnemar_exact_p(1, 9), 0.021484375);
    // b=3, c=12: 2 · (1 + 15 + 105 + 455) / 2^15 = 1152/32768.
    assert_eq!(mcnemar_exact_p(3, 12), 0.03515625);
    // b=10, c=5 (order does not matter): 2 · (1+15+105+455+1365+3003) / 2^15 = 9888/32768.
    assert_eq!(mcnemar_exact_p(10, 5), 0.3017578125);
    assert_eq!(mcnemar_exact_p(5, 10), mcnemar_exact_p(10, 5));
    // b=1, c=2: 2 · (1 + 3) / 8 = 1, and b = c is always 1.
    assert_eq!(mcnemar_exact_p(1, 2), 1.0);
    assert_eq!(mcnemar_exact_p(7, 7), 1.0);
    assert_eq!(mcnemar_exact_p(0, 0), 1.0);
    // b=0, c=1: 2 · 1/2 = 1.
    assert_eq!(mcnemar_exact_p(0, 1), 1.0);
}

#[test]
fn mcnemar_against_exact_rational_values() {
    // Computed once with exact rational arithmetic (Python: Fraction(sum(comb(n, i) for i in
    // range(k + 1)), 2**n) * 2), printed to 17 significant digits.
    for (b, c, p) in [
        (40, 60, 0.05688793364098079),
        (130, 170, 0.02418198247326276),
        (1200, 1350, 0.00316353694893808),
    ] {
        let got = mcnemar_exact_p(b, c);
        assert!(close(got, p, 1e-11), "b={b} c={c}: {got} vs {p}");
    }
}

#[test]
fn mcnemar_closed_forms_for_large_n() {
    // b = 0: p = 2 / 2^n = 2^(1-n), down to the smallest normal doubles.
    for n in [2u64, 10, 60, 500, 1000, 1020] {
        let expected = 2f64.powi(1 - n as i32);
        assert!(close(mcnemar_exact_p(0, n), expected, 1e-11), "n={n}");
    }
    // b = 1: p = 2 (1 + n) / 2^n.
    for n in [3u64, 50, 900] {
        let expected = 2.0 * (1.0 + n as f64) * 2f64.powi(-(n as i32));
        assert!(close(mcnemar_exact_p(1, n - 1), expected, 1e-11), "n={n}");
    }
    // n = 2m + 1 odd, b = m: P(X <= m) = 1/2 exactly, so p = 1.
    assert!(close(mcnemar_exact_p(6_000, 6_001), 1.0, 1e-11));
    // n = 2m, b = m - 1: P(X <= m - 1) = (1 - C(2m, m)/4^m) / 2, so p = 1 - C(2m, m)/4^m,
    // with C(2m, m)/4^m = prod_{j=1..m} (2j - 1)/(2j) computed independently here.
    for m in [2u64, 10, 1_000, 5_000, 20_000] {
        let central: f64 = (1..=m)
            .map(|j| (2 * j - 1) as f64 / (2 * j) as f64)
            .product();
        let got = mcnemar_exact_p(m - 1, m + 1);
        assert!(
            close(got, 1.0 - central, 1e-10),
            "m={m}: {got} vs {}",
            1.0 - central
        );
    }
    // Far past f64's range the p-value underflows to 0 rather than failing.
    assert_eq!(mcnemar_exact_p(0, 5_000), 0.0);
}

/// Two-sided exact binomial p-values for every k at size n, by Pascal's rule on the pmf
/// (pmf_n(i) = (pmf_{n-1}(i-1) + pmf_{n-1}(i)) / 2) and cumulative sums: no logs at all.
fn pascal_p_values(n: usize) -> Vec<f64> {
    let mut pmf = vec![1.0f64];
    for _ in 0..n {
        let mut next = vec![0.0; pmf.len() + 1];
        for (i, &p) in pmf.iter().enumerate() {
            next[i] += p / 2.0;
            next[i + 1] += p / 2.0;
        }
        pmf = next;
    }
    let mut cumulative = 0.0;
    pmf.iter()
        .map(|&p| {
            cumulative += p;
            (2.0 * cumulative).min(1.0)
        })
        .collect()
}

#[test]
fn mcnemar_against_pascal_triangle_reference() {
    for n in [17usize, 200, 2_500] {
        let reference = pascal_p_values(n);
        for (k, &expected) in reference.iter().enumerate().take(n / 2 + 1) {
            if expected < 1e-250 {
                continue; // the reference's own tail has underflowed
            }
            let got = mcnemar_exact_p(k as u64, (n - k) as u64);
            assert!(
                close(got, expected, 1e-9),
                "n={n} k={k}: {got} vs {expected}"
            );
        }
    }
}

proptest! {
    #[test]
    fn mcnemar_is_a_symmetric_probability_that_falls_as_c_grows(b in 0u64..3_000, c in 0u64..3_000) {
        let p = mcnemar_exact_p(b, c);
        prop_assert!((0.0..=1.0).contains(&p));
        prop_assert_eq!(p, mcnemar_exact_p(c, b));
        if c >= b {
            prop_assert!(mcnemar_exact_p(b, c + 1) <= p * (1.0 + 1e-12));
        }
    }

    #[test]
    fn intervals_contain_their_estimates(n in 1u64..20_000, s_frac in 0.0f64..=1.0, b_frac in 0.0f64..=1.0, c_frac in 0.0f64..=1.0) {
        let s = ((n as f64) * s_frac) as u64;
        let [lo, hi] = wilson_interval(s, n, Z95).unwrap();
        let p = s as f64 / n as f64;
        prop_assert!(0.0 <= lo && lo <= p + 1e-15 && p <= hi + 1e-15 && hi <= 1.0);
        let b = ((n as f64) * b_frac) as u64;
        let c = (((n - b) as f64) * c_frac) as u64;
        let counts = PairedCounts { n, both_right: 0, right_to_wrong: b, wrong_to_right: c, both_wrong: n - b - c };
        let [dlo, dhi] = paired_difference_wald(&counts, Z95).unwrap();
        let d = counts.delta();
        prop_assert!(-1.0 <= dlo && dlo <= d + 1e-15 && d <= dhi + 1e-15 && dhi <= 1.0);
    }
}

// ---------------------------------------------------------------- intervals, hand values

#[test]
fn wilson_closed_forms_and_quadratic_roots() {
    // s = 0: [0, z²/(n + z²)]; s = n: [n/(n + z²), 1].
    let z = 1.96;
    let [lo, hi] = wilson_interval(0, 10, z).unwrap();
    assert_eq!(lo, 0.0);
    assert!(close(hi, 3.8416 / 13.8416, 1e-14), "{hi}"); // 0.27754...
    let [lo, hi] = wilson_interval(10, 10, z).unwrap();
    assert!(close(lo, 10.0 / 13.8416, 1e-14), "{lo}");
    assert_eq!(hi, 1.0);

    // Otherwise the bounds are the roots of (p̂ - p)² = z² p (1 - p) / n, i.e.
    // (1 + z²/n) p² - (2 p̂ + z²/n) p + p̂² = 0.
    for (s, n) in [
        (8u64, 10u64),
        (1, 3),
        (9_300, 10_000),
        (1_000, 10_000),
        (5, 10_000),
    ] {
        let [lo, hi] = wilson_interval(s, n, Z95).unwrap();
        let (p_hat, nf, z2) = (s as f64 / n as f64, n as f64, Z95 * Z95);
        let quad = |p: f64| (1.0 + z2 / nf) * p * p - (2.0 * p_hat + z2 / nf) * p + p_hat * p_hat;
        assert!(
            quad(lo).abs() < 1e-14 && quad(hi).abs() < 1e-14,
            "s={s} n={n}"
        );
        assert!(lo < p_hat && p_hat < hi);
    }
    // 8/10 at the 95 % quantile: [0.4901624715366418, 0.9433178485456247].
    let [lo, hi] = wilson_interval(8, 10, Z95).unwrap();
    assert!(close(lo, 0.490_162_471_536_641_8, 1e-12) && close(hi, 0.943_317_848_545_624_7, 1e-12));
}

#[test]
fn paired_wald_by_hand() {
    // b = 10, c = 5, n = 100: d = -0.05, se = sqrt(15 - 25/100)/100 = sqrt(14.75)/100.
    let counts = PairedCounts {
        n: 100,
        both_right: 80,
        right_to_wrong: 10,
        wrong_to_right: 5,
        both_wrong: 5,
    };
    let [lo, hi] = paired_difference_wald(&counts, Z95).unwrap();
    let half = Z95 * 14.75f64.sqrt() / 100.0; // 0.0752738451291...
    assert!(
        close(lo, -0.05 - half, 1e-13) && close(hi, -0.05 + half, 1e-12),
        "[{lo}, {hi}]"
    );
    assert!(close(lo, -0.125_273_845_129_127_26, 1e-12));
    // No discordant pairs: a degenerate [0, 0].
    let none = PairedCounts {
        n: 50,
        both_right: 40,
        right_to_wrong: 0,
        wrong_to_right: 0,
        both_wrong: 10,
    };
    assert_eq!(paired_difference_wald(&none, Z95).unwrap(), [0.0, 0.0]);
    // Everything flips right→wrong: d = -1 with zero variance.
    let all = PairedCounts {
        n: 10,
        both_right: 0,
        right_to_wrong: 10,
        wrong_to_right: 0,
        both_wrong: 0,
    };
    assert_eq!(paired_difference_wald(&all, Z95).unwrap(), [-1.0, -1.0]);
}

#[test]
fn agresti_min_by_hand() {
    let counts = |n, b, c| PairedCounts {
        n,
        both_right: 0,
        right_to_wrong: b,
        wrong_to_right: c,
        both_wrong: 0,
    };
    // b = 10, c = 5, n = 100 with ½ added to each cell: n' = 102, b' = 10.5, c' = 5.5,
    // d' = -5/102, se = sqrt(16 - 25/102)/102.
    let [lo, hi] = paired_difference_agresti_min(&counts(100, 10, 5), Z95).unwrap();
    let (d, half) = (-5.0 / 102.0, Z95 * (16.0f64 - 25.0 / 102.0).sqrt() / 102.0);
    assert!(
        close(lo, d - half, 1e-13) && close(hi, d + half, 1e-13),
        "[{lo}, {hi}]"
    );
    // No discordant pairs: not [0, 0] but ± z/(n + 2), wide on few images, narrow on many.
    for n in [40u64, 10_000] {
        let [lo, hi] = paired_difference_agresti_min(&counts(n, 0, 0), Z95).unwrap();
        let half = Z95 / (n as f64 + 2.0);
        assert!(
            close(hi, half, 1e-13) && close(lo, -half, 1e-13),
            "{n}: [{lo}, {hi}]"
        );
    }
    // Everything flips right→wrong: clamped to [-1, 1] (the plain Wald interval is [-1, -1]).
    let [lo, hi] = paired_difference_agresti_min(&counts(10, 10, 0), Z95).unwrap();
    assert!(lo >= -1.0 && hi < -0.5 && lo < -0.9, "[{lo}, {hi}]");
    assert!(paired_difference_agresti_min(&counts(0, 0, 0), Z95).is_err());
    assert!(paired_difference_agresti_min(&counts(5, 3, 3), Z95).is_err());
}

fn pairs(n: u64, b: u64, c: u64) -> PairedCounts {
    PairedCounts {
        n,
        both_right: n.saturating_sub(b + c),
        right_to_wrong: b,
        wrong_to_right: c,
        both_wrong: 0,
    }
}

#[test]
fn tango_against_published_examples() {
    // The two examples of the paired 2×2 table in Fagerland, Lydersen and Laake's
    // *Statistical Analysis of Contingency Tables* (their n12, n21 are our c, b): airway
    // hyper-responsiveness, (1, 1; 7, 12), and complete response, (59, 6; 16, 80). Expected
    // bounds from a separate Python implementation of the formula as their R package
    // `contingencytables` writes it (root finding by bisection in double precision).
    let [lo, hi] = paired_difference_tango(&pairs(21, 7, 1), Z95).unwrap();
    assert!(
        (lo + 0.51723).abs() < 5e-5 && (hi + 0.02600).abs() < 5e-5,
        "[{lo}, {hi}]"
    );
    let [lo, hi] = paired_difference_tango(&pairs(161, 16, 6), Z95).unwrap();
    assert!(
        (lo + 0.12402).abs() < 5e-5 && (hi + 0.00543).abs() < 5e-5,
        "[{lo}, {hi}]"
    );
}

#[test]
fn tango_edge_cases() {
    // No flips: T(Δ₀) = ∓√(n|Δ₀| / (1 − |Δ₀|)), so each bound is z² / (n + z²) from zero.
    for n in [40u64, 10_000] {
        let [lo, hi] = paired_difference_tango(&pairs(n, 0, 0), Z95).unwrap();
        let half = Z95 * Z95 / (n as f64 + Z95 * Z95);
        assert!(
            close(hi, half, 1e-12) && close(lo, -half, 1e-12),
            "{n}: [{lo}, {hi}]"
        );
    }
    // Every pair flips right→wrong: the lower bound is −1 exactly, the upper well below 0.
    let [lo, hi] = paired_difference_tango(&pairs(10, 10, 0), Z95).unwrap();
    assert_eq!(lo, -1.0);
    assert!(hi < -0.4 && hi > -0.5, "[{lo}, {hi}]");
    let [lo, hi] = paired_difference_tango(&pairs(10, 0, 10), Z95).unwrap();
    assert_eq!(hi, 1.0);
    assert!(lo > 0.4 && lo < 0.5, "[{lo}, {hi}]");
    assert!(paired_difference_tango(&pairs(0, 0, 0), Z95).is_err());
    assert!(paired_difference_tango(&pairs(5, 3, 3), Z95).is_err());
    assert!(paired_difference_tango(&pairs(5, 1, 1), f64::NAN).is_err());
}

#[test]
fn tango_min_pairs_within_is_where_a_no_flip_interval_first_fits() {
    assert_eq!(tango_min_pairs_within(0.01, Z95), 381);
    for t in [0.005, 0.01, 0.02, 0.1] {
        let n = tango_min_pairs_within(t, Z95);
        let fits = |n: u64| {
            let [lo, hi] = paired_difference_tango(&pairs(n, 0, 0), Z95).unwrap();
            -t < lo && hi < t
        };
        assert!(fits(n) && !fits(n - 1), "threshold {t}: {n}");
    }
}

proptest! {
    /// The interval holds Δ̂, mirrors when b and c swap, and widens with z.
    #[test]
    fn tango_holds_estimate_and_mirrors(n in 1u64..20_000, fb in 0.0f64..1.0, fc in 0.0f64..1.0) {
        let b = ((n as f64) * fb * 0.5) as u64;
        let c = ((n as f64) * fc * 0.5) as u64;
        let d = (c as f64 - b as f64) / n as f64;
        let [lo, hi] = paired_difference_tango(&pairs(n, b, c), Z95).unwrap();
        prop_assert!(-1.0 <= lo && lo <= d && d <= hi && hi <= 1.0, "[{lo}, {hi}] around {d}");
        let [mlo, mhi] = paired_difference_tango(&pairs(n, c, b), Z95).unwrap();
        prop_assert!((mlo + hi).abs() < 1e-12 && (mhi + lo).abs() < 1e-12);
        let [wlo, whi] = paired_difference_tango(&pairs(n, b, c), 2.5758).unwrap();
        prop_assert!(wlo <= lo && hi <= whi);
    }
}

/// Probability, exact over the multinomial (b, c, rest) with cell probabilities `pb`, `pc`,
/// that `interval` over `n` pairs lies wholly inside ±`margin`.
fn chance_within(
    n: u64,
    pb: f64,
    pc: f64,
    margin: f64,
    interval: fn(&PairedCounts, f64) -> layerzero_ablate::Result<[f64; 2]>,
) -> f64 {
    let ln_fact = |k: u64| (1..=k).map(|i| (i as f64).ln()).sum::<f64>();
    let ln_n = ln_fact(n);
    let mut total = 0.0;
    for b in 0..=n {
        for c in 0..=(n - b) {
            let r = n - b - c;
            let ln_p = ln_n - ln_fact(b) - ln_fact(c) - ln_fact(r)
                + b as f64 * pb.ln()
                + c as f64 * pc.ln()
                + r as f64 * (1.0 - pb - pc).ln();
            if ln_p < -40.0 {
                continue;
            }
            let [lo, hi] = interval(&pairs(n, b, c), Z95).unwrap();
            if -margin < lo && hi < margin {
                total += ln_p.exp();
            }
        }
    }
    total
}

#[test]
fn tango_keeps_its_level_where_agresti_min_does_not() {
    // A true Δ of exactly −1 point (1.01 % of images break, 0.01 % mend): "the whole 95 %
    // interval lies inside ±1 point" is then a false claim, which a level-2.5 % one-sided
    // test may make at most 2.5 % of the time.
    let (pb, pc, margin) = (0.0101, 0.0001, 0.01);
    let tango = chance_within(200, pb, pc, margin, paired_difference_tango);
    let agresti_min = chance_within(200, pb, pc, margin, paired_difference_agresti_min);
    assert!(tango <= 0.025, "Tango, n = 200: {tango}");
    assert!(agresti_min > 0.1, "Agresti–Min, n = 200: {agresti_min}");
    for (pb, pc) in [(0.0101, 0.0001), (0.0125, 0.0025), (0.02, 0.01)] {
        let tango = chance_within(500, pb, pc, margin, paired_difference_tango);
        assert!(tango <= 0.025, "Tango, n = 500, {pb}/{pc}: {tango}");
    }
}

// ---------------------------------------------------------------- measure()

/// 100 images: baseline right on the first 90; the ablation breaks 10 of those (b = 10) and
/// fixes 5 of the 10 wrong ones (c = 5), so it is right on 85.
fn hundred_images() -> (Evaluation, Evaluation) {
    let base: Vec<bool> = (0..100).map(|i| i < 90).collect();
    let abl: Vec<bool> = (0..100)
        .map(|i| (10..90).contains(&i) || (90..95).contains(&i))
        .collect();
    let top5 = |v: &[bool]| {
        v.iter()
            .enumerate()
            .map(|(i, &t)| t || i % 2 == 0)
            .collect()
    };
    let baseline = Evaluation::new(base.clone(), top5(&base), vec![0.25; 100]).unwrap();
    let ablated = Evaluation::new(
        abl.clone(),
        top5(&abl),
        (0..100).map(|i| i as f64 / 100.0).collect(),
    )
    .unwrap();
    (baseline, ablated)
}

#[test]
fn measure_by_hand() {
    let (baseline, ablated) = hundred_images();
    let m = measure(&baseline, &ablated, &VerdictRule::default()).unwrap();
    assert_eq!(m.metrics.top1, 0.85);
    // top-5 hits: the 85 top-1 hits plus even-indexed misses among 0..10 and 95..100 (0, 2,
    // 4, 6, 8, 96, 98).
    assert_eq!(m.metrics.top5, 0.92);
    assert!(close(m.metrics.loss, 0.495, 1e-12)); // mean of 0.00 ..= 0.99
    assert_eq!(m.delta_top1, -0.05);
    assert_eq!((m.counts.right_to_wrong, m.counts.wrong_to_right), (10, 5));
    assert_eq!((m.counts.both_right, m.counts.both_wrong), (80, 5));
    assert!(close(m.mcnemar_p, 0.3017578125, 1e-13));
    assert_eq!(m.ci95.top1, wilson_interval(85, 100, Z95).unwrap());
    assert!(close(
        m.ci95.delta_top1[0],
        -0.125_273_845_129_127_26,
        1e-12
    ));
    // |Δ| = 5 points > 1 point: non-trivial although McNemar cannot reject at 0.01.
    assert_eq!(m.verdict, Verdict::NonTrivial);
    // A laxer rule calls it trivial.
    let lax = VerdictRule::new(0.06, 0.01).unwrap();
    assert_eq!(
        measure(&baseline, &ablated, &lax).unwrap().verdict,
        Verdict::Trivial
    );
    // And the baseline against itself is trivial with p = 1.
    let same = measure(&baseline, &baseline, &VerdictRule::default()).unwrap();
    assert_eq!(
        (same.delta_top1, same.mcnemar_p, same.verdict),
        (0.0, 1.0, Verdict::Trivial)
    );
}

#[test]
fn measure_rejects_unpaired_evaluations() {
    let (baseline, _) = hundred_images();
    let short = Evaluation::new(vec![true; 99], vec![true; 99], vec![0.0; 99]).unwrap();
    let err = measure(&baseline, &short, &VerdictRule::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 100 entries, found 99"), "{err}");
}
