//! The CSV companion of `results.json`: one row per layer record, the same columns with
//! `ci95` flattened.
//!
//! Columns, always all present in this order ([`CSV_COLUMNS`]):
//! `index, layer, kind, role, changes_channels, params, level, step, top1, top5, loss,
//! delta_top1, ci95_top1_lo, ci95_top1_hi, ci95_delta_top1_lo, ci95_delta_top1_hi, mcnemar_p,
//! flips_right_to_wrong, flips_wrong_to_right, verdict, selection_top1, zeroed`.
//! `level`, `step`, `selection_top1` and `zeroed` are empty when absent (`selection_top1`
//! and then `zeroed` were appended later: a reader that takes the first 20 or 21 columns by
//! position still works).
//! Numbers are written exactly as in the JSON (shortest round-trip form, e.g. `0.9312`,
//! `1e-30`), booleans as `true`/`false`.
//! Quoting follows RFC 4180: a field containing `,`, `"`, CR or LF is enclosed in double
//! quotes with inner quotes doubled. Lines end with `\n`.

use crate::schema::{LayerRecord, ResultsFile};

/// The header of the CSV, in order.
pub const CSV_COLUMNS: [&str; 22] = [
    "index",
    "layer",
    "kind",
    "role",
    "changes_channels",
    "params",
    "level",
    "step",
    "top1",
    "top5",
    "loss",
    "delta_top1",
    "ci95_top1_lo",
    "ci95_top1_hi",
    "ci95_delta_top1_lo",
    "ci95_delta_top1_hi",
    "mcnemar_p",
    "flips_right_to_wrong",
    "flips_wrong_to_right",
    "verdict",
    "selection_top1",
    "zeroed",
];

/// Renders the layer records as CSV text (header plus one row per record).
pub fn to_csv(results: &ResultsFile) -> String {
    let mut out = String::new();
    push_row(&mut out, CSV_COLUMNS.iter().map(|c| c.to_string()));
    for r in &results.layers {
        push_row(&mut out, record_fields(r));
    }
    out
}

/// Quotes one CSV field if it needs it (RFC 4180).
pub fn quote_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn push_row(out: &mut String, fields: impl IntoIterator<Item = String>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&quote_field(&f));
    }
    out.push('\n');
}

/// A float exactly as serde_json writes it (shortest round-trip, exponent for extremes).
fn num(v: f64) -> String {
    // Serializing a finite f64 cannot fail; validated records are finite.
    serde_json::to_string(&v).unwrap_or_else(|_| v.to_string())
}

fn record_fields(r: &LayerRecord) -> Vec<String> {
    vec![
        r.index.to_string(),
        r.layer.clone(),
        r.kind.clone(),
        r.role.clone(),
        r.changes_channels.to_string(),
        r.params.to_string(),
        r.level.map(num).unwrap_or_default(),
        r.step.map(|s| s.to_string()).unwrap_or_default(),
        num(r.top1),
        num(r.top5),
        num(r.loss),
        num(r.delta_top1),
        num(r.ci95.top1[0]),
        num(r.ci95.top1[1]),
        num(r.ci95.delta_top1[0]),
        num(r.ci95.delta_top1[1]),
        num(r.mcnemar_p),
        r.flips_right_to_wrong.to_string(),
        r.flips_wrong_to_right.to_string(),
        r.verdict.to_string(),
        r.selection_top1.map(num).unwrap_or_default(),
        r.zeroed.map(|z| z.to_string()).unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_field("layer1.0.conv1"), "layer1.0.conv1");
        assert_eq!(quote_field("a,b"), "\"a,b\"");
        assert_eq!(quote_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(quote_field(""), "");
    }

    #[test]
    fn numbers_match_json() {
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(1.0), "1.0");
        assert_eq!(num(1e-30), "1e-30");
        assert_eq!(num(-0.0211), "-0.0211");
    }
}
