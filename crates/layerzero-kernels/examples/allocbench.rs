//! The driver's share of a training step's allocations on a CUDA device: a step's worth of
//! allocations (ResNet-20's activation sizes at batch 128, and as many small ones), all freed
//! at the step's end, then a device synchronisation, as `xtask bench` does after each step.
//! Run it once as built and once with the defaults `layerzero_kernels::open_cuda` changes
//! restored, and compare:
//!
//! ```text
//! cargo run --release -p layerzero-kernels --features cuda --example allocbench
//! LAYERZERO_CUDA_EVENTS=1 LAYERZERO_CUDA_POOL_RELEASE=1 \
//!     cargo run --release -p layerzero-kernels --features cuda --example allocbench
//! ```
//!
//! Prints the median time of a step's allocations, frees and synchronisation (no kernel runs).

use std::time::Instant;

use candle_core::{Device, Result};

fn main() -> Result<()> {
    let device = layerzero_kernels::open_cuda(0)?;
    let Device::Cuda(dev) = &device else {
        unreachable!("open_cuda gives a CUDA device or an error")
    };
    println!("{}", layerzero_kernels::describe_path(&device));
    // Per step: for each of ResNet-20's 19 conv + BN layers, a few activation-sized tensors
    // (output, batch-norm output, their gradients) and a few per-channel ones.
    let mut sizes = Vec::new();
    for (channels, side) in [(16usize, 32usize), (32, 16), (64, 8)] {
        for _ in 0..6 {
            let activation = 128 * channels * side * side;
            sizes.extend([activation; 6]);
            sizes.extend([channels; 6]);
        }
    }
    let steps = 100;
    let mut times = Vec::with_capacity(steps);
    for step in 0..steps + 5 {
        let t = Instant::now();
        let mut live = Vec::with_capacity(sizes.len());
        for &n in &sizes {
            // SAFETY: never read; only allocated and freed.
            live.push(unsafe { dev.alloc::<f32>(n)? });
        }
        drop(live);
        device.synchronize()?;
        if step >= 5 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{} allocations a step ({:.0} MB): median {:.1} µs a step, {:.2} µs an allocation",
        sizes.len(),
        sizes.iter().sum::<usize>() as f64 * 4.0 / 1e6,
        times[steps / 2] * 1e6,
        times[steps / 2] * 1e6 / sizes.len() as f64
    );
    Ok(())
}
