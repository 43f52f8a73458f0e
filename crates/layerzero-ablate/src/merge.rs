//! `layerzero ablate merge`: combine the partial results of shards `0/N … (N-1)/N` into one
//! `results.json` identical (apart from `elapsed_s`, `threads`, `command` and possibly the
//! paths of `weights` and `init_weights`) to what one unsharded run would have written.
//!
//! Checks, each failing with an [`Error::Merge`] naming the shard file, the field, and the
//! expected and found values:
//!
//! * every input is a valid schema-1 file *with* a `"shard"` field;
//! * all agree on `shard.count` = N, and the inputs are exactly the shards `0 … N-1`, each
//!   once;
//! * all agree on `arch`, `weights.sha256`, `dataset`, `split`, `n_images`, `mode`, `seed`,
//!   `train_seed`, `init_weights.sha256`, `n_ablations`, `verdict_rule`,
//!   `verdict_thresholds` and `baseline` (`top1`/`top5`
//!   exactly; `loss` to a relative 1e-9, since summation order may differ with thread
//!   counts);
//! * no ablation (layer, level, step) appears in two shards, and together they hold exactly
//!   `n_ablations` records.
//!
//! The merged file has no `"shard"`, takes `weights.path`, `init_weights` and `command` from
//! the first input (`layerzero ablate merge` then records its own command), sums
//! `elapsed_s` (total compute time), takes the largest `threads`, and lists `layers` in
//! canonical order (by `index`, i.e. network order, then `level`).

use std::path::Path;

use crate::error::{Error, Result};
use crate::schema::ResultsFile;

/// Merges shard files read from `paths` (any order).
pub fn merge_files<P: AsRef<Path>>(paths: &[P]) -> Result<ResultsFile> {
    let parts = paths
        .iter()
        .map(|p| {
            let p = p.as_ref();
            Ok((p.display().to_string(), ResultsFile::read(p)?))
        })
        .collect::<Result<Vec<_>>>()?;
    merge(&parts)
}

/// Merges in-memory shards, each labelled with its origin (file name) for error messages.
pub fn merge(parts: &[(String, ResultsFile)]) -> Result<ResultsFile> {
    let merge_err = |origin: &str, field: &str, expected: String, found: String| Error::Merge {
        origin: origin.to_string(),
        field: field.to_string(),
        expected,
        found,
    };
    let Some((first_origin, first)) = parts.first() else {
        return Err(merge_err(
            "(no input)",
            "shards",
            "at least one shard file".into(),
            "none".into(),
        ));
    };
    for (origin, part) in parts {
        part.validate(origin)?;
        if part.shard.is_none() {
            return Err(merge_err(
                origin,
                "shard",
                "a partial file written with --shard K/N".into(),
                "no shard field (a complete results file?)".into(),
            ));
        }
    }
    let count = first.shard.map_or(0, |s| s.count);

    for (origin, part) in &parts[1..] {
        let ctx = |field: &str, expected: String, found: String| {
            merge_err(
                origin,
                field,
                format!("{expected} (as in {first_origin})"),
                found,
            )
        };
        macro_rules! same {
            ($field:literal, $($path:tt)+) => {
                if part.$($path)+ != first.$($path)+ {
                    return Err(ctx(
                        $field,
                        format!("{:?}", first.$($path)+),
                        format!("{:?}", part.$($path)+),
                    ));
                }
            };
        }
        same!("shard.count", shard.map(|s| s.count));
        same!("arch", arch);
        same!("weights.sha256", weights.sha256);
        same!("dataset", dataset);
        same!("split", split);
        same!("n_images", n_images);
        if part.mode != first.mode {
            // By CLI name (`zero-kernel`), not the enum's (`ZeroKernel`).
            return Err(ctx("mode", first.mode.to_string(), part.mode.to_string()));
        }
        same!("seed", seed);
        same!("train_seed", train_seed);
        // Like the weights, the same init file by content, wherever each shard read it.
        same!(
            "init_weights.sha256",
            init_weights.as_ref().map(|w| &w.sha256)
        );
        same!("n_ablations", n_ablations);
        same!("verdict_rule", verdict_rule);
        same!("verdict_thresholds", verdict_thresholds);
        same!("baseline.top1", baseline.top1);
        same!("baseline.top5", baseline.top5);
        let (a, b) = (first.baseline.loss, part.baseline.loss);
        if (a - b).abs() > 1e-9 * a.abs().max(b.abs()).max(1.0) {
            return Err(ctx("baseline.loss", a.to_string(), b.to_string()));
        }
    }

    let mut holder: Vec<Option<&str>> = vec![None; count];
    for (origin, part) in parts {
        let index = part.shard.map_or(0, |s| s.index);
        match holder.get_mut(index) {
            Some(Some(other)) => {
                return Err(merge_err(
                    origin,
                    "shard.index",
                    format!("each of 0..{count} exactly once"),
                    format!("{index}/{count} again (already given by {other})"),
                ))
            }
            Some(slot) => *slot = Some(origin),
            // Unreachable after validation (index < count), but never panic on input.
            None => {
                return Err(merge_err(
                    origin,
                    "shard.index",
                    format!("less than {count}"),
                    index.to_string(),
                ))
            }
        }
    }
    if let Some(missing) = holder.iter().position(Option::is_none) {
        return Err(merge_err(
            "(all inputs)",
            "shard.index",
            format!("all of shards 0..{count} present"),
            format!("shard {missing}/{count} missing"),
        ));
    }

    let mut merged = first.clone();
    merged.shard = None;
    merged.layers = parts
        .iter()
        .flat_map(|(_, p)| p.layers.iter().cloned())
        .collect();
    merged.sort_layers();
    merged.elapsed_s = parts.iter().map(|(_, p)| p.elapsed_s).sum();
    merged.threads = parts.iter().map(|(_, p)| p.threads).max().unwrap_or(1);
    // Duplicated ablations across shards, or a total different from n_ablations, surface
    // here; report them as merge errors.
    merged.validate("merged shards").map_err(|e| match e {
        Error::Schema {
            field,
            expected,
            found,
            ..
        } => merge_err("merged shards", &field, expected, found),
        other => other,
    })?;
    Ok(merged)
}
