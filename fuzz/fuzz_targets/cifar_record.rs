//! The CIFAR batch-file reader on arbitrary bytes, as CIFAR-10 and as CIFAR-100: a result is
//! either an error or a set whose sizes agree with the input.
#![no_main]

use std::path::Path;

use layerzero_data::{parse_batch, Dataset, PIXELS_PER_IMAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for dataset in [Dataset::Cifar10, Dataset::Cifar100] {
        if let Ok(batch) = parse_batch(data, Path::new("fuzz.bin"), dataset) {
            let n = data.len() / dataset.record_size();
            assert_eq!(batch.labels.len(), n);
            assert_eq!(batch.pixels.len(), n * PIXELS_PER_IMAGE);
            assert!(batch
                .labels
                .iter()
                .all(|&l| (l as usize) < dataset.num_classes()));
        }
    }
});
