//! doc2dial: does retrieval find the passage the agent's reply is grounded in? Documents are chunked
//! and embedded like the knowledge base; each question is retrieved through the product's own
//! `rag::retrieve_with`, once alone and once with the dialogue's earlier turns, and recall@5 counts
//! questions whose gold span overlaps one of the first five chunks.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{read_jsonl, EvalError};
use crate::assistant::extract::Extractor;
use crate::assistant::{retrieve_with, RagConfig};
use crate::embed::Embedder;
use crate::index::chunk::{ChunkSettings, Chunker};
use crate::index::extract::DocKind;
use crate::index::{IndexSettings, KnowledgeBase};
use crate::memory::{Speaker, Turn};

#[derive(Deserialize)]
struct Document {
    doc_id: String,
    text: String,
    #[serde(default)]
    in_200doc_subset: bool,
}

#[derive(Deserialize)]
struct HistoryTurn {
    role: String,
    utterance: String,
}

#[derive(Deserialize)]
struct Question {
    doc_id: String,
    user_query: String,
    #[serde(default)]
    history: Vec<HistoryTurn>,
    answer_text: String,
    answer_start: usize,
    #[serde(default)]
    in_200doc_subset: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recall {
    pub questions: usize,
    pub without_history: f64,
    pub with_history: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DialogueReport {
    pub documents: usize,
    pub chunks: usize,
    pub k: usize,
    /// Every question.
    pub all: Recall,
    /// Only questions that have earlier turns (follow-ups).
    pub follow_ups: Recall,
}

pub type Progress<'a> = &'a dyn Fn(&str, usize, usize);

pub fn evaluate(
    dir: &Path,
    embedder: &Embedder,
    chunk: ChunkSettings,
    all_documents: bool,
    limit: Option<usize>,
    progress: Progress,
) -> Result<DialogueReport, EvalError> {
    let k = 5;
    let mut docs: Vec<Document> = read_jsonl(&dir.join("documents.jsonl"))?;
    let mut questions: Vec<Question> = read_jsonl(&dir.join("questions.jsonl"))?;
    if !all_documents {
        docs.retain(|d| d.in_200doc_subset);
        questions.retain(|q| q.in_200doc_subset);
    }
    if let Some(n) = limit {
        questions.truncate(n);
    }
    let chunker = Chunker::new(embedder.tokenizer(), chunk).map_err(EvalError::Failed)?;
    // (doc_id, byte range) of every chunk, to decide which chunks hold a gold span.
    let mut spans: Vec<(String, usize, usize)> = Vec::new();
    let mut chunks = Vec::new();
    for d in &docs {
        let mut from = 0;
        for c in chunker.chunk(&d.doc_id, &d.text, DocKind::Plain) {
            let start = d.text[from..]
                .find(&c.text)
                .map(|i| i + from)
                .unwrap_or(from);
            spans.push((d.doc_id.clone(), start, start + c.text.len()));
            from = start;
            chunks.push(c);
        }
    }
    let texts: Vec<String> = chunks.iter().map(|c| c.search_text()).collect();
    let vectors = super::embed_passages_with_progress(embedder, &texts, "chunks", progress)?;
    let settings = IndexSettings::new(embedder, "", chunk);
    let kb = KnowledgeBase::from_chunks(chunks, &vectors, settings)
        .map_err(|e| EvalError::Failed(e.to_string()))?;
    // Recall only: the gate's meaning check would embed sentences for nothing.
    let mut config = RagConfig::default();
    config.gate.meaning.min_sentence_similarity = None;
    let extractor = Extractor::new(1);
    let by_doc: HashMap<&str, usize> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.doc_id.as_str(), i))
        .collect();

    let mut hits_alone = (0usize, 0usize);
    let mut hits_history = (0usize, 0usize);
    let mut follow_ups = 0usize;
    for (n, q) in questions.iter().enumerate() {
        if !by_doc.contains_key(q.doc_id.as_str()) {
            continue;
        }
        let gold = (q.answer_start, q.answer_start + q.answer_text.len());
        let is_gold = |source: &str, position: usize| {
            let idx = spans.iter().filter(|(d, _, _)| d == source).nth(position);
            idx.is_some_and(|(_, s, e)| *s < gold.1 && gold.0 < *e) && source == q.doc_id
        };
        let history: Vec<Turn> = q
            .history
            .iter()
            .map(|t| Turn {
                role: if t.role == "user" {
                    Speaker::User
                } else {
                    Speaker::Assistant
                },
                content: t.utterance.clone(),
                sources: Vec::new(),
                created_at_ms: 0,
            })
            .collect();
        let found = |history: &[Turn]| -> Result<bool, EvalError> {
            let r = retrieve_with(&kb, embedder, &extractor, &config, &q.user_query, history)
                .map_err(|e| EvalError::Failed(e.to_string()))?;
            Ok(r.hits
                .iter()
                .take(k)
                .any(|h| is_gold(&h.chunk.source, h.chunk.position)))
        };
        let alone = found(&[])?;
        let with = if history.is_empty() {
            alone
        } else {
            found(&history)?
        };
        hits_alone.0 += alone as usize;
        hits_history.0 += with as usize;
        if !history.is_empty() {
            follow_ups += 1;
            hits_alone.1 += alone as usize;
            hits_history.1 += with as usize;
        }
        if n % 50 == 0 {
            progress("questions", n, questions.len());
        }
    }
    let total = questions.len().max(1) as f64;
    let fu = follow_ups.max(1) as f64;
    Ok(DialogueReport {
        documents: docs.len(),
        chunks: spans.len(),
        k,
        all: Recall {
            questions: questions.len(),
            without_history: hits_alone.0 as f64 / total,
            with_history: hits_history.0 as f64 / total,
        },
        follow_ups: Recall {
            questions: follow_ups,
            without_history: hits_alone.1 as f64 / fu,
            with_history: hits_history.1 as f64 / fu,
        },
    })
}

/// One doc2dial domain as a knowledge base of its own, with the opening questions of its dialogues
/// (answerable on it) and those of the other domains (off-topic for it): a fold of the answerability
/// gate's leave-one-knowledge-base-out fit. The domains overlap (benefits appear in `va` and `ssa`), so a
/// question of another domain is off-topic only as far as the labels go: read the leaks.
pub struct DomainFold {
    pub domain: String,
    pub kb: KnowledgeBase,
    pub questions: Vec<super::answers::KbQuestion>,
}

#[derive(Deserialize)]
struct DomainDocument {
    doc_id: String,
    domain: String,
    text: String,
}

#[derive(Deserialize)]
struct DomainQuestion {
    id: String,
    domain: String,
    turn_id: usize,
    user_query: String,
}

/// Every domain of `dir` as a fold: its first `per_domain` opening questions answerable, and
/// `per_domain` opening questions of the other domains off-topic. Blocking (embeds every chunk).
pub fn domain_folds(
    dir: &Path,
    embedder: &Embedder,
    settings: IndexSettings,
    per_domain: usize,
    progress: Progress,
) -> Result<Vec<DomainFold>, EvalError> {
    let docs: Vec<DomainDocument> = read_jsonl(&dir.join("documents.jsonl"))?;
    let questions: Vec<DomainQuestion> = read_jsonl(&dir.join("questions.jsonl"))?;
    let mut domains: Vec<String> = docs.iter().map(|d| d.domain.clone()).collect();
    domains.sort();
    domains.dedup();
    let chunker = Chunker::new(embedder.tokenizer(), settings.chunk).map_err(EvalError::Failed)?;
    let openers = |domain: &str| -> Vec<&DomainQuestion> {
        let mut seen = std::collections::HashSet::new();
        questions
            .iter()
            .filter(|q| q.domain == domain && q.turn_id == 1)
            .filter(|q| seen.insert(q.user_query.to_lowercase()))
            .take(per_domain)
            .collect()
    };
    let mut folds = Vec::new();
    for domain in &domains {
        let mut chunks = Vec::new();
        for d in docs.iter().filter(|d| &d.domain == domain) {
            chunks.extend(chunker.chunk(&d.doc_id, &d.text, DocKind::Plain));
        }
        let texts: Vec<String> = chunks.iter().map(|c| c.search_text()).collect();
        let vectors = super::embed_passages_with_progress(embedder, &texts, domain, progress)?;
        let kb = KnowledgeBase::from_chunks(chunks, &vectors, settings.clone())
            .map_err(|e| EvalError::Failed(e.to_string()))?;
        let question = |q: &DomainQuestion, unanswerable: bool| super::answers::KbQuestion {
            id: q.id.clone(),
            turns: vec![q.user_query.clone()],
            expect_source: None,
            expect_any: Vec::new(),
            expect_none: Vec::new(),
            unanswerable,
            split: Some(format!("doc2dial-{domain}")),
        };
        let mut qs: Vec<_> = openers(domain)
            .into_iter()
            .map(|q| question(q, false))
            .collect();
        let others: Vec<&String> = domains.iter().filter(|d| *d != domain).collect();
        let each = per_domain.div_ceil(others.len().max(1));
        for other in others {
            qs.extend(
                openers(other)
                    .into_iter()
                    .take(each)
                    .map(|q| question(q, true)),
            );
        }
        folds.push(DomainFold {
            domain: domain.clone(),
            kb,
            questions: qs,
        });
    }
    Ok(folds)
}
