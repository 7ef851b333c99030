//! The weighing gate: no single word vetoes an answer. Signals normalised per question (so that they
//! carry across knowledge bases and embedders) are combined by a small logistic model, fitted by
//! `novapay eval answerability --fit` and validated leaving one knowledge base out; two thresholds
//! split its score into answer / suggest / hand off (as CRAG's correct / ambiguous / incorrect).
//! A number or a name in the question that no article has stays a hard rule: never answered.
//!
//! The fitted model is committed (`gate-model.json`, with the fit's report in eval/gate-fit.md) and
//! compiled in; the fit is plain gradient descent on standardised features, written here because it
//! is twenty lines and no well-kept crate fits a weighted L2 logistic regression without pulling in
//! a linear-algebra stack.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::signals::GateSignals;
use crate::embed::ModelFamily;

/// What the answerability gate decides for a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Nothing relevant: hand off to an operator.
    #[default]
    HandOff,
    /// Retrieval found something, but not an answer to trust: offer the closest sections.
    Suggest,
    /// The excerpts answer it: generate (or quote).
    Answer,
}

/// The signals the model weighs, in order.
pub const FEATURES: [&str; 7] = [
    "weighted_coverage",
    "coverage",
    "best_excerpt_bm25",
    "dense_z",
    "agreement",
    "unknown_ask",
    "unknown_story",
];

/// The feature vector of a question's signals.
pub fn features(s: &GateSignals) -> [f32; FEATURES.len()] {
    [
        s.weighted_coverage,
        s.coverage,
        s.best_excerpt_bm25,
        s.dense_z,
        s.agreement as u8 as f32,
        s.unknown_ask,
        s.unknown_story,
    ]
}

fn parse(text: &str) -> GateModel {
    let m: GateModel = serde_json::from_str(text).expect("the gate models are valid (tested)");
    assert_eq!(
        m.features, FEATURES,
        "a gate model names the features in order"
    );
    m
}

/// A fitted gate: standardisation, weights and the two thresholds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateModel {
    /// The embedder the signals were measured with.
    pub fitted_with: String,
    pub features: Vec<String>,
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// At or above: answer. The lowest score with no off-topic question above it on any fold.
    pub answer_at: f32,
    /// At or above (and below `answer_at`): suggest. Below: suggest when retrieval found anything
    /// at all, else hand off.
    pub suggest_at: f32,
}

const BUILTIN: &str = include_str!("gate-model.json");
const BUILTIN_E5: &str = include_str!("gate-model-e5.json");

impl GateModel {
    /// The committed model fitted with all-MiniLM-L6-v2 (the family of every other embedder).
    pub fn builtin() -> &'static GateModel {
        static MODEL: OnceLock<GateModel> = OnceLock::new();
        MODEL.get_or_init(|| parse(BUILTIN))
    }

    /// The committed model for an embedder family: the e5 family's was fitted on the 4-bit copy of
    /// multilingual-e5-small (`gate-model-e5.json`, its report in eval/gate-fit-e5.md); every other
    /// embedder gets MiniLM's.
    pub fn for_family(family: ModelFamily) -> &'static GateModel {
        static E5: OnceLock<GateModel> = OnceLock::new();
        match family {
            ModelFamily::E5 => E5.get_or_init(|| parse(BUILTIN_E5)),
            ModelFamily::Other => Self::builtin(),
        }
    }

    /// The probability that the excerpts answer the question.
    pub fn score(&self, s: &GateSignals) -> f32 {
        let x = features(s);
        let z: f32 = x
            .iter()
            .enumerate()
            .map(|(i, v)| self.weights[i] * (v - self.mean[i]) / self.scale[i])
            .sum::<f32>()
            + self.bias;
        sigmoid(z)
    }

    /// Answer, suggest or hand off, for a score and whether retrieval found anything at all.
    pub fn decide(&self, score: f32, hard_rule: bool, found_anything: bool) -> Decision {
        if score >= self.answer_at && !hard_rule {
            Decision::Answer
        } else if score >= self.suggest_at || found_anything {
            Decision::Suggest
        } else {
            Decision::HandOff
        }
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// One labelled question for the fit.
pub struct Labelled {
    pub x: [f32; FEATURES.len()],
    pub answerable: bool,
}

/// Fits standardisation, weights and bias (classes weighted to balance, L2 `lambda`). Errors on an
/// empty or one-class set.
// Several arrays are indexed by one feature: index loops read clearer than zipped iterators.
#[allow(clippy::needless_range_loop)]
pub fn fit(samples: &[Labelled], lambda: f32) -> Result<GateModel, String> {
    let n = samples.len();
    let positives = samples.iter().filter(|s| s.answerable).count();
    if n == 0 {
        return Err("no questions to fit on".into());
    }
    if positives == 0 || positives == n {
        return Err(format!(
            "a fit needs answerable and off-topic questions; got {positives} answerable of {n}"
        ));
    }
    let d = FEATURES.len();
    let mut mean = vec![0f32; d];
    let mut scale = vec![0f32; d];
    for s in samples {
        for i in 0..d {
            mean[i] += s.x[i] / n as f32;
        }
    }
    for s in samples {
        for i in 0..d {
            scale[i] += (s.x[i] - mean[i]).powi(2) / n as f32;
        }
    }
    for v in &mut scale {
        *v = v.sqrt().max(1e-3);
    }
    let w_pos = n as f32 / (2.0 * positives as f32);
    let w_neg = n as f32 / (2.0 * (n - positives) as f32);
    let xs: Vec<Vec<f32>> = samples
        .iter()
        .map(|s| (0..d).map(|i| (s.x[i] - mean[i]) / scale[i]).collect())
        .collect();
    let (mut w, mut b) = (vec![0f32; d], 0f32);
    let lr = 0.5;
    for _ in 0..3000 {
        let mut gw = vec![0f32; d];
        let mut gb = 0f32;
        for (x, s) in xs.iter().zip(samples) {
            let z: f32 = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + b;
            let y = s.answerable as u8 as f32;
            let weight = if s.answerable { w_pos } else { w_neg };
            let e = (sigmoid(z) - y) * weight;
            for i in 0..d {
                gw[i] += e * x[i];
            }
            gb += e;
        }
        for i in 0..d {
            w[i] -= lr * (gw[i] / n as f32 + lambda * w[i]);
        }
        b -= lr * gb / n as f32;
    }
    Ok(GateModel {
        fitted_with: String::new(),
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        mean,
        scale,
        weights: w,
        bias: b,
        answer_at: 1.0,
        suggest_at: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(coverage: f32, answerable: bool) -> Labelled {
        let mut x = [0f32; FEATURES.len()];
        x[0] = coverage;
        x[5] = 1.0 - coverage;
        Labelled { x, answerable }
    }

    #[test]
    fn the_fit_orders_questions_by_the_signal_that_separates_them() {
        let samples: Vec<Labelled> = (0..40)
            .map(|i| labelled(i as f32 / 40.0, i >= 20))
            .collect();
        let m = fit(&samples, 1e-3).unwrap();
        let score = |c: f32| {
            let s = GateSignals {
                weighted_coverage: c,
                unknown_ask: 1.0 - c,
                ..GateSignals::default()
            };
            m.score(&s)
        };
        assert!(score(0.9) > 0.8 && score(0.1) < 0.2, "{m:?}");
        assert!(score(0.6) > score(0.4));
    }

    #[test]
    fn a_fit_on_an_empty_or_one_class_set_is_refused() {
        assert!(fit(&[], 1e-3).unwrap_err().contains("no questions"));
        let one: Vec<Labelled> = (0..5).map(|i| labelled(i as f32, true)).collect();
        let e = fit(&one, 1e-3).unwrap_err();
        assert!(e.contains("answerable and off-topic"), "{e}");
    }

    #[test]
    fn the_committed_models_name_their_features_and_order_their_thresholds() {
        for family in [ModelFamily::Other, ModelFamily::E5] {
            committed_model_is_consistent(GateModel::for_family(family));
        }
        assert!(std::ptr::eq(
            GateModel::for_family(ModelFamily::Other),
            GateModel::builtin()
        ));
    }

    fn committed_model_is_consistent(m: &GateModel) {
        assert_eq!(m.weights.len(), FEATURES.len());
        assert!(m.suggest_at <= m.answer_at, "{m:?}");
        assert_eq!(m.decide(m.answer_at, false, false), Decision::Answer);
        assert_eq!(m.decide(m.answer_at, true, true), Decision::Suggest);
        assert_eq!(
            m.decide(m.suggest_at - 1e-3, false, false),
            Decision::HandOff
        );
        assert_eq!(
            m.decide(m.suggest_at - 1e-3, false, true),
            Decision::Suggest
        );
    }
}
