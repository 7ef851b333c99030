//! Answerability: whether the retrieved excerpts can answer a question. `signals.rs` holds the signals
//! and their settings, `lexical.rs` measures words (coverage, rare words, BM25), `meaning.rs` asks the
//! embedder when the words refuse.

pub mod lexical;
pub mod meaning;
pub mod signals;
pub mod weighing;

pub use lexical::signals;
pub use signals::MINILM_MIN_SENTENCE_SIMILARITY;
pub use signals::{GateConfig, GateSignals, MeaningConfig, MeaningSignals, WordMatch, WordSignal};
pub use weighing::{Decision, GateModel};
