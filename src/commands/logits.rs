//! `novapay logits`: every prompt position's logits and a greedy continuation, to check the engine against llama.cpp.

use super::options::{LlmArgs, RuntimeArgs};
use anyhow::Context;
use novapay::engine::inspect::{self, LogitsRequest};
use novapay::engine::Llm;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Token ids, comma-separated, instead of a text (e.g. llama.cpp's tokenization).
    #[arg(long, conflicts_with = "text")]
    pub ids: Option<String>,
    /// Put the model's BOS token first (text prompts only; follows the GGUF's add_bos_token by default).
    #[arg(long)]
    pub bos: Option<bool>,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Also print these token ids' logits at every position (comma-separated).
    #[arg(long)]
    pub select: Option<String>,
    /// Greedy tokens to generate after the prompt.
    #[arg(long, default_value_t = 0)]
    pub greedy: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    pub text: Option<String>,
}

fn parse_ids(list: &str, what: &str) -> anyhow::Result<Vec<u32>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("{what}: `{s}` is not a token id"))
        })
        .collect()
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let opts = super::load_llm_options(&a.runtime, &a.llm)?;
    let mut llm = Llm::load(&opts)
        .with_context(|| format!("loading the LLM from {}", opts.gguf.display()))?;
    let tokens = match (a.ids.as_deref(), a.text.as_deref()) {
        (Some(ids), _) => parse_ids(ids, "--ids")?,
        (None, Some(text)) => {
            let mut ids = Vec::new();
            if a.bos.unwrap_or(llm.tokenizer.add_bos) {
                ids.extend(llm.tokenizer.bos);
            }
            ids.extend(llm.tokenizer.encode(text, true)?);
            ids
        }
        (None, None) => anyhow::bail!("give a prompt text or --ids 1,2,3"),
    };
    let select = a
        .select
        .as_deref()
        .map(|s| parse_ids(s, "--select"))
        .transpose()?
        .unwrap_or_default();
    let report = inspect::prompt_logits(
        &mut llm,
        &LogitsRequest {
            tokens: &tokens,
            top_k: a.top_k,
            ids_of_interest: &select,
            greedy_tokens: a.greedy,
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    for (p, tok) in report.positions.iter().zip(&report.tokens) {
        let top: Vec<String> = p
            .top
            .iter()
            .map(|(id, l)| format!("{id}:{:?}={l:.4}", llm.tokenizer.piece(*id)))
            .collect();
        println!(
            "{:>4} {:>7} {:<16} -> {}",
            p.position,
            tok,
            format!("{:?}", llm.tokenizer.piece(*tok)),
            top.join("  ")
        );
    }
    if !report.greedy.is_empty() {
        println!("greedy: {:?}", report.greedy);
        println!("text: {:?}", llm.tokenizer.decode(&report.greedy));
    }
    Ok(())
}
