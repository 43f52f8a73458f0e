//! Seeded shuffling, He et al.'s augmentation and normalisation into `(N, 3, S, S)` tensors
//! (S = 32, CIFAR's resolution, unless a smaller side is asked for: progressive resizing).
//!
//! Determinism: the order of an epoch depends only on `(seed, epoch)`, the crop offset and a
//! random flip of an image only on `(seed, epoch, position in the epoch)`, an alternating flip
//! only on `(seed, image, epoch)`. Decoding runs in parallel with rayon, each image written to
//! its own slice of the output, so the batches are the same whatever the number of threads.

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
    /// How images are mirrored left–right.
    pub flip: Flip,
}

impl Default for Augmentation {
    fn default() -> Self {
        Augmentation {
            pad: 4,
            flip: Flip::Random,
        }
    }
}

/// Horizontal flipping of training images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    /// Never flipped.
    Off,
    /// Each image flipped with probability ½, drawn anew every epoch (He et al.).
    Random,
    /// Each image flipped with probability ½ in the first epoch, then flipped in every other
    /// epoch relative to that: the "alternating flip" of Jordan 2024 (arXiv 2404.00498), which
    /// shows every image in both orientations over any two consecutive epochs, where random
    /// flips show half of them the same way twice running.
    Alternating,
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
    /// Draws the crop and (with [`Flip::Random`]) the flip of one image from its own random
    /// stream. [`Flip::Alternating`] does not use the stream's flip bit (see
    /// [`Augmentation::alternating_flip`]); [`Flip::Off`] never flips.
    pub fn draw(&self, rng: &mut SplitMix64) -> CropFlip {
        let range = 2 * self.pad as u64 + 1;
        let top = rng.below(range) as usize;
        let left = rng.below(range) as usize;
        let flip = self.flip == Flip::Random && rng.next_u64() & 1 == 1;
        CropFlip { top, left, flip }
    }

    /// The alternating flip of `image` (its index in the set) in `epoch`: a coin drawn once per
    /// image from `seed`, inverted in odd epochs.
    pub fn alternating_flip(seed: u64, image: usize, epoch: u64) -> bool {
        let coin = SplitMix64::new(mix(seed ^ FLIP_STREAM, u64::MAX, image as u64)).next_u64() & 1;
        (coin == 1) ^ (epoch % 2 == 1)
    }
}

/// Separates the alternating-flip coins from the crop streams of the same seed.
const FLIP_STREAM: u64 = 0x666c_6970; // "flip"

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

/// [`decode_image`], then downscaled to `side`×`side` (`side` ≤ 32) by averaging: output pixel
/// `i` of a row covers input pixels `⌊32·i/side⌋ … ⌈32·(i+1)/side⌉ − 1`, the rule of PyTorch's
/// `adaptive_avg_pool2d` (and `interpolate(mode="area")`); a side of 16 averages 2×2 blocks.
/// `out` holds 3·side·side floats, CHW. A side of 32 is [`decode_image`] itself.
pub fn decode_image_at(
    pixels: &[u8],
    choice: CropFlip,
    pad: usize,
    norm: &Normalization,
    side: usize,
    out: &mut [f32],
) {
    assert!(
        (1..=IMAGE_SIDE).contains(&side),
        "image side {side} outside 1..={IMAGE_SIDE}"
    );
    if side == IMAGE_SIDE {
        return decode_image(pixels, choice, pad, norm, out);
    }
    let mut full = [0f32; PIXELS_PER_IMAGE];
    decode_image(pixels, choice, pad, norm, &mut full);
    let window = |i: usize| {
        let start = i * IMAGE_SIDE / side;
        let end = ((i + 1) * IMAGE_SIDE).div_ceil(side);
        start..end
    };
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    for c in 0..3 {
        let src = &full[c * plane..(c + 1) * plane];
        let dst = &mut out[c * side * side..(c + 1) * side * side];
        for y in 0..side {
            let rows = window(y);
            for x in 0..side {
                let cols = window(x);
                let mut sum = 0f32;
                for r in rows.clone() {
                    for v in &src[r * IMAGE_SIDE + cols.start..r * IMAGE_SIDE + cols.end] {
                        sum += v;
                    }
                }
                dst[y * side + x] = sum / (rows.len() * cols.len()) as f32;
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
    /// Side of the square images the batches hold: 32 (CIFAR's own) or, for progressive
    /// resizing, a smaller one that [`decode_image_at`] downscales to after the crop and flip.
    pub side: usize,
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
            side: IMAGE_SIDE,
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
            side: IMAGE_SIDE,
        }
    }
}

/// A batch of images and their labels.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `(N, 3, S, S)` f32, normalised; S is the configuration's `side` (32 unless resized).
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
        if !(1..=IMAGE_SIDE).contains(&config.side) {
            return Err(DataError::InvalidOption {
                what: "image side",
                expected: "1 to 32 pixels",
                found: config.side.to_string(),
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

    /// The crop and flip chosen for `image` (its index in the set), found at `position` of
    /// `epoch`'s order.
    pub fn choice(&self, epoch: u64, position: usize, image: usize) -> CropFlip {
        match &self.config.augmentation {
            Some(aug) => {
                let mut choice = aug.draw(&mut SplitMix64::new(mix(
                    self.config.seed,
                    epoch,
                    position as u64,
                )));
                if aug.flip == Flip::Alternating {
                    choice.flip = Augmentation::alternating_flip(self.config.seed, image, epoch);
                }
                choice
            }
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
        let side = self.config.side;
        let per_image = 3 * side * side;
        let mut data = vec![0f32; indices.len() * per_image];
        data.par_chunks_mut(per_image)
            .zip(indices.par_iter().enumerate())
            .for_each(|(out, (k, &img))| {
                let choice = self.choice(epoch, start + k, img);
                decode_image_at(self.set.image(img), choice, pad, &norm, side, out);
            });
        let n = indices.len();
        let images = Tensor::from_vec(data, (n, 3, side, side), &self.device)?;
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
