//! IR metrics with trec_eval / pytrec_eval semantics (binary relevance here): nDCG@k with a log2
//! discount and the ideal ranking from the judged documents; recall@k over the judged relevant ones.

use std::collections::HashMap;

/// `ranked`: document ids best first; `relevant`: judged documents with their grades (> 0 relevant).
pub fn ndcg_at(ranked: &[&str], relevant: &HashMap<String, u32>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| relevant.get(*d).copied().unwrap_or(0) as f64 / ((i + 2) as f64).log2())
        .sum();
    let mut grades: Vec<u32> = relevant.values().copied().filter(|g| *g > 0).collect();
    grades.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = grades
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| *g as f64 / ((i + 2) as f64).log2())
        .sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

pub fn recall_at(ranked: &[&str], relevant: &HashMap<String, u32>, k: usize) -> f64 {
    let total = relevant.values().filter(|g| **g > 0).count();
    if total == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| relevant.get(**d).is_some_and(|g| *g > 0))
        .count();
    found as f64 / total as f64
}

/// Reciprocal rank fusion of ranked lists (k = 60), best first.
pub fn rrf<'a>(lists: &[Vec<&'a str>]) -> Vec<&'a str> {
    let mut scores: HashMap<&str, f64> = HashMap::new();
    for list in lists {
        for (rank, id) in list.iter().enumerate() {
            *scores.entry(id).or_default() += 1.0 / (60.0 + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(&str, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    fused.into_iter().map(|(id, _)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_and_recall_match_hand_computed_values() {
        let rel: HashMap<String, u32> = [("a".to_string(), 1), ("b".to_string(), 1)].into();
        // Relevant at ranks 1 and 3: DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3).
        let got = ndcg_at(&["a", "x", "b"], &rel, 10);
        let want = 1.5 / (1.0 + 1.0 / 3f64.log2());
        assert!((got - want).abs() < 1e-12);
        assert_eq!(recall_at(&["a", "x", "b"], &rel, 2), 0.5);
        assert_eq!(ndcg_at(&["x"], &rel, 10), 0.0);
        assert_eq!(rrf(&[vec!["a", "b"], vec!["b", "c"]])[0], "b");
    }
}
