//! Integration tests on the real small models fetched by `scripts/fetch-test-models.sh`, in one binary,
//! grouped by feature: the doors a question comes in by, answering, the knowledge base, the engine,
//! and operations (security, the API's contract, replicas, the run script).

mod answering;
mod doors;
mod embedder;
mod engine;
mod knowledge;
mod operations;

mod support;

// The models and fixtures are used by most modules: importable from the crate root as before.
pub use support::{fixture, load_smollm2, minilm_dir, smollm2_path};
// The shared knowledge base and embedder, by the path the answering tests name them.
use knowledge::knowledge_base;
