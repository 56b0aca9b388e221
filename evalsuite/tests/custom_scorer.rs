//! Adding a scorer takes one type plus one registry line: a toy scorer defined here is named
//! by a rubric, runs through `eval run`'s whole path (suite → predictions backend → scoring
//! → results.parquet), and keeps its direction and default threshold.

mod common;

use std::sync::Arc;

use common::scratch;
use tunelab_evalsuite::backend::predictions::PredictionsBackend;
use tunelab_evalsuite::run::store::read_results;
use tunelab_evalsuite::run::summary::{render_text, summarize};
use tunelab_evalsuite::run::{execute, RunOptions};
use tunelab_evalsuite::scorers::registry::Registry;
use tunelab_evalsuite::scorers::{each, params, Direction, Item, ScoreContext, Scorer, Value};
use tunelab_evalsuite::suite::Suite;

/// `word_count`: the number of words in the output; lower is better, at most `max` passes.
/// An output containing `UNCOUNTABLE` gets no value (the scorer's error state).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WordCount {
    max: f64,
}

impl WordCount {
    fn build(table: toml::Table) -> Result<Arc<dyn Scorer>, String> {
        Ok(Arc::new(params::<Self>(table)?))
    }
}

impl Scorer for WordCount {
    fn kind(&self) -> &'static str {
        "word_count"
    }

    fn direction(&self) -> Direction {
        Direction::LowerIsBetter
    }

    fn default_threshold(&self) -> f64 {
        self.max
    }

    fn threshold_range(&self) -> (f64, f64) {
        (0.0, f64::INFINITY)
    }

    fn contribution(&self, _value: f64, passed: bool) -> f64 {
        f64::from(u8::from(passed))
    }

    fn score(&self, items: &[Item<'_>], _: &ScoreContext<'_>) -> tunelab_evalsuite::Result<Vec<Value>> {
        each(items, |it| match it.output.contains("UNCOUNTABLE") {
            true => Value::failed("cannot count this output"),
            false => Value::of(it.output.split_whitespace().count() as f64),
        })
    }
}

#[test]
fn a_registered_toy_scorer_runs_through_eval_run() {
    let dir = scratch("custom-scorer");
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("rubric.toml", "name = \"short\"\n[[checks]]\nname = \"brevity\"\nscorer = \"word_count\"\nmax = 3\n");
    write(
        "cases.jsonl",
        "{\"id\": \"a\", \"instruction\": \"Say hi\", \"output\": \"hi\"}\n{\"id\": \"b\", \"instruction\": \"Say more\", \"output\": \"more\"}\n\
         {\"id\": \"c\", \"instruction\": \"Say\", \"output\": \"x\"}\n",
    );
    write("suite.toml", "name = \"s\"\nrubric = \"rubric.toml\"\n[[sets]]\ncategory = \"guard\"\ncases = \"cases.jsonl\"\n");
    write(
        "preds.jsonl",
        "{\"id\": \"a\", \"output\": \"hi there\"}\n{\"id\": \"b\", \"output\": \"one two three four five\"}\n{\"id\": \"c\", \"output\": \"UNCOUNTABLE\"}\n",
    );

    // Without the registry line the rubric is refused, naming the scorer.
    let err = Suite::load(&dir.join("suite.toml")).unwrap_err().to_string();
    assert!(err.contains("unknown scorer `word_count`"), "{err}");

    let registry = Registry::default().with("word_count", WordCount::build);
    let suite = Suite::load_with(&dir.join("suite.toml"), &registry).unwrap();
    let backend = PredictionsBackend::load(&dir.join("preds.jsonl")).unwrap();
    let opts = RunOptions {
        name: "toy".into(),
        out: dir.clone(),
        decoding: Default::default(),
        cache: None,
        categories: Vec::new(),
        limit_per_category: None,
        shard: None,
        overwrite: true,
        judges: Default::default(),
        command: "test".into(),
    };
    let mut events = Vec::new();
    let outcome = execute(&suite, &backend, &opts, &mut |e| events.push(e)).unwrap();
    assert_eq!(outcome.cases, 3);
    assert_eq!(outcome.errored_checks, 1);
    assert!(!events.is_empty(), "the run reports its progress");

    let df = read_results(&dir.join("toy")).unwrap();
    let col_f64 = |n: &str| df.column(n).unwrap().f64().unwrap().iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>();
    let col_bool = |n: &str| df.column(n).unwrap().bool().unwrap().iter().map(Option::unwrap).collect::<Vec<_>>();
    let scorers: Vec<&str> = df.column("scorer").unwrap().str().unwrap().iter().map(Option::unwrap).collect();
    assert_eq!(scorers, ["word_count"; 3]);
    assert_eq!(col_f64("value")[..2], [2.0, 5.0]);
    assert_eq!(col_f64("threshold"), [3.0, 3.0, 3.0]);
    assert_eq!(col_bool("passed"), [true, false, false]);
    // The third case's check errored: recorded as such, not as a 0.
    assert_eq!(col_bool("error"), [false, false, true]);
    let case_scores = col_f64("case_score");
    assert_eq!(case_scores[..2], [1.0, 0.0]);
    assert!(case_scores[2].is_nan(), "{case_scores:?}");

    // The summary leaves the errored check out of the means and counts it.
    let summary = summarize(&dir.join("toy")).unwrap();
    let guard = &summary.categories[0];
    assert_eq!((guard.cases, guard.errored_checks, guard.score.n), (3, 1, 2));
    assert_eq!(guard.score.mean, 0.5);
    assert_eq!((guard.checks[0].mean_value, guard.checks[0].pass_rate, guard.checks[0].errored), (3.5, 0.5, 1));
    assert!(render_text(&summary).contains("1 check(s) errored"));
}
