//! Helpers shared by the integration tests.

use layerzero_data::{CifarSet, Dataset, Split};

/// Synthetic images whose class is visible (a per-class colour), for tests that only need the
/// loop to run.
pub fn synthetic(n: usize, split: Split) -> CifarSet {
    let mut pixels = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i * 7 % 10) as u8;
        for c in 0..3 {
            for p in 0..1024 {
                let base = (label as usize * 25 + c * 60) % 256;
                pixels.push(((base + (p * (i + 1)) % 17) % 256) as u8);
            }
        }
        labels.push(label);
    }
    let names = (0..10).map(|i| format!("class{i}")).collect();
    CifarSet::from_parts(Dataset::Cifar10, split, pixels, labels, names).unwrap()
}
