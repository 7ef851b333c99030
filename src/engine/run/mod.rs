//! Running the model: generation (prompt, sampling, stop strings, UTF-8 streaming) and the worker
//! thread that owns the model and serves generation jobs from a queue.

pub mod generation;
pub mod sampling;
pub mod stream_decoder;
pub mod worker;
