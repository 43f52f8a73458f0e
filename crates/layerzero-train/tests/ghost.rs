//! Ghost batches: each step's batch split into parts with batch-norm statistics of their own,
//! run side by side when threads allow. The weights must not depend on how many parts ran at
//! once, a stopped run must resume bit-identically, and bad counts are refused by name.

mod common;
use common::{
    assert_same_metrics, assert_same_state, in_pool, net, state_bytes,
    stop_after_one_epoch_then_resume, Setup,
};
use layerzero_train::{LrSchedule, Profile, TrainConfig, TrainOutcome};

fn ghost_config(epochs: usize, ghosts: usize) -> TrainConfig {
    let mut c = TrainConfig::from_profile(Profile::Smoke, "resnet8", 3);
    c.epochs = epochs;
    c.batch_size = 32;
    c.train_limit = Some(96);
    c.schedule = LrSchedule::one_cycle(0.1, epochs * 3, 0.3);
    c.ghost_batches = ghosts;
    c
}

/// Trains `config` from `seed` in a pool of `threads` threads; the final state and outcome.
fn run_on(threads: usize, config: &TrainConfig) -> (Vec<(String, Vec<u8>)>, TrainOutcome) {
    let setup = Setup::synthetic(96, 32, config.clone());
    in_pool(threads, || {
        let network = net(11);
        let (_dir, out) = setup.run_to_end(network.as_ref());
        (state_bytes(network.as_ref()), out)
    })
}

#[test]
fn weights_do_not_depend_on_how_many_ghost_batches_run_side_by_side() {
    // 1 thread: the parts one after another; 2 and 3 threads: side by side, one thread each
    // (with 4 parts on 3 threads, the first pool runs parts 0 and 3).
    for ghosts in [2, 4] {
        let config = ghost_config(2, ghosts);
        let (one, out_one) = run_on(1, &config);
        for threads in [2, 3] {
            let (many, out_many) = run_on(threads, &config);
            let what = format!("{ghosts} ghost batches, 1 against {threads} threads");
            assert_same_metrics(&out_one.metrics, &out_many.metrics, &what);
            assert_same_state(&one, &many, &what);
        }
        // Each part updates the running statistics: 2 epochs × 3 steps × the parts.
        let tracked = one
            .iter()
            .find(|(n, _)| n == "bn1.num_batches_tracked")
            .unwrap();
        assert_eq!(tracked.1, ((6 * ghosts) as i64).to_le_bytes());
    }
    // The parts' own batch statistics change the result: ghost batches are not a no-op.
    let (plain, _) = run_on(2, &ghost_config(2, 1));
    let (ghost, _) = run_on(2, &ghost_config(2, 2));
    let conv = |s: &[(String, Vec<u8>)]| {
        s.iter()
            .find(|(n, _)| n == "conv1.weight")
            .unwrap()
            .1
            .clone()
    };
    assert_ne!(conv(&plain), conv(&ghost));
}

#[test]
fn a_ghost_batch_run_resumes_bit_identically() {
    let setup = Setup::synthetic(96, 32, ghost_config(2, 2));
    in_pool(2, || {
        let straight = net(5);
        setup.run_to_end(straight.as_ref());

        let dir_b = tempfile::tempdir().unwrap();
        let (resumed, _) = stop_after_one_epoch_then_resume(net, (5, 77), &setup, dir_b.path());
        assert!(state_bytes(straight.as_ref()) == state_bytes(resumed.as_ref()));
    });
}

#[test]
fn bad_ghost_batch_counts_are_refused_naming_the_count() {
    for (ghosts, batch) in [(0, 32), (3, 32), (32, 32), (5, 64)] {
        let mut c = ghost_config(1, ghosts);
        c.batch_size = batch;
        let text = c.validate().unwrap_err().to_string();
        assert!(
            text.contains("ghost batches")
                && text.contains(&format!("batch size {batch}"))
                && text.ends_with(&format!("found {ghosts}")),
            "{ghosts} of {batch}: {text}"
        );
    }
    for (ghosts, batch) in [(1, 32), (2, 32), (16, 32), (2, 64)] {
        let mut c = ghost_config(1, ghosts);
        c.batch_size = batch;
        c.validate().unwrap();
    }
}
