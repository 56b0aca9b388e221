//! The comparison statistics against values recorded from scipy and statsmodels
//! (`tests/vectors/stats/expected.json`, written by `record_stats.py` beside it).

mod common;

use serde_json::Value;
use tunelab_evalsuite::stats::hypothesis::{holm, mcnemar_exact};
use tunelab_evalsuite::stats::normal;
use tunelab_evalsuite::stats::paired::{paired_difference, PairedOptions};
use tunelab_evalsuite::stats::proportion::{clopper_pearson, wilson};

fn expected() -> Value {
    let path = common::root().join("tests/vectors/stats/expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs recorded {b}");
}

#[test]
fn normal_quantiles_match_scipy() {
    for case in expected()["normal_quantile"].as_array().unwrap() {
        let p = case["p"].as_f64().unwrap();
        close(normal::quantile(p), case["q"].as_f64().unwrap(), 1e-9, &format!("norm.ppf({p})"));
    }
}

#[test]
fn pass_rate_intervals_match_statsmodels() {
    for case in expected()["proportions"].as_array().unwrap() {
        let (k, n) = (case["k"].as_u64().unwrap() as usize, case["n"].as_u64().unwrap() as usize);
        let (w, cp) = (wilson(k, n, 0.95), clopper_pearson(k, n, 0.95));
        let (ew, ecp) = (floats(&case["wilson"]), floats(&case["clopper_pearson"]));
        close(w.low, ew[0], 1e-9, &format!("wilson low {k}/{n}"));
        close(w.high, ew[1], 1e-9, &format!("wilson high {k}/{n}"));
        close(cp.low, ecp[0], 1e-7, &format!("clopper-pearson low {k}/{n}"));
        close(cp.high, ecp[1], 1e-7, &format!("clopper-pearson high {k}/{n}"));
    }
    // 0 of 8 is not [0, 0].
    assert!(clopper_pearson(0, 8, 0.95).high > 0.3);
}

#[test]
fn mcnemar_and_holm_match_statsmodels() {
    let e = expected();
    for case in e["mcnemar"].as_array().unwrap() {
        let (b, c) = (case["b"].as_u64().unwrap() as usize, case["c"].as_u64().unwrap() as usize);
        close(mcnemar_exact(b, c), case["p"].as_f64().unwrap(), 1e-9, &format!("mcnemar {b}/{c}"));
    }
    for case in e["holm"].as_array().unwrap() {
        let got = holm(&floats(&case["p"]));
        for (g, x) in got.iter().zip(floats(&case["adjusted"])) {
            close(*g, x, 1e-12, &format!("holm {:?}", case["p"]));
        }
    }
}

#[test]
fn paired_differences_match_numpy_and_statsmodels() {
    for case in expected()["paired"].as_array().unwrap() {
        let (base, cand) = (floats(&case["baseline"]), floats(&case["candidate"]));
        let clusters: Vec<String> = case["clusters"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_string()).collect();
        let n = base.len();
        let opts = PairedOptions::default();
        let plain = paired_difference(&base, &cand, None, &opts);
        close(plain.diff, case["diff"].as_f64().unwrap(), 1e-12, "diff");
        close(plain.se, case["se"].as_f64().unwrap(), 1e-10, "se");
        let clt = floats(&case["clt"]);
        close(plain.clt.0, clt[0], 1e-9, "clt low");
        close(plain.clt.1, clt[1], 1e-9, "clt high");
        close(plain.correlation, case["correlation"].as_f64().unwrap(), 1e-10, "correlation");
        close(plain.detectable_effect, case["detectable_effect_unclustered"].as_f64().unwrap(), 1e-9, "mde");
        // The bootstrap interval is near the normal one and contains the mean difference.
        assert!(plain.bootstrap.0 < plain.diff && plain.diff < plain.bootstrap.1, "n={n}: {plain:?}");
        assert!((plain.bootstrap.1 - plain.bootstrap.0) / (plain.clt.1 - plain.clt.0) > 0.7, "n={n}: {plain:?}");
        let grouped = paired_difference(&base, &cand, Some(&clusters), &opts);
        close(grouped.clustered_se.unwrap(), case["clustered_se"].as_f64().unwrap(), 1e-10, "clustered se");
        close(grouped.detectable_effect, case["detectable_effect"].as_f64().unwrap(), 1e-9, "clustered mde");
        assert_eq!(grouped.clusters, Some(clusters.iter().collect::<std::collections::HashSet<_>>().len()));
        // Seeded: the same seed gives the same interval.
        assert_eq!(paired_difference(&base, &cand, None, &opts).bootstrap, plain.bootstrap);
    }
}
