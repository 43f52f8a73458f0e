//! The batch-norm loops' AVX2 versions do the same operations in the same order as the scalar
//! ones, so both must give the same bits (forward, statistics and every gradient). The
//! instruction set is chosen once per process (`LAYERZERO_KERNELS_ISA`), so each path runs in
//! a child process of this test binary, which prints a digest of its results.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::process::Command;

use candle_core::{Result, Tensor, Var};
use layerzero_kernels::fast;

mod common;
use common::rand_tensor;

/// Set in the child processes: compute and print the digest instead of spawning.
const CHILD: &str = "LAYERZERO_ISA_PATHS_CHILD";
const TEST: &str = "batch_norm_avx2_and_scalar_paths_give_the_same_bits";

/// Feeds every f32 of `t` to the hasher, bit for bit.
fn hash_tensor(h: &mut DefaultHasher, t: &Tensor) -> Result<()> {
    for v in t.flatten_all()?.to_vec1::<f32>()? {
        h.write_u32(v.to_bits());
    }
    Ok(())
}

/// A digest of batch norm (with and without ReLU, and the fused residual + ReLU) forward and
/// backward on shapes whose planes are shorter than, equal to and longer than the vector
/// loops' 16-float blocks, with tails.
fn bn_digest() -> Result<u64> {
    let mut h = DefaultHasher::new();
    for (i, dims) in [[3, 5, 7, 9], [2, 16, 8, 8], [4, 3, 33, 1], [5, 8, 16, 16]]
        .into_iter()
        .enumerate()
    {
        let seed = 100 + 10 * i as u64;
        let c = dims[1];
        let x = Var::from_tensor(&(rand_tensor(&dims, seed, 2.0)? + 0.3)?)?;
        let g = Var::from_tensor(&(rand_tensor(&[c], seed + 1, 0.5)? + 1.0)?)?;
        let b = Var::from_tensor(&rand_tensor(&[c], seed + 2, 0.5)?)?;
        let res = Var::from_tensor(&rand_tensor(&dims, seed + 3, 1.0)?)?;
        let proj = rand_tensor(&dims, seed + 4, 1.0)?;
        for relu in [false, true] {
            let o =
                fast::batch_norm_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5, relu)?;
            for t in [&o.y, &o.mean, &o.var] {
                hash_tensor(&mut h, t)?;
            }
            let grads = (o.y * &proj)?.sum_all()?.backward()?;
            for v in [&x, &g, &b] {
                hash_tensor(&mut h, grads.get(v.as_tensor()).expect("gradient"))?;
            }
        }
        let o = fast::batch_norm_add_relu_train(
            x.as_tensor(),
            g.as_tensor(),
            b.as_tensor(),
            res.as_tensor(),
            1e-5,
        )?;
        for t in [&o.y, &o.mean, &o.var] {
            hash_tensor(&mut h, t)?;
        }
        let grads = (o.y * &proj)?.sum_all()?.backward()?;
        for v in [&x, &g, &b, &res] {
            hash_tensor(&mut h, grads.get(v.as_tensor()).expect("gradient"))?;
        }
    }
    Ok(h.finish())
}

/// Runs the test `test` of this binary in a child process with `LAYERZERO_KERNELS_ISA=isa`
/// and returns its standard output; panics if the child fails.
fn run_child(test: &str, isa: &str) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .env("LAYERZERO_KERNELS_ISA", isa)
        .output()
        .expect("spawn the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child with LAYERZERO_KERNELS_ISA={isa:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs the batch-norm test in a child process with `LAYERZERO_KERNELS_ISA=isa` and returns
/// its digest.
fn child_digest(isa: &str) -> u64 {
    let stdout = run_child(TEST, isa);
    // The harness may print the test's name on the same line, before the digest.
    let hex = stdout
        .lines()
        .find_map(|l| l.split("digest=").nth(1))
        .and_then(|d| d.get(..16))
        .unwrap_or_else(|| panic!("no digest from the child with {isa:?}: {stdout}"));
    u64::from_str_radix(hex, 16).expect("hex digest")
}

#[test]
fn batch_norm_avx2_and_scalar_paths_give_the_same_bits() {
    if std::env::var_os(CHILD).is_some() {
        println!("digest={:016x}", bn_digest().expect("batch norm"));
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if !is_x86_feature_detected!("avx2") {
        eprintln!("this CPU has no AVX2: both children run the scalar loops");
    }
    // "avx2" caps the instruction set there; the batch-norm loops use AVX2 with either AVX2
    // or AVX-512 detected.
    let wide = child_digest("avx2");
    let scalar = child_digest("portable");
    assert_eq!(
        wide, scalar,
        "batch norm's AVX2 and scalar loops gave different bits ({wide:016x} vs {scalar:016x})"
    );
}

/// A digest of convolution forward, input and weight gradients on a 1×1 and a 3×3 shape, run
/// in a rayon pool of `threads` threads.
fn conv_digest(threads: usize) -> Result<u64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    pool.install(|| {
        let mut h = DefaultHasher::new();
        for (i, (dims, cout, k, stride)) in [([11, 5, 9, 9], 7, 3, 1), ([20, 6, 8, 8], 4, 1, 2)]
            .into_iter()
            .enumerate()
        {
            let seed = 200 + 10 * i as u64;
            let x = Var::from_tensor(&rand_tensor(&dims, seed, 1.0)?)?;
            let w = Var::from_tensor(&rand_tensor(&[cout, dims[1], k, k], seed + 1, 0.3)?)?;
            let y = fast::conv2d(x.as_tensor(), w.as_tensor(), stride, k / 2)?;
            hash_tensor(&mut h, &y)?;
            let proj = rand_tensor(y.dims(), seed + 2, 1.0)?;
            let grads = (y * proj)?.sum_all()?.backward()?;
            for v in [&x, &w] {
                hash_tensor(&mut h, grads.get(v.as_tensor()).expect("gradient"))?;
            }
        }
        Ok(h.finish())
    })
}

const PORTABLE_TEST: &str = "portable_convolution_does_not_depend_on_the_thread_count";

/// The portable path (im2col + `gemm`, for CPUs without AVX2) gives the same bits on 1, 2, 3
/// and 8 threads, as the vector kernels do. Its weight gradient used to sum one partial result
/// per thread. Runs in a child process, where the instruction set can be set.
#[test]
fn portable_convolution_does_not_depend_on_the_thread_count() {
    if std::env::var_os(CHILD).is_some() {
        let one = conv_digest(1).expect("convolution");
        for threads in [2, 3, 8] {
            let many = conv_digest(threads).expect("convolution");
            assert_eq!(one, many, "1 against {threads} threads");
        }
        println!("same bits on 1, 2, 3 and 8 threads");
        return;
    }
    let stdout = run_child(PORTABLE_TEST, "portable");
    // The child ran the comparison (a name that matched no test would pass too).
    assert!(
        stdout.contains("same bits on 1, 2, 3 and 8 threads"),
        "{stdout}"
    );
}
