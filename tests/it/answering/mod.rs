//! Answering: the one entry point's contract, answers a support team can trust (figure check,
//! extractive answers, cache, injection), suggestions when no answer can be trusted, and feedback.

mod contract;
mod feedback;
mod suggestions;
mod trust;
