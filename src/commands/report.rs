//! `novapay report`: the support report read straight from the conversation store (the state
//! directory's SQLite file, or Redis): it works while the server is down and needs no API key, only
//! access to the store (the state directory is private to its owner).

use super::options::{KbArgs, MemoryArgs};
use novapay::assistant::report::{support_report, SupportReport};
use novapay::memory::now_ms;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub kb: KbArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Days back the report covers.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Print the report as JSON (the same document as GET /api/v1/stats).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let store = a.memory.open(&a.kb)?;
    let since_ms = now_ms() - i64::from(a.days.max(1)) * 86_400_000;
    let report = support_report(store.as_ref(), since_ms)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report, a.days));
    }
    Ok(())
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn human(r: &SupportReport, days: u32) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    let _ = writeln!(out, "NovaPay support report, last {days} day(s)");
    let _ = writeln!(out, "  questions answered: {}", r.questions_answered);
    let share = if r.questions_answered > 0 {
        100.0 * r.fallback_answers as f64 / r.questions_answered as f64
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "  not answered from the knowledge base (fallback): {} ({share:.1}%)",
        r.fallback_answers
    );
    let _ = writeln!(
        out,
        "  outcomes (answered / suggested, then helped / suggested, then operator / handed off):"
    );
    let row = |c: &novapay::assistant::report::OutcomeCounts| {
        format!(
            "{} / {} ({} helped, {} operator) / {}",
            c.answered,
            c.suggested,
            c.suggested_and_helped,
            c.suggested_then_operator,
            c.handed_off
        )
    };
    let _ = writeln!(out, "    all: {}", row(&r.outcomes));
    for (language, counts) in &r.outcomes_by_language {
        let _ = writeln!(out, "    {language}: {}", row(counts));
    }
    let _ = writeln!(
        out,
        "  feedback: {} up, {} down",
        r.feedback.up, r.feedback.down
    );
    let _ = writeln!(
        out,
        "  latency: p50 {}, p95 {}",
        ms(r.latency_ms.p50),
        ms(r.latency_ms.p95)
    );
    if r.truncated {
        let _ = writeln!(out, "  (only the newest answers were counted)");
    }
    let _ = writeln!(
        out,
        "\nQuestions the knowledge base could not answer (most frequent first):"
    );
    if r.unanswered_questions.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for q in &r.unanswered_questions {
        let _ = writeln!(
            out,
            "  {:>4} x  {}  (last {})",
            q.count,
            q.question,
            when(q.last_asked_ms)
        );
    }
    let _ = writeln!(out, "\nAnswers rated down (newest first):");
    if r.thumbs_down.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for d in &r.thumbs_down {
        let _ = writeln!(out, "  [{}] {}", when(d.answered_at_ms), d.question);
        let _ = writeln!(out, "      answer: {}", d.answer.replace('\n', " "));
        let _ = writeln!(
            out,
            "      sources: {}",
            if d.sources.is_empty() {
                "(none: fallback)".to_string()
            } else {
                d.sources.join(", ")
            }
        );
        if let Some(c) = &d.comment {
            let _ = writeln!(out, "      comment: {}", c.replace('\n', " "));
        }
        let _ = writeln!(out, "      query_id: {}", d.query_id);
    }
    out
}
