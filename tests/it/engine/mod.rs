//! The LLM engine on real and generated GGUFs: generation, Llama 3.2's, Qwen2.5's and Gemma 3's
//! architectures against llama.cpp,
//! the tokenizer, chat templates, the worker thread, and bad model files.

mod batch;
pub mod generation;
mod model_files;
mod scheduler;
mod synth_gemma3;
mod synth_llama;
mod synth_qwen2;
mod templates;
mod tokenizer;
mod worker;
