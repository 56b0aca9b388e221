//! A study's results: per system pair and category, the shares of wins, ties and "both bad"
//! with 95 % Wilson intervals; Bradley–Terry ratings with bootstrap intervals and ranks;
//! agreement between reviewers (Krippendorff's α over all, Cohen's κ per pair of
//! reviewers); position bias; and agreement with the LLM judge where the runs have judge
//! scores. Only the latest vote of each reviewer on each task counts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::store::{Choice, Store, VoteRow};
use super::study::{Study, StudyKey, Task};
use crate::error::Result;
use crate::stats::agreement::{cohen_kappa, krippendorff_alpha_nominal};
use crate::stats::bradley_terry::{fit_with_intervals, Comparison, Rating};
use crate::stats::proportion::{wilson, Proportion};

/// Confidence level of every interval.
pub const LEVEL: f64 = 0.95;
/// Bootstrap resamples for the rating intervals.
const RESAMPLES: usize = 1000;

/// A vote relative to its task's canonical pair (`pair[0]`, `pair[1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The pair's first system is better.
    First,
    /// The second is better.
    Second,
    /// Equally good.
    Tie,
    /// Both bad.
    BothBad,
}

impl Outcome {
    /// The vote's outcome: the side chosen mapped back to the system shown there.
    pub fn of(vote: &VoteRow, task: &Task) -> Self {
        let winner = match vote.choice {
            Choice::Left => vote.left,
            Choice::Right => vote.right,
            Choice::Tie => return Self::Tie,
            Choice::BothBad => return Self::BothBad,
        };
        if winner == task.pair[0] {
            Self::First
        } else {
            Self::Second
        }
    }
}

/// One system pair in one category (or `all`).
#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    /// The first run.
    pub a: String,
    /// The second run.
    pub b: String,
    /// The category, or `all`.
    pub category: String,
    /// Votes counted.
    pub votes: usize,
    /// Share of votes preferring `a`.
    pub a_wins: Proportion,
    /// Share preferring `b`.
    pub b_wins: Proportion,
    /// Share of ties.
    pub ties: Proportion,
    /// Share of "both bad".
    pub both_bad: Proportion,
}

/// A run's Bradley–Terry rating.
#[derive(Debug, Clone, Serialize)]
pub struct SystemRating {
    /// The run.
    pub run: String,
    /// Rating, interval and rank.
    #[serde(flatten)]
    pub rating: Rating,
}

/// Cohen's κ of two reviewers on the tasks both judged.
#[derive(Debug, Clone, Serialize)]
pub struct PairAgreement {
    /// One reviewer.
    pub a: String,
    /// The other.
    pub b: String,
    /// Tasks both judged.
    pub shared: usize,
    /// κ (`None` when undefined: no shared task, or one category only).
    pub kappa: Option<f64>,
}

/// Everything `tunelab review results` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewResults {
    /// The study's name.
    pub study: String,
    /// When voting was closed (`None` while open).
    pub closed_at: Option<String>,
    /// Runs compared, in the study's order.
    pub runs: Vec<String>,
    /// Tasks in the study.
    pub tasks: usize,
    /// Items left out at creation (identity leaks, empty answers).
    pub excluded: usize,
    /// Reviewers with at least one vote.
    pub reviewers: usize,
    /// Votes counted (the latest per reviewer and task).
    pub votes: usize,
    /// Per pair, overall then per category.
    pub pairs: Vec<PairResult>,
    /// Bradley–Terry ratings (ties and "both bad" count as ties).
    pub ratings: Vec<SystemRating>,
    /// Krippendorff's α (nominal) over every reviewer.
    pub alpha: Option<f64>,
    /// Tasks judged by two or more reviewers (α's units).
    pub alpha_units: usize,
    /// Cohen's κ per pair of reviewers.
    pub kappas: Vec<PairAgreement>,
    /// Share of decisive votes that chose the left side (0.5 = no position bias).
    pub left_share: Proportion,
    /// Share of decisive votes agreeing with the LLM judge's preference, over votes where
    /// the judge preferred one side (`None` when the runs have no judge scores).
    pub judge_agreement: Option<Proportion>,
}

/// Reads the study directory and computes its results, naming the runs from the study's
/// key (`key.json`).
pub fn study_results(dir: &Path) -> Result<ReviewResults> {
    let study = Study::read(dir)?;
    let key = StudyKey::read(dir, &study)?;
    results_with(dir, study, Some(key))
}

/// [`study_results`] without reading the key: systems are named by their opaque ids (what
/// the service shows admins while voting is open).
pub fn blinded_study_results(dir: &Path) -> Result<ReviewResults> {
    results_with(dir, Study::read(dir)?, None)
}

fn results_with(dir: &Path, study: Study, key: Option<StudyKey>) -> Result<ReviewResults> {
    let key = key.unwrap_or_else(|| StudyKey { schema_version: study.schema_version, systems: Vec::new(), excluded: Vec::new() });
    let store = Store::open(dir)?;
    let votes = store.latest_votes(&study)?;
    let names: HashMap<i64, String> = store.reviewers()?.into_iter().map(|r| (r.id, r.name)).collect();
    Ok(compute(&study, &key, &votes, &names, store.closed_at()?))
}

/// The results of `votes` on `study` (pure: no I/O).
pub fn compute(study: &Study, key: &StudyKey, votes: &[VoteRow], reviewer_names: &HashMap<i64, String>, closed_at: Option<String>) -> ReviewResults {
    let run = |s: usize| key.systems.get(s).map_or_else(|| study.systems[s].clone(), |k| k.run.clone());
    let outcomes: Vec<(&VoteRow, &Task, Outcome)> = votes.iter().map(|v| (v, &study.tasks[v.task], Outcome::of(v, &study.tasks[v.task]))).collect();

    // Per pair × category counts.
    let mut counts: BTreeMap<([usize; 2], String), [usize; 4]> = BTreeMap::new();
    for (_, task, outcome) in &outcomes {
        let category = study.items[task.item].category.clone();
        for c in ["all".to_string(), category] {
            counts.entry((task.pair, c)).or_default()[*outcome as usize] += 1;
        }
    }
    let pairs = counts
        .into_iter()
        .map(|((pair, category), c)| {
            let n = c.iter().sum();
            PairResult {
                a: run(pair[0]),
                b: run(pair[1]),
                category,
                votes: n,
                a_wins: wilson(c[0], n, LEVEL),
                b_wins: wilson(c[1], n, LEVEL),
                ties: wilson(c[2], n, LEVEL),
                both_bad: wilson(c[3], n, LEVEL),
            }
        })
        .collect();

    let comparisons: Vec<Comparison> = outcomes
        .iter()
        .map(|(_, task, o)| Comparison {
            first: task.pair[0],
            second: task.pair[1],
            score: match o {
                Outcome::First => 1.0,
                Outcome::Second => 0.0,
                Outcome::Tie | Outcome::BothBad => 0.5,
            },
        })
        .collect();
    let ratings = fit_with_intervals(study.systems.len(), &comparisons, LEVEL, RESAMPLES, study.seed)
        .into_iter()
        .enumerate()
        .map(|(s, rating)| SystemRating { run: run(s), rating })
        .collect();

    // Agreement: per task, each reviewer's outcome.
    let mut by_task: BTreeMap<usize, BTreeMap<i64, Outcome>> = BTreeMap::new();
    for (v, _, o) in &outcomes {
        by_task.entry(v.task).or_default().insert(v.reviewer, *o);
    }
    let units: Vec<Vec<Outcome>> = by_task.values().map(|m| m.values().copied().collect()).collect();
    let alpha = krippendorff_alpha_nominal(&units);
    let alpha_units = units.iter().filter(|u| u.len() >= 2).count();
    let mut reviewers: Vec<i64> = votes.iter().map(|v| v.reviewer).collect();
    reviewers.sort_unstable();
    reviewers.dedup();
    let name = |r: i64| reviewer_names.get(&r).cloned().unwrap_or_else(|| format!("reviewer {r}"));
    let mut kappas = Vec::new();
    for (i, &a) in reviewers.iter().enumerate() {
        for &b in &reviewers[i + 1..] {
            let shared: Vec<(Outcome, Outcome)> = by_task.values().filter_map(|m| Some((*m.get(&a)?, *m.get(&b)?))).collect();
            kappas.push(PairAgreement { a: name(a), b: name(b), shared: shared.len(), kappa: cohen_kappa(&shared) });
        }
    }

    let decisive: Vec<&(&VoteRow, &Task, Outcome)> = outcomes.iter().filter(|(v, _, _)| matches!(v.choice, Choice::Left | Choice::Right)).collect();
    let left = decisive.iter().filter(|(v, _, _)| v.choice == Choice::Left).count();
    let left_share = wilson(left, decisive.len(), LEVEL);

    let judged: Vec<bool> = decisive
        .iter()
        .filter_map(|(_, task, o)| {
            let scores = &study.items[task.item].judge_scores;
            let (a, b) = (scores.get(task.pair[0]).copied().flatten()?, scores.get(task.pair[1]).copied().flatten()?);
            let judge = if a > b {
                Outcome::First
            } else if b > a {
                Outcome::Second
            } else {
                return None;
            };
            Some(judge == *o)
        })
        .collect();
    let has_judge = study.items.iter().any(|i| i.judge_scores.iter().any(Option::is_some));
    let judge_agreement = has_judge.then(|| wilson(judged.iter().filter(|&&x| x).count(), judged.len(), LEVEL));

    ReviewResults {
        study: study.name.clone(),
        closed_at,
        runs: (0..study.systems.len()).map(run).collect(),
        tasks: study.tasks.len(),
        excluded: study.excluded,
        reviewers: reviewers.len(),
        votes: votes.len(),
        pairs,
        ratings,
        alpha,
        alpha_units,
        kappas,
        left_share,
        judge_agreement,
    }
}

/// `12.3 % [4.5, 20.1]`.
fn share(p: &Proportion) -> String {
    if p.n == 0 {
        return "–".into();
    }
    format!("{:.1} % [{:.1}, {:.1}]", 100.0 * p.rate, 100.0 * p.low, 100.0 * p.high)
}

fn optional(v: Option<f64>) -> String {
    v.map_or_else(|| "undefined".into(), |v| format!("{v:.3}"))
}

/// The results as terminal text.
pub fn render_text(r: &ReviewResults) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let state = r.closed_at.as_ref().map_or_else(|| "open".to_string(), |at| format!("closed {at}"));
    let _ = writeln!(
        out,
        "study {} ({state}): {} runs, {} tasks ({} items left out), {} votes from {} reviewers",
        r.study,
        r.runs.len(),
        r.tasks,
        r.excluded,
        r.votes,
        r.reviewers
    );
    let _ = writeln!(out, "\nwin rates (95 % Wilson intervals)");
    for p in &r.pairs {
        let _ = writeln!(
            out,
            "  {} vs {} [{}], {} votes: {} better {} | {} better {} | tie {} | both bad {}",
            p.a,
            p.b,
            p.category,
            p.votes,
            p.a,
            share(&p.a_wins),
            p.b,
            share(&p.b_wins),
            share(&p.ties),
            share(&p.both_bad)
        );
    }
    let _ = writeln!(out, "\nBradley–Terry ratings (ties as half; 95 % bootstrap intervals; rank counts only runs clearly above)");
    let mut ratings: Vec<&SystemRating> = r.ratings.iter().collect();
    ratings.sort_by(|a, b| b.rating.rating.total_cmp(&a.rating.rating));
    for s in ratings {
        let _ = writeln!(out, "  rank {}  {:<24} {:7.1} [{:.1}, {:.1}]", s.rating.rank, s.run, s.rating.rating, s.rating.low, s.rating.high);
    }
    let _ = writeln!(out, "\nagreement");
    let _ = writeln!(out, "  Krippendorff's alpha (nominal, {} tasks with 2+ reviewers): {}", r.alpha_units, optional(r.alpha));
    for k in &r.kappas {
        let _ = writeln!(out, "  Cohen's kappa {} / {} ({} shared tasks): {}", k.a, k.b, k.shared, optional(k.kappa));
    }
    let _ = writeln!(out, "  position bias: left side chosen in {} of {} decisive votes", share(&r.left_share), r.left_share.n);
    match &r.judge_agreement {
        Some(j) => {
            let _ = writeln!(out, "  agreement with the LLM judge: {} of {} decisive votes where the judge preferred a side", share(j), j.n);
        }
        None => {
            let _ = writeln!(out, "  agreement with the LLM judge: the runs have no judge scores");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::study::{Item, SystemIdentity, Task};

    fn identity(id: &str, run: &str) -> SystemIdentity {
        SystemIdentity { id: id.into(), run: run.into(), run_dir: String::new(), model: String::new(), adapter: None }
    }

    /// Two items; the judge prefers system 1 on the first and system 0 on the second.
    fn study() -> (Study, StudyKey) {
        let item = |judge: [f64; 2], category: &str| Item {
            case_id: String::new(),
            category: category.into(),
            prompt: String::new(),
            reference: String::new(),
            answers: vec!["a".into(), "b".into()],
            judge_scores: judge.iter().map(|&j| Some(j)).collect(),
        };
        let study = Study {
            schema_version: 1,
            name: "s".into(),
            created_at: String::new(),
            systems: vec!["s0".into(), "s1".into()],
            items: vec![item([0.2, 0.9], "seen"), item([0.8, 0.1], "guard")],
            tasks: vec![Task { id: "t0".into(), item: 0, pair: [0, 1] }, Task { id: "t1".into(), item: 1, pair: [0, 1] }],
            reviewers_per_item: 2,
            show_reference: false,
            seed: 1,
            excluded: 0,
        };
        (study, StudyKey { schema_version: 1, systems: vec![identity("s0", "base"), identity("s1", "adapter")], excluded: vec![] })
    }

    #[test]
    fn votes_count_by_the_system_chosen_not_the_side() {
        let (study, key) = study();
        // Reviewer 1 saw system 1 on the left of task 0 and chose it; reviewer 2 saw it on
        // the right and chose it too: both are wins of system 1, one left and one right.
        let votes = [
            VoteRow { reviewer: 1, task: 0, choice: Choice::Left, left: 1, right: 0 },
            VoteRow { reviewer: 2, task: 0, choice: Choice::Right, left: 0, right: 1 },
            VoteRow { reviewer: 1, task: 1, choice: Choice::Left, left: 1, right: 0 },
            VoteRow { reviewer: 2, task: 1, choice: Choice::Tie, left: 0, right: 1 },
        ];
        let names = HashMap::from([(1, "ana".to_string()), (2, "ben".to_string())]);
        let r = compute(&study, &key, &votes, &names, None);
        let all = r.pairs.iter().find(|p| p.category == "all").unwrap();
        assert_eq!((all.a.as_str(), all.b.as_str()), ("base", "adapter"));
        assert_eq!((all.a_wins.k, all.b_wins.k, all.ties.k, all.both_bad.k, all.votes), (0, 3, 1, 0, 4));
        assert_eq!((r.left_share.k, r.left_share.n), (2, 3));
        // The judge preferred system 1 on task 0 (two human wins for it: agree) and system 0
        // on task 1 (the human chose system 1: disagree); the tie is not decisive.
        let judge = r.judge_agreement.unwrap();
        assert_eq!((judge.k, judge.n), (2, 3));
        assert_eq!(r.kappas.len(), 1);
        assert_eq!((r.kappas[0].a.as_str(), r.kappas[0].b.as_str(), r.kappas[0].shared), ("ana", "ben", 2));
        assert_eq!(r.alpha_units, 2);
        assert!(r.ratings[1].rating.rating > r.ratings[0].rating.rating);
    }

    /// A study file whose tasks, items or systems do not fit together is refused when read,
    /// naming the file and the inconsistency, and a key for other systems is refused too.
    #[test]
    fn inconsistent_study_files_are_refused_when_read() {
        let dir = std::env::temp_dir().join(format!("tunelab-study-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |study: &Study, key: &StudyKey| {
            std::fs::write(dir.join(super::super::study::STUDY_FILE), serde_json::to_vec(study).unwrap()).unwrap();
            std::fs::write(dir.join(super::super::study::KEY_FILE), serde_json::to_vec(key).unwrap()).unwrap();
        };
        let (good, key) = study();
        write(&good, &key);
        assert_eq!(Study::read(&dir).unwrap(), good);
        assert_eq!(StudyKey::read(&dir, &good).unwrap(), key);

        type Breakage = (&'static str, fn(&mut Study));
        let breakages: [Breakage; 6] = [
            ("names item 5 of 2", |s| s.tasks[1].item = 5),
            ("pairs systems [1, 1]", |s| s.tasks[0].pair = [1, 1]),
            ("pairs systems [0, 2]", |s| s.tasks[0].pair = [0, 2]),
            ("has 1 answers for 2 systems", |s| {
                s.items[0].answers.pop();
            }),
            ("task id t0 appears twice", |s| s.tasks[1].id = "t0".into()),
            ("reviewers_per_item is 0", |s| s.reviewers_per_item = 0),
        ];
        for (why, breakage) in breakages {
            let mut bad = good.clone();
            breakage(&mut bad);
            write(&bad, &key);
            let err = Study::read(&dir).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("study.json"), "{why}: {err}");
        }

        let mut other_key = key.clone();
        other_key.systems[1].id = "s9".into();
        write(&good, &other_key);
        let err = StudyKey::read(&dir, &good).unwrap_err().to_string();
        assert!(err.contains("key.json") && err.contains("s9"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
