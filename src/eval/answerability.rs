//! Answerability: how often the gate refuses questions the knowledge base cannot answer, and how
//! often it refuses ones it can, over the gate's threshold. Two kinds of sets: SQuAD 2.0 (each
//! question against all paragraphs of its article as the knowledge base; its unanswerable questions
//! reuse the paragraph's words, so no retrieval-only gate refuses them all) and a knowledge base's own
//! regression questions (`eval answers` format), reported per split so that a threshold tuned on one
//! part is judged on the other.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::answers::KbQuestion;
use super::{embed_passages_with_progress, read_jsonl, EvalError};
use crate::assistant::answerability::meaning;
use crate::assistant::answerability::weighing::{self, Labelled};
use crate::assistant::answerability::{Decision, GateConfig, GateModel, GateSignals};
use crate::assistant::checks::injection;
use crate::assistant::extract::Extractor;
use crate::assistant::{retrieve_with, RagConfig, Retrieval};
use crate::embed::Embedder;
use crate::index::chunk::{Chunk, ChunkSettings};
use crate::index::{IndexSettings, KnowledgeBase};
use crate::memory::{Speaker, Turn};

/// One question's signals and whether it is answerable.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub id: String,
    pub split: String,
    pub answerable: bool,
    pub signals: GateSignals,
    /// Short follow-ups may pass on the signals with history, as the assistant allows.
    pub follow_up_signals: Option<GateSignals>,
    /// The question probes the assistant's instructions (refused before the gate).
    pub probe: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub threshold: f32,
    /// Share of unanswerable questions refused.
    pub refusal: f64,
    /// Share of answerable questions refused.
    pub false_refusal: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    pub split: String,
    pub answerable: usize,
    pub unanswerable: usize,
    /// At the configured operating point.
    pub at_operating_point: Point,
    /// Over `min_weighted_coverage`, with the rarest-word rule and the similarity floor (the gate).
    pub curve: Vec<Point>,
    /// The same with the former rarest-word rule (the rarest words must be in the excerpts, even when
    /// the knowledge base uses them elsewhere).
    pub curve_former_rare_rule: Vec<Point>,
    /// The same with the best excerpt's normalised BM25 as the score instead (measured, not used).
    pub curve_best_excerpt_bm25: Vec<Point>,
    /// Without the rarest-word rule (the score alone), for comparison.
    pub curve_without_rare_rule: Vec<Point>,
    /// The gate's lexical rules at the operating point, or the meaning check's rescue with the best
    /// sentence's cosine similarity at the threshold (its other two limits as configured).
    pub curve_sentence_rescue: Vec<Point>,
    /// The same rescue when every missing rare word has an excerpt word at least this similar in
    /// meaning (measured, not used).
    pub curve_word_rescue: Vec<Point>,
    /// How often dense and lexical top hits agree, on answerable and on unanswerable questions.
    pub agreement_answerable: f64,
    pub agreement_unanswerable: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnswerabilityReport {
    pub gate: GateConfig,
    pub splits: Vec<SplitReport>,
    /// Every question's signals (for inspection; the JSON output only).
    pub samples: Vec<Sample>,
}

const FOLLOW_UP_MAX_WORDS: usize = 12;

fn refused(s: &Sample, accept: &dyn Fn(&GateSignals) -> bool) -> bool {
    if s.probe {
        return true;
    }
    let alone = accept(&s.signals);
    let with = s.follow_up_signals.as_ref().is_some_and(accept);
    !(alone || with)
}

fn point(samples: &[&Sample], threshold: f32, accept: &dyn Fn(&GateSignals) -> bool) -> Point {
    let (mut ans, mut unans, mut refused_ans, mut refused_unans) = (0, 0, 0, 0);
    for s in samples {
        let r = refused(s, accept);
        if s.answerable {
            ans += 1;
            refused_ans += r as usize;
        } else {
            unans += 1;
            refused_unans += r as usize;
        }
    }
    let rate = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Point {
        threshold,
        refusal: rate(refused_unans, unans),
        false_refusal: rate(refused_ans, ans),
    }
}

/// Curves and the operating point for each split of `samples`.
pub fn report(samples: &[Sample], gate: &GateConfig) -> AnswerabilityReport {
    let mut by_split: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_split.entry(s.split.clone()).or_default().push(s);
    }
    let thresholds: Vec<f32> = (0..=20).map(|i| i as f32 * 0.05).collect();
    let splits = by_split
        .into_iter()
        .map(|(split, group)| {
            let curve_of =
                |score: fn(&GateSignals) -> f32, rare: fn(&GateSignals) -> bool| -> Vec<Point> {
                    thresholds
                        .iter()
                        .map(|&t| {
                            let accept = move |g: &GateSignals| {
                                rare(g) && score(g) >= t && g.similarity >= gate.min_similarity
                            };
                            point(&group, t, &accept)
                        })
                        .collect()
                };
            let agreement = |answerable: bool| {
                let g: Vec<_> = group
                    .iter()
                    .filter(|s| s.answerable == answerable)
                    .collect();
                if g.is_empty() {
                    0.0
                } else {
                    g.iter().filter(|s| s.signals.agreement).count() as f64 / g.len() as f64
                }
            };
            SplitReport {
                answerable: group.iter().filter(|s| s.answerable).count(),
                unanswerable: group.iter().filter(|s| !s.answerable).count(),
                at_operating_point: point(&group, gate.min_weighted_coverage, &|g| {
                    g.answerable(gate)
                }),
                curve: curve_of(|g| g.weighted_coverage, |g| g.rare_covered),
                curve_former_rare_rule: curve_of(|g| g.weighted_coverage, |g| g.rare_in_excerpts),
                curve_best_excerpt_bm25: curve_of(|g| g.best_excerpt_bm25, |g| g.rare_covered),
                curve_without_rare_rule: curve_of(|g| g.weighted_coverage, |g| !g.words.is_empty()),
                curve_sentence_rescue: thresholds
                    .iter()
                    .map(|&t| {
                        point(&group, t, &|g| {
                            g.lexically_answerable(gate) || g.rescued_at(gate, Some(t))
                        })
                    })
                    .collect(),
                curve_word_rescue: thresholds
                    .iter()
                    .map(|&t| {
                        point(&group, t, &|g| {
                            g.lexically_answerable(gate)
                                || (g.similarity >= gate.min_similarity
                                    && g.meaning.as_ref().is_some_and(|m| {
                                        !m.words.is_empty() && m.weakest_word() >= t
                                    }))
                        })
                    })
                    .collect(),
                agreement_answerable: agreement(true),
                agreement_unanswerable: agreement(false),
                split,
            }
        })
        .collect();
    AnswerabilityReport {
        gate: *gate,
        splits,
        samples: samples.to_vec(),
    }
}

/// The configuration the signals are taken with: the meaning check runs on every lexical refusal
/// (an infinite threshold measures without rescuing when the embedder family has no threshold).
fn measuring(config: &RagConfig) -> RagConfig {
    let mut c = config.clone();
    c.gate.meaning.min_sentence_similarity = Some(
        c.gate
            .meaning
            .min_sentence_similarity
            .unwrap_or(f32::INFINITY),
    );
    c
}

/// The gate's signals of `r`, with the meaning check taken for questions the lexical rules accept
/// too (for inspection: the rescue applies only to refusals).
fn with_meaning(
    embedder: &Embedder,
    extractor: &Extractor,
    config: &RagConfig,
    question: &str,
    r: &Retrieval,
) -> Result<GateSignals, EvalError> {
    let mut g = r.gate.clone();
    if g.meaning.is_none() && config.gate.meaning.reads(r.language) {
        let top = &r.hits[..r.hits.len().min(config.top_k)];
        g.meaning = Some(
            meaning::signals(embedder, extractor, question, &r.question_vector, top, &g)
                .map_err(|e| EvalError::Failed(e.to_string()))?,
        );
    }
    Ok(g)
}

/// Signals for a knowledge base's own questions (the last turn, with the earlier ones as history).
/// Blocking.
pub fn kb_samples(
    kb: &KnowledgeBase,
    embedder: &Embedder,
    config: &RagConfig,
    questions: &[KbQuestion],
) -> Result<Vec<Sample>, EvalError> {
    let config = &measuring(config);
    let extractor = Extractor::default();
    let mut samples = Vec::new();
    for q in questions {
        let last = q.turns.last().map(String::as_str).unwrap_or("");
        let history: Vec<Turn> = q.turns[..q.turns.len().saturating_sub(1)]
            .iter()
            .map(|t| Turn {
                role: Speaker::User,
                content: t.clone(),
                sources: Vec::new(),
                created_at_ms: 0,
            })
            .collect();
        let r = retrieve_with(kb, embedder, &extractor, config, last, &history)
            .map_err(|e| EvalError::Failed(e.to_string()))?;
        let signals = with_meaning(embedder, &extractor, config, last, &r)?;
        let short = last.split_whitespace().count() <= FOLLOW_UP_MAX_WORDS;
        samples.push(Sample {
            id: q.id.clone(),
            split: format!("own:{}", q.split.as_deref().unwrap_or("all")),
            answerable: !q.unanswerable,
            follow_up_signals: (short && !history.is_empty()).then_some(r.gate_with_history),
            signals,
            probe: injection::probes_instructions(last),
        });
    }
    Ok(samples)
}

#[derive(Deserialize)]
struct SquadQuestion {
    id: String,
    title: String,
    question: String,
    is_impossible: bool,
}

#[derive(Deserialize)]
struct SquadParagraph {
    title: String,
    paragraph_index: usize,
    context: String,
}

/// Signals for SQuAD 2.0 questions, each against all paragraphs of its article. Blocking.
pub fn squad_samples(
    dir: &Path,
    embedder: &Embedder,
    config: &RagConfig,
    limit: Option<usize>,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Vec<Sample>, EvalError> {
    let mut questions: Vec<SquadQuestion> = read_jsonl(&dir.join("squad2-dev-sample300.jsonl"))?;
    if let Some(n) = limit {
        questions.truncate(n);
    }
    let paragraphs: Vec<SquadParagraph> = read_jsonl(&dir.join("paragraphs.jsonl"))?;
    let texts: Vec<String> = paragraphs.iter().map(|p| p.context.clone()).collect();
    let vectors = embed_passages_with_progress(embedder, &texts, "paragraphs", progress)?;
    let settings = IndexSettings::new(
        embedder,
        "",
        ChunkSettings {
            max_tokens: embedder.max_length(),
            overlap_tokens: 0,
        },
    );
    let mut kbs: BTreeMap<String, KnowledgeBase> = BTreeMap::new();
    for title in questions.iter().map(|q| q.title.clone()) {
        if kbs.contains_key(&title) {
            continue;
        }
        let (chunks, vecs): (Vec<Chunk>, Vec<Vec<f32>>) = paragraphs
            .iter()
            .zip(&vectors)
            .filter(|(p, _)| p.title == title)
            .map(|(p, v)| {
                (
                    Chunk {
                        source: format!("{}#{}", p.title, p.paragraph_index),
                        title: p.title.clone(),
                        heading: String::new(),
                        position: p.paragraph_index,
                        text: p.context.clone(),
                    },
                    v.clone(),
                )
            })
            .unzip();
        let kb = KnowledgeBase::from_chunks(chunks, &vecs, settings.clone())
            .map_err(|e| EvalError::Failed(e.to_string()))?;
        kbs.insert(title, kb);
    }
    let config = &measuring(config);
    let extractor = Extractor::default();
    let mut samples = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let kb = &kbs[&q.title];
        let r = retrieve_with(kb, embedder, &extractor, config, &q.question, &[])
            .map_err(|e| EvalError::Failed(e.to_string()))?;
        let signals = with_meaning(embedder, &extractor, config, &q.question, &r)?;
        samples.push(Sample {
            id: q.id.clone(),
            split: "squad2-sample".into(),
            answerable: !q.is_impossible,
            signals,
            follow_up_signals: None,
            probe: injection::probes_instructions(&q.question),
        });
        progress("questions", i + 1, questions.len());
    }
    Ok(samples)
}

/// The questions of one knowledge base, for the leave-one-knowledge-base-out fit.
pub struct Fold {
    pub name: String,
    pub samples: Vec<Sample>,
}

/// How the gate fitted without a fold decides that fold's questions.
#[derive(Debug, Clone, Serialize)]
pub struct FoldReport {
    pub fold: String,
    pub answerable: usize,
    pub off_topic: usize,
    /// The threshold fitted on the other folds (their highest off-topic score).
    pub answer_at: f32,
    /// Answerable questions answered / suggested / handed off.
    pub answered: usize,
    pub suggested: usize,
    pub handed_off: usize,
    /// Off-topic questions answered (must be 0) / suggested / handed off.
    pub off_topic_answered: usize,
    pub off_topic_suggested: usize,
    pub off_topic_handed_off: usize,
    /// Area under the ROC curve of the score on this fold.
    pub auc: f64,
    /// Ids of off-topic questions answered, for reading.
    pub leaks: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub model: GateModel,
    pub folds: Vec<FoldReport>,
}

/// L2 strength of the gate's logistic fit.
const FIT_LAMBDA: f32 = 1e-3;
/// Share of answerable questions allowed below the low threshold.
const SUGGEST_QUANTILE: f64 = 0.05;

fn labelled(samples: &[&Sample]) -> Vec<Labelled> {
    let mut out = Vec::new();
    for s in samples.iter().filter(|s| !s.probe) {
        out.push(Labelled {
            x: weighing::features(&s.signals),
            answerable: s.answerable,
        });
    }
    out
}

/// A sample's score (a short follow-up may pass on its signals with history) and whether the hard
/// rule and "found anything" hold.
fn scored(m: &GateModel, s: &Sample, config: &GateConfig) -> (f32, Decision) {
    let one = |g: &GateSignals| {
        let score = m.score(g);
        let found = g.found_anything() && g.similarity >= config.min_similarity;
        let hard_rule = !g.unknown_identifiers.is_empty();
        let d = if g.lexically_answerable(config) && !hard_rule {
            Decision::Answer
        } else {
            m.decide(score, hard_rule, found)
        };
        (score, d)
    };
    if s.probe {
        return (0.0, Decision::HandOff);
    }
    let alone = one(&s.signals);
    match &s.follow_up_signals {
        Some(h) => {
            let with = one(h);
            (alone.0.max(with.0), alone.1.max(with.1))
        }
        None => alone,
    }
}

/// Thresholds of a model from the questions it was fitted on: answer at or above the highest
/// off-topic score (the hard rule aside), suggest down to the answerable questions' 5% quantile.
fn thresholds(m: &mut GateModel, samples: &[&Sample], config: &GateConfig) {
    let mut top_off = 0f32;
    let mut answerable = Vec::new();
    for s in samples.iter().filter(|s| !s.probe) {
        let (score, _) = scored(m, s, config);
        let hard = !s.signals.unknown_identifiers.is_empty();
        if s.answerable {
            answerable.push(score);
        } else if !hard {
            top_off = top_off.max(score);
        }
    }
    answerable.sort_by(|a, b| a.total_cmp(b));
    m.answer_at = (top_off + 1e-4).min(1.0);
    let q = answerable
        .get((answerable.len() as f64 * SUGGEST_QUANTILE) as usize)
        .copied()
        .unwrap_or(0.0);
    m.suggest_at = q.min(m.answer_at);
}

fn auc(pos: &[f32], neg: &[f32]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut wins = 0f64;
    for p in pos {
        for n in neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

/// Fits the weighing gate leaving each fold out in turn (its model and thresholds from the other
/// folds, judged on it), then on every fold for the model that ships.
pub fn fit_leave_one_out(
    folds: &[Fold],
    config: &GateConfig,
    fitted_with: &str,
) -> Result<FitReport, EvalError> {
    let all: Vec<&Sample> = folds.iter().flat_map(|f| f.samples.iter()).collect();
    let mut reports = Vec::new();
    for (k, fold) in folds.iter().enumerate() {
        let train: Vec<&Sample> = folds
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .flat_map(|(_, f)| f.samples.iter())
            .collect();
        let mut m = weighing::fit(&labelled(&train), FIT_LAMBDA).map_err(EvalError::Failed)?;
        thresholds(&mut m, &train, config);
        let mut r = FoldReport {
            fold: fold.name.clone(),
            answerable: 0,
            off_topic: 0,
            answer_at: m.answer_at,
            answered: 0,
            suggested: 0,
            handed_off: 0,
            off_topic_answered: 0,
            off_topic_suggested: 0,
            off_topic_handed_off: 0,
            auc: 0.0,
            leaks: Vec::new(),
        };
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for s in &fold.samples {
            let (score, d) = scored(&m, s, config);
            if s.answerable {
                r.answerable += 1;
                pos.push(score);
                match d {
                    Decision::Answer => r.answered += 1,
                    Decision::Suggest => r.suggested += 1,
                    Decision::HandOff => r.handed_off += 1,
                }
            } else {
                r.off_topic += 1;
                neg.push(score);
                match d {
                    Decision::Answer => {
                        r.off_topic_answered += 1;
                        r.leaks.push(s.id.clone());
                    }
                    Decision::Suggest => r.off_topic_suggested += 1,
                    Decision::HandOff => r.off_topic_handed_off += 1,
                }
            }
        }
        r.auc = auc(&pos, &neg);
        reports.push(r);
    }
    let mut model = weighing::fit(&labelled(&all), FIT_LAMBDA).map_err(EvalError::Failed)?;
    thresholds(&mut model, &all, config);
    model.fitted_with = fitted_with.to_string();
    Ok(FitReport {
        model,
        folds: reports,
    })
}
