//! The engine's parallel scheduler: runs a section over 0..n in ranges on the spinning pool
//! (`spin_pool.rs`) when it has enough threads, else on rayon, with the caller taking any part nobody
//! took. The packed kernels, attention and the model's own loops share it.

/// Runs `f` over 0..n in ranges on as many threads as rayon's current pool has (candle's, inside
/// `Device::with_context`): on our spinning pool (`spin_pool.rs`) when it has that many, else on
/// rayon. Either way the caller never waits for a worker that has not started: a part nobody took is
/// run by the caller itself, so another process holding a core costs that core's share of the work,
/// not a scheduling delay per parallel section. For the short sections of a decode step; long ones
/// (prefill) take `parallel_for_long`.
pub fn parallel_for(n: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    parallel_sections(n, false, f)
}

/// `parallel_for` for long sections (prefill: milliseconds each), after which the spinning pool's
/// helpers sleep at once instead of spinning on a core that the dense GEMM, attention and candle's
/// ops that follow (on rayon's threads) need. Part of SmolLM2's prompt regression after the pool
/// came in (515 -> 418-482 tok/s); see the branch's measurements.
pub fn parallel_for_long(n: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    parallel_sections(n, true, f)
}

fn parallel_sections(n: usize, long: bool, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let threads = rayon::current_num_threads().max(1);
    if n == 0 {
        return;
    }
    if threads == 1 || n == 1 {
        f(0..n);
        return;
    }
    if let Some(pool) = super::spin_pool::SpinPool::global(threads) {
        // Chunks taken from a shared counter: several per thread balance a core that is slower.
        if long {
            pool.run_then_sleep(n, n.div_ceil(threads * 16), &f);
        } else {
            pool.run(n, n.div_ceil(threads * 8), &f);
        }
        return;
    }
    rayon_parts(n, threads, f)
}

fn rayon_parts(n: usize, threads: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    use rayon::prelude::*;
    // A few parts per thread balance a core that is slower (shared) without many tiny tasks.
    let parts = (threads * 4).min(n);
    let chunk = n.div_ceil(parts);
    (0..n.div_ceil(chunk))
        .into_par_iter()
        .for_each(|p| f(p * chunk..n.min((p + 1) * chunk)));
}

/// A raw pointer the parallel sections write disjoint parts through.
#[derive(Clone, Copy)]
pub struct SyncPtr<T>(pub *mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}
impl<T> SyncPtr<T> {
    pub fn get(self) -> *mut T {
        self.0
    }
}
