//! The plan for a question: hand off, offer the closest sections, quote, generate (with the grounded
//! prompt under a token budget), ask the model to judge first, or serve a cached answer.

use super::answer::{suggestion_text, Answer, Outcome, Source, Suggestion};
use super::answerability::{self, Decision, GateSignals};
use super::ask::validate_question;
use super::checks;
use super::prompt::{grounded_messages, Excerpt};
use super::retrieval::Retrieval;
use super::{AnswerMode, Assistant, Language, RagError, SessionId, Speaker, Turn};
use crate::engine::{ChatMessage, GenerateRequest, Prompt, Role, SamplingParams};
use crate::index::Hit;
use crate::text::detect_language;

/// Sections offered at most when no answer can be trusted.
pub const MAX_SUGGESTIONS: usize = 3;

/// The answer plan for one question.
pub enum Plan {
    /// Nothing relevant (or a question about the assistant's instructions): this hand-off text,
    /// without calling the LLM.
    HandOff(String),
    /// Retrieval found sections but no answer can be trusted: this text offering them, without
    /// calling the LLM.
    Suggest(String, Vec<Suggestion>),
    Generate(GenerateRequest),
    /// The gate was unsure (between its thresholds) and the model's own judgement is on: `judge`
    /// asks the model whether the excerpts answer the question (the answer's own prompt with one
    /// line more, so the answer reuses its prefix); "yes" runs `answer`, anything else offers
    /// `suggest`.
    Judge {
        judge: GenerateRequest,
        answer: GenerateRequest,
        suggest: (String, Vec<Suggestion>),
    },
    /// Extract mode: sentences quoted from the excerpts, without calling the LLM.
    Extract(String),
    /// The same question was answered before, for the same knowledge base.
    Cached(Box<Answer>),
}

pub struct Prepared {
    pub question: String,
    pub retrieval: Retrieval,
    pub sources: Vec<Source>,
    /// The excerpts shown to the model, in prompt order (instruction-like sentences left out).
    pub excerpts: Vec<String>,
    pub plan: Plan,
    /// Whether the finished answer may be cached (no history, not a degraded answer).
    pub cacheable: bool,
    /// The index generation read before retrieval: the cache key of this answer. An answer that
    /// raced a swap is filed under the older generation, where no new question looks it up.
    pub generation: String,
}

impl Assistant {
    fn fallback_text(&self, language: Language) -> String {
        match language {
            Language::Ru => self.config.fallback_ru.clone(),
            Language::En => self.config.fallback_en.clone(),
        }
    }

    /// History, retrieval and the prompt (or the fallback, the extractive or the cached answer) for a
    /// question. Blocking.
    pub(crate) fn prepare(
        &self,
        session: &SessionId,
        question: &str,
    ) -> Result<Prepared, RagError> {
        let history = self.memory.history(session, self.config.history_turns)?;
        self.prepare_with_history(question, &history)
    }

    /// [`Assistant::prepare`] with the earlier turns given. Blocking.
    pub(crate) fn prepare_with_history(
        &self,
        question: &str,
        history: &[Turn],
    ) -> Result<Prepared, RagError> {
        let question =
            validate_question(question).map_err(|e| RagError::InvalidQuestion(e.to_string()))?;
        let question = question.as_str();
        let mode = self.config.answer_mode;
        let generation = self.kb.load().generation().to_string();
        let cacheable = history.is_empty() && self.cache.enabled();
        // A cached answer is served only while the conversation it came from exists (an erase or
        // a deletion elsewhere takes the question out of the cache too); a storage error drops it.
        let alive = |s: &super::SessionId| matches!(self.memory.session(s), Ok(Some(_)));
        if cacheable {
            if let Some(answer) = self.cache.get(&generation, mode, question, &alive) {
                return Ok(self.cached_plan(question, answer));
            }
        }
        let retrieval = self.retrieve(question, history)?;
        if cacheable && self.cache.wants_vectors() {
            if let Some(answer) = self.cache.get_near(
                &generation,
                mode,
                retrieval.language,
                &retrieval.question_vector,
                &alive,
            ) {
                let mut p = self.cached_plan(question, answer);
                p.retrieval = retrieval;
                return Ok(p);
            }
        }
        let probe = checks::injection::probes_instructions(question);
        if probe {
            tracing::info!("question asks for the assistant's instructions: fallback");
        }
        if probe || retrieval.decision != Decision::Answer {
            let suggestions = if probe || retrieval.decision == Decision::HandOff {
                Vec::new()
            } else {
                suggestions_of(&retrieval.hits)
            };
            if suggestions.is_empty() {
                return Ok(Prepared {
                    question: question.to_string(),
                    plan: Plan::HandOff(self.fallback_text(retrieval.language)),
                    retrieval,
                    sources: Vec::new(),
                    excerpts: Vec::new(),
                    cacheable,
                    generation,
                });
            }
            let suggest = (
                suggestion_text(retrieval.language, &suggestions),
                suggestions,
            );
            if probe || !self.judges(&retrieval) {
                return Ok(Prepared {
                    question: question.to_string(),
                    retrieval,
                    sources: Vec::new(),
                    excerpts: Vec::new(),
                    plan: Plan::Suggest(suggest.0, suggest.1),
                    cacheable,
                    generation,
                });
            }
            let (excerpts, sources) = self.excerpts_of(&retrieval);
            let answer = self.answer_request(question, &excerpts, history);
            let judge = judge_request(&answer, retrieval.language);
            return Ok(Prepared {
                question: question.to_string(),
                retrieval,
                sources,
                excerpts: excerpts.into_iter().map(|e| e.text).collect(),
                plan: Plan::Judge {
                    judge,
                    answer,
                    suggest,
                },
                cacheable,
                generation,
            });
        }
        let (excerpts, sources) = self.excerpts_of(&retrieval);
        // The sentences that would be quoted, in every answer mode: when they leave out both of the
        // question's most specific words, the excerpts do not answer it (however close their topic),
        // and no answer is generated or quoted from them: the sections are offered instead. Not for a
        // follow-up: its words are read with the turns before.
        let (quoted, on_point) = self.extract(question, sources.len(), &retrieval)?;
        if !on_point && retrieval.follow_up_query.is_none() {
            tracing::info!("the best sentences leave out the question's key words: suggested");
            let suggestions = suggestions_of(&retrieval.hits);
            return Ok(Prepared {
                question: question.to_string(),
                plan: Plan::Suggest(
                    suggestion_text(retrieval.language, &suggestions),
                    suggestions,
                ),
                retrieval,
                sources: Vec::new(),
                excerpts: Vec::new(),
                cacheable,
                generation,
            });
        }
        if mode == AnswerMode::Extract {
            self.metrics.extractive_answers.inc();
            return Ok(Prepared {
                question: question.to_string(),
                retrieval,
                sources,
                excerpts: excerpts.into_iter().map(|e| e.text).collect(),
                plan: Plan::Extract(quoted),
                cacheable,
                generation,
            });
        }
        let request = self.answer_request(question, &excerpts, history);
        Ok(Prepared {
            question: question.to_string(),
            retrieval,
            sources,
            excerpts: excerpts.into_iter().map(|e| e.text).collect(),
            plan: Plan::Generate(request),
            cacheable,
            generation,
        })
    }

    /// Whether the model is asked to judge a question the gate would offer sections for: the judge
    /// is on, the answer mode generates, and the gate was unsure (its score between the two
    /// thresholds, no number or name of the question unknown to the knowledge base).
    fn judges(&self, retrieval: &Retrieval) -> bool {
        if !self.config.gate.judge || self.config.answer_mode == AnswerMode::Extract {
            return false;
        }
        let model = answerability::GateModel::for_family(self.config.gate.family);
        [&retrieval.gate, &retrieval.gate_with_history]
            .into_iter()
            .any(|g| {
                g.unknown_identifiers.is_empty() && g.score.is_some_and(|s| s >= model.suggest_at)
            })
    }

    /// Tokens `text` takes in the LLM's prompt (an untokenizable text counts as too long to fit).
    fn prompt_tokens(&self, text: &str) -> usize {
        self.llm
            .tokenizer()
            .encode(text, false)
            .map(|ids| ids.len())
            .unwrap_or(usize::MAX)
    }

    /// The top excerpts that fit the context budget (instruction-like sentences left out), with the
    /// sources they are cited as.
    fn excerpts_of(&self, retrieval: &Retrieval) -> (Vec<Excerpt>, Vec<Source>) {
        let count = |t: &str| self.prompt_tokens(t);
        let mut excerpts = Vec::new();
        let mut sources = Vec::new();
        let mut used = 0;
        for hit in retrieval.hits.iter().take(self.config.top_k) {
            let (body, dropped) = checks::injection::without_instructions(&hit.chunk.text);
            if dropped > 0 {
                tracing::warn!(source = %hit.chunk.source, sentences = dropped, "instruction-like sentences left out of an excerpt");
            }
            let text = if hit.chunk.heading.is_empty() {
                body
            } else {
                format!("{}\n{}", hit.chunk.heading, body)
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
            sources.push(Source::from_hit(hit));
        }
        (excerpts, sources)
    }

    /// The grounded prompt: the excerpts, the most recent turns that fit the history budget, the
    /// question.
    fn answer_request(
        &self,
        question: &str,
        excerpts: &[Excerpt],
        history: &[Turn],
    ) -> GenerateRequest {
        let count = |t: &str| self.prompt_tokens(t);
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
        GenerateRequest {
            prompt: Prompt::Chat(grounded_messages(question, excerpts, &kept)),
            params: SamplingParams {
                stop: answer_stops(),
                ..self.config.sampling.clone()
            },
        }
    }

    fn cached_plan(&self, question: &str, mut answer: Answer) -> Prepared {
        self.metrics.cache_hits.inc();
        answer.cached = true;
        Prepared {
            question: question.to_string(),
            retrieval: Retrieval {
                hits: Vec::new(),
                best_similarity: 0.0,
                best_similarity_with_history: 0.0,
                gate: GateSignals::default(),
                gate_with_history: GateSignals::default(),
                relevant: answer.is_answered(),
                decision: match answer.outcome() {
                    Outcome::Answered => Decision::Answer,
                    Outcome::Suggested => Decision::Suggest,
                    Outcome::HandedOff => Decision::HandOff,
                },
                language: detect_language(question),
                question_vector: Vec::new(),
                follow_up_query: None,
            },
            sources: answer.sources.clone(),
            excerpts: Vec::new(),
            plan: Plan::Cached(Box::new(answer)),
            cacheable: false,
            generation: String::new(),
        }
    }

    /// The extractive answer over the top excerpts, or the fallback when no sentence qualifies.
    fn extractive_text(
        &self,
        question: &str,
        excerpts: usize,
        retrieval: &Retrieval,
    ) -> Result<String, RagError> {
        self.metrics.extractive_answers.inc();
        Ok(self.extract(question, excerpts, retrieval)?.0)
    }

    /// The extractive answer's text (the fallback when nothing can be quoted), and whether its quotes
    /// contain one of the question's key words ([`super::extract::Extracted::has_key_word`]); not
    /// counted as served. Blocking.
    fn extract(
        &self,
        question: &str,
        excerpts: usize,
        retrieval: &Retrieval,
    ) -> Result<(String, bool), RagError> {
        let top = &retrieval.hits[..retrieval.hits.len().min(excerpts)];
        let query = retrieval.follow_up_query.as_deref().unwrap_or(question);
        let kb = self.kb.load();
        let extracted = self
            .extractor
            .answer(&self.embedder, kb.term_stats(), query, top)
            .map_err(|e| RagError::Retrieval(e.to_string()))?;
        if extracted.quotes.is_empty() {
            return Ok((self.fallback_text(retrieval.language), false));
        }
        let on_point = extracted.has_key_word(kb.term_stats(), query, top);
        Ok((extracted.text, on_point))
    }

    /// The extractive answer for a prepared question (the generation queue was full, or nothing of
    /// the generated answer survived the figure check). Blocking.
    pub(crate) fn extractive_answer(&self, prepared: &Prepared) -> Result<String, RagError> {
        self.extractive_text(
            &prepared.question,
            prepared.sources.len(),
            &prepared.retrieval,
        )
    }
}

/// The closest distinct sections of the ranked hits, at most [`MAX_SUGGESTIONS`], from as many
/// articles as there are suggestions: the best section of each article first (three sections of one
/// wrong article hide the right one; the customer who opens the right article finds its other
/// sections), then further sections of the same articles when fewer articles were found. Listed in
/// rank order.
pub(super) fn suggestions_of(hits: &[Hit]) -> Vec<Suggestion> {
    let mut picked: Vec<usize> = Vec::new();
    let section = |i: usize| (&hits[i].chunk.source, &hits[i].chunk.heading);
    for (i, hit) in hits.iter().enumerate() {
        if picked.len() == MAX_SUGGESTIONS {
            break;
        }
        if !picked
            .iter()
            .any(|&p| hits[p].chunk.source == hit.chunk.source)
        {
            picked.push(i);
        }
    }
    for i in 0..hits.len() {
        if picked.len() == MAX_SUGGESTIONS {
            break;
        }
        if !picked.iter().any(|&p| section(p) == section(i)) {
            picked.push(i);
        }
    }
    picked.sort_unstable();
    picked
        .into_iter()
        .enumerate()
        .map(|(n, i)| Suggestion::from_hit(n + 1, &hits[i]))
        .collect()
}

/// The judge's question: the answer's own prompt with one line more in the last user turn (so the
/// answer that may follow reuses the prompt's cached prefix), a greedy reply of a few tokens.
fn judge_request(answer: &GenerateRequest, language: Language) -> GenerateRequest {
    let ask = match language {
        Language::Ru => "Есть ли ответ на этот вопрос в приведённых выше фрагментах? Ответьте только «да» или «нет».",
        Language::En => "Do the excerpts above contain the answer to this question? Reply with yes or no only.",
    };
    let prompt = match &answer.prompt {
        Prompt::Chat(messages) => {
            let mut messages = messages.clone();
            if let Some(last) = messages.last_mut() {
                last.content = format!("{}\n\n{ask}", last.content);
            }
            Prompt::Chat(messages)
        }
        Prompt::Tokens(t) => Prompt::Tokens(t.clone()),
    };
    GenerateRequest {
        prompt,
        params: SamplingParams {
            temperature: 0.0,
            max_new_tokens: 3,
            stop: vec!["\n".into()],
            ..SamplingParams::default()
        },
    }
}

/// Whether the judge's reply says yes: its first word is "yes" or "да", in any case, whatever
/// punctuation follows.
pub fn judged_yes(reply: &str) -> bool {
    let first = reply
        .trim_start()
        .split(|c: char| !c.is_alphabetic())
        .next()
        .unwrap_or("")
        .to_lowercase();
    first == "yes" || first == "да"
}

/// Where a small model starts echoing its prompt (a new excerpt header, the prompt's own labels)
/// the answer is over.
fn answer_stops() -> Vec<String> {
    let mut stops: Vec<String> = (1..=9).map(|i| format!("\n[{i}] (")).collect();
    stops.extend(["\nExcerpts:", "\nQuestion:", "\n\n\n"].map(String::from));
    stops
}

#[cfg(test)]
mod judge_tests {
    use super::*;

    #[test]
    fn the_judges_reply_is_yes_only_when_its_first_word_says_so() {
        for yes in ["Yes", "yes.", " Yes, they do", "Да", "да, есть", "YES!"] {
            assert!(judged_yes(yes), "{yes:?}");
        }
        for not in [
            "No",
            "нет.",
            "Yesterday",
            "I think yes",
            "",
            "Maybe",
            "Дальше",
        ] {
            assert!(!judged_yes(not), "{not:?}");
        }
    }

    #[test]
    fn the_judge_asks_in_the_answers_own_prompt_with_one_line_more() {
        let answer = GenerateRequest {
            prompt: Prompt::Chat(vec![
                ChatMessage::new(Role::System, "rules and excerpts"),
                ChatMessage::new(Role::User, "earlier"),
                ChatMessage::new(Role::Assistant, "reply"),
                ChatMessage::new(Role::User, "How much is a transfer?"),
            ]),
            params: SamplingParams {
                max_new_tokens: 256,
                ..SamplingParams::default()
            },
        };
        for language in [Language::En, Language::Ru] {
            let judge = judge_request(&answer, language);
            let (Prompt::Chat(a), Prompt::Chat(j)) = (&answer.prompt, &judge.prompt) else {
                panic!("chat prompts");
            };
            assert_eq!(a.len(), j.len());
            for (x, y) in a.iter().zip(j).take(a.len() - 1) {
                assert_eq!((x.role, &x.content), (y.role, &y.content));
            }
            let last = &j.last().unwrap().content;
            assert!(last.starts_with("How much is a transfer?\n\n"), "{last}");
            assert!(last.len() > "How much is a transfer?".len() + 20);
            assert_eq!(judge.params.temperature, 0.0);
            assert!(judge.params.max_new_tokens <= 4);
        }
    }
}
