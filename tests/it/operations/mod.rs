//! Running novapay: the security regressions, a customer's data exported and erased, the API fuzzed
//! from its own OpenAPI document, the document itself, the generated configuration page,
//! conversations shared through Redis by replicas, and the run script's model choice.

mod configuration_page;
mod customer_data;
mod fuzz_api;
mod openapi;
mod pinned_models;
pub mod redis_memory;
mod run_script;
mod security;
