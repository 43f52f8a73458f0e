//! Augmentation and batching: determinism for a seed (whatever the thread count), crops inside the
//! padded image, flip is a flip, alternating flips, downscaled sides, normalisation.

use candle_core::Device;
use layerzero_data::rng::SplitMix64;
use layerzero_data::{
    decode_image, decode_image_at, Augmentation, BatchConfig, Batcher, CifarSet, CropFlip,
    DataError, Dataset, Flip, Normalization, Split,
};

/// 64 images with distinct, position-dependent pixels so that crops and flips are visible.
fn varied_set() -> CifarSet {
    let n = 64;
    let mut pixels = Vec::with_capacity(n * 3072);
    for i in 0..n {
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    pixels.push(((i * 7 + c * 50 + y * 3 + x * 5) % 256) as u8);
                }
            }
        }
    }
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    let names = (0..10).map(|i| format!("c{i}")).collect();
    CifarSet::from_parts(Dataset::Cifar10, Split::Train, pixels, labels, names).unwrap()
}

fn epoch_data(set: &CifarSet, seed: u64, epoch: u64) -> Vec<(Vec<f32>, Vec<u32>)> {
    let batcher = Batcher::new(
        set,
        BatchConfig::train(Dataset::Cifar10, 16, seed),
        Device::Cpu,
    )
    .unwrap();
    batcher
        .epoch(epoch)
        .map(|b| {
            let b = b.unwrap();
            (
                b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.labels.to_vec1::<u32>().unwrap(),
            )
        })
        .collect()
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn same_seed_same_batches_whatever_the_thread_count() {
    let set = varied_set();
    let one = in_pool(1, || epoch_data(&set, 5, 3));
    let two = in_pool(2, || epoch_data(&set, 5, 3));
    let four = in_pool(4, || epoch_data(&set, 5, 3));
    assert_eq!(one, two);
    assert_eq!(one, four);
    // And a different seed or epoch gives a different order.
    assert_ne!(one, epoch_data(&set, 6, 3));
    assert_ne!(one, epoch_data(&set, 5, 4));
}

#[test]
fn an_epoch_visits_each_image_once() {
    let set = varied_set();
    let batcher = Batcher::new(
        &set,
        BatchConfig::train(Dataset::Cifar10, 10, 1),
        Device::Cpu,
    )
    .unwrap();
    // drop_last: 64 images in batches of 10 → 6 batches, 60 distinct images.
    assert_eq!(batcher.batches_per_epoch(), 6);
    let mut seen: Vec<usize> = batcher.epoch(0).flat_map(|b| b.unwrap().indices).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 60);
    let order = batcher.order(0);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..64).collect::<Vec<_>>());
}

#[test]
fn crops_stay_inside_the_padded_image() {
    let aug = Augmentation::default();
    let mut rng = SplitMix64::new(99);
    let (mut saw_min, mut saw_max, mut flips) = (false, false, 0);
    for _ in 0..5_000 {
        let c = aug.draw(&mut rng);
        assert!(c.top <= 2 * aug.pad && c.left <= 2 * aug.pad, "{c:?}");
        saw_min |= c.top == 0;
        saw_max |= c.left == 2 * aug.pad;
        flips += c.flip as usize;
    }
    assert!(saw_min && saw_max, "the extreme offsets are reachable");
    assert!(
        (2_000..3_000).contains(&flips),
        "about half flipped: {flips}"
    );
}

const UNIT: Normalization = Normalization {
    mean: [0.0; 3],
    std: [1.0 / 255.0; 3],
};

#[test]
fn flip_is_a_flip_and_identity_is_identity() {
    let set = varied_set();
    let img = set.image(5);
    let mut plain = vec![0f32; 3072];
    let mut flipped = vec![0f32; 3072];
    decode_image(img, CropFlip::identity(4), 4, &UNIT, &mut plain);
    let f = CropFlip {
        flip: true,
        ..CropFlip::identity(4)
    };
    decode_image(img, f, 4, &UNIT, &mut flipped);
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let i = c * 1024 + y * 32 + x;
                assert_eq!(plain[i], img[i] as f32);
                assert_eq!(flipped[i], img[c * 1024 + y * 32 + (31 - x)] as f32);
            }
        }
    }
}

#[test]
fn crop_shifts_and_pads_with_zero() {
    let set = varied_set();
    let img = set.image(9);
    let mut out = vec![0f32; 3072];
    // Top-left corner of the padded image: the first 4 rows and columns are padding.
    let c = CropFlip {
        top: 0,
        left: 0,
        flip: false,
    };
    decode_image(img, c, 4, &UNIT, &mut out);
    assert_eq!(out[0], 0.0);
    assert_eq!(out[3 * 32 + 3], 0.0);
    assert_eq!(out[4 * 32 + 4], img[0] as f32);
    assert_eq!(out[31 * 32 + 31], img[27 * 32 + 27] as f32);
}

#[test]
fn normalisation_uses_cifar10_statistics() {
    let names = (0..10).map(|i| format!("c{i}")).collect();
    let set = CifarSet::from_parts(
        Dataset::Cifar10,
        Split::Test,
        vec![255; 3072],
        vec![0],
        names,
    )
    .unwrap();
    let batcher = Batcher::new(&set, BatchConfig::eval(Dataset::Cifar10, 8), Device::Cpu).unwrap();
    let b = batcher.epoch(0).next().unwrap().unwrap();
    let v = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let expect = (1.0 - 0.4914) / 0.2470;
    assert!((v[0] - expect).abs() < 1e-5, "{} vs {expect}", v[0]);
    let expect_b = (1.0 - 0.4465) / 0.2616;
    assert!((v[2048] - expect_b).abs() < 1e-5);
}

/// The flips of every image of `set` in `epoch` under `flip`, by image index.
fn flips_by_image(set: &CifarSet, flip: Flip, epoch: u64) -> Vec<bool> {
    let config = BatchConfig {
        augmentation: Some(Augmentation { pad: 4, flip }),
        ..BatchConfig::train(Dataset::Cifar10, 16, 11)
    };
    let batcher = Batcher::new(set, config, Device::Cpu).unwrap();
    let order = batcher.order(epoch);
    let mut flips = vec![false; set.len()];
    for (position, &image) in order.iter().enumerate() {
        flips[image] = batcher.choice(epoch, position, image).flip;
    }
    flips
}

#[test]
fn alternating_flip_mirrors_each_image_every_other_epoch() {
    let set = varied_set();
    let first = flips_by_image(&set, Flip::Alternating, 0);
    let flipped = first.iter().filter(|&&f| f).count();
    assert!(
        (20..=44).contains(&flipped),
        "about half of 64 flipped: {flipped}"
    );
    for epoch in 1..6u64 {
        let now = flips_by_image(&set, Flip::Alternating, epoch);
        let expect: Vec<bool> = first.iter().map(|&f| f ^ (epoch % 2 == 1)).collect();
        assert_eq!(now, expect, "epoch {epoch}");
    }
    // Random flips do not alternate: some image keeps its orientation from epoch 0 to 1.
    let (r0, r1) = (
        flips_by_image(&set, Flip::Random, 0),
        flips_by_image(&set, Flip::Random, 1),
    );
    assert!(r0.iter().zip(&r1).any(|(a, b)| a == b));
    assert!(flips_by_image(&set, Flip::Off, 0).iter().all(|&f| !f));
}

#[test]
fn alternating_flip_keeps_the_crops_of_random_flip() {
    // Only the flip bit differs between the modes, so switching mode changes nothing else.
    let set = varied_set();
    let batcher = |flip| {
        let config = BatchConfig {
            augmentation: Some(Augmentation { pad: 4, flip }),
            ..BatchConfig::train(Dataset::Cifar10, 16, 3)
        };
        Batcher::new(&set, config, Device::Cpu).unwrap()
    };
    let (random, alternating) = (batcher(Flip::Random), batcher(Flip::Alternating));
    let order = random.order(2);
    assert_eq!(order, alternating.order(2));
    for (position, &image) in order.iter().enumerate() {
        let (a, b) = (
            random.choice(2, position, image),
            alternating.choice(2, position, image),
        );
        assert_eq!((a.top, a.left), (b.top, b.left));
    }
}

#[test]
fn downscaled_side_averages_the_full_size_image() {
    let set = varied_set();
    let img = set.image(7);
    let c = CropFlip {
        top: 1,
        left: 6,
        flip: true,
    };
    let mut full = vec![0f32; 3072];
    decode_image(img, c, 4, &UNIT, &mut full);
    let mut same = vec![0f32; 3072];
    decode_image_at(img, c, 4, &UNIT, 32, &mut same);
    assert_eq!(same, full, "side 32 is decode_image itself");
    // Side 16: each output pixel is the mean of a 2×2 block.
    let mut half = vec![0f32; 3 * 16 * 16];
    decode_image_at(img, c, 4, &UNIT, 16, &mut half);
    for ch in 0..3 {
        for y in 0..16 {
            for x in 0..16 {
                let at = |yy: usize, xx: usize| full[ch * 1024 + yy * 32 + xx];
                let mean = (at(2 * y, 2 * x)
                    + at(2 * y, 2 * x + 1)
                    + at(2 * y + 1, 2 * x)
                    + at(2 * y + 1, 2 * x + 1))
                    / 4.0;
                let got = half[ch * 256 + y * 16 + x];
                assert!(
                    (got - mean).abs() < 1e-4,
                    "({ch}, {y}, {x}): {got} vs {mean}"
                );
            }
        }
    }
    // Side 24: windows ⌊4i/3⌋ … ⌈4(i+1)/3⌉ − 1, e.g. output 1 covers inputs 1 and 2.
    let mut s24 = vec![0f32; 3 * 24 * 24];
    decode_image_at(img, c, 4, &UNIT, 24, &mut s24);
    let at = |yy: usize, xx: usize| full[yy * 32 + xx];
    let expect = (at(1, 1) + at(1, 2) + at(2, 1) + at(2, 2)) / 4.0;
    assert!(
        (s24[24 + 1] - expect).abs() < 1e-4,
        "{} vs {expect}",
        s24[25]
    );
    let expect = (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0;
    assert!((s24[0] - expect).abs() < 1e-4);
}

#[test]
fn batches_at_a_smaller_side_and_bad_sides_refused() {
    let set = varied_set();
    let config = BatchConfig {
        side: 20,
        ..BatchConfig::train(Dataset::Cifar10, 16, 1)
    };
    let batcher = Batcher::new(&set, config, Device::Cpu).unwrap();
    let b = batcher.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.images.dims(), &[16, 3, 20, 20]);
    for side in [0, 33] {
        let config = BatchConfig {
            side,
            ..BatchConfig::train(Dataset::Cifar10, 16, 1)
        };
        let err = Batcher::new(&set, config, Device::Cpu).unwrap_err();
        assert!(matches!(
            err,
            DataError::InvalidOption {
                what: "image side",
                ..
            }
        ));
        assert!(err.to_string().contains(&side.to_string()), "{err}");
    }
}

#[test]
fn subset_copies_the_images_of_a_range_in_order() {
    let set = varied_set();
    let second = set.subset(40..64);
    assert_eq!(second.len(), 24);
    assert_eq!(
        (second.dataset(), second.split()),
        (set.dataset(), set.split())
    );
    assert_eq!(second.class_names(), set.class_names());
    for i in 0..24 {
        assert_eq!(second.image(i), set.image(40 + i), "image {i}");
        assert_eq!(second.labels()[i], set.labels()[40 + i]);
    }
    // The two halves of a split are the whole set.
    let first = set.subset(0..40);
    assert_eq!(first.labels(), &set.labels()[..40]);
    assert_eq!(first.image(39), set.image(39));
    // Clamped to the set.
    assert_eq!(set.subset(60..100).len(), 4);
    assert!(set.subset(70..100).is_empty());
    let (start, end) = (10, 5);
    assert!(set.subset(start..end).is_empty());
}
