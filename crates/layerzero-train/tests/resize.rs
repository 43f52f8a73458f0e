//! Progressive resizing and the alternating flip: the side schedule, validation, configurations
//! written before the options existed, and a resized run that resumes bit-identically.

mod common;
use common::{stop_after_one_epoch_then_resume, Setup};
use layerzero_models::{create_model, ModelConfig, Network};
use layerzero_train::{
    LrSchedule, Profile, ProgressiveResize, RunDir, RunOptions, TrainConfig, TrainError,
};

fn resized_config(arch: &str, epochs: usize, resize: &str) -> TrainConfig {
    let mut c = TrainConfig::from_profile(Profile::Smoke, arch, 3);
    c.epochs = epochs;
    c.batch_size = 32;
    c.train_limit = Some(128);
    c.schedule = LrSchedule::one_cycle(0.1, epochs * 4, 0.3);
    c.alternating_flip = true;
    c.progressive_resize = Some(resize.parse().unwrap());
    c
}

fn weights(net: &dyn Network) -> Vec<(String, Vec<f32>)> {
    net.params()
        .state_dict()
        .unwrap()
        .into_iter()
        .filter(|(_, t)| t.dtype() == candle_core::DType::F32)
        .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn sides_follow_the_phases_then_full_size() {
    let r: ProgressiveResize = "16:3".parse().unwrap();
    let sides: Vec<usize> = (0..5).map(|e| r.side_at(e)).collect();
    assert_eq!(sides, [16, 16, 16, 32, 32]);
    let r: ProgressiveResize = "16:2, 24:1,28:2".parse().unwrap();
    let sides: Vec<usize> = (0..7).map(|e| r.side_at(e)).collect();
    assert_eq!(sides, [16, 16, 24, 28, 28, 32, 32]);
    assert_eq!(r.resized_epochs(), 5);
    assert_eq!(r.to_string(), "16:2,24:1,28:2");
    // No resizing (the paper profile): every epoch at 32.
    let c = TrainConfig::from_profile(Profile::Paper, "resnet20", 0);
    assert!((0..c.epochs).all(|e| c.image_side(e) == 32));
    // The quick profile: 8 epochs at 16×16, then 18 at 32×32, with alternating flips and two
    // ghost batches.
    let q = TrainConfig::from_profile(Profile::Quick, "resnet20", 0);
    let sides: Vec<usize> = (0..q.epochs).map(|e| q.image_side(e)).collect();
    assert_eq!(sides, [[16; 8].as_slice(), &[32; 18]].concat());
    assert!(q.alternating_flip);
    assert_eq!(q.ghost_batches, 2);
    q.validate().unwrap();
}

#[test]
fn bad_resize_options_are_refused_naming_the_value() {
    for text in ["16", "a:3", "16:x", "", "16:2,", "16:2;24:1"] {
        let err = text.parse::<ProgressiveResize>().unwrap_err();
        assert!(err.to_string().contains("SIDE:EPOCHS"), "{text}: {err}");
    }
    let mut c = TrainConfig::from_profile(Profile::Quick, "resnet20", 0);
    c.epochs = 15;
    for (resize, what, found) in [
        ("4:5", "side", "4"),
        ("16:2,18:5", "side", "18"),
        ("36:5", "side", "36"),
        ("16:0", "epochs", "0 at side 16"),
        ("16:15", "epochs", "15 in 16:15"),
        ("16:10,24:5", "epochs", "15 in 16:10,24:5"),
    ] {
        c.progressive_resize = Some(resize.parse().unwrap());
        let err = c.validate().unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(what) && text.contains(found),
            "{resize}: {text}"
        );
    }
    c.progressive_resize = Some("16:10,24:4".parse().unwrap());
    c.validate().unwrap();
}

#[test]
fn configurations_written_before_the_options_read_as_off() {
    // The paper profile has them off (and one ghost batch), as every configuration written
    // before them.
    let config = TrainConfig::from_profile(Profile::Paper, "resnet20", 0);
    let mut json = serde_json::to_value(&config).unwrap();
    let map = json.as_object_mut().unwrap();
    assert!(map.remove("alternating_flip").is_some());
    assert!(map.remove("progressive_resize").is_some());
    assert!(map.remove("ghost_batches").is_some());
    let old: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old, config);
}

#[test]
fn a_resized_run_resumes_bit_identically_and_reports_its_sides() {
    let mut setup = Setup::synthetic(128, 32, resized_config("resnet8", 3, "16:1,24:1"));
    let net = |seed| create_model("resnet8", &ModelConfig::new(10).with_seed(seed)).unwrap();

    let straight = net(5);
    let (_dir, a) = setup.run_to_end(straight.as_ref());
    let sides: Vec<usize> = a.metrics.iter().map(|m| m.image_side).collect();
    assert_eq!(sides, [16, 24, 32]);

    // Stopped after the first (16×16) epoch, resumed in a fresh network.
    let dir_b = tempfile::tempdir().unwrap();
    let (resumed, b) = stop_after_one_epoch_then_resume(net, (5, 77), &setup, dir_b.path());
    assert!(b.finished);
    assert_eq!(weights(straight.as_ref()), weights(resumed.as_ref()));
    assert_eq!(
        b.metrics.iter().map(|m| m.image_side).collect::<Vec<_>>(),
        sides
    );

    // The options change the run: without them the weights differ.
    setup.config.progressive_resize = None;
    setup.config.alternating_flip = false;
    let other = net(5);
    setup.run_to_end(other.as_ref());
    assert_ne!(weights(straight.as_ref()), weights(other.as_ref()));
}

#[test]
fn an_architecture_that_cannot_take_small_images_is_refused_before_training() {
    // VGG-16's five max-poolings need at least 32×32.
    let setup = Setup::synthetic(64, 32, resized_config("vgg16-bn", 2, "16:1"));
    let net = create_model("vgg16-bn", &ModelConfig::new(10).with_seed(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = setup
        .train(net.as_ref(), dir.path(), &RunOptions::default())
        .unwrap_err();
    assert!(matches!(err, TrainError::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("16×16"), "{err}");
    // Refused before anything is written.
    assert!(!RunDir::new(dir.path()).config().exists());
}

#[test]
fn a_batch_larger_than_the_training_set_is_refused_before_training() {
    // 64 images and batches of 128: with the last partial batch dropped, no step would run.
    let mut config = resized_config("resnet8", 1, "16:1");
    config.progressive_resize = None;
    config.batch_size = 128;
    config.ghost_batches = 1;
    let setup = Setup::synthetic(64, 32, config);
    let net = create_model("resnet8", &ModelConfig::new(10).with_seed(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = setup
        .train(net.as_ref(), dir.path(), &RunOptions::default())
        .unwrap_err();
    assert!(matches!(err, TrainError::InvalidConfig { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("at most the 64 training images") && text.contains("found 128"),
        "{text}"
    );
    assert!(!RunDir::new(dir.path()).config().exists());
}
