//! Tools around the engine rather than in the answer path: synthetic GGUFs for tests and benchmarks,
//! and logits inspection for comparing with llama.cpp.

pub mod inspect;
pub mod synth;
