//! Seeded shuffling, He et al.'s augmentation and normalisation into `(N, 3, 32, 32)` tensors.
//!
//! Determinism: the order of an epoch depends only on `(seed, epoch)`, and the crop offset and
//! flip of an image only on `(seed, epoch, position in the epoch)`. Decoding runs in parallel
//! with rayon, each image written to its own slice of the output, so the batches are the same
//! whatever the number of threads.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::cifar::{CifarSet, Dataset, IMAGE_SIDE, PIXELS_PER_IMAGE};
use crate::error::{DataError, Result};
use crate::rng::SplitMix64;

/// Per-channel normalisation `(x / 255 − mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// R, G, B means on the [0, 1] scale.
    pub mean: [f32; 3],
    /// R, G, B standard deviations on the [0, 1] scale.
    pub std: [f32; 3],
}

impl Normalization {
    /// The usual statistics of a data set's training images.
    pub fn for_dataset(dataset: Dataset) -> Self {
        Normalization {
            mean: dataset.channel_mean(),
            std: dataset.channel_std(),
        }
    }
}

/// Training augmentation of He et al. 2016: zero-pad by `pad` pixels, take a random 32×32 crop,
/// and flip horizontally with probability ½.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augmentation {
    /// Padding on each side before cropping (4 in the paper); 0 disables cropping.
    pub pad: usize,
    /// Random horizontal flips.
    pub flip: bool,
}

impl Default for Augmentation {
    fn default() -> Self {
        Augmentation { pad: 4, flip: true }
    }
}

/// The random choices made for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropFlip {
    /// Row of the crop's top-left corner in the padded image, in `0..=2·pad`.
    pub top: usize,
    /// Column of the crop's top-left corner in the padded image, in `0..=2·pad`.
    pub left: usize,
    /// Whether the crop is mirrored left–right.
    pub flip: bool,
}

impl CropFlip {
    /// No crop offset (the centre of a padded image) and no flip: the image unchanged.
    pub fn identity(pad: usize) -> Self {
        CropFlip {
            top: pad,
            left: pad,
            flip: false,
        }
    }
}

impl Augmentation {
    /// Draws the crop and flip of one image from its own random stream.
    pub fn draw(&self, rng: &mut SplitMix64) -> CropFlip {
        let range = 2 * self.pad as u64 + 1;
        let top = rng.below(range) as usize;
        let left = rng.below(range) as usize;
        let flip = self.flip && rng.next_u64() & 1 == 1;
        CropFlip { top, left, flip }
    }
}

/// Writes one image, cropped/flipped and normalised, into `out` (3·32·32 floats, CHW).
///
/// `pixels` is a CIFAR record's 3,072 pixel bytes. The crop is taken from the image padded with
/// `pad` zero (black) pixels on each side, as torchvision's `RandomCrop(32, padding=4)` does.
pub fn decode_image(
    pixels: &[u8],
    choice: CropFlip,
    pad: usize,
    norm: &Normalization,
    out: &mut [f32],
) {
    let side = IMAGE_SIDE as isize;
    for c in 0..3 {
        let plane = &pixels[c * IMAGE_SIDE * IMAGE_SIDE..(c + 1) * IMAGE_SIDE * IMAGE_SIDE];
        let scale = 1.0 / (255.0 * norm.std[c]);
        let shift = -norm.mean[c] / norm.std[c];
        let out_plane = &mut out[c * IMAGE_SIDE * IMAGE_SIDE..(c + 1) * IMAGE_SIDE * IMAGE_SIDE];
        for y in 0..IMAGE_SIDE {
            let sy = y as isize + choice.top as isize - pad as isize;
            let row = &mut out_plane[y * IMAGE_SIDE..(y + 1) * IMAGE_SIDE];
            for (x, o) in row.iter_mut().enumerate() {
                let xx = if choice.flip { IMAGE_SIDE - 1 - x } else { x };
                let sx = xx as isize + choice.left as isize - pad as isize;
                let v = if (0..side).contains(&sy) && (0..side).contains(&sx) {
                    plane[(sy * side + sx) as usize] as f32
                } else {
                    0.0
                };
                *o = v * scale + shift;
            }
        }
    }
}

/// How to cut a set into batches.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Shuffle the order every epoch (training); `false` keeps file order (evaluation).
    pub shuffle: bool,
    /// Training augmentation, or `None` for evaluation.
    pub augmentation: Option<Augmentation>,
    /// Normalisation applied to every image.
    pub normalization: Normalization,
    /// Seed of the shuffling and augmentation streams.
    pub seed: u64,
    /// Drop a last, smaller batch (training keeps batch statistics comparable).
    pub drop_last: bool,
}

impl BatchConfig {
    /// Training batches: shuffled, augmented, last partial batch dropped.
    pub fn train(dataset: Dataset, batch_size: usize, seed: u64) -> Self {
        BatchConfig {
            batch_size,
            shuffle: true,
            augmentation: Some(Augmentation::default()),
            normalization: Normalization::for_dataset(dataset),
            seed,
            drop_last: true,
        }
    }

    /// Evaluation batches: file order, no augmentation, every image.
    pub fn eval(dataset: Dataset, batch_size: usize) -> Self {
        BatchConfig {
            batch_size,
            shuffle: false,
            augmentation: None,
            normalization: Normalization::for_dataset(dataset),
            seed: 0,
            drop_last: false,
        }
    }
}

/// A batch of images and their labels.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `(N, 3, 32, 32)` f32, normalised.
    pub images: Tensor,
    /// `(N,)` u32 labels.
    pub labels: Tensor,
    /// Index of each image in the set.
    pub indices: Vec<usize>,
}

/// Cuts a [`CifarSet`] into batches, epoch by epoch.
#[derive(Debug, Clone)]
pub struct Batcher<'a> {
    set: &'a CifarSet,
    config: BatchConfig,
    device: Device,
}

impl<'a> Batcher<'a> {
    /// A batcher over `set`, producing tensors on `device`.
    pub fn new(set: &'a CifarSet, config: BatchConfig, device: Device) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::InvalidOption {
                what: "batch size",
                expected: "at least 1",
                found: "0".to_string(),
            });
        }
        Ok(Batcher {
            set,
            config,
            device,
        })
    }

    /// Number of batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.set.len();
        let b = self.config.batch_size;
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order of the images in an epoch.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.set.len()).collect();
        if self.config.shuffle {
            let mut rng = SplitMix64::new(mix(self.config.seed, epoch, u64::MAX));
            // Fisher–Yates.
            for i in (1..order.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// The crop and flip chosen for the image at `position` of `epoch`'s order.
    pub fn choice(&self, epoch: u64, position: usize) -> CropFlip {
        match &self.config.augmentation {
            Some(aug) => aug.draw(&mut SplitMix64::new(mix(
                self.config.seed,
                epoch,
                position as u64,
            ))),
            None => CropFlip::identity(0),
        }
    }

    /// Builds batch `index` of `epoch` from the given epoch order.
    pub fn batch(&self, epoch: u64, order: &[usize], index: usize) -> Result<Batch> {
        let b = self.config.batch_size;
        let start = index * b;
        let end = (start + b).min(order.len());
        if start >= end {
            return Err(DataError::InvalidOption {
                what: "batch index",
                expected: "below the number of batches",
                found: index.to_string(),
            });
        }
        let indices = order[start..end].to_vec();
        let pad = self.config.augmentation.map_or(0, |a| a.pad);
        let norm = self.config.normalization;
        let mut data = vec![0f32; indices.len() * PIXELS_PER_IMAGE];
        data.par_chunks_mut(PIXELS_PER_IMAGE)
            .zip(indices.par_iter().enumerate())
            .for_each(|(out, (k, &img))| {
                let choice = self.choice(epoch, start + k);
                decode_image(self.set.image(img), choice, pad, &norm, out);
            });
        let n = indices.len();
        let images = Tensor::from_vec(data, (n, 3, IMAGE_SIDE, IMAGE_SIDE), &self.device)?;
        let labels: Vec<u32> = indices
            .iter()
            .map(|&i| self.set.labels()[i] as u32)
            .collect();
        let labels = Tensor::from_vec(labels, n, &self.device)?;
        Ok(Batch {
            images,
            labels,
            indices,
        })
    }

    /// Iterates over the batches of one epoch.
    pub fn epoch(&self, epoch: u64) -> EpochBatches<'_, 'a> {
        EpochBatches {
            order: self.order(epoch),
            batcher: self,
            epoch,
            next: 0,
            count: self.batches_per_epoch(),
        }
    }
}

/// The batches of one epoch, in order.
#[derive(Debug)]
pub struct EpochBatches<'b, 'a> {
    batcher: &'b Batcher<'a>,
    order: Vec<usize>,
    epoch: u64,
    next: usize,
    count: usize,
}

impl EpochBatches<'_, '_> {
    /// Skips to batch `index` (for resuming mid-epoch).
    pub fn skip_to(&mut self, index: usize) {
        self.next = index.min(self.count);
    }
}

impl Iterator for EpochBatches<'_, '_> {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let out = self.batcher.batch(self.epoch, &self.order, self.next);
        self.next += 1;
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.next;
        (left, Some(left))
    }
}

/// Derives an independent stream seed from a seed, an epoch and a position.
fn mix(seed: u64, epoch: u64, position: u64) -> u64 {
    let mut r = SplitMix64::new(seed ^ 0x6c61_7965_727a_6572); // "layerzer"
    let a = r.next_u64() ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut r = SplitMix64::new(a);
    r.next_u64() ^ position.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}
