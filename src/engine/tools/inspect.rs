//! Debug views of the model for operators and parity checks against llama.cpp: the logits of every
//! prompt position (top-k, argmax, chosen ids) and a greedy continuation, without sampling or templates.

use serde::Serialize;

use crate::engine::generation::Llm;
use crate::engine::EngineError;

#[derive(Debug, Clone, Serialize)]
pub struct PositionLogits {
    /// Index in the prompt (the logits predict the token after it).
    pub position: usize,
    pub argmax: u32,
    /// The `top_k` highest logits, best first: (token id, logit).
    pub top: Vec<(u32, f32)>,
    /// Logits of the ids asked for with `ids_of_interest`, in that order.
    pub selected: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogitsReport {
    pub tokens: Vec<u32>,
    pub positions: Vec<PositionLogits>,
    /// Greedy tokens after the prompt (EOS not special: exactly as many as asked).
    pub greedy: Vec<u32>,
}

pub struct LogitsRequest<'a> {
    pub tokens: &'a [u32],
    pub top_k: usize,
    pub ids_of_interest: &'a [u32],
    pub greedy_tokens: usize,
}

/// Runs the prompt in one pass, then `greedy_tokens` decode steps.
pub fn prompt_logits(llm: &mut Llm, req: &LogitsRequest) -> Result<LogitsReport, EngineError> {
    let vocab = llm.config().vocab;
    if let Some(bad) = req
        .tokens
        .iter()
        .chain(req.ids_of_interest)
        .find(|id| **id as usize >= vocab)
    {
        return Err(EngineError::InvalidInput(format!(
            "token id {bad} is outside the vocabulary ({vocab})"
        )));
    }
    let rows = llm.logits_all_positions(req.tokens)?;
    let positions: Vec<PositionLogits> = rows
        .iter()
        .enumerate()
        .map(|(position, row)| PositionLogits {
            position,
            argmax: argmax(row),
            top: top_k(row, req.top_k),
            selected: req
                .ids_of_interest
                .iter()
                .map(|id| row[*id as usize])
                .collect(),
        })
        .collect();
    let mut greedy = Vec::with_capacity(req.greedy_tokens);
    if req.greedy_tokens > 0 {
        let mut next = positions.last().map(|p| p.argmax).unwrap_or(0);
        greedy.push(next);
        while greedy.len() < req.greedy_tokens {
            let row = llm.logits_next(next)?;
            next = argmax(&row);
            greedy.push(next);
        }
    }
    Ok(LogitsReport {
        tokens: req.tokens.to_vec(),
        positions,
        greedy,
    })
}

/// First index of the largest value (ties go to the lower id, as llama.cpp's greedy sampler does).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |a, b| {
        row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b))
    });
    let mut top: Vec<(u32, f32)> = idx[..k].iter().map(|i| (*i, row[*i as usize])).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_sorted_and_ties_prefer_lower_ids() {
        let row = [0.5, 2.0, -1.0, 2.0, 1.0];
        assert_eq!(top_k(&row, 3), vec![(1, 2.0), (3, 2.0), (4, 1.0)]);
        assert_eq!(argmax(&row), 1);
    }
}
