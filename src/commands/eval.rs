use std::path::Path;

use novapay::eval::{beir, doc2dial};

use crate::cli::{EmbedArgs, RuntimeArgs};

fn progress(what: &str, done: usize, total: usize) {
    eprint!("\r{what}: {done}/{total}   ");
    if done >= total {
        eprintln!();
    }
}

pub fn retrieval(
    runtime: &RuntimeArgs,
    embed: &EmbedArgs,
    dir: &Path,
    mode: Option<&str>,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let modes: Vec<beir::Mode> = match mode {
        Some(m) => vec![m.parse().map_err(anyhow::Error::msg)?],
        None => vec![beir::Mode::Dense, beir::Mode::Bm25, beir::Mode::Hybrid],
    };
    let embedder = if modes.iter().any(|m| *m != beir::Mode::Bm25) {
        Some(super::load_embedder(runtime, embed, 32)?)
    } else {
        None
    };
    let report = beir::evaluate(dir, &modes, embedder.as_ref(), limit, &progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} documents, {} queries{}",
            report.dataset,
            report.documents,
            report.queries,
            report
                .embedder
                .as_deref()
                .map(|e| format!(", embedder {e}"))
                .unwrap_or_default()
        );
        for r in &report.results {
            println!(
                "  {:<7} nDCG@10 {:.4}  recall@10 {:.4}  recall@100 {:.4}",
                format!("{:?}", r.mode).to_lowercase(),
                r.ndcg_at_10,
                r.recall_at_10,
                r.recall_at_100
            );
        }
    }
    Ok(())
}

pub fn dialogue(
    runtime: &RuntimeArgs,
    embed: &EmbedArgs,
    dir: &Path,
    all_documents: bool,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let embedder = super::load_embedder(runtime, embed, 32)?;
    let fit = embedder.max_length().saturating_sub(48).max(32);
    let chunk = novapay::index::chunk::ChunkSettings {
        max_tokens: 200.min(fit),
        overlap_tokens: 30,
    };
    let report = doc2dial::evaluate(dir, &embedder, chunk, all_documents, limit, &progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "doc2dial: {} documents, {} chunks; recall@{} of the gold passage",
            report.documents, report.chunks, report.k
        );
        for (name, r) in [
            ("all questions", &report.all),
            ("follow-ups", &report.follow_ups),
        ] {
            println!(
                "  {name:<14} ({:>4}): latest question alone {:.4}, with history {:.4}",
                r.questions, r.without_history, r.with_history
            );
        }
    }
    Ok(())
}
