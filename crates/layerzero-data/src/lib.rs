//! CIFAR-10 and CIFAR-100 for layerzero: read the binary format, fetch and verify the official
//! archive (or a mirror, or a local copy), and cut the images into seeded, augmented, normalised
//! batches of candle tensors.
//!
//! - [`CifarSet::load`] reads one [`Split`] of a [`Dataset`] from a folder, validating file sizes,
//!   labels and the record count; every problem is a [`DataError`] that names the file and what
//!   was expected and found.
//! - [`fetch`](fn@fetch) gets the data set into a data root (the command line's default is
//!   `data/`), atomically and idempotently.
//! - [`Batcher`] yields `(N, 3, 32, 32)` f32 batches (or smaller sides, downscaled, for
//!   progressive resizing: [`BatchConfig::side`]) with He et al.'s crop and a random or
//!   alternating [`Flip`]; the same seed gives the same batches whatever the number of threads.
//!
//! # Example
//!
//! ```
//! use candle_core::Device;
//! use layerzero_data::{BatchConfig, Batcher, CifarSet, Dataset, Split};
//!
//! // Two made-up images; real code calls `CifarSet::load(dir, Dataset::Cifar10, Split::Train)`.
//! let names = (0..10).map(|i| format!("class{i}")).collect();
//! let set = CifarSet::from_parts(Dataset::Cifar10, Split::Train, vec![128; 2 * 3072], vec![3, 7], names)?;
//! let batcher = Batcher::new(&set, BatchConfig::train(Dataset::Cifar10, 2, 42), Device::Cpu)?;
//! for batch in batcher.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(batch.images.dims(), &[2, 3, 32, 32]);
//! }
//! # Ok::<(), layerzero_data::DataError>(())
//! ```
//!
//! Fetching, with the archive named by `LAYERZERO_CIFAR10_ARCHIVE` when it is set:
//!
//! ```no_run
//! use layerzero_data::{fetch, Dataset, Source};
//! let outcome = fetch(std::path::Path::new("data"), &Source::new(Dataset::Cifar10))?;
//! println!("CIFAR-10 is in {}", outcome.dir().display());
//! # Ok::<(), layerzero_data::DataError>(())
//! ```
#![deny(missing_docs)]

mod batch;
mod cifar;
mod error;
mod fetch;
pub mod rng;

pub use batch::{
    decode_image, decode_image_at, Augmentation, Batch, BatchConfig, Batcher, CropFlip,
    EpochBatches, Flip, Normalization,
};
pub use cifar::{
    info, parse_batch, read_batch_file, read_class_names, resolve_dir, BatchFile, CifarSet,
    DataInfo, Dataset, FileInfo, Split, SplitInfo, CHANNELS, IMAGE_SIDE, PIXELS_PER_IMAGE,
};
pub use error::{DataError, Result};
pub use fetch::{
    extract_archive, fetch, validate, verify_file, Checksum, FetchOutcome, Location,
    OfficialArchive, Source, CIFAR100_ARCHIVE_ENV, CIFAR10_ARCHIVE_ENV, MAX_EXTRACTED_BYTES,
};
