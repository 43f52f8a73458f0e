//! Splitting one ablation study over several processes (`--shard K/N`).
//!
//! **Selection rule.** The ablations of a run are enumerated in a fixed, canonical order: for
//! each selected layer in network order, and for swept modes each level in ascending order
//! within the layer. Call the position in that list the *job number* `j` (0-based). Shard
//! `K/N` evaluates exactly the jobs with `j % N == K`, i.e. every N-th ablation starting at
//! K. Every job therefore belongs to exactly one of the shards `0/N … (N-1)/N`, and
//! `layerzero ablate merge` recombines them (see [`mod@crate::merge`]).
//!
//! Round-robin rather than contiguous blocks keeps the shards balanced when the cost of an
//! ablation varies smoothly along the network.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One shard `index/count` of a study; valid when `count >= 1` and `index < count`.
///
/// Serialized in partial results files as `{"index": K, "count": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// Which shard, `0 ..= count - 1`.
    pub index: usize,
    /// How many shards the study is split into, at least 1.
    pub count: usize,
}

impl Shard {
    /// A validated shard.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        let shard = Shard { index, count };
        shard.validate()?;
        Ok(shard)
    }

    /// Checks `count >= 1` and `index < count` (useful after deserializing).
    pub fn validate(&self) -> Result<()> {
        if self.count == 0 {
            return Err(Error::invalid("shard count", "at least 1", self.count));
        }
        if self.index >= self.count {
            return Err(Error::invalid(
                "shard index",
                format!("0 to {} for {} shards", self.count - 1, self.count),
                self.index,
            ));
        }
        Ok(())
    }

    /// Whether job number `job` (0-based, canonical order) belongs to this shard.
    pub fn contains(&self, job: usize) -> bool {
        self.count != 0 && job % self.count == self.index
    }

    /// The job numbers of this shard among `total` jobs, ascending.
    pub fn jobs(&self, total: usize) -> impl Iterator<Item = usize> {
        let (start, step) = if self.count == 0 || self.index >= total {
            (total, 1)
        } else {
            (self.index, self.count)
        };
        (start..total).step_by(step)
    }

    /// How many of `total` jobs this shard evaluates.
    pub fn len_of(&self, total: usize) -> usize {
        if self.count == 0 || self.index >= total {
            0
        } else {
            (total - self.index).div_ceil(self.count)
        }
    }

    /// Keeps the items of this shard from a canonically ordered list.
    pub fn select<T>(&self, items: impl IntoIterator<Item = T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter_map(|(j, item)| self.contains(j).then_some(item))
            .collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// Parses `K/N` (decimal, 0-based K, surrounding whitespace allowed), e.g. `3/8`.
    fn from_str(s: &str) -> Result<Self> {
        let expected = "K/N with integers 0 <= K < N, e.g. 0/4";
        let bad = || Error::invalid("--shard", expected, format!("{s:?}"));
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let parse = |part: &str| -> Result<usize> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<usize>().map_err(|_| bad())
        };
        let (index, count) = (parse(k)?, parse(n)?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        assert_eq!(
            "3/8".parse::<Shard>().unwrap(),
            Shard { index: 3, count: 8 }
        );
        assert_eq!(
            " 0/1 ".parse::<Shard>().unwrap(),
            Shard { index: 0, count: 1 }
        );
        assert_eq!(Shard::new(2, 5).unwrap().to_string(), "2/5");
    }

    #[test]
    fn rejects_bad_shards() {
        for bad in [
            "",
            "3",
            "3/",
            "/3",
            "3/3",
            "4/3",
            "0/0",
            "-1/3",
            "+1/3",
            "1/3/4",
            "a/b",
            "1.0/3",
            "99999999999999999999999/3",
        ] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.to_string().contains("--shard"), "{bad:?}: {err}");
        }
        assert!(Shard::new(3, 3).is_err());
        assert!(Shard::new(0, 0).is_err());
    }

    #[test]
    fn shards_partition_the_jobs() {
        for total in 0..20 {
            for count in 1..7 {
                let mut seen = vec![0u32; total];
                for index in 0..count {
                    let shard = Shard::new(index, count).unwrap();
                    let jobs: Vec<usize> = shard.jobs(total).collect();
                    assert_eq!(jobs.len(), shard.len_of(total));
                    assert_eq!(jobs, shard.select(0..total));
                    assert!(jobs.iter().all(|&j| j % count == index));
                    for j in jobs {
                        seen[j] += 1;
                    }
                }
                assert!(seen.iter().all(|&s| s == 1), "total {total} count {count}");
            }
        }
    }

    #[test]
    fn every_nth_starting_at_k() {
        let shard: Shard = "1/3".parse().unwrap();
        assert_eq!(shard.jobs(10).collect::<Vec<_>>(), vec![1, 4, 7]);
        assert_eq!(shard.select("abcdefghij".chars()), vec!['b', 'e', 'h']);
    }
}
