//! `novapay ask`: one question answered from the knowledge base in the terminal (streamed text, then
//! its sources), or with `--retrieve-only` what retrieval and the answerability gate make of it.

use std::io::Write;

use novapay::assistant::{AnswerEvent, Ask, Conversation, Door, SessionId};
use novapay::index::KnowledgeBase;

use super::options::AssistantArgs;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub assistant: AssistantArgs,
    /// Conversation to continue (created when new); without it each question stands alone.
    #[arg(long)]
    pub session: Option<String>,
    /// Print one JSON object {answer, session_id, sources, fallback} instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Show what retrieval finds (sources, scores, whether the fallback fires) without generating.
    #[arg(long)]
    pub retrieve_only: bool,
    /// The question.
    pub question: String,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let a = &args.assistant;
    let session = match &args.session {
        Some(s) => SessionId::parse(s)?,
        None => SessionId::new_random(),
    };
    if args.retrieve_only {
        return retrieve_only(args, &session);
    }

    let assistant = super::load_assistant(a, 1, false)?.assistant;
    let conversation = Conversation::Trusted(session.clone());
    let stdout = std::io::stdout();
    let answered = assistant.ask_blocking(
        Ask::new(&args.question, conversation, Door::Cli),
        &mut |event| {
            let text = match event {
                AnswerEvent::Text(t) => t.clone(),
                AnswerEvent::Replaced(t) => format!("\n\n{t}"),
                _ => return,
            };
            if !args.json {
                let mut out = stdout.lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
        },
    )?;
    let answer = answered.answer;
    if !args.json {
        println!();
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "answer": answer.text,
                "session_id": session,
                "sources": answer.sources.iter().map(|s| serde_json::json!({
                    "source": s.source, "heading": s.heading, "snippet": s.snippet, "score": s.score,
                })).collect::<Vec<_>>(),
                "outcome": answer.outcome(),
                "suggestions": answer.suggestions,
                "fallback": answer.fallback(),
                "extractive": answer.extractive(),
                "cached": answer.cached,
                "verification": answer.verification,
            })
        );
    } else {
        if !answer.sources.is_empty() {
            println!("\nSources:");
            for (i, s) in answer.sources.iter().enumerate() {
                println!(
                    "  [{}] {} — {} (score {:.2})",
                    i + 1,
                    s.source,
                    s.label(),
                    s.score
                );
            }
        }
        if args.session.is_none() {
            println!("\n(session {session}: pass --session {session} to ask a follow-up)");
        }
    }
    Ok(())
}

/// `--retrieve-only`: what retrieval finds and what the answerability gate decides, without the LLM.
/// It does not go through `Assistant::retrieve`, because an `Assistant` needs a loaded LLM and this
/// mode must work (and start fast) without one; it calls the same `retrieve_with` the assistant does.
fn retrieve_only(args: &Args, session: &SessionId) -> anyhow::Result<()> {
    let a = &args.assistant;
    let embedder = super::load_embedder(&a.runtime, &a.embed, 32)?;
    let settings = super::index_settings(&embedder, &a.embed, &a.kb);
    let kb = KnowledgeBase::open(&a.kb.index_dir(), &settings)?;
    let memory = a.memory.open(&a.kb)?;
    let config = a.rag.config(&a.embed.embedder, a.sampling.params());
    let history = memory.history(session, config.history_turns)?;
    // Retrieval needs no LLM: build the assistant's retrieval part only.
    let extractor = novapay::assistant::extract::Extractor::default();
    let retrieval = novapay::assistant::retrieve_with(
        &kb,
        &embedder,
        &extractor,
        &config,
        &args.question,
        &history,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&retrieval)?);
    } else {
        let g = &retrieval.gate;
        println!(
            "best similarity {:.3} (with history {:.3}), floor {:.2}; rarity-weighted coverage \
             {:.2} (with history {:.2}), threshold {:.2}; rarest words covered: {}{}; best \
             excerpt BM25/max {:.2}; dense and lexical agree: {}: {}",
            retrieval.best_similarity,
            retrieval.best_similarity_with_history,
            config.gate.min_similarity,
            g.weighted_coverage,
            retrieval.gate_with_history.weighted_coverage,
            config.gate.min_weighted_coverage,
            g.rare_covered,
            if g.missing_rare.is_empty() {
                String::new()
            } else {
                format!(
                    " (not in the excerpts: {}; in no chunk: {})",
                    g.missing_rare.join(", "),
                    g.unknown_rare.join(", ")
                )
            },
            g.best_excerpt_bm25,
            g.agreement,
            if retrieval.relevant {
                "answer from the excerpts"
            } else {
                "FALLBACK (no LLM call)"
            }
        );
        if let Some(m) = &g.meaning {
            println!(
                "meaning: best excerpt sentence {:.3} (excerpt {}), rescue at {}",
                m.best_sentence,
                m.best_sentence_excerpt,
                config
                    .gate
                    .meaning
                    .min_sentence_similarity
                    .map_or("- (off)".to_string(), |t| format!("{t:.2}"))
            );
        }
        for (i, h) in retrieval.hits.iter().take(10).enumerate() {
            println!(
                "{:>2}. fused {:.4}  cosine {}  bm25 {}  {} — {}",
                i + 1,
                h.score,
                h.dense
                    .map(|d| format!("{d:.3}"))
                    .unwrap_or_else(|| "-".into()),
                h.lexical
                    .map(|d| format!("{d:.2}"))
                    .unwrap_or_else(|| "-".into()),
                h.chunk.source,
                h.chunk.heading
            );
        }
    }
    Ok(())
}
