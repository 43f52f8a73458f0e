//! Augmentation and batching: determinism for a seed (whatever the thread count), crops inside the
//! padded image, flip is a flip, normalisation.

use candle_core::Device;
use layerzero_data::rng::SplitMix64;
use layerzero_data::{
    decode_image, Augmentation, BatchConfig, Batcher, CifarSet, CropFlip, Dataset, Normalization,
    Split,
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
