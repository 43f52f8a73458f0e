//! Per-thread scratch buffers, so the hot loops do not allocate on every call.

use std::cell::RefCell;

/// Buffers above this size are not kept between calls: a one-off huge shape should not pin
/// memory in every worker thread for the rest of the process.
const KEEP_LIMIT: usize = 16 << 20; // f32 elements (64 MiB)

/// Number of independent scratch slots per thread.
pub(crate) const SLOTS: usize = 3;

thread_local! {
    static BUFS: [RefCell<Vec<f32>>; SLOTS] = const {
        [RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new())]
    };
}

/// Runs `f` on a thread-local buffer of at least `len` floats from slot `slot`.
///
/// The contents are stale (whatever the previous user left): callers must write every element
/// they later read. If the slot is already borrowed on this thread (rayon can run a stolen job
/// inside another job's scope), a fresh buffer is allocated instead of panicking.
pub(crate) fn with_scratch<R>(slot: usize, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    BUFS.with(|bufs| match bufs[slot].try_borrow_mut() {
        Ok(mut v) if len <= KEEP_LIMIT => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        _ => f(&mut vec![0.0; len]),
    })
}
