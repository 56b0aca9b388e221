//! Scoring a run's outputs: each rubric check's scorer called once with every output its
//! rubric scores (text scorers work through them in parallel, the embedding scorer in
//! batches, the judge in parallel requests), then each case's score from its values
//! ([`Rubric::score_case`]).

use std::collections::HashMap;

use crate::backend::Generated;
use crate::error::Result;
use crate::rubric::{CaseScore, Rubric};
use crate::scorers::{Item, ScoreContext, Value};
use crate::suite::ScoredCase;

/// Scores each case's output (`outputs[i]` belongs to `cases[i]`) with its rubric.
pub fn score_all(cases: &[ScoredCase<'_>], outputs: &[Generated], ctx: &ScoreContext<'_>) -> Result<Vec<CaseScore>> {
    let mut values: Vec<Vec<Option<Value>>> = cases.iter().map(|c| vec![None; c.rubric.checks.len()]).collect();
    for (rubric, members) in by_rubric(cases) {
        let items: Vec<Item<'_>> = members.iter().map(|&i| Item { case: cases[i].case, output: &outputs[i].text }).collect();
        for (j, check) in rubric.checks.iter().enumerate() {
            let scored = check.scorer.score(&items, ctx)?;
            debug_assert_eq!(scored.len(), items.len(), "scorer {} returned a value per item", check.scorer.kind());
            for (&i, value) in members.iter().zip(scored) {
                values[i][j] = Some(value);
            }
        }
    }
    Ok(cases
        .iter()
        .zip(values)
        .map(|(c, vs)| c.rubric.score_case(vs.into_iter().map(|v| v.unwrap_or_else(|| Value::failed("the scorer returned no value"))).collect()))
        .collect())
}

/// The cases grouped by rubric (by identity), in first-use order.
pub(crate) fn by_rubric<'a>(cases: &[ScoredCase<'a>]) -> Vec<(&'a Rubric, Vec<usize>)> {
    let mut groups: Vec<(&'a Rubric, Vec<usize>)> = Vec::new();
    let mut index: HashMap<*const Rubric, usize> = HashMap::new();
    for (i, c) in cases.iter().enumerate() {
        let g = *index.entry(std::ptr::from_ref(c.rubric)).or_insert_with(|| {
            groups.push((c.rubric, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    groups
}
