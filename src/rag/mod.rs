//! Grounded answering: composes retrieval, the prompt and the LLM. No HTTP here.

pub mod prompt;
