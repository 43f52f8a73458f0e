//! Measurements of one ablation against the baseline, as pure functions over paired
//! per-image results.
//!
//! Inputs are per-image vectors over the same test images in the same order: whether the
//! top-1 prediction is right, whether the label is among the top-5, and the cross-entropy
//! loss ([`Evaluation`]). From a baseline and an ablated evaluation, [`measure`] computes:
//!
//! * **top-1, top-5** as fractions in `[0, 1]`, and the **mean cross-entropy**;
//! * **Δtop-1** = ablated − baseline top-1, as a fraction (negative = worse), computed
//!   exactly from the discordant counts as `(c − b) / n`;
//! * the counts of images that flip **right→wrong** (`b`) and **wrong→right** (`c`);
//! * a 95 % **Wilson score interval** for the ablated top-1 accuracy ([`wilson_interval`]);
//! * a 95 % **Wald interval for the paired difference** Δtop-1 ([`paired_difference_wald`]);
//!   [`paired_difference_tango`] gives a score interval that keeps its level near zero flips;
//! * the **exact McNemar p-value** on the paired top-1 correctness ([`mcnemar_exact_p`]);
//! * a **verdict** `trivial` / `non-trivial` by a configurable [`VerdictRule`].

use std::f64::consts::LN_2;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The two-sided 95 % standard-normal quantile, Φ⁻¹(0.975).
pub const Z95: f64 = 1.959_963_984_540_054;

/// Per-image results of evaluating one network (baseline or ablated) on a test set.
///
/// All three vectors have one entry per image, in the same image order for every evaluation
/// that is compared with another.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    top1: Vec<bool>,
    top5: Vec<bool>,
    loss: Vec<f64>,
}

impl Evaluation {
    /// Checks and wraps per-image results: the vectors must be non-empty and of equal length,
    /// every loss finite, and every top-1 hit also a top-5 hit.
    pub fn new(top1: Vec<bool>, top5: Vec<bool>, loss: Vec<f64>) -> Result<Self> {
        let n = top1.len();
        if n == 0 {
            return Err(Error::Length {
                what: "evaluation.top1 (number of images)".into(),
                expected: 1,
                found: 0,
            });
        }
        for (what, len) in [
            ("evaluation.top5", top5.len()),
            ("evaluation.loss", loss.len()),
        ] {
            if len != n {
                return Err(Error::Length {
                    what: what.into(),
                    expected: n,
                    found: len,
                });
            }
        }
        if let Some(i) = loss.iter().position(|l| !l.is_finite()) {
            return Err(Error::invalid(
                format!("evaluation.loss[{i}]"),
                "a finite cross-entropy",
                loss[i],
            ));
        }
        if let Some(i) = (0..n).find(|&i| top1[i] && !top5[i]) {
            return Err(Error::invalid(
                format!("evaluation.top5[{i}]"),
                "true wherever top1 is true (a top-1 hit is a top-5 hit)",
                "false",
            ));
        }
        Ok(Evaluation { top1, top5, loss })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.top1.len()
    }

    /// Always `false`: an evaluation has at least one image.
    pub fn is_empty(&self) -> bool {
        self.top1.is_empty()
    }

    /// Per-image top-1 correctness.
    pub fn top1(&self) -> &[bool] {
        &self.top1
    }

    /// Per-image top-5 correctness.
    pub fn top5(&self) -> &[bool] {
        &self.top5
    }

    /// Per-image cross-entropy.
    pub fn loss(&self) -> &[f64] {
        &self.loss
    }

    /// Top-1, top-5 (fractions) and mean cross-entropy.
    pub fn metrics(&self) -> Metrics {
        let n = self.len() as f64;
        let count = |v: &[bool]| v.iter().filter(|&&x| x).count() as f64;
        Metrics {
            top1: count(&self.top1) / n,
            top5: count(&self.top5) / n,
            loss: self.loss.iter().sum::<f64>() / n,
        }
    }
}

/// Top-1 and top-5 accuracy as fractions in `[0, 1]`, and mean cross-entropy.
///
/// This is also the `"baseline"` object of `results.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Top-1 accuracy, a fraction in `[0, 1]`.
    pub top1: f64,
    /// Top-5 accuracy, a fraction in `[0, 1]`.
    pub top5: f64,
    /// Mean cross-entropy (natural log).
    pub loss: f64,
}

/// The 2×2 table of paired top-1 correctness, baseline vs ablated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PairedCounts {
    /// Number of images.
    pub n: u64,
    /// Right in both.
    pub both_right: u64,
    /// Right in the baseline, wrong after ablation (`b`).
    pub right_to_wrong: u64,
    /// Wrong in the baseline, right after ablation (`c`).
    pub wrong_to_right: u64,
    /// Wrong in both.
    pub both_wrong: u64,
}

impl PairedCounts {
    /// Counts the 2×2 table from paired per-image correctness; errors on unequal or zero
    /// length.
    pub fn from_correctness(baseline: &[bool], ablated: &[bool]) -> Result<Self> {
        if baseline.is_empty() {
            return Err(Error::Length {
                what: "baseline correctness (number of images)".into(),
                expected: 1,
                found: 0,
            });
        }
        if ablated.len() != baseline.len() {
            return Err(Error::Length {
                what: "ablated correctness (paired with the baseline)".into(),
                expected: baseline.len(),
                found: ablated.len(),
            });
        }
        let mut t = PairedCounts {
            n: baseline.len() as u64,
            both_right: 0,
            right_to_wrong: 0,
            wrong_to_right: 0,
            both_wrong: 0,
        };
        for (&base, &abl) in baseline.iter().zip(ablated) {
            match (base, abl) {
                (true, true) => t.both_right += 1,
                (true, false) => t.right_to_wrong += 1,
                (false, true) => t.wrong_to_right += 1,
                (false, false) => t.both_wrong += 1,
            }
        }
        Ok(t)
    }

    /// Δ = (c − b) / n: ablated minus baseline accuracy, as a fraction.
    pub fn delta(&self) -> f64 {
        (self.wrong_to_right as f64 - self.right_to_wrong as f64) / self.n as f64
    }
}

/// Wilson score interval `[lo, hi]` for a binomial proportion `successes / n` with normal
/// quantile `z` (use [`Z95`] for 95 %).
///
/// With p̂ = s/n: centre = (p̂ + z²/2n) / (1 + z²/n), half-width =
/// z·√(p̂(1−p̂)/n + z²/4n²) / (1 + z²/n). The bounds are clamped to `[0, 1]` and are exactly
/// 0 when `s = 0` and exactly 1 when `s = n`. Unlike the Wald interval it behaves well near 0
/// and 1 (accuracy of a destroyed network ≈ chance, or of the baseline ≈ 0.93).
///
/// Errors when `n = 0`, `successes > n`, or `z` is not finite and positive.
pub fn wilson_interval(successes: u64, n: u64, z: f64) -> Result<[f64; 2]> {
    if n == 0 || successes > n {
        return Err(Error::invalid(
            "wilson_interval counts",
            "0 <= successes <= n with n >= 1",
            format!("successes {successes}, n {n}"),
        ));
    }
    check_z(z)?;
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    let lo = if successes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let hi = if successes == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    Ok([lo, hi])
}

/// Wald interval `[lo, hi]` for the difference of paired proportions Δ = (c − b)/n
/// (ablated − baseline), from the discordant counts, with normal quantile `z`.
///
/// se = √((b + c) − (c − b)²/n) / n, interval Δ ± z·se, clamped to `[-1, 1]`.
/// This is the standard large-sample interval (Agresti, *Categorical Data Analysis*,
/// §10.1); with test sets of 10 000 images it is adequate, but it degenerates to `[0, 0]`
/// when there are no discordant pairs (b = c = 0), where the exact McNemar test still says
/// p = 1.
pub fn paired_difference_wald(counts: &PairedCounts, z: f64) -> Result<[f64; 2]> {
    let (n, b, c) = discordant(counts, z)?;
    Ok(wald(n as f64, b as f64, c as f64, z))
}

/// `(n, b, c)` of `counts` after checking them and `z`.
fn discordant(counts: &PairedCounts, z: f64) -> Result<(u64, u64, u64)> {
    check_z(z)?;
    let PairedCounts {
        n,
        right_to_wrong: b,
        wrong_to_right: c,
        ..
    } = *counts;
    if n == 0 || b.checked_add(c).is_none_or(|d| d > n) {
        return Err(Error::invalid(
            "paired counts",
            "n >= 1 and right_to_wrong + wrong_to_right <= n",
            format!("n {n}, right_to_wrong {b}, wrong_to_right {c}"),
        ));
    }
    Ok((n, b, c))
}

/// Δ ± z·se over `n` pairs with `b` and `c` discordant ones (cell counts, possibly adjusted),
/// clamped to `[-1, 1]`.
fn wald(n: f64, b: f64, c: f64, z: f64) -> [f64; 2] {
    let delta = (c - b) / n;
    let var_n2 = ((b + c) - (c - b) * (c - b) / n).max(0.0);
    let half = z * var_n2.sqrt() / n;
    [(delta - half).max(-1.0), (delta + half).min(1.0)]
}

/// Agresti and Min's adjusted Wald interval for the paired difference Δ = (c − b)/n: the
/// Wald interval of [`paired_difference_wald`] after adding ½ to each of the four cells
/// (n + 2 pairs, b + ½ and c + ½ discordant ones), clamped to `[-1, 1]`.
///
/// Agresti and Min (*Simple improved confidence intervals for comparing matched proportions*,
/// Statistics in Medicine 24, 2005) found its coverage close to nominal where the plain
/// Wald interval's falls short, and it does not collapse to `[0, 0]` without discordant pairs:
/// with b = c = 0 its half-width is z / (n + 2), about 4.7 points on 40 images and 0.02 on
/// 10,000. Near a threshold on a few hundred images it errs more often than its nominal level
/// (see [`paired_difference_tango`], which the report uses instead).
pub fn paired_difference_agresti_min(counts: &PairedCounts, z: f64) -> Result<[f64; 2]> {
    let (n, b, c) = discordant(counts, z)?;
    Ok(wald(n as f64 + 2.0, b as f64 + 0.5, c as f64 + 0.5, z))
}

/// Tango's score interval for the paired difference Δ = (c − b)/n (ablated − baseline):
/// every Δ₀ whose score statistic
///
/// T(Δ₀) = (c − b − nΔ₀) / √(n · (2p̃ + Δ₀(1 − Δ₀)))
///
/// lies within ±z, where p̃ is the maximum-likelihood estimate of the right→wrong cell
/// probability under Δ = Δ₀ (the root of 2n·p² + B·p + C = 0 with B = −b − c + (2n − c + b)Δ₀
/// and C = −bΔ₀(1 − Δ₀)). T falls as Δ₀ grows, so each bound is found by bisection, to about
/// 1e-15 away from ±1 (about 1e-11 next to −1 on a million pairs, where 2p̃ + Δ₀(1 − Δ₀)
/// cancels); the bound is exactly −1 (1) when every pair flips right→wrong (wrong→right).
/// With no flips each bound lies z²/(n + z²) from zero, so on few images no interval fits
/// within ±t ([`tango_min_pairs_within`]).
///
/// Tango (*Equivalence test and confidence interval for the difference in proportions for
/// the paired-sample design*, Statistics in Medicine 17, 1998) derived it for equivalence
/// tests; with T(0) it is McNemar's score statistic. Like Agresti and Min's interval it keeps
/// a width when no image flips (about z²/n on either side: 0.04 points on 10,000 images), and
/// near few flips its one-sided error stayed at or under the nominal level where Agresti and
/// Min's did not. Computed exactly over the multinomial for a true Δ of −1 point with
/// 1.01 % of images breaking and 0.01 % mending, the chance that the whole 95 % interval lies
/// inside ±1 point (a false "within the threshold") is 0 with Tango's and 12.9 % with Agresti
/// and Min's on 200 images, 0.75 % against 4.2 % on 500, 2.3 % against 3.5 % on 10,000
/// (nominal: 2.5 %; the largest over breaking rates of 1.01–10 % and n of 100–10,000 was
/// 2.49 % with Tango's). The report
/// uses it where a narrow interval is the claim (a change shown to lie within the verdict
/// threshold).
pub fn paired_difference_tango(counts: &PairedCounts, z: f64) -> Result<[f64; 2]> {
    let (n, b, c) = discordant(counts, z)?;
    let (n, b, c) = (n as f64, b as f64, c as f64);
    let statistic = |d0: f64| {
        let coef_b = -b - c + (2.0 * n - c + b) * d0;
        let coef_c = -b * d0 * (1.0 - d0);
        let disc = (coef_b * coef_b - 8.0 * n * coef_c).max(0.0);
        let p = (disc.sqrt() - coef_b) / (4.0 * n);
        let numerator = c - b - n * d0;
        let var = n * (2.0 * p + d0 * (1.0 - d0));
        if var > 0.0 {
            numerator / var.sqrt()
        } else {
            // Only at Δ₀ = Δ̂ = 0 with no flips (0/0), or at ±1: the sign of the numerator
            // keeps the bisection on the right side.
            if numerator > 0.0 {
                f64::INFINITY
            } else if numerator < 0.0 {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        }
    };
    // The Δ₀ in (−1, 1) where T(Δ₀) = target, by bisection on T's fall.
    let solve = |target: f64| {
        let (mut lo, mut hi) = (-1.0f64, 1.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if statistic(mid) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    };
    let lower = if b == n { -1.0 } else { solve(z) };
    let upper = if c == n { 1.0 } else { solve(-z) };
    Ok([lower.max(-1.0), upper.min(1.0)])
}

/// The fewest pairs on which a [`paired_difference_tango`] interval (quantile `z`) can lie
/// wholly within ±`threshold`: with no flip its bounds lie z²/(n + z²) from zero, which is
/// below the threshold only for n > z²(1 − t)/t (381 images for t = 1 point at 95 %).
pub fn tango_min_pairs_within(threshold: f64, z: f64) -> u64 {
    (z * z * (1.0 - threshold) / threshold).floor() as u64 + 1
}

/// Exact two-sided McNemar p-value from the discordant counts `b` (right→wrong) and `c`
/// (wrong→right): the binomial test of min(b, c) successes in b + c trials with p = ½,
///
/// p = min(1, 2 · Σ_{i=0}^{min(b,c)} C(b+c, i) / 2^{b+c}).
///
/// Returns 1 when b + c = 0 or b = c. For b + c ≤ 120 the value is computed exactly in
/// integers and correctly rounded. Otherwise it is computed in log space without any gamma function:
/// ln C(n, k) as a sum of logarithms of ratios, times the ratio sum
/// Σ_i C(n,i)/C(n,k) accumulated downward from i = k (every term ≤ 1 and the sum ≥ 1, so it
/// neither overflows nor loses precision). Measured against exact rational arithmetic: within
/// 5e-13 relative up to b + c = 1,000, 2.4e-11 at 10,000 and 2.2e-10 at 50,000; a p-value
/// below ~5e-324 underflows to 0. Takes O(min(b, c)) time.
pub fn mcnemar_exact_p(b: u64, c: u64) -> f64 {
    if b == c {
        // Includes b = c = 0; the lower tail already holds at least half the mass.
        return 1.0;
    }
    let n = b.saturating_add(c);
    let k = b.min(c);
    if let Some(p) = mcnemar_exact_small(n, k) {
        return p;
    }
    let nf = n as f64;
    // ln C(n, k) = Σ_{j=1}^{k} ln((n − k + j) / j).
    let ln_choose: f64 = (1..=k).map(|j| ((n - k + j) as f64 / j as f64).ln()).sum();
    // Σ_{i=0}^{k} C(n, i) / C(n, k), using C(n, i−1) / C(n, i) = i / (n − i + 1) < 1.
    let mut term = 1.0f64;
    let mut ratio_sum = 1.0f64;
    for i in (1..=k).rev() {
        term *= i as f64 / (nf - i as f64 + 1.0);
        ratio_sum += term;
    }
    let ln_p = LN_2 + ln_choose + ratio_sum.ln() - nf * LN_2;
    ln_p.exp().min(1.0)
}

/// For n ≤ 120 the tail sum is an exact integer (< 2^120) and 2^(1−n) an exact power of
/// two, so the p-value is the correctly rounded exact value. `None` when n is larger.
fn mcnemar_exact_small(n: u64, k: u64) -> Option<f64> {
    if n > 120 {
        return None;
    }
    let (n, k) = (u128::from(n), u128::from(k));
    let mut choose: u128 = 1; // C(n, i)
    let mut tail: u128 = 1; // Σ_{j ≤ i} C(n, j)
    for i in 0..k {
        // C(n, i + 1) = C(n, i) · (n − i) / (i + 1), exact in integers.
        choose = choose.checked_mul(n - i)? / (i + 1);
        tail = tail.checked_add(choose)?;
    }
    // p = 2 · tail / 2^n = tail · 2^(1 − n); tail < 2^(n − 1) since k < n / 2.
    let scale = 2f64.powi(1 - i32::try_from(n).ok()?);
    Some(((tail as f64) * scale).min(1.0))
}

fn check_z(z: f64) -> Result<()> {
    if z.is_finite() && z > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid("z quantile", "a finite positive number", z))
    }
}

/// Whether zeroing a layer mattered, by a [`VerdictRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The ablation's effect is within the rule's tolerance (`"trivial"`).
    Trivial,
    /// The ablation measurably changed accuracy (`"non-trivial"`).
    NonTrivial,
}

impl Verdict {
    /// `"trivial"` or `"non-trivial"`.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Trivial => "trivial",
            Verdict::NonTrivial => "non-trivial",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rule that turns a measurement into a [`Verdict`]: an ablation is **trivial** when
/// `|Δtop-1| <= max_abs_delta_top1` **and** `mcnemar_p >= min_mcnemar_p`, otherwise
/// **non-trivial**. Both bounds are inclusive.
///
/// The default is the project's: Δtop-1 within 1 point (0.01) and McNemar p ≥ 0.01.
/// Recorded in `results.json` as `"verdict_rule"` ([`VerdictRule::describe`]) and
/// `"verdict_thresholds"` (this struct).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VerdictRule {
    /// Largest |Δtop-1| (a fraction, 0.01 = 1 point) still called trivial.
    pub max_abs_delta_top1: f64,
    /// Smallest McNemar p-value still called trivial.
    pub min_mcnemar_p: f64,
}

impl Default for VerdictRule {
    fn default() -> Self {
        VerdictRule {
            max_abs_delta_top1: 0.01,
            min_mcnemar_p: 0.01,
        }
    }
}

impl VerdictRule {
    /// A validated rule: both thresholds must be in `[0, 1]`.
    pub fn new(max_abs_delta_top1: f64, min_mcnemar_p: f64) -> Result<Self> {
        let rule = VerdictRule {
            max_abs_delta_top1,
            min_mcnemar_p,
        };
        rule.validate()?;
        Ok(rule)
    }

    /// Checks both thresholds are in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("max_abs_delta_top1", self.max_abs_delta_top1),
            ("min_mcnemar_p", self.min_mcnemar_p),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(Error::invalid(
                    format!("verdict rule {what}"),
                    "a number in [0, 1]",
                    v,
                ));
            }
        }
        Ok(())
    }

    /// Applies the rule.
    pub fn verdict(&self, delta_top1: f64, mcnemar_p: f64) -> Verdict {
        if delta_top1.abs() <= self.max_abs_delta_top1 && mcnemar_p >= self.min_mcnemar_p {
            Verdict::Trivial
        } else {
            Verdict::NonTrivial
        }
    }

    /// The rule in words, as written to `results.json` `"verdict_rule"`.
    ///
    /// ```
    /// # use layerzero_ablate::VerdictRule;
    /// assert_eq!(
    ///     VerdictRule::default().describe(),
    ///     "trivial if |delta_top1| <= 0.01 and mcnemar_p >= 0.01 \
    ///      (delta_top1 = ablated - baseline top-1 as a fraction; exact two-sided McNemar test \
    ///      on paired top-1 correctness); otherwise non-trivial"
    /// );
    /// ```
    pub fn describe(&self) -> String {
        format!(
            "trivial if |delta_top1| <= {} and mcnemar_p >= {} (delta_top1 = ablated - baseline \
             top-1 as a fraction; exact two-sided McNemar test on paired top-1 correctness); \
             otherwise non-trivial",
            self.max_abs_delta_top1, self.min_mcnemar_p
        )
    }
}

/// The 95 % intervals of one ablation, the `"ci95"` object of a layer record:
/// `{"top1": [lo, hi], "delta_top1": [lo, hi]}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ci95 {
    /// Wilson score interval for the ablated top-1 accuracy.
    pub top1: [f64; 2],
    /// Wald interval for the paired difference Δtop-1 = ablated − baseline.
    pub delta_top1: [f64; 2],
}

/// Everything measured for one ablation against the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Top-1, top-5 and mean cross-entropy of the ablated network.
    pub metrics: Metrics,
    /// Ablated − baseline top-1, a fraction (negative = worse).
    pub delta_top1: f64,
    /// 95 % intervals for top-1 and Δtop-1.
    pub ci95: Ci95,
    /// Exact two-sided McNemar p-value.
    pub mcnemar_p: f64,
    /// The paired 2×2 table (flips right→wrong = `right_to_wrong`, wrong→right =
    /// `wrong_to_right`).
    pub counts: PairedCounts,
    /// The verdict under the rule passed to [`measure`].
    pub verdict: Verdict,
}

/// Measures an ablated evaluation against the baseline on the same images.
///
/// Errors when the two evaluations cover different numbers of images or the rule is invalid.
pub fn measure(
    baseline: &Evaluation,
    ablated: &Evaluation,
    rule: &VerdictRule,
) -> Result<Measurement> {
    rule.validate()?;
    let counts = PairedCounts::from_correctness(baseline.top1(), ablated.top1())?;
    let delta_top1 = counts.delta();
    let correct = counts.both_right + counts.wrong_to_right;
    let ci95 = Ci95 {
        top1: wilson_interval(correct, counts.n, Z95)?,
        delta_top1: paired_difference_wald(&counts, Z95)?,
    };
    let mcnemar_p = mcnemar_exact_p(counts.right_to_wrong, counts.wrong_to_right);
    Ok(Measurement {
        metrics: ablated.metrics(),
        delta_top1,
        ci95,
        mcnemar_p,
        counts,
        verdict: rule.verdict(delta_top1, mcnemar_p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_validation() {
        assert!(Evaluation::new(vec![], vec![], vec![]).is_err());
        assert!(Evaluation::new(vec![true], vec![true, true], vec![0.1]).is_err());
        assert!(Evaluation::new(vec![true], vec![true], vec![]).is_err());
        assert!(Evaluation::new(vec![true], vec![true], vec![f64::NAN]).is_err());
        let err = Evaluation::new(vec![false, true], vec![false, false], vec![0.0, 0.0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("evaluation.top5[1]"), "{err}");
        let e = Evaluation::new(
            vec![true, false, true, false],
            vec![true, true, true, false],
            vec![0.5, 1.5, 0.25, 2.0],
        )
        .unwrap();
        assert_eq!(
            e.metrics(),
            Metrics {
                top1: 0.5,
                top5: 0.75,
                loss: 1.0625
            }
        );
        assert_eq!(e.len(), 4);
        assert!(!e.is_empty());
    }

    #[test]
    fn paired_counts_and_delta() {
        let base = [true, true, false, false, true];
        let abl = [true, false, true, false, false];
        let t = PairedCounts::from_correctness(&base, &abl).unwrap();
        assert_eq!(
            (
                t.both_right,
                t.right_to_wrong,
                t.wrong_to_right,
                t.both_wrong
            ),
            (1, 2, 1, 1)
        );
        assert_eq!(t.delta(), -0.2);
        assert!(PairedCounts::from_correctness(&base, &abl[..4]).is_err());
        assert!(PairedCounts::from_correctness(&[], &[]).is_err());
    }

    #[test]
    fn verdict_rule_boundaries_are_inclusive() {
        let rule = VerdictRule::default();
        assert_eq!(rule.verdict(-100.0 / 10_000.0, 0.01), Verdict::Trivial);
        assert_eq!(rule.verdict(-101.0 / 10_000.0, 0.5), Verdict::NonTrivial);
        assert_eq!(rule.verdict(0.0, 0.009_999), Verdict::NonTrivial);
        assert_eq!(rule.verdict(0.02, 1.0), Verdict::NonTrivial);
        assert!(VerdictRule::new(-0.1, 0.01).is_err());
        assert!(VerdictRule::new(0.01, f64::NAN).is_err());
        assert_eq!(Verdict::NonTrivial.to_string(), "non-trivial");
        assert_eq!(
            serde_json::to_string(&Verdict::NonTrivial).unwrap(),
            "\"non-trivial\""
        );
    }

    #[test]
    fn bad_interval_inputs() {
        assert!(wilson_interval(1, 0, Z95).is_err());
        assert!(wilson_interval(3, 2, Z95).is_err());
        assert!(wilson_interval(1, 2, 0.0).is_err());
        let bad = PairedCounts {
            n: 3,
            both_right: 0,
            right_to_wrong: 2,
            wrong_to_right: 2,
            both_wrong: 0,
        };
        assert!(paired_difference_wald(&bad, Z95).is_err());
    }
}
