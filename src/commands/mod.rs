//! One file per subcommand, each holding its flags (`Args`, or a `Command` enum for a group) and its
//! action (`run`), as cargo's own `commands/*.rs`; `options` holds the flag groups several share and
//! `load` what they load (models, the assistant).

pub mod ask;
pub mod bench;
pub mod bitrix24;
pub mod convert_e5;
pub mod docs;
pub mod download;
pub mod eval;
pub mod export;
pub mod forget;
pub mod index;
mod load;
pub mod logits;
pub mod mcp;
pub mod options;
pub mod report;
pub mod serve;
pub mod synth_gguf;
pub mod tokenize;
pub mod verify_models;

use load::{
    index_settings, load_assistant, load_embedder, load_llm_options, prepare_device, resolve_llm,
};

use crate::cli::Command;

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Download(a) => download::run(&a),
        Command::Index(a) => index::run(&a),
        Command::Ask(a) => ask::run(&a),
        Command::Serve(a) => serve::run(&a),
        Command::VerifyModels(a) => verify_models::run(&a),
        Command::Mcp(a) => mcp::run(&a),
        Command::Report(a) => report::run(&a),
        Command::Forget(a) => forget::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Bitrix24 { command } => bitrix24::run(command),
        Command::Tokenize(a) => tokenize::run(&a),
        Command::Logits(a) => logits::run(&a),
        Command::SynthGguf(a) => synth_gguf::run(&a),
        Command::ConvertE5(a) => convert_e5::run(&a),
        Command::Bench { command } => bench::run(command),
        Command::Eval { command } => eval::run(command),
        Command::Docs { page } => docs::run(page),
    }
}
