//! Sizing of candle's CPU thread pools. candle reads `RAYON_NUM_THREADS` / `CANDLE_NUM_THREADS` once, when
//! its pools first start, so the count must be fixed before any model is loaded.

/// Sets the number of threads candle's CPU kernels use. Call once at start-up, before loading a model,
/// while the process is still single-threaded.
pub fn configure_cpu_threads(threads: Option<usize>) -> usize {
    let n = threads.filter(|n| *n > 0).unwrap_or_else(default_threads);
    let value = n.to_string();
    // Both names: candle's quantized matmul reads CANDLE_NUM_THREADS, its gemm and rayon pool read
    // RAYON_NUM_THREADS.
    std::env::set_var("RAYON_NUM_THREADS", &value);
    std::env::set_var("CANDLE_NUM_THREADS", &value);
    // candle's quantized-matmul workers spin 25,000 times before sleeping, and the calling thread
    // spins until every worker has checked in. When another process holds a core, a spinning worker
    // steals the time the descheduled one needs: on Llama-3.2-3B-shaped weights with the machine
    // busy, 2 threads generated 1.1 tok/s at 25,000 spins, 1.9 at 1,000 and 0.5 at 1,000,000
    // (novapay bench llm). An operator's own value is kept.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", BARRIER_SPIN_LIMIT);
    }
    n
}

/// Spins before an idle candle quantized-matmul worker sleeps (see `configure_cpu_threads`).
const BARRIER_SPIN_LIMIT: &str = "1000";

/// One thread per available core: the busy-waiting quantized kernels collapse when they oversubscribe.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
