//! Where a caller's sequence of kernels runs: on a worker of rayon's global pool.

use candle_core::Device;

/// Runs `f`, the work of a step on `device`, on a worker thread of rayon's global pool, and
/// returns what it returns. In place when `device` is not the CPU (a GPU's kernels are queued
/// by whichever thread calls them: nothing to gain), when the calling thread already is a
/// worker of some pool, or when the pool has a single thread.
///
/// Every kernel of this crate splits its work with rayon. Called from a thread outside the
/// pool (a program's main thread), each kernel hands its work to the pool, wakes the sleeping
/// workers and puts the caller to sleep until they finish: two thread switches per kernel, a
/// few hundred per ResNet-20 training step, while the caller's own core does nothing. Called
/// from a worker, the caller works on its share of the kernel and the others steal the rest,
/// as PyTorch's main thread takes part in its OpenMP loops. On the 2-core development machine
/// the ResNet-20 training step of this crate's `resnet20` example (batch 128) then made about a
/// quarter of the context switches and ran 3–8 % faster (alternating runs); the README's
/// benchmark section has what it gave with the other changes of the same day.
///
/// The results are the same bits either way: no kernel's arithmetic depends on which thread
/// runs it. A panic in `f` is resumed on the calling thread.
///
/// # Example
///
/// ```
/// use candle_core::{Device, Tensor};
///
/// # fn main() -> candle_core::Result<()> {
/// let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &Device::Cpu)?;
/// let w = Tensor::randn(0f32, 0.1, (4, 3, 3, 3), &Device::Cpu)?;
/// let y = layerzero_kernels::on_worker_thread(&Device::Cpu, || layerzero_kernels::conv2d(&x, &w, 1, 1))?;
/// assert_eq!(y.dims(), &[2, 4, 8, 8]);
/// # Ok(())
/// # }
/// ```
pub fn on_worker_thread<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if !device.is_cpu()
        || rayon::current_thread_index().is_some()
        || rayon::current_num_threads() < 2
    {
        return f();
    }
    // `scope` runs its closure on a worker of the global pool when called from outside one,
    // and waits for it.
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::on_worker_thread;
    use candle_core::Device;

    const CPU: &Device = &Device::Cpu;

    #[test]
    fn runs_on_a_pool_worker_and_returns_the_value() {
        // Three threads, unlike the global pool of a 2-core machine (CI's), so that running in
        // this pool and running in the global one can be told apart there.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a 3-thread pool");
        // From a plain thread (outside every pool): onto a worker of the global pool, when
        // it has more than one thread.
        let (index, value) = std::thread::spawn(|| {
            on_worker_thread(CPU, || (rayon::current_thread_index(), 41 + 1))
        })
        .join()
        .expect("no panic");
        if rayon::current_num_threads() >= 2 {
            assert!(index.is_some(), "ran outside the pool");
        }
        assert_eq!(value, 42);
        // Already on a worker of another pool: runs in place, on that worker of that pool.
        let (outer, inner, threads) = pool.install(|| {
            let outer = std::thread::current().id();
            let (inner, threads) = on_worker_thread(CPU, || {
                (std::thread::current().id(), rayon::current_num_threads())
            });
            (outer, inner, threads)
        });
        assert_eq!(outer, inner);
        assert_eq!(threads, 3);
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let caught = std::thread::spawn(|| {
            std::panic::catch_unwind(|| on_worker_thread(CPU, || panic!("inside the worker")))
        })
        .join()
        .expect("the thread itself returns");
        assert!(caught.is_err());
    }
}
