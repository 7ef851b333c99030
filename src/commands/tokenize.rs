//! `novapay tokenize`: the token ids (and pieces) of a text with the LLM's tokenizer.

use super::options::{LlmArgs, RuntimeArgs};
use novapay::engine::gguf::GgufFile;
use novapay::engine::tokenizer::LlmTokenizer;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Print JSON: {"ids": [...], "pieces": [...]}.
    #[arg(long)]
    pub json: bool,
    /// Treat control-token strings like <|im_start|> as plain text (how customer text is encoded).
    #[arg(long)]
    pub plain: bool,
    pub text: String,
}

/// Loads only the tokenizer (no weights), so it is instant even for large models.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let Args {
        runtime,
        llm: args,
        json,
        plain,
        text,
    } = a;
    let (json, plain) = (*json, *plain);
    let (path, _) = super::resolve_llm(runtime, args)?;
    let gguf = GgufFile::open(&path)?;
    let tokenizer = match &args.llm_tokenizer {
        Some(t) => LlmTokenizer::from_file(t, Some(&gguf))?,
        None => LlmTokenizer::from_gguf(&gguf)?,
    };
    let ids = tokenizer.encode(text, !plain)?;
    let pieces: Vec<String> = ids.iter().map(|id| tokenizer.piece(*id)).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({ "ids": ids, "pieces": pieces, "count": ids.len() })
        );
    } else {
        for (id, piece) in ids.iter().zip(&pieces) {
            let shown = String::from_utf8_lossy(tokenizer.output_bytes(*id)).into_owned();
            println!("{id:>8}  {piece:<20}  {shown:?}");
        }
        println!("{} tokens", ids.len());
    }
    Ok(())
}
