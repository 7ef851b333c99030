//! Retrieval for a question: the knowledge base searched with the question alone and joined to the
//! customer's previous turns, the hits ranked, and the answerability gate's signals and decision.

use super::answerability::{self, GateSignals};
use super::extract::Extractor;
use super::{Assistant, Decision, Language, RagConfig, RagError, Speaker, Turn};
use crate::embed::Embedder;
use crate::index::{Fusion, Hit, KnowledgeBase};
use crate::text::{detect_language, thesaurus};

/// What retrieval found for a question.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Retrieval {
    pub hits: Vec<Hit>,
    /// Best cosine similarity of the question alone, and of the question with recent turns.
    pub best_similarity: f32,
    pub best_similarity_with_history: f32,
    /// The answerability signals of the question alone, and of the question with recent turns.
    pub gate: GateSignals,
    pub gate_with_history: GateSignals,
    pub relevant: bool,
    /// What the gate decided: answer, suggest the closest sections, or hand off.
    pub decision: Decision,
    pub language: Language,
    /// The question's embedding (for the answer cache's near-duplicate lookup).
    #[serde(skip)]
    pub question_vector: Vec<f32>,
    /// A short question joined to the previous user turns (a follow-up such as "and for
    /// international ones?"): what extractive answers are scored against.
    pub follow_up_query: Option<String>,
}

impl Assistant {
    /// See [`retrieve_with`]. Blocking.
    pub fn retrieve(&self, question: &str, history: &[Turn]) -> Result<Retrieval, RagError> {
        let kb = self.knowledge_base();
        retrieve_with(
            &kb,
            &self.embedder,
            &self.extractor,
            &self.config,
            question,
            history,
        )
    }
}

/// Searches for `question`, and also for it joined to the previous user turns so that a follow-up
/// ("and for international ones?") finds the topic it refers to. The fallback decision uses the
/// question's own answerability signals, or, for a short follow-up, those with history; when the
/// lexical rules refuse, the meaning of the top excerpts' sentences may rescue the question
/// (`extractor` keeps their embeddings). Blocking.
pub fn retrieve_with(
    kb: &KnowledgeBase,
    embedder: &Embedder,
    extractor: &Extractor,
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
    // Lexical matching and the gate read the customer's words in the articles' vocabulary; the
    // dense query keeps the customer's text.
    let stats = kb.term_stats();
    let lexical: Vec<String> = queries
        .iter()
        .map(|q| thesaurus::in_known_words(q, |t| stats.uses(t)).unwrap_or_else(|| q.clone()))
        .collect();
    let texts: Vec<&str> = lexical.iter().map(String::as_str).collect();
    let fusion = Fusion {
        multilingual: config.gate.meaning.multilingual,
    };
    let found = kb.search(&vectors, &texts, config.candidates, fusion);
    let mut hits = found.hits;
    promote_list_winners(&mut hits, config.top_k);
    let best_similarity = found.best_similarity.first().copied().unwrap_or(0.0);
    let best_similarity_with_history = found
        .best_similarity
        .get(1)
        .copied()
        .unwrap_or(best_similarity);
    let top = &hits[..hits.len().min(config.top_k)];
    let mut gate = answerability::signals(
        stats,
        &lexical[0],
        best_similarity,
        top,
        &hits,
        &config.gate,
    );
    let mut gate_with_history = match lexical.get(1) {
        Some(q) => answerability::signals(
            stats,
            q,
            best_similarity_with_history,
            top,
            &hits,
            &config.gate,
        ),
        None => gate.clone(),
    };
    let words = question.split_whitespace().count();
    let follow_up = words <= config.follow_up_max_words && queries.len() > 1;
    let relevant = |gate: &GateSignals, with_history: &GateSignals| {
        gate.answerable(&config.gate) || (follow_up && with_history.answerable(&config.gate))
    };
    // The embedder is asked only when the lexical rules refuse: an accepted question costs nothing more.
    let rescue = &config.gate.meaning;
    if !relevant(&gate, &gate_with_history)
        && rescue.min_sentence_similarity.is_some()
        && rescue.reads(language)
    {
        let measure = |text: &str, vector: &[f32], lexical: &GateSignals| {
            answerability::meaning::signals(embedder, extractor, text, vector, top, lexical)
                .map_err(|e| RagError::Retrieval(e.to_string()))
        };
        gate.meaning = Some(measure(question, &vectors[0], &gate)?);
        if follow_up {
            gate_with_history.meaning =
                Some(measure(&queries[1], &vectors[1], &gate_with_history)?);
        }
    }
    let decision = if config.gate.weighing {
        let model = answerability::GateModel::for_family(config.gate.family);
        gate.score = Some(model.score(&gate));
        gate_with_history.score = Some(model.score(&gate_with_history));
        let decide = |g: &GateSignals| {
            let found = g.found_anything() && g.similarity >= config.gate.min_similarity;
            let hard_rule = !g.unknown_identifiers.is_empty();
            // The word rules still answer what they accept (no off-topic question of the held-out
            // sets passed them); the model answers beyond them, and suggests below its threshold.
            let d = if g.lexically_answerable(&config.gate) && !hard_rule {
                Decision::Answer
            } else {
                model.decide(g.score.unwrap_or(0.0), hard_rule, found)
            };
            // The meaning rescue (opt-in) still answers what the words refused.
            if d != Decision::Answer && g.rescued(&config.gate) && !hard_rule {
                Decision::Answer
            } else {
                d
            }
        };
        let alone = decide(&gate);
        if follow_up {
            alone.max(decide(&gate_with_history))
        } else {
            alone
        }
    } else if relevant(&gate, &gate_with_history) {
        Decision::Answer
    } else if gate.found_anything() {
        Decision::Suggest
    } else {
        Decision::HandOff
    };
    let relevant = decision == Decision::Answer;
    // A short question after earlier turns is read with them when quoting the excerpts ("and for
    // international ones?" asks for a fee because the turn before did).
    let follow_up_query = follow_up.then(|| queries[1].clone());
    Ok(Retrieval {
        hits,
        best_similarity,
        best_similarity_with_history,
        gate,
        gate_with_history,
        relevant,
        decision,
        language,
        question_vector: vectors.into_iter().next().unwrap_or_default(),
        follow_up_query,
    })
}

/// Makes sure the best dense hit and the best lexical hit are among the first `k`: rank fusion can
/// push a chunk that only one list found, however clearly, below chunks both lists rank moderately
/// (with an English-only embedder, a Russian question's exact lexical match is such a chunk).
fn promote_list_winners(hits: &mut Vec<Hit>, k: usize) {
    if k == 0 || hits.len() <= k {
        return;
    }
    let best = |key: fn(&Hit) -> Option<f32>| {
        hits.iter()
            .enumerate()
            .filter_map(|(i, h)| key(h).map(|s| (i, s)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    };
    let must: Vec<usize> = [best(|h| h.lexical), best(|h| h.dense)]
        .into_iter()
        .flatten()
        .collect();
    let mut top: Vec<usize> = (0..k).collect();
    for &w in &must {
        if !top.contains(&w) {
            if let Some(pos) = top.iter().rposition(|i| !must.contains(i)) {
                top.remove(pos);
                top.push(w);
            }
        }
    }
    top.sort_unstable();
    let mut taken: Vec<Option<Hit>> = std::mem::take(hits).into_iter().map(Some).collect();
    for &i in &top {
        if let Some(h) = taken[i].take() {
            hits.push(h);
        }
    }
    hits.extend(taken.into_iter().flatten());
}
