//! Which filters or weights to zero at a sparsity level (`zero-filters`, `prune`).
//!
//! These are pure functions over a flat, row-major `f32` weight slice and its shape
//! (`[out_channels, in_channels, kh, kw]` for a conv, `[out_features, in_features]` for a
//! linear layer). They only *choose*; [`zero_filters`] and [`zero_weights`] apply a choice.
//!
//! **Count.** At fraction `f` of `n` candidates, `k = floor(f · n)` are zeroed (as Distiller's
//! `int(fraction * n)`), with a tolerance of `1e-9` so that e.g. `0.7 · 10` counts as 7 even
//! though it is `7.000000000000001` or `6.999…` in floating point.
//!
//! **Order.** Candidates are ranked by ascending score (L1 norm of the filter in `f64`, or
//! absolute value of the weight) and ties are broken by ascending index, so the choice is
//! fully deterministic. Non-finite weights are rejected.

use crate::error::{Error, Result};

/// The default sweep of sparsity levels, `0.1, 0.2, …, 0.9`.
pub fn default_levels() -> Vec<f64> {
    (1..=9).map(|i| f64::from(i) / 10.0).collect()
}

/// Parses a comma-separated list of levels (`--levels 0.1,0.5,0.9`): each a number in
/// `[0, 1]`; returned sorted ascending; duplicates are an error.
pub fn parse_levels(list: &str) -> Result<Vec<f64>> {
    let expected = "a comma-separated list of distinct fractions in [0, 1], e.g. 0.1,0.5,0.9";
    let mut levels = Vec::new();
    for part in list.split(',') {
        let part = part.trim();
        let level: f64 = part
            .parse()
            .map_err(|_| Error::invalid("--levels", expected, format!("{part:?} in {list:?}")))?;
        check_fraction("--levels", level)?;
        levels.push(level);
    }
    levels.sort_by(f64::total_cmp);
    if let Some(pair) = levels.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            "--levels",
            expected,
            format!("{} twice in {list:?}", pair[0]),
        ));
    }
    Ok(levels)
}

/// How many of `n` candidates are zeroed at `fraction`: `floor(fraction · n + 1e-9)`.
pub fn count_at(fraction: f64, n: usize) -> Result<usize> {
    check_fraction("fraction", fraction)?;
    // `n as f64` is exact for any realistic layer size (< 2^53).
    let k = (fraction * n as f64 + 1e-9).floor();
    // `k <= n` since fraction <= 1, up to the tolerance; clamp for safety.
    Ok((k as usize).min(n))
}

/// The output filters (indices along `shape[0]`) to zero at `fraction`: the
/// `floor(fraction · out_channels)` filters with the smallest L1 norm, ties by index,
/// returned in ascending index order.
///
/// Errors when the shape is empty, its product differs from `weights.len()`, the fraction is
/// not in `[0, 1]`, or a weight is not finite.
pub fn filters_to_zero(weights: &[f32], shape: &[usize], fraction: f64) -> Result<Vec<usize>> {
    check_shape(weights, shape)?;
    let filters = shape[0];
    let k = count_at(fraction, filters)?;
    let per_filter = weights.len().checked_div(filters).unwrap_or(0);
    let norms: Vec<f64> = (0..filters)
        .map(|f| {
            weights[f * per_filter..(f + 1) * per_filter]
                .iter()
                .map(|&w| f64::from(w).abs())
                .sum()
        })
        .collect();
    Ok(smallest_k(&norms, k))
}

/// The flat indices of the weights to zero at `fraction`: the `floor(fraction · len)` weights
/// with the smallest absolute value, ties by index, in ascending index order.
///
/// Errors when the fraction is not in `[0, 1]` or a weight is not finite.
pub fn weights_to_prune(weights: &[f32], fraction: f64) -> Result<Vec<usize>> {
    check_finite(weights)?;
    let k = count_at(fraction, weights.len())?;
    let magnitudes: Vec<f64> = weights.iter().map(|&w| f64::from(w).abs()).collect();
    Ok(smallest_k(&magnitudes, k))
}

/// Zeros the given output filters in place (indices along `shape[0]`).
///
/// Errors, without modifying anything, when the shape does not fit the slice or an index is
/// out of range.
pub fn zero_filters(weights: &mut [f32], shape: &[usize], filters: &[usize]) -> Result<()> {
    check_shape_len(weights.len(), shape)?;
    let count = shape[0];
    if let Some(&bad) = filters.iter().find(|&&f| f >= count) {
        return Err(Error::invalid(
            "filter index",
            format!("less than {count} (shape[0])"),
            bad,
        ));
    }
    let per_filter = weights.len().checked_div(count).unwrap_or(0);
    for &f in filters {
        weights[f * per_filter..(f + 1) * per_filter].fill(0.0);
    }
    Ok(())
}

/// Zeros the given flat weight indices in place.
///
/// Errors, without modifying anything, when an index is out of range.
pub fn zero_weights(weights: &mut [f32], indices: &[usize]) -> Result<()> {
    let len = weights.len();
    if let Some(&bad) = indices.iter().find(|&&i| i >= len) {
        return Err(Error::invalid(
            "weight index",
            format!("less than {len} (the number of weights)"),
            bad,
        ));
    }
    for &i in indices {
        weights[i] = 0.0;
    }
    Ok(())
}

/// Indices of the `k` smallest scores, ties by index, returned ascending by index.
/// Scores must be finite (checked by the callers).
fn smallest_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    if k == 0 {
        return Vec::new();
    }
    if k < order.len() {
        // (score, index) is a total order with no equal keys, so the partition is unique.
        order.select_nth_unstable_by(k - 1, |&a, &b| {
            scores[a].total_cmp(&scores[b]).then(a.cmp(&b))
        });
        order.truncate(k);
    }
    order.sort_unstable();
    order
}

fn check_fraction(what: &str, fraction: f64) -> Result<()> {
    if fraction.is_finite() && (0.0..=1.0).contains(&fraction) {
        Ok(())
    } else {
        Err(Error::invalid(what, "a fraction in [0, 1]", fraction))
    }
}

fn check_finite(weights: &[f32]) -> Result<()> {
    match weights.iter().position(|w| !w.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::invalid(
            format!("weights[{i}]"),
            "a finite number",
            weights[i],
        )),
    }
}

fn check_shape_len(len: usize, shape: &[usize]) -> Result<()> {
    let product = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if shape.is_empty() || product != Some(len) {
        return Err(Error::invalid(
            "weight shape",
            format!("a non-empty shape whose product is the number of weights ({len})"),
            format!("{shape:?}"),
        ));
    }
    Ok(())
}

fn check_shape(weights: &[f32], shape: &[usize]) -> Result<()> {
    check_shape_len(weights.len(), shape)?;
    check_finite(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_floor_with_tolerance() {
        assert_eq!(count_at(0.7, 10).unwrap(), 7);
        assert_eq!(count_at(0.3, 10).unwrap(), 3);
        assert_eq!(count_at(0.29, 100).unwrap(), 29);
        assert_eq!(count_at(0.5, 3).unwrap(), 1);
        assert_eq!(count_at(0.0, 64).unwrap(), 0);
        assert_eq!(count_at(1.0, 64).unwrap(), 64);
        assert_eq!(count_at(0.1, 0).unwrap(), 0);
        for bad in [-0.1, 1.0001, f64::NAN, f64::INFINITY] {
            assert!(count_at(bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_by_l1_norm_ties_by_index() {
        // 4 filters of 2x1x1: L1 norms 3, 1, 1, 0.5.
        let w = [1.0, -2.0, 0.5, -0.5, -1.0, 0.0, 0.25, 0.25];
        let shape = [4, 2, 1, 1];
        assert_eq!(filters_to_zero(&w, &shape, 0.25).unwrap(), vec![3]);
        // Filters 1 and 2 tie at norm 1: index 1 goes first.
        assert_eq!(filters_to_zero(&w, &shape, 0.5).unwrap(), vec![1, 3]);
        assert_eq!(filters_to_zero(&w, &shape, 0.75).unwrap(), vec![1, 2, 3]);
        assert_eq!(filters_to_zero(&w, &shape, 1.0).unwrap(), vec![0, 1, 2, 3]);
        assert!(filters_to_zero(&w, &shape, 0.2).unwrap().is_empty());
    }

    #[test]
    fn prune_by_magnitude_ties_by_index() {
        let w = [0.3, -0.1, 0.1, 0.0, -0.3, 2.0];
        assert_eq!(weights_to_prune(&w, 0.5).unwrap(), vec![1, 2, 3]);
        assert_eq!(weights_to_prune(&w, 2.0 / 6.0).unwrap(), vec![1, 3]);
        assert_eq!(
            weights_to_prune(&w, 5.0 / 6.0).unwrap(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(weights_to_prune(&[], 0.5).unwrap().is_empty());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let w = [1.0f32, 2.0, 3.0, 4.0];
        assert!(filters_to_zero(&w, &[3, 1], 0.5).is_err());
        assert!(filters_to_zero(&w, &[], 0.5).is_err());
        assert!(filters_to_zero(&w, &[usize::MAX, 2], 0.5).is_err());
        let err = weights_to_prune(&[1.0, f32::NAN], 0.5).unwrap_err();
        assert!(err.to_string().contains("weights[1]"), "{err}");
        let mut w2 = w;
        assert!(zero_filters(&mut w2, &[2, 2], &[2]).is_err());
        assert!(zero_weights(&mut w2, &[0, 4]).is_err());
        assert_eq!(w2, w, "a failed call must not modify the weights");
    }

    #[test]
    fn applying_a_choice() {
        let mut w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        zero_filters(&mut w, &[3, 2], &[0, 2]).unwrap();
        assert_eq!(w, [0.0, 0.0, 3.0, 4.0, 0.0, 0.0]);
        zero_weights(&mut w, &[3]).unwrap();
        assert_eq!(w, [0.0, 0.0, 3.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn levels() {
        assert_eq!(default_levels().len(), 9);
        assert_eq!(default_levels()[0], 0.1);
        assert_eq!(default_levels()[8], 0.9);
        assert_eq!(parse_levels("0.5, 0.1,0.9").unwrap(), vec![0.1, 0.5, 0.9]);
        for bad in ["", "0.1,,0.2", "1.5", "x", "0.1,0.1", "NaN"] {
            assert!(parse_levels(bad).is_err(), "{bad:?}");
        }
    }
}
