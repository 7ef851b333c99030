//! Parallel sections for the decode step's kernels: helper threads that stay awake (spinning) for a
//! short while after each section, so the next one, microseconds later, starts on every core at once.
//!
//! Why not rayon: a decode step of Llama 3.2 3B is ~115 short parallel sections (one per matrix group)
//! separated by ~20-50 µs of single-threaded work (norms, RoPE, attention set-up). Rayon's idle
//! workers yield and then sleep on a futex within that gap, so every section started with one core
//! until a wake-up went through the scheduler. llama.cpp keeps its threads spinning for the whole
//! graph instead, which collapses when another process holds a core. Here both: helpers spin for
//! `SPIN` after a section, then sleep; and the caller never waits for a helper that has not started
//! (work is taken in chunks from a shared counter; a chunk nobody took is the caller's), so a
//! descheduled helper costs its share of the work, not a stall.

use std::ops::Range;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper spins for the next section before sleeping.
const SPIN: Duration = Duration::from_micros(300);

/// One parallel section: `f` over chunks of 0..n, taken from `next`.
struct Job<'a> {
    f: &'a (dyn Fn(Range<usize>) + Sync),
    n: usize,
    chunk: usize,
    /// Whether helpers keep spinning for the next section after this one (decode), or go to sleep
    /// at once (long prefill sections, followed by work on rayon's threads that needs the cores).
    linger: bool,
    next: AtomicUsize,
}

impl Job<'_> {
    /// Takes and runs chunks until none is left.
    fn work(&self) {
        loop {
            let start = self.next.fetch_add(self.chunk, SeqCst);
            if start >= self.n {
                return;
            }
            (self.f)(start..self.n.min(start + self.chunk));
        }
    }
}

struct Shared {
    /// The current section (a `Job` on the caller's stack), null between sections.
    job: AtomicPtr<Job<'static>>,
    /// Bumped for every section: helpers watch it.
    epoch: AtomicU64,
    /// Helpers inside a job: the caller returns only when this is 0 and `job` is null.
    busy: AtomicUsize,
    /// Helpers asleep, woken through `wake`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

pub struct SpinPool {
    shared: Arc<Shared>,
    helpers: usize,
    /// One section at a time; a second concurrent caller runs its section alone.
    submit: Mutex<()>,
}

impl SpinPool {
    /// A pool with `helpers` threads besides the caller's.
    pub fn new(helpers: usize) -> Self {
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        for i in 0..helpers {
            let shared = shared.clone();
            // A helper that cannot be spawned only means fewer cores: sections still complete.
            let _ = std::thread::Builder::new()
                .name(format!("novapay-kernel-{i}"))
                .spawn(move || helper(&shared));
        }
        Self {
            shared,
            helpers,
            submit: Mutex::new(()),
        }
    }

    /// The pool for `threads` cores in all (the caller plus `threads - 1` helpers), built once per
    /// process; `None` for one thread.
    pub fn global(threads: usize) -> Option<&'static SpinPool> {
        static POOL: OnceLock<SpinPool> = OnceLock::new();
        if threads <= 1 {
            return None;
        }
        let pool = POOL.get_or_init(|| SpinPool::new(threads - 1));
        (pool.helpers == threads - 1).then_some(pool)
    }

    pub fn helpers(&self) -> usize {
        self.helpers
    }

    /// Runs `f` over 0..n in chunks of `chunk`, on the caller and whichever helpers join; the helpers
    /// then spin for the next section for `SPIN`.
    pub fn run(&self, n: usize, chunk: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        self.run_section(n, chunk, true, f)
    }

    /// `run` for a long section (milliseconds: prefill) after which the helpers sleep at once
    /// instead of spinning on a core that the caller's next work (a dense GEMM on rayon's threads,
    /// candle's ops) needs; the wake-up before the next section costs nothing at that length.
    pub fn run_then_sleep(&self, n: usize, chunk: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        self.run_section(n, chunk, false, f)
    }

    fn run_section(&self, n: usize, chunk: usize, linger: bool, f: &(dyn Fn(Range<usize>) + Sync)) {
        let chunk = chunk.max(1);
        let Ok(_guard) = self.submit.try_lock() else {
            f(0..n);
            return;
        };
        let job = Job {
            f,
            n,
            chunk,
            linger,
            next: AtomicUsize::new(0),
        };
        let s = &*self.shared;
        // SAFETY: the pointer is published only until the end of this function, which clears it and
        // then waits until no helper is inside the job (`busy`); helpers re-check it after
        // announcing themselves, so none can reach the job after that.
        let ptr = &job as *const Job as *mut Job<'static>;
        s.job.store(ptr, SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        if s.sleeping.load(SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        job.work();
        s.job.store(std::ptr::null_mut(), SeqCst);
        while s.busy.load(SeqCst) > 0 {
            std::hint::spin_loop();
        }
    }
}

fn helper(s: &Shared) {
    let mut seen = s.epoch.load(SeqCst);
    let mut spin = SPIN;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(SeqCst);
            if e != seen {
                seen = e;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && idle_since.elapsed() >= spin {
                s.sleeping.fetch_add(1, SeqCst);
                let l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                let _l = s
                    .wake
                    .wait_while(l, |_| s.epoch.load(SeqCst) == seen)
                    .unwrap_or_else(|e| e.into_inner());
                s.sleeping.fetch_sub(1, SeqCst);
            } else {
                std::hint::spin_loop();
            }
        }
        s.busy.fetch_add(1, SeqCst);
        let job = s.job.load(SeqCst);
        if !job.is_null() {
            // SAFETY: `busy` was raised before this load; the caller clears `job` and then waits
            // for `busy` to fall to 0 before the job goes out of scope.
            unsafe {
                spin = if (*job).linger { SPIN } else { Duration::ZERO };
                (*job).work();
            }
        }
        s.busy.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_exactly_once_whoever_joins() {
        let pool = SpinPool::new(2);
        for (n, chunk) in [(0, 1), (1, 1), (7, 2), (1000, 13), (64, 64)] {
            for _ in 0..50 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, chunk, &|r| {
                    for i in r {
                        hits[i].fetch_add(1, SeqCst);
                    }
                });
                assert!(
                    hits.iter().all(|h| h.load(SeqCst) == 1),
                    "n {n} chunk {chunk}"
                );
            }
        }
        // After the helpers fell asleep, a section still completes (and wakes them).
        std::thread::sleep(SPIN * 4);
        let sum = AtomicUsize::new(0);
        pool.run(100, 10, &|r| {
            sum.fetch_add(r.sum::<usize>(), SeqCst);
        });
        assert_eq!(sum.load(SeqCst), 4950);
        // Sections after which the helpers sleep at once complete too, and so does the next one.
        for _ in 0..50 {
            let sum = AtomicUsize::new(0);
            pool.run_then_sleep(100, 7, &|r| {
                sum.fetch_add(r.sum::<usize>(), SeqCst);
            });
            assert_eq!(sum.load(SeqCst), 4950);
        }
        let sum = AtomicUsize::new(0);
        pool.run(100, 10, &|r| {
            sum.fetch_add(r.sum::<usize>(), SeqCst);
        });
        assert_eq!(sum.load(SeqCst), 4950);
    }
}
