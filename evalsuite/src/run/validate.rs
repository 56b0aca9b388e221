//! The contract of a results table (`rubrics/README.md`), checked whenever one is read:
//! a table edited by hand, cut short or written by another tool is refused with the row and
//! case that break it, instead of a gate or report deciding on scores that cannot be.

use std::collections::{HashMap, HashSet};

use polars::prelude::DataFrame;

use super::record::Counts;
use super::summary::{bools, floats, strings};

/// What one case's rows say about it, gathered row by row.
struct CaseRows {
    first_row: usize,
    all_errored: bool,
    all_passed: bool,
}

/// The first way `df` breaks the results table's contract, in words naming the row (1-based)
/// and the case:
/// - `category`, `case_id` and `check` have no nulls, and a case has each check once;
/// - the rows of one case agree on its `output`, `case_score` and `case_passed`;
/// - a check's `score` is in [0, 1], or NaN (and not passed) when it errored;
/// - `case_score` is in [0, 1], NaN exactly when every check of the case errored;
/// - `case_passed` only when every check passed.
pub fn check_results(df: &DataFrame) -> Result<(), String> {
    for name in ["category", "case_id", "check"] {
        let nulls = df.column(name).map_err(|e| e.to_string())?.null_count();
        if nulls > 0 {
            return Err(format!("column {name} has {nulls} missing (null) value(s)"));
        }
    }
    let text = |name: &str| strings(df, name).map_err(|e| format!("column {name}: {e}"));
    let numbers = |name: &str| floats(df, name).map_err(|e| format!("column {name}: {e}"));
    let (categories, ids, checks, outputs) = (text("category")?, text("case_id")?, text("check")?, text("output")?);
    let case_scores = numbers("case_score")?;
    let scores = if df.column("score").is_ok() { Some(numbers("score")?) } else { None };
    let flags = |name: &str| bools(df, name).map_err(|e| format!("column {name}: {e}"));
    let (passed, errored, case_passed) = (flags("passed")?, flags("error")?, flags("case_passed")?);
    let in_unit = |x: f64| (0.0..=1.0).contains(&x);

    let mut check_rows: HashSet<(&str, &str, &str)> = HashSet::new();
    let mut cases: HashMap<(&str, &str), CaseRows> = HashMap::new();
    let mut order: Vec<(&str, &str)> = Vec::new();
    for i in 0..df.height() {
        let at = || format!("row {} (case {}/{})", i + 1, categories[i], ids[i]);
        let key = (categories[i].as_str(), ids[i].as_str());
        if !check_rows.insert((key.0, key.1, checks[i].as_str())) {
            return Err(format!("{}: check {} appears twice for the case", at(), checks[i]));
        }
        let score = scores.as_ref().map_or(f64::NAN, |s| s[i]);
        if errored[i] && (passed[i] || !score.is_nan()) {
            return Err(format!("{}: check {} errored but has a score ({score}) or passed", at(), checks[i]));
        }
        if !errored[i] && scores.is_some() && !in_unit(score) {
            return Err(format!("{}: check {} has score {score}, outside [0, 1]", at(), checks[i]));
        }
        if !case_scores[i].is_nan() && !in_unit(case_scores[i]) {
            return Err(format!("{}: case_score {} is outside [0, 1]", at(), case_scores[i]));
        }
        match cases.get_mut(&key) {
            None => {
                cases.insert(key, CaseRows { first_row: i, all_errored: errored[i], all_passed: passed[i] && !errored[i] });
                order.push(key);
            }
            Some(case) => {
                let first = case.first_row;
                let same_score = case_scores[i] == case_scores[first] || (case_scores[i].is_nan() && case_scores[first].is_nan());
                if outputs[i] != outputs[first] || !same_score || case_passed[i] != case_passed[first] {
                    return Err(format!("{}: its output, case_score or case_passed differ from the case's row {}", at(), first + 1));
                }
                case.all_errored &= errored[i];
                case.all_passed &= passed[i] && !errored[i];
            }
        }
    }
    for key in order {
        let case = &cases[&key];
        let (row, score) = (case.first_row, case_scores[case.first_row]);
        let at = format!("row {} (case {}/{})", row + 1, key.0, key.1);
        if case.all_errored != score.is_nan() {
            return Err(if case.all_errored {
                format!("{at}: every check errored, yet case_score is {score}")
            } else {
                format!("{at}: case_score is missing (NaN) though checks have scores")
            });
        }
        if case_passed[row] && !case.all_passed {
            return Err(format!("{at}: case_passed is true though a check failed or errored"));
        }
    }
    Ok(())
}

/// Whether `df` holds the cases and rows `counts` (a run record's) says it does.
pub fn check_counts(counts: &Counts, df: &DataFrame) -> Result<(), String> {
    let (categories, ids) = (strings(df, "category").map_err(|e| e.to_string())?, strings(df, "case_id").map_err(|e| e.to_string())?);
    let cases = categories.iter().zip(&ids).collect::<HashSet<_>>().len();
    if (cases, df.height()) != (counts.cases, counts.rows) {
        return Err(format!("holds {cases} cases in {} rows where the run record counts {} cases in {} rows", df.height(), counts.cases, counts.rows));
    }
    Ok(())
}
