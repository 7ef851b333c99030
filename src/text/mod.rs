//! Text analysis at the bottom of the house: sentences, words and their roots, language. The
//! answering code and the index both read text through here, so a sentence or a word is cut one way.

pub mod language;
pub mod sentences;
pub mod thesaurus;
pub mod words;

pub use language::{detect_language, Language};
pub use sentences::{sentences_of, split_sentences};
pub use words::{content_terms, is_question_word, same_root};
