use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::Context;
use novapay::rag::prompt::{grounded_messages, Excerpt};

use crate::cli::{LlmArgs, SamplingArgs};

pub fn run(
    args: &LlmArgs,
    sampling: &SamplingArgs,
    context: &[PathBuf],
    json: bool,
    question: &str,
) -> anyhow::Result<()> {
    let question = question.trim();
    if question.is_empty() {
        anyhow::bail!("the question is empty");
    }
    let excerpts = context
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading context file {}", p.display()))?;
            Ok(Excerpt {
                source: p.display().to_string(),
                text,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut llm = super::load_llm(args)?;
    let prompt = llm.encode_chat(&grounded_messages(question, &excerpts))?;
    let mut answer = String::new();
    let stdout = std::io::stdout();
    let summary = llm.generate(&prompt, &sampling.params(), &|| false, &mut |text| {
        answer.push_str(text);
        if !json {
            let mut out = stdout.lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        ControlFlow::Continue(())
    })?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "answer": answer.trim(),
                "sources": excerpts.iter().map(|e| &e.source).collect::<Vec<_>>(),
                "usage": summary.usage,
                "timings": summary.timings,
                "finish_reason": summary.finish_reason,
            })
        );
    } else {
        println!();
    }
    Ok(())
}
