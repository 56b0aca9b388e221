//! `tunelab bench score`: the throughput of every non-model scorer over N recorded pairs,
//! expanded exactly as `tests/vectors/scorers/bench_scorers.py` does, so the two print
//! comparable pairs/s. Scoring goes through `eval run`'s path (`run::score::score_all`), on
//! one thread and then on all cores (rayon).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};
use tunelab_evalsuite::backend::Generated;
use tunelab_evalsuite::case::Case;
use tunelab_evalsuite::rubric::Rubric;
use tunelab_evalsuite::run::score::score_all;
use tunelab_evalsuite::scorers::ScoreContext;
use tunelab_evalsuite::suite::ScoredCase;

/// The checks the Python reference times, as a rubric.
const RUBRIC: &str = r#"name = "bench"
[[checks]]
name = "exact"
scorer = "exact"
[[checks]]
name = "contains"
scorer = "keywords"
[[checks]]
name = "regex"
scorer = "regex"
pattern = '\d+'
[[checks]]
name = "sections"
scorer = "sections"
sections = ["Vulnerability:", "Risk:", "Location:", "Fix:"]
non_empty = false
[[checks]]
name = "json"
scorer = "json_valid"
[[checks]]
name = "length"
scorer = "length"
min_chars = 1
max_chars = 2000
[[checks]]
name = "rouge1"
scorer = "rouge1"
[[checks]]
name = "rouge2"
scorer = "rouge2"
[[checks]]
name = "rougeL"
scorer = "rougeL"
[[checks]]
name = "bleu"
scorer = "bleu"
"#;

/// Prints one JSON line per mode with pairs/s.
pub fn run(pairs: &Path, n: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pairs).with_context(|| format!("reading {}", pairs.display()))?;
    let rows: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l).with_context(|| format!("{}:{}", pairs.display(), i + 1))?;
            Ok((v["reference"].as_str().unwrap_or("").to_string(), v["candidate"].as_str().unwrap_or("").to_string()))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!rows.is_empty(), "{} holds no pairs", pairs.display());
    let rubric = Rubric::parse(RUBRIC)?;
    let (cases, outputs): (Vec<Case>, Vec<Generated>) = (0..n)
        .map(|i| {
            let (reference, candidate) = &rows[i % rows.len()];
            let mut case = Case::new(format!("pair-{i}"), "bench", "", reference.clone());
            case.keywords = reference.split_whitespace().next().map(|w| vec![w.to_string()]).unwrap_or_default();
            let output = Generated {
                text: format!("{candidate} {i}"),
                prompt_tokens: None,
                completion_tokens: None,
                cached_prompt_tokens: None,
                latency_s: 0.0,
                finish: "bench".into(),
            };
            (case, output)
        })
        .unzip();
    let scored: Vec<ScoredCase> = cases.iter().map(|case| ScoredCase { case, rubric: &rubric }).collect();
    let ctx = ScoreContext::new("bench", None);
    let total = || -> anyhow::Result<f64> { Ok(score_all(&scored, &outputs, &ctx)?.iter().map(|s| s.score).sum()) };
    let t = Instant::now();
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build()?.install(total)?;
    let one_thread = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let parallel = total()?;
    let all_threads = t.elapsed().as_secs_f64();
    anyhow::ensure!((single - parallel).abs() < 1e-6 * n as f64, "parallel scoring disagrees");
    for (mode, secs, threads) in [("1 thread", one_thread, 1), ("all cores", all_threads, rayon::current_num_threads())] {
        println!(
            "{}",
            json!({"bench": "score", "impl": "tunelab", "mode": mode, "threads": threads, "pairs": n, "checks": rubric.checks.len(), "seconds": secs, "pairs_per_s": n as f64 / secs})
        );
    }
    Ok(())
}
