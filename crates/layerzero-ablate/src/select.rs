//! Layer selection by name patterns (`--layers 'layer2.*,fc'`).
//!
//! A selection is a comma-separated list of glob patterns. In a pattern, `*` matches any
//! run of characters (including `.` and the empty run) and `?` matches exactly one
//! character; every other character matches itself. There is no escaping, so a layer name
//! containing `,` cannot be selected by a literal pattern (use `?`). Whitespace around each
//! pattern is ignored. A pattern must match the *whole* name: `layer2` does not select
//! `layer2.0.conv1`, `layer2*` does.
//!
//! A pattern that matches no layer is an error ([`Error::PatternMatchesNothing`]) naming
//! the pattern and listing the available names, because a typo would otherwise silently
//! shrink a study.

use crate::error::{Error, Result};

/// Whether `name` matches the glob `pattern` as a whole (`*` = any run, `?` = one char).
///
/// Runs in O(|pattern| · |name|) worst case, without recursion.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    // Position of the last `*` seen in the pattern and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == n[ni])) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((star_pi, star_ni)) = star {
            // Let the last `*` absorb one more character and retry.
            pi = star_pi + 1;
            ni = star_ni + 1;
            star = Some((star_pi, star_ni + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Splits a `--layers` value into its patterns (comma-separated, trimmed).
///
/// Errors when the list is empty or contains an empty pattern (e.g. `"a,,b"` or `"a,"`),
/// which is almost certainly a typo.
pub fn parse_patterns(list: &str) -> Result<Vec<String>> {
    let patterns: Vec<String> = list.split(',').map(|p| p.trim().to_string()).collect();
    if patterns.iter().any(String::is_empty) {
        return Err(Error::invalid(
            "--layers",
            "a comma-separated list of non-empty glob patterns (`*` and `?` wildcards)",
            format!("{list:?}"),
        ));
    }
    Ok(patterns)
}

/// Selects layers by a `--layers` value, returning the indices into `names` of the selected
/// layers in network (slice) order, each at most once.
///
/// `None` selects every layer. Every pattern must match at least one name, otherwise
/// [`Error::PatternMatchesNothing`] names the first such pattern and lists all names.
pub fn select_layers<S: AsRef<str>>(names: &[S], patterns: Option<&str>) -> Result<Vec<usize>> {
    let Some(list) = patterns else {
        return Ok((0..names.len()).collect());
    };
    let patterns = parse_patterns(list)?;
    let mut selected = vec![false; names.len()];
    for pattern in &patterns {
        let mut matched = false;
        for (i, name) in names.iter().enumerate() {
            if glob_match(pattern, name.as_ref()) {
                selected[i] = true;
                matched = true;
            }
        }
        if !matched {
            return Err(Error::PatternMatchesNothing {
                pattern: pattern.clone(),
                available: names.iter().map(|n| n.as_ref().to_string()).collect(),
            });
        }
    }
    Ok(selected
        .iter()
        .enumerate()
        .filter_map(|(i, &s)| s.then_some(i))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 7] = [
        "conv1",
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer2.0.conv1",
        "layer2.0.conv2",
        "layer2.0.shortcut.0",
        "fc",
    ];

    #[test]
    fn glob_basics() {
        assert!(glob_match("layer2.*", "layer2.0.conv1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything.at.all"));
        assert!(glob_match("conv?", "conv1"));
        assert!(!glob_match("conv?", "conv"));
        assert!(!glob_match("conv?", "conv12"));
        assert!(!glob_match("layer2", "layer2.0.conv1"));
        assert!(glob_match("*conv2", "layer1.0.conv2"));
        assert!(glob_match("layer*.conv1", "layer1.0.conv1"));
        assert!(!glob_match("layer*.conv1", "layer1.0.conv2"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("**?", "x"));
        assert!(!glob_match("**?", ""));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        // Non-ASCII names are matched by character, not byte.
        assert!(glob_match("é?", "éß"));
    }

    #[test]
    fn default_is_everything_in_order() {
        assert_eq!(
            select_layers(&NAMES, None).unwrap(),
            (0..7).collect::<Vec<_>>()
        );
    }

    #[test]
    fn patterns_select_in_network_order_without_duplicates() {
        let got = select_layers(&NAMES, Some(" fc , layer2.* ,*.conv1")).unwrap();
        assert_eq!(got, vec![1, 3, 4, 5, 6]);
        // `conv1` alone matches only the stem, not `layer1.0.conv1`.
        assert_eq!(select_layers(&NAMES, Some("conv1")).unwrap(), vec![0]);
    }

    #[test]
    fn unmatched_pattern_is_named_with_available_names() {
        let err = select_layers(&NAMES, Some("layer2.*,layer9.*")).unwrap_err();
        match &err {
            Error::PatternMatchesNothing { pattern, available } => {
                assert_eq!(pattern, "layer9.*");
                assert_eq!(available.len(), NAMES.len());
            }
            other => panic!("unexpected error {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("\"layer9.*\""), "{msg}");
        assert!(msg.contains("layer2.0.shortcut.0"), "{msg}");
    }

    #[test]
    fn empty_patterns_are_rejected() {
        for bad in ["", "a,,b", "fc,", " , "] {
            assert!(
                matches!(
                    select_layers(&NAMES, Some(bad)),
                    Err(Error::InvalidArgument { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
