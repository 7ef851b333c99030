//! The two tools' calls into `rag`'s answering service (`Door::Mcp`): a search is `Assistant::search`,
//! an answer is `Assistant::ask` in a conversation the caller owns. `rag` validates, admits, times
//! out, logs (through `logsafe`) and counts; this turns its results into MCP tool results.

use std::fmt::Write as _;

use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::ErrorData;
use serde_json::json;

use super::{from_answer_error, tool_error, McpContext, MAX_SEARCH_RESULTS};
use crate::assistant::checks::injection::without_instructions;
use crate::assistant::{parse_session_id, Answered, Ask, Conversation, Door};

pub async fn search(
    context: McpContext,
    query: String,
    top_k: usize,
) -> Result<CallToolResult, ErrorData> {
    if !(1..=MAX_SEARCH_RESULTS).contains(&top_k) {
        return Ok(tool_error(format!(
            "top_k must be between 1 and {MAX_SEARCH_RESULTS}"
        )));
    }
    let found = match context
        .assistant
        .search(&query, Vec::new(), top_k, Door::Mcp)
        .await
    {
        Ok(f) => f,
        Err(e) => return Ok(from_answer_error(e)),
    };
    // The calling model reads these: instruction-like sentences are left out, as in the assistant's
    // own prompt.
    let excerpts: Vec<serde_json::Value> = found
        .sources
        .iter()
        .zip(&found.texts)
        .map(|(s, text)| {
            json!({
                "source": s.source,
                "title": s.title,
                "heading": s.heading,
                "text": without_instructions(text).0,
                "score": s.score,
            })
        })
        .collect();
    let mut text = String::new();
    if !found.answerable {
        text.push_str(
            "The knowledge base does not look able to answer this query; these are the closest \
             excerpts.\n\n",
        );
    }
    for (i, e) in excerpts.iter().enumerate() {
        let heading = match e["heading"].as_str() {
            Some(h) if !h.is_empty() => h,
            _ => e["title"].as_str().unwrap_or_default(),
        };
        let _ = writeln!(
            text,
            "[{}] {} — {} (score {:.2})\n{}\n",
            i + 1,
            e["source"].as_str().unwrap_or_default(),
            heading,
            e["score"].as_f64().unwrap_or_default(),
            e["text"].as_str().unwrap_or_default(),
        );
    }
    if excerpts.is_empty() {
        text.push_str("No excerpts found.");
    }
    let mut result = CallToolResult::success(vec![ContentBlock::text(text.trim_end())]);
    result.structured_content = Some(json!({
        "excerpts": excerpts,
        "answerable": found.answerable,
        "language": found.language,
    }));
    Ok(result)
}

pub async fn ask(
    context: McpContext,
    question: String,
    session_id: Option<String>,
) -> Result<CallToolResult, ErrorData> {
    let conversation = match session_id.as_deref().map(parse_session_id).transpose() {
        Ok(Some(id)) => Conversation::Continue {
            id,
            access: context.caller.clone(),
        },
        Ok(None) => Conversation::New(context.caller.clone()),
        Err(e) => return Ok(from_answer_error(e)),
    };
    let ask = Ask::new(question, conversation, Door::Mcp);
    match context.assistant.ask_collected(ask).await {
        Ok(answered) => Ok(answered_result(&answered)),
        Err(e) => Ok(from_answer_error(e)),
    }
}

/// The answer as text with numbered sources (what a model reads) and as structured content: the
/// outcome, and for a suggestion the sections offered (the text already lists them, numbered).
fn answered_result(answered: &Answered) -> CallToolResult {
    let answer = &answered.answer;
    let mut text = answer.text.trim().to_string();
    if !answer.sources.is_empty() {
        text.push_str("\n\nSources:");
        for (i, s) in answer.sources.iter().enumerate() {
            let _ = write!(text, "\n[{}] {} — {}", i + 1, s.source, s.label());
        }
    }
    let session = answered.session.as_ref().map(|s| s.to_string());
    if let Some(id) = &session {
        let _ = write!(
            text,
            "\n\n(session_id {id}: pass it to ask a follow-up question)"
        );
    }
    let suggestions: Vec<serde_json::Value> = answer
        .suggestions
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "source": s.source,
                "title": s.title,
                "section": s.section,
                "snippet": s.snippet,
                // The calling model reads it: instruction-like sentences are left out.
                "text": without_instructions(&s.text).0,
                "score": s.score,
            })
        })
        .collect();
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json!({
        "answer": answer.text.trim(),
        "session_id": session,
        "outcome": answer.outcome().as_str(),
        "suggestions": suggestions,
        "sources": answer.sources,
        "fallback": answer.fallback(),
        "extractive": answer.extractive(),
        "cached": answer.cached,
        "answer_mode": answered.answer_mode,
        "query_id": answered.query_id,
    }));
    result
}
