//! Readers for the binary CIFAR-10 and CIFAR-100 formats.
//!
//! A CIFAR-10 record is 1 label byte followed by 3,072 pixel bytes: the 1,024 red values of the
//! 32×32 image row-major, then the green, then the blue. A CIFAR-100 record has two label bytes
//! (coarse, then fine) before the same pixels. We keep the fine label as *the* label.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// Side of a CIFAR image in pixels.
pub const IMAGE_SIDE: usize = 32;
/// Colour channels of a CIFAR image.
pub const CHANNELS: usize = 3;
/// Bytes of pixels in one record (3 planes of 32×32).
pub const PIXELS_PER_IMAGE: usize = CHANNELS * IMAGE_SIDE * IMAGE_SIDE;

/// Which CIFAR data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// CIFAR-10: 10 classes, 50,000 training and 10,000 test images.
    Cifar10,
    /// CIFAR-100: 100 fine classes (20 coarse), 50,000 training and 10,000 test images.
    Cifar100,
}

/// Which part of the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training images.
    Train,
    /// The test images.
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dataset {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "cifar10" => Ok(Dataset::Cifar10),
            "cifar100" => Ok(Dataset::Cifar100),
            _ => Err(DataError::InvalidOption {
                what: "data set",
                expected: "cifar10 or cifar100",
                found: s.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.cli_name())
    }
}

impl Dataset {
    /// The name used on the command line and in result files: `cifar10`, `cifar100`.
    pub fn cli_name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar10",
            Dataset::Cifar100 => "cifar100",
        }
    }

    /// Number of (fine) classes.
    pub fn num_classes(self) -> usize {
        match self {
            Dataset::Cifar10 => 10,
            Dataset::Cifar100 => 100,
        }
    }

    /// Label bytes before the pixels of each record.
    pub fn label_bytes(self) -> usize {
        match self {
            Dataset::Cifar10 => 1,
            Dataset::Cifar100 => 2,
        }
    }

    /// Size of one record in bytes (3,073 for CIFAR-10, 3,074 for CIFAR-100).
    pub fn record_size(self) -> usize {
        self.label_bytes() + PIXELS_PER_IMAGE
    }

    /// The folder the official archive extracts to.
    pub fn folder_name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar-10-batches-bin",
            Dataset::Cifar100 => "cifar-100-binary",
        }
    }

    /// The batch files of a split, in reading order.
    pub fn files(self, split: Split) -> &'static [&'static str] {
        match (self, split) {
            (Dataset::Cifar10, Split::Train) => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            (Dataset::Cifar10, Split::Test) => &["test_batch.bin"],
            (Dataset::Cifar100, Split::Train) => &["train.bin"],
            (Dataset::Cifar100, Split::Test) => &["test.bin"],
        }
    }

    /// The file listing the (fine) class names, one per line.
    pub fn class_names_file(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "batches.meta.txt",
            Dataset::Cifar100 => "fine_label_names.txt",
        }
    }

    /// Records in the official split.
    pub fn expected_records(self, split: Split) -> usize {
        match split {
            Split::Train => 50_000,
            Split::Test => 10_000,
        }
    }

    /// Every file the extracted data set must hold.
    pub fn required_files(self) -> Vec<&'static str> {
        let mut files: Vec<&'static str> = self.files(Split::Train).to_vec();
        files.extend_from_slice(self.files(Split::Test));
        files.push(self.class_names_file());
        files
    }

    /// Per-channel (R, G, B) mean of the training images, for normalisation.
    pub fn channel_mean(self) -> [f32; 3] {
        match self {
            Dataset::Cifar10 => [0.4914, 0.4822, 0.4465],
            Dataset::Cifar100 => [0.5071, 0.4865, 0.4409],
        }
    }

    /// Per-channel (R, G, B) standard deviation of the training images, for normalisation.
    pub fn channel_std(self) -> [f32; 3] {
        match self {
            Dataset::Cifar10 => [0.2470, 0.2435, 0.2616],
            Dataset::Cifar100 => [0.2673, 0.2564, 0.2762],
        }
    }
}

/// Finds the folder holding the batch files of `dataset` given either the root that contains
/// `cifar-10-batches-bin/` (e.g. `data/`) or that folder itself.
pub fn resolve_dir(dir: &Path, dataset: Dataset) -> PathBuf {
    let nested = dir.join(dataset.folder_name());
    if nested.is_dir() {
        return nested;
    }
    if dir.join(dataset.files(Split::Test)[0]).is_file() {
        return dir.to_path_buf();
    }
    // Neither exists: the nested form is where `fetch` puts it, so name that in errors.
    nested
}

/// One split of a CIFAR data set in memory: raw pixel bytes and labels.
#[derive(Clone)]
pub struct CifarSet {
    dataset: Dataset,
    split: Split,
    dir: PathBuf,
    /// `len × 3072` bytes, each image's R, G, B planes.
    pixels: Vec<u8>,
    labels: Vec<u8>,
    coarse_labels: Option<Vec<u8>>,
    class_names: Vec<String>,
}

impl std::fmt::Debug for CifarSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CifarSet")
            .field("dataset", &self.dataset)
            .field("split", &self.split)
            .field("dir", &self.dir)
            .field("len", &self.len())
            .finish()
    }
}

/// The records of one batch file.
#[derive(Debug, Clone, Default)]
pub struct BatchFile {
    /// `n × 3072` pixel bytes.
    pub pixels: Vec<u8>,
    /// The (fine) labels.
    pub labels: Vec<u8>,
    /// CIFAR-100's coarse labels; empty for CIFAR-10.
    pub coarse_labels: Vec<u8>,
}

/// Reads and validates one batch file: its size must be a whole number of records and every
/// label must be a valid class.
pub fn read_batch_file(path: &Path, dataset: Dataset) -> Result<BatchFile> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::MissingFile {
                path: path.to_path_buf(),
                dataset: dataset.cli_name(),
            })
        }
        Err(e) => return Err(DataError::io(path, e)),
    };
    parse_batch(&bytes, path, dataset)
}

/// Parses the bytes of a batch file (see [`read_batch_file`]); `path` only names it in errors.
pub fn parse_batch(bytes: &[u8], path: &Path, dataset: Dataset) -> Result<BatchFile> {
    let record = dataset.record_size();
    if !bytes.len().is_multiple_of(record) {
        return Err(DataError::BadFileSize {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            record_size: record,
            dataset: dataset.cli_name(),
        });
    }
    let n = bytes.len() / record;
    let mut out = BatchFile {
        pixels: Vec::with_capacity(n * PIXELS_PER_IMAGE),
        labels: Vec::with_capacity(n),
        coarse_labels: Vec::new(),
    };
    let max_fine = (dataset.num_classes() - 1) as u8;
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let check = |field: &'static str, value: u8, max: u8| {
            if value > max {
                Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index,
                    field,
                    value,
                    max,
                })
            } else {
                Ok(value)
            }
        };
        match dataset {
            Dataset::Cifar10 => out.labels.push(check("label", rec[0], max_fine)?),
            Dataset::Cifar100 => {
                out.coarse_labels.push(check("coarse label", rec[0], 19)?);
                out.labels.push(check("fine label", rec[1], max_fine)?);
            }
        }
        out.pixels.extend_from_slice(&rec[dataset.label_bytes()..]);
    }
    Ok(out)
}

/// Reads the class names (one per non-empty line).
pub fn read_class_names(dir: &Path, dataset: Dataset) -> Result<Vec<String>> {
    let path = dir.join(dataset.class_names_file());
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::MissingFile {
                path,
                dataset: dataset.cli_name(),
            })
        }
        Err(e) => return Err(DataError::io(&path, e)),
    };
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != dataset.num_classes() {
        return Err(DataError::BadClassNames {
            path,
            expected: dataset.num_classes(),
            found: names.len(),
        });
    }
    Ok(names)
}

impl CifarSet {
    /// Loads a whole split from `dir` (the root holding `cifar-10-batches-bin/`, or that folder),
    /// checking file sizes, labels and the official record count.
    pub fn load(dir: &Path, dataset: Dataset, split: Split) -> Result<Self> {
        let dir = resolve_dir(dir, dataset);
        let class_names = read_class_names(&dir, dataset)?;
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        let mut coarse = Vec::new();
        for file in dataset.files(split) {
            let batch = read_batch_file(&dir.join(file), dataset)?;
            pixels.extend_from_slice(&batch.pixels);
            labels.extend_from_slice(&batch.labels);
            coarse.extend_from_slice(&batch.coarse_labels);
        }
        let expected = dataset.expected_records(split);
        if labels.len() != expected {
            return Err(DataError::WrongRecordCount {
                dir,
                split: split.name(),
                dataset: dataset.cli_name(),
                expected,
                found: labels.len(),
            });
        }
        Ok(CifarSet {
            dataset,
            split,
            dir,
            pixels,
            labels,
            coarse_labels: (dataset == Dataset::Cifar100).then_some(coarse),
            class_names,
        })
    }

    /// Builds a set from images already in memory (e.g. a user's own 32×32 data, or tests).
    /// `pixels` holds `labels.len() × 3072` bytes in CIFAR's plane order.
    pub fn from_parts(
        dataset: Dataset,
        split: Split,
        pixels: Vec<u8>,
        labels: Vec<u8>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        if pixels.len() != labels.len() * PIXELS_PER_IMAGE {
            return Err(DataError::InvalidOption {
                what: "pixel buffer",
                expected: "labels.len() × 3072 bytes",
                found: format!("{} bytes for {} labels", pixels.len(), labels.len()),
            });
        }
        if let Some((index, &value)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= dataset.num_classes())
        {
            return Err(DataError::LabelOutOfRange {
                path: PathBuf::from("<memory>"),
                index,
                field: "label",
                value,
                max: (dataset.num_classes() - 1) as u8,
            });
        }
        Ok(CifarSet {
            dataset,
            split,
            dir: PathBuf::from("<memory>"),
            pixels,
            labels,
            coarse_labels: None,
            class_names,
        })
    }

    /// Keeps only the first `limit` images (all if `limit` is larger), for smoke runs and tests.
    /// The official files are already in random order, so a prefix is close to class-balanced.
    pub fn truncate(mut self, limit: usize) -> Self {
        let n = limit.min(self.len());
        self.pixels.truncate(n * PIXELS_PER_IMAGE);
        self.labels.truncate(n);
        if let Some(c) = &mut self.coarse_labels {
            c.truncate(n);
        }
        self
    }

    /// A copy of images `range` (in order), with the same data set, split, folder and class
    /// names: e.g. the first half of the test set to choose something on and the second half
    /// to measure it on. The range is clamped to the set (so `5000..6000` of a 3,000-image set
    /// is empty).
    pub fn subset(&self, range: std::ops::Range<usize>) -> Self {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        CifarSet {
            dataset: self.dataset,
            split: self.split,
            dir: self.dir.clone(),
            pixels: self.pixels[start * PIXELS_PER_IMAGE..end * PIXELS_PER_IMAGE].to_vec(),
            labels: self.labels[start..end].to_vec(),
            coarse_labels: self.coarse_labels.as_ref().map(|c| c[start..end].to_vec()),
            class_names: self.class_names.clone(),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Which data set this is.
    pub fn dataset(&self) -> Dataset {
        self.dataset
    }

    /// Which split this is.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The folder the files were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The (fine) labels, one per image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// CIFAR-100's coarse labels.
    pub fn coarse_labels(&self) -> Option<&[u8]> {
        self.coarse_labels.as_deref()
    }

    /// The class names, indexed by label.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The 3,072 pixel bytes of image `i` (R plane, G plane, B plane, each row-major).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * PIXELS_PER_IMAGE..(i + 1) * PIXELS_PER_IMAGE]
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.dataset.num_classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// What `layerzero data info` shows about one split.
#[derive(Debug, Clone)]
pub struct SplitInfo {
    /// Which split.
    pub split: Split,
    /// Number of records.
    pub records: usize,
    /// Records per class.
    pub class_counts: Vec<usize>,
    /// Each batch file with its size and SHA-256.
    pub files: Vec<FileInfo>,
}

/// A file of the data set with its checksum.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Path of the file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the contents.
    pub sha256: String,
}

/// A summary of an extracted data set: split sizes, class counts and file checksums.
#[derive(Debug, Clone)]
pub struct DataInfo {
    /// The data set.
    pub dataset: Dataset,
    /// The folder holding the batch files.
    pub dir: PathBuf,
    /// Class names, indexed by label.
    pub class_names: Vec<String>,
    /// Train and test.
    pub splits: Vec<SplitInfo>,
}

/// Loads both splits (validating them) and summarises them.
pub fn info(dir: &Path, dataset: Dataset) -> Result<DataInfo> {
    let mut splits = Vec::new();
    let mut class_names = Vec::new();
    let mut folder = resolve_dir(dir, dataset);
    for split in [Split::Train, Split::Test] {
        let set = CifarSet::load(dir, dataset, split)?;
        folder = set.dir().to_path_buf();
        class_names = set.class_names().to_vec();
        let files = dataset
            .files(split)
            .iter()
            .map(|f| file_info(&folder.join(f)))
            .collect::<Result<Vec<_>>>()?;
        splits.push(SplitInfo {
            split,
            records: set.len(),
            class_counts: set.class_counts(),
            files,
        });
    }
    Ok(DataInfo {
        dataset,
        dir: folder,
        class_names,
        splits,
    })
}

fn file_info(path: &Path) -> Result<FileInfo> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    Ok(FileInfo {
        path: path.to_path_buf(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
    })
}
