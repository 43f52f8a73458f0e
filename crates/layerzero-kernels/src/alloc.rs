//! Allocation policy for large tensors.
//!
//! candle allocates a fresh buffer for every op output and every gradient (and its backprop
//! adds a zeros + add pair per gradient). With glibc's defaults, blocks of a few MiB are
//! `mmap`ed and unmapped again on free, so every training step re-faults all its activation
//! memory one 4 KiB page at a time. On this project's 2-core VM that fault cost dominated:
//! batch norm forward + backward on 128×16×32×32 took 20 ms of CPU, 8 ms without the faults;
//! a 16→16 conv forward + backward 36 ms → 24 ms.
//!
//! [`configure_allocator`] therefore raises glibc's mmap threshold to its maximum (32 MiB) and
//! stops it trimming the heap, so freed tensors are reused instead of returned to the kernel;
//! the fast path calls it once on first use unless `LAYERZERO_MALLOC_TUNE=0`. Buffers this
//! crate allocates above that size (batch-500 evaluation activations) are advised to use
//! transparent huge pages, which turns 512 faults into one.

/// Blocks at least this large are always `mmap`ed by glibc (its threshold cannot go higher),
/// so they get the huge-page advice instead.
#[cfg(target_os = "linux")]
const HUGE_MIN_BYTES: usize = 32 << 20;

/// Makes glibc's malloc keep freed memory for reuse (mmap threshold 32 MiB, no heap trimming).
///
/// Process-wide and idempotent; returns whether it applied (only on Linux with glibc). Peak
/// memory is unchanged — the heap holds at most what was live at the peak — but it is not
/// returned to the OS afterwards. Called automatically by the fast kernels unless the
/// environment sets `LAYERZERO_MALLOC_TUNE=0`; binaries with their own global allocator are
/// unaffected.
pub fn configure_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; these values are in range
        // (glibc accepts mmap thresholds up to 32 MiB on 64-bit).
        unsafe {
            let a = libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            let b = libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            a == 1 && b == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Runs [`configure_allocator`] once per process, unless `LAYERZERO_MALLOC_TUNE=0`.
pub(crate) fn ensure_configured() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("LAYERZERO_MALLOC_TUNE").map_or(true, |v| v != "0") {
            configure_allocator();
        }
    });
}

/// Advises a large, not yet touched allocation onto transparent huge pages.
fn advise_huge(ptr: *const f32, n: usize) {
    #[cfg(target_os = "linux")]
    if n * 4 >= HUGE_MIN_BYTES {
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + n * 4) / HUGE * HUGE;
        if end > start {
            // SAFETY: [start, end) lies inside the caller's allocation of n floats;
            // MADV_HUGEPAGE is advice only and never changes the contents of the range.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, n);
}

/// A zero-initialised output buffer, for kernels that accumulate into their output.
pub(crate) fn alloc_out(n: usize) -> Vec<f32> {
    ensure_configured();
    // calloc: a fresh mapping is zero already and is not touched here, so the advice still
    // applies to every page.
    let v = vec![0.0f32; n];
    advise_huge(v.as_ptr(), n);
    v
}

/// An output buffer for a kernel that overwrites every element: no zeroing. (A reused heap
/// block is otherwise memset by calloc: 2.3% of a ResNet-20 training step in a profile.)
///
/// # Safety
/// The caller must write every element before anything reads the buffer or hands it on.
pub(crate) unsafe fn alloc_uninit(n: usize) -> Vec<f32> {
    ensure_configured();
    let mut v = Vec::with_capacity(n);
    advise_huge(v.as_ptr(), n);
    // SAFETY: the capacity is n; f32 has no invalid bit patterns, and the caller's contract is
    // that every element is written before it is read, so no uninitialised value is observed.
    unsafe { v.set_len(n) };
    v
}
