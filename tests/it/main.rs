//! Integration tests on the real small models fetched by `scripts/fetch-test-models.sh`.

mod answering;
mod answers;
mod bitrix24;
mod browser;
mod cli;
mod documents;
mod embedder;
mod eval;
mod feedback;
mod front_doors;
mod fuzz_api;
mod generation;
mod http;
mod index_generations;
mod integrations;
mod knowledge_base;
mod mcp;
mod model_files;
mod openai;
mod openapi;
mod redis_memory;
mod run_script;
mod security;
mod suggestions;
mod synth_llama;
mod templates;
mod tokenizer;
mod worker;

mod support;

// The models and fixtures are used by most modules: importable from the crate root as before.
pub use support::{fixture, load_smollm2, minilm_dir, smollm2_path};
