//! The machine's fp32 GEMM throughput, the yardstick the benchmarks report against.

use std::time::Instant;

use gemm::Parallelism;

/// GFLOP/s of an `m×k · k×n` f32 GEMM with the `gemm` crate on `threads` threads: the best of
/// `reps` timed runs after one warm-up.
pub fn gemm_gflops(threads: usize, m: usize, n: usize, k: usize, reps: usize) -> f64 {
    let threads = threads.max(1);
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let mut c = vec![0.0f32; m * n];
    let run = |c: &mut [f32]| {
        let par = if threads == 1 {
            Parallelism::None
        } else {
            Parallelism::Rayon(threads)
        };
        // SAFETY: a is m×k, b is k×n, c is m×n, all row-major with exactly these lengths, and
        // c does not alias a or b.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    };
    let timed = |c: &mut [f32]| {
        run(c);
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            run(c);
            best = best.min(t.elapsed().as_secs_f64());
        }
        2.0 * (m * n * k) as f64 / best / 1e9
    };
    if threads == 1 {
        // On the calling thread, so its CPU time can be measured too.
        return timed(&mut c);
    }
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(p) => p,
        Err(_) => return 0.0,
    };
    pool.install(|| timed(&mut c))
}

/// Peak fp32 GEMM GFLOP/s on `threads` threads: a 1024³ SGEMM with the `gemm` crate (the one
/// candle uses), best of 10 runs. Takes well under a second on a modern core.
pub fn measure_gemm_peak_gflops(threads: usize) -> f64 {
    gemm_gflops(threads, 1024, 1024, 1024, 10)
}
