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
    n
}

/// One thread per available core: the busy-waiting quantized kernels collapse when they oversubscribe.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
