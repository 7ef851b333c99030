//! Grounded answering: retrieval (with the conversation's recent turns), the fallback when nothing
//! relevant is found, the prompt under a token budget, generation and the sources. No HTTP here; calls
//! that block (embedding, search, SQLite) are plain functions that async callers run on blocking threads.

pub mod prompt;

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::embed::Embedder;
use crate::engine::{
    ChatMessage, EngineError, GenerateRequest, GenerationEvent, LlmHandle, Prompt, Role,
    SamplingParams,
};
use crate::index::{Hit, KnowledgeBase};
use crate::memory::{now_ms, ConversationStore, MemoryError, SessionId, Speaker, Turn};
use prompt::{grounded_messages, Excerpt};

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("retrieval failed: {0}")]
    Retrieval(String),
    #[error("invalid question: {0}")]
    InvalidQuestion(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Ru,
}

/// Russian when Cyrillic letters outnumber Latin ones.
pub fn detect_language(text: &str) -> Language {
    let cyr = text
        .chars()
        .filter(|c| ('\u{400}'..='\u{4FF}').contains(c))
        .count();
    let lat = text.chars().filter(|c| c.is_ascii_alphabetic()).count();
    if cyr > lat {
        Language::Ru
    } else {
        Language::En
    }
}

#[derive(Debug, Clone)]
pub struct RagConfig {
    /// Excerpts shown to the model at most.
    pub top_k: usize,
    /// Depth of each ranked list before fusion.
    pub candidates: usize,
    /// Cosine similarity the best match must reach; below it the fallback answers.
    pub min_similarity: f32,
    /// Token budgets (LLM tokens) for the excerpts and for earlier turns.
    pub context_tokens: usize,
    pub history_tokens: usize,
    /// Turns read from memory at most (before the token budget).
    pub history_turns: usize,
    /// Share of the question's content words that the top excerpts must contain: embeddings alone
    /// rate unrelated text as similar, above all in a language the embedder was not trained on.
    pub min_term_coverage: f32,
    /// A follow-up with at most this many words may borrow relevance from the previous turns.
    pub follow_up_max_words: usize,
    pub fallback_en: String,
    pub fallback_ru: String,
    pub sampling: SamplingParams,
}

pub const FALLBACK_EN: &str = "I could not find the answer in the NovaPay knowledge base, and I \
don't want to guess. Please contact NovaPay support at support@novapay.com (Monday–Friday, \
9:00–18:00 GMT+3): an operator will help you.";
pub const FALLBACK_RU: &str = "Я не нашёл ответа в базе знаний NovaPay и не хочу гадать. Пожалуйста, \
напишите в поддержку NovaPay: support@novapay.com (понедельник–пятница, 9:00–18:00 GMT+3) — оператор \
вам поможет.";

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            top_k: 4,
            candidates: 20,
            min_similarity: 0.35,
            min_term_coverage: 0.25,
            context_tokens: 1200,
            history_tokens: 600,
            history_turns: 8,
            follow_up_max_words: 12,
            fallback_en: FALLBACK_EN.into(),
            fallback_ru: FALLBACK_RU.into(),
            sampling: SamplingParams::default(),
        }
    }
}

/// A cited piece of the knowledge base.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub source: String,
    pub title: String,
    pub heading: String,
    pub snippet: String,
    /// Cosine similarity of the chunk to the question (0 when only keyword search found it).
    pub score: f32,
}

/// What retrieval found for a question.
#[derive(Debug, Clone, Serialize)]
pub struct Retrieval {
    pub hits: Vec<Hit>,
    /// Best cosine similarity of the question alone, and of the question with recent turns.
    pub best_similarity: f32,
    pub best_similarity_with_history: f32,
    /// Share of the question's content words found in the top excerpts (alone / with recent turns).
    pub term_coverage: f32,
    pub term_coverage_with_history: f32,
    pub relevant: bool,
    pub language: Language,
}

/// The answer plan for one question.
pub enum Plan {
    /// Nothing relevant: this text, without calling the LLM.
    Fallback(String),
    Generate(GenerateRequest),
}

pub struct Prepared {
    pub session: SessionId,
    pub question: String,
    pub retrieval: Retrieval,
    pub sources: Vec<Source>,
    pub plan: Plan,
}

pub struct Assistant {
    /// Replaced whole when a new index generation is published; each question reads it once.
    kb: ArcSwap<KnowledgeBase>,
    embedder: Arc<Embedder>,
    llm: LlmHandle,
    memory: Arc<dyn ConversationStore>,
    pub config: RagConfig,
}

pub const MAX_QUESTION_CHARS: usize = 1000;

impl Assistant {
    pub fn new(
        kb: Arc<KnowledgeBase>,
        embedder: Arc<Embedder>,
        llm: LlmHandle,
        memory: Arc<dyn ConversationStore>,
        config: RagConfig,
    ) -> Self {
        Self {
            kb: ArcSwap::new(kb),
            embedder,
            llm,
            memory,
            config,
        }
    }

    pub fn llm(&self) -> &LlmHandle {
        &self.llm
    }

    pub fn memory(&self) -> &Arc<dyn ConversationStore> {
        &self.memory
    }

    /// The knowledge base new questions are answered from.
    pub fn knowledge_base(&self) -> Arc<KnowledgeBase> {
        self.kb.load_full()
    }

    /// Answers new questions from `kb` (a newly published generation). Questions already past
    /// retrieval finish with the excerpts they have; the old generation is released (and may be
    /// deleted by the next `novapay index`) when the last of them lets go. Returns the old one.
    pub fn replace_knowledge_base(&self, kb: Arc<KnowledgeBase>) -> Arc<KnowledgeBase> {
        self.kb.swap(kb)
    }

    /// See [`retrieve_with`]. Blocking.
    pub fn retrieve(&self, question: &str, history: &[Turn]) -> Result<Retrieval, RagError> {
        let kb = self.knowledge_base();
        retrieve_with(&kb, &self.embedder, &self.config, question, history)
    }

    /// History, retrieval and the prompt (or the fallback) for a question. Blocking.
    pub fn prepare(&self, session: &SessionId, question: &str) -> Result<Prepared, RagError> {
        let question = question.trim();
        if question.is_empty() {
            return Err(RagError::InvalidQuestion("the question is empty".into()));
        }
        if question.chars().count() > MAX_QUESTION_CHARS {
            return Err(RagError::InvalidQuestion(format!(
                "the question is longer than {MAX_QUESTION_CHARS} characters"
            )));
        }
        let history = self.memory.history(session, self.config.history_turns)?;
        let retrieval = self.retrieve(question, &history)?;
        if !retrieval.relevant {
            let text = match retrieval.language {
                Language::Ru => self.config.fallback_ru.clone(),
                Language::En => self.config.fallback_en.clone(),
            };
            return Ok(Prepared {
                session: session.clone(),
                question: question.to_string(),
                retrieval,
                sources: Vec::new(),
                plan: Plan::Fallback(text),
            });
        }
        let tokenizer = self.llm.tokenizer();
        let count = |t: &str| {
            tokenizer
                .encode(t, false)
                .map(|ids| ids.len())
                .unwrap_or(usize::MAX)
        };
        let mut excerpts = Vec::new();
        let mut sources = Vec::new();
        let mut used = 0;
        for hit in retrieval.hits.iter().take(self.config.top_k) {
            let text = if hit.chunk.heading.is_empty() {
                hit.chunk.text.clone()
            } else {
                format!("{}\n{}", hit.chunk.heading, hit.chunk.text)
            };
            let cost = count(&text);
            if used + cost > self.config.context_tokens && !excerpts.is_empty() {
                break;
            }
            used += cost;
            excerpts.push(Excerpt {
                source: hit.chunk.source.clone(),
                text,
            });
            sources.push(Source {
                source: hit.chunk.source.clone(),
                title: hit.chunk.title.clone(),
                heading: hit.chunk.heading.clone(),
                snippet: snippet(&hit.chunk.text, 240),
                score: hit.dense.unwrap_or(0.0),
            });
        }
        // Most recent turns first, within the budget, then back in order.
        let mut kept = Vec::new();
        let mut budget = self.config.history_tokens;
        for turn in history.iter().rev() {
            let cost = count(&turn.content);
            if cost > budget {
                break;
            }
            budget -= cost;
            let role = match turn.role {
                Speaker::User => Role::User,
                Speaker::Assistant => Role::Assistant,
            };
            kept.push(ChatMessage::new(role, turn.content.clone()));
        }
        kept.reverse();
        let messages = grounded_messages(question, &excerpts, &kept);
        Ok(Prepared {
            session: session.clone(),
            question: question.to_string(),
            retrieval,
            sources,
            plan: Plan::Generate(GenerateRequest {
                prompt: Prompt::Chat(messages),
                params: SamplingParams {
                    stop: answer_stops(),
                    ..self.config.sampling.clone()
                },
            }),
        })
    }

    /// Queues the generation of a prepared answer (`Overloaded` when the queue is full).
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<UnboundedReceiver<GenerationEvent>, RagError> {
        Ok(self.llm.submit(request)?)
    }

    /// Stores the question and the answer in the session's history. Blocking.
    pub fn record(
        &self,
        session: &SessionId,
        question: &str,
        answer: &str,
        sources: &[Source],
    ) -> Result<(), RagError> {
        let now = now_ms();
        self.memory.append(
            session,
            &Turn {
                role: Speaker::User,
                content: question.to_string(),
                sources: Vec::new(),
                created_at_ms: now,
            },
        )?;
        let mut cited: Vec<String> = sources.iter().map(|s| s.source.clone()).collect();
        cited.dedup();
        self.memory.append(
            session,
            &Turn {
                role: Speaker::Assistant,
                content: answer.to_string(),
                sources: cited,
                created_at_ms: now,
            },
        )?;
        Ok(())
    }
}

/// A finished answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub text: String,
    pub sources: Vec<Source>,
    /// True when the knowledge base had nothing relevant and the fallback replied (no LLM call).
    pub fallback: bool,
    pub usage: Option<crate::engine::Usage>,
}

impl Assistant {
    /// The whole flow for callers without an async runtime (CLI, tests): prepare, generate or fall
    /// back, record in the session. `on_text` receives the answer as it streams.
    pub fn answer_blocking(
        &self,
        session: &SessionId,
        question: &str,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Answer, RagError> {
        let prepared = self.prepare(session, question)?;
        let (text, usage, fallback) = match prepared.plan {
            Plan::Fallback(text) => {
                on_text(&text);
                (text, None, true)
            }
            Plan::Generate(request) => {
                let mut rx = self.submit(request)?;
                let mut text = String::new();
                let mut usage = None;
                while let Some(event) = rx.blocking_recv() {
                    match event {
                        GenerationEvent::Token(t) => {
                            on_text(&t);
                            text.push_str(&t);
                        }
                        GenerationEvent::Done(summary) => {
                            usage = Some(summary.usage);
                            break;
                        }
                        GenerationEvent::Error(e) => return Err(e.into()),
                    }
                }
                (text.trim().to_string(), usage, false)
            }
        };
        self.record(session, &prepared.question, &text, &prepared.sources)?;
        Ok(Answer {
            text,
            sources: prepared.sources,
            fallback,
            usage,
        })
    }
}

/// Searches for `question`, and also for it joined to the previous user turns so that a follow-up
/// ("and for international ones?") finds the topic it refers to. The fallback decision uses the
/// question's own best similarity and word coverage, or, for a short follow-up, those with history.
/// Blocking.
pub fn retrieve_with(
    kb: &KnowledgeBase,
    embedder: &Embedder,
    config: &RagConfig,
    question: &str,
    history: &[Turn],
) -> Result<Retrieval, RagError> {
    let language = detect_language(question);
    let previous: Vec<&str> = history
        .iter()
        .rev()
        .filter(|t| t.role == Speaker::User)
        .take(2)
        .map(|t| t.content.as_str())
        .collect();
    let mut queries = vec![question.to_string()];
    if !previous.is_empty() {
        let mut joined: Vec<&str> = previous.into_iter().rev().collect();
        joined.push(question);
        queries.push(joined.join("\n"));
    }
    let vectors = embedder
        .embed_queries(&queries)
        .map_err(|e| RagError::Retrieval(e.to_string()))?;
    let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
    let found = kb.search(&vectors, &texts, config.candidates);
    let hits = found.hits;
    let best_similarity = found.best_similarity.first().copied().unwrap_or(0.0);
    let best_similarity_with_history = found
        .best_similarity
        .get(1)
        .copied()
        .unwrap_or(best_similarity);
    let top = &hits[..hits.len().min(config.top_k)];
    let term_coverage = kb.term_coverage(question, top);
    let term_coverage_with_history = queries
        .get(1)
        .map(|q| kb.term_coverage(q, top))
        .unwrap_or(term_coverage);
    let words = question.split_whitespace().count();
    let relevant = passes(config, best_similarity, term_coverage)
        || (words <= config.follow_up_max_words
            && passes(
                config,
                best_similarity_with_history,
                term_coverage_with_history,
            ));
    Ok(Retrieval {
        hits,
        best_similarity,
        best_similarity_with_history,
        term_coverage,
        term_coverage_with_history,
        relevant,
        language,
    })
}

/// Where a small model starts echoing its prompt (a new excerpt header, the prompt's own labels)
/// the answer is over.
fn answer_stops() -> Vec<String> {
    let mut stops: Vec<String> = (1..=9).map(|i| format!("\n[{i}] (")).collect();
    stops.extend(["\nExcerpts:", "\nQuestion:", "\n\n\n"].map(String::from));
    stops
}

/// Both signals must agree: enough of the question's words in the excerpts, and a similar enough
/// meaning. When nearly every word matches, a lower similarity is accepted (short questions such as
/// "Is there a status page?" embed poorly).
fn passes(config: &RagConfig, similarity: f32, coverage: f32) -> bool {
    let needed = if coverage >= 0.75 {
        config.min_similarity * 0.6
    } else {
        config.min_similarity
    };
    coverage >= config.min_term_coverage && similarity >= needed
}

/// The first `max` characters of `text` on a word boundary, with an ellipsis when cut.
pub fn snippet(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > max / 2 => cut[..i].to_string(),
        _ => cut,
    };
    format!("{cut}…")
}
