//! The regression gate and the comparison report on recorded runs (nothing is trained or
//! generated here): the base model, an adapter trained on the demo data, and a degraded
//! candidate that answers every guard question with a security report
//! (`tests/vectors/runs/gate/record.sh` wrote them). The report's escaping is checked in a
//! real browser (Debian's headless Chromium).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{root, score_predictions, scratch, tunelab};
use polars::prelude::{ChunkCompareEq, Column, DataFrame, ParquetReader, ParquetWriter, PolarsResult, SerReader};
use serde_json::Value;

fn fixture(run: &str) -> PathBuf {
    let dir = root().join("evalsuite/tests/vectors/runs/gate").join(run);
    assert!(dir.join("run.json").exists(), "{} is missing: record it with evalsuite/tests/vectors/runs/gate/record.sh", dir.display());
    dir
}

fn gate(baseline: &Path, candidate: &Path, extra: &[&str]) -> (i32, String) {
    let args = [&["eval", "gate", "--baseline", baseline.to_str().unwrap(), "--candidate", candidate.to_str().unwrap()], extra].concat();
    let out = tunelab(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().expect("gate exits with a code"), text)
}

#[test]
fn the_gate_passes_the_adapter_and_fails_the_degraded_candidate() {
    let dir = scratch("gate");
    let (base, adapter, degraded) = (fixture("base"), fixture("adapter"), fixture("degraded"));
    let junit = dir.join("adapter.xml");
    let (code, text) = gate(&base, &adapter, &["--junit", junit.to_str().unwrap(), "--json", dir.join("adapter.json").to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("PASS  heldout: better") && text.contains("PASS  guard: not worse") && text.contains("gate: pass"), "{text}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testsuite name=\"heldout\"") && !xml.contains("<failure"), "{xml}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter.json")).unwrap()).unwrap();
    let heldout = json["comparison"]["categories"].as_array().unwrap().iter().find(|c| c["category"] == "heldout").unwrap();
    assert_eq!(heldout["verdict"], "better", "{heldout}");

    // Better in-domain, worse on guard: fails with exit 1 and a JUnit failure under guard.
    let junit = dir.join("degraded.xml");
    let (code, text) = gate(&base, &degraded, &["--junit", junit.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL  guard: not worse") && text.contains("gate: FAIL"), "{text}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let guard = &xml[xml.find("<testsuite name=\"guard\"").expect("a guard testsuite")..];
    let guard = &guard[..guard.find("</testsuite>").unwrap()];
    assert!(guard.contains("<failure") && guard.contains("<property name=\"verdict\" value=\"worse\"/>"), "{guard}");
    // A JUnit reader used by CI tooling (junitparser, from PyPI) loads it and sees the failure.
    let read = junit_reader(&junit);
    assert!(read.contains("guard failures=1") && read.contains("heldout failures=0"), "{read}");
    // Both documents are valid against the JUnit XSD; a broken one is not.
    for doc in ["adapter.xml", "degraded.xml"] {
        assert_eq!(junit_schema_errors(&dir.join(doc)), None, "{doc}");
    }
    let broken = dir.join("broken.xml");
    std::fs::write(&broken, std::fs::read_to_string(&junit).unwrap().replacen("failures=\"1\"", "failures=\"one\"", 1)).unwrap();
    assert!(junit_schema_errors(&broken).is_some(), "the XSD accepted failures=\"one\"");

    // A policy can ask for more than the default; an unknown key is a data error (2).
    let strict = dir.join("strict.toml");
    std::fs::write(&strict, "[[rule]]\nrequire = \"max_new_failures\"\nmax = 0\n[[rule]]\nrequire = \"better\"\ncategory = \"heldout\"\nmin_effect = 0.9\n")
        .unwrap();
    let (code, text) = gate(&base, &adapter, &["--policy", strict.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    std::fs::write(&strict, "[[rule]]\nrequire = \"better\"\ncategory = \"heldout\"\nmargin_of_error = 1\n").unwrap();
    assert_eq!(gate(&base, &adapter, &["--policy", strict.to_str().unwrap()]).0, 2);
    // A field the rule does not read (a `not_worse` rule's `min_effect`) is refused, not ignored.
    std::fs::write(&strict, "[[rule]]\nrequire = \"not_worse\"\ncategory = \"guard\"\nmin_effect = 0.5\n").unwrap();
    let (code, text) = gate(&base, &adapter, &["--policy", strict.to_str().unwrap()]);
    assert!(code == 2 && text.contains("`min_effect` does not apply"), "{text}");
    // A rule on a category the runs lack cannot be decided: 2.
    std::fs::write(&strict, "[[rule]]\nrequire = \"not_worse\"\ncategory = \"medical\"\n").unwrap();
    let (code, text) = gate(&base, &adapter, &["--policy", strict.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
}

/// The errors of validating `path` against the JUnit XSD (`tests/vectors/junit/junit.xsd`)
/// with the `xmlschema` package from PyPI (installed by scripts/test), or `None` when valid.
fn junit_schema_errors(path: &Path) -> Option<String> {
    let python = std::env::var("TUNELAB_TEST_PYTHON").unwrap_or_else(|_| panic!("set TUNELAB_TEST_PYTHON (scripts/test does): the XSD check never skips"));
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/junit/junit.xsd");
    let script = "import sys, xmlschema\nschema = xmlschema.XMLSchema(sys.argv[1])\n\
                  errors = [str(e.reason) + ' at ' + str(e.path) for e in schema.iter_errors(sys.argv[2])]\n\
                  print('\\n'.join(errors))";
    let out = Command::new(python).args(["-c", script]).arg(&xsd).arg(path).output().expect("run the test Python");
    assert!(out.status.success(), "xmlschema could not run on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let errors = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!errors.is_empty()).then_some(errors)
}

/// Each testsuite's name and failure count as junitparser reads them (the test Python is
/// `TUNELAB_TEST_PYTHON`, set up by scripts/test with junitparser installed).
fn junit_reader(path: &Path) -> String {
    let python = std::env::var("TUNELAB_TEST_PYTHON").unwrap_or_else(|_| panic!("set TUNELAB_TEST_PYTHON (scripts/test does): the JUnit check never skips"));
    let script = "import sys\nfrom junitparser import JUnitXml\nxml = JUnitXml.fromfile(sys.argv[1])\n\
                  for s in xml:\n    print(s.name, 'failures=%d' % s.failures, 'errors=%d' % s.errors, 'tests=%d' % s.tests)";
    let out = Command::new(python).args(["-c", script]).arg(path).output().expect("run the test Python");
    assert!(out.status.success(), "junitparser could not read {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mismatched_or_missing_runs_are_data_errors() {
    let dir = scratch("gate-mismatch");
    let base = fixture("base");
    // A real run of another suite (a predictions file scored by another rubric).
    std::fs::write(dir.join("rubric.toml"), "name = \"other\"\n[[checks]]\nname = \"len\"\nscorer = \"length\"\nmin_chars = 1\n").unwrap();
    std::fs::write(dir.join("cases.jsonl"), "{\"id\": \"x1\", \"instruction\": \"Say hi\", \"output\": \"hi\"}\n").unwrap();
    std::fs::write(dir.join("suite.toml"), "name = \"other\"\nrubric = \"rubric.toml\"\n[[sets]]\ncategory = \"guard\"\ncases = \"cases.jsonl\"\n").unwrap();
    std::fs::write(dir.join("preds.jsonl"), "{\"id\": \"x1\", \"output\": \"hi\"}\n").unwrap();
    score_predictions(&dir.join("suite.toml"), &dir.join("preds.jsonl"), &dir, "other");
    let (code, text) = gate(&base, &dir.join("other"), &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("ERROR") && text.contains("suite"), "{text}");
    // An unreadable run replaces an earlier report at the --junit / --json paths with the
    // error (a stale pass must not stay there for CI to read).
    let (junit, json) = (dir.join("gate.xml"), dir.join("gate.json"));
    std::fs::write(&junit, "<testsuites failures=\"0\" errors=\"0\"/>").unwrap();
    std::fs::write(&json, "{\"decision\": \"pass\"}").unwrap();
    let (code, text) = gate(&base, &dir.join("no-such-run"), &["--junit", junit.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no-such-run"), "{text}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("errors=\"1\"") && xml.contains("no-such-run"), "{xml}");
    assert_eq!(junit_schema_errors(&junit), None);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(json["error"].as_str().unwrap().contains("no-such-run"), "{json}");
}

/// A copy of the recorded run `run` under `dir/name`, its results table changed by `edit`
/// and its record's counts made to match (as a run of those cases would have written it).
fn edited_run(dir: &Path, run: &str, name: &str, edit: impl FnOnce(DataFrame) -> PolarsResult<DataFrame>) -> PathBuf {
    let (src, dst) = (fixture(run), dir.join(name));
    std::fs::create_dir_all(&dst).unwrap();
    let df = ParquetReader::new(std::fs::File::open(src.join("results.parquet")).unwrap()).finish().unwrap();
    let mut df = edit(df).unwrap();
    ParquetWriter::new(std::fs::File::create(dst.join("results.parquet")).unwrap()).finish(&mut df).unwrap();
    let mut record: Value = serde_json::from_str(&std::fs::read_to_string(src.join("run.json")).unwrap()).unwrap();
    let (categories, ids) = (df.column("category").unwrap().str().unwrap(), df.column("case_id").unwrap().str().unwrap());
    let cases: std::collections::HashSet<_> = categories.iter().zip(ids.iter()).collect();
    record["counts"]["cases"] = cases.len().into();
    record["counts"]["rows"] = df.height().into();
    std::fs::write(dst.join("run.json"), record.to_string()).unwrap();
    dst
}

/// A column of `df` with the rows of `category` replaced by `value`.
fn replaced<T: Clone>(df: &DataFrame, name: &str, category: &str, value: T, current: impl Fn(&Column, usize) -> T) -> Vec<T> {
    let categories = df.column("category").unwrap().str().unwrap().clone();
    let column = df.column(name).unwrap();
    (0..df.height()).map(|i| if categories.get(i) == Some(category) { value.clone() } else { current(column, i) }).collect()
}

/// The default policy's guard rule is optional for runs without guard cases, but a candidate
/// that lost them (evaluated with `--category heldout`), or whose guard checks all errored,
/// cannot pass it: both are data errors (2). A results table that breaks its contract
/// (a repeated check row, a score outside [0, 1]) is refused naming the file and row.
#[test]
fn a_candidate_without_guard_scores_or_with_a_broken_table_is_a_data_error() {
    let dir = scratch("gate-missing");
    let base = fixture("base");
    let no_guard = edited_run(&dir, "adapter", "no-guard", |df| {
        let keep = df.column("category")?.str()?.not_equal("guard");
        df.filter(&keep)
    });
    let (code, text) = gate(&base, &no_guard, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("ERROR guard: not worse") && text.contains("the candidate none"), "{text}");

    let errored = edited_run(&dir, "adapter", "guard-errored", |mut df| {
        let float = |c: &Column, i: usize| c.f64().unwrap().get(i).unwrap_or(f64::NAN);
        let boolean = |c: &Column, i: usize| c.bool().unwrap().get(i).unwrap_or(false);
        for name in ["value", "score", "case_score"] {
            let v = replaced(&df, name, "guard", f64::NAN, float);
            df.with_column(Column::new(name.into(), v))?;
        }
        for (name, value) in [("passed", false), ("case_passed", false), ("error", true)] {
            let v = replaced(&df, name, "guard", value, boolean);
            df.with_column(Column::new(name.into(), v))?;
        }
        Ok(df)
    });
    let (code, text) = gate(&base, &errored, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("ERROR guard: not worse") && text.contains("has a score in both runs"), "{text}");

    let repeated = edited_run(&dir, "adapter", "repeated-row", |df| df.vstack(&df.slice(0, 1)));
    let out_of_range = edited_run(&dir, "adapter", "score-2", |mut df| {
        let v = vec![2.0; df.height()];
        df.with_column(Column::new("case_score".into(), v))?;
        Ok(df)
    });
    for (run, why) in [(&repeated, "appears twice"), (&out_of_range, "outside [0, 1]")] {
        let (code, text) = gate(&base, run, &[]);
        assert_eq!(code, 2, "{text}");
        assert!(text.contains("not a valid results table") && text.contains("results.parquet") && text.contains(why), "{why}: {text}");
    }
}

#[test]
fn the_report_compares_recorded_runs_in_every_format() {
    let dir = scratch("report");
    let runs = [fixture("base"), fixture("adapter"), fixture("degraded")];
    let report = |format: &str, out: &Path| {
        let args =
            [&["eval", "report"][..], &runs.iter().map(|r| r.to_str().unwrap()).collect::<Vec<_>>(), &["--format", format, "--out", out.to_str().unwrap()]]
                .concat();
        let o = tunelab(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let stdout = report("json", &dir.join("r.json"));
    assert!(stdout.contains("heldout") && stdout.contains("better"), "{stdout}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["runs"].as_array().unwrap().len(), 3);
    assert_eq!(json["comparisons"].as_array().unwrap().len(), 2);
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.iter().all(|c| c["outputs"].as_array().unwrap().len() == 3));
    assert!(!json["loss_curves"].as_array().unwrap().is_empty(), "the adapter's training log is drawn");
    let md = {
        report("md", &dir.join("r.md"));
        std::fs::read_to_string(dir.join("r.md")).unwrap()
    };
    assert!(md.contains("| heldout |") && md.contains("**better**") && md.contains("**worse**"), "{md}");
    report("html", &dir.join("r.html"));
    let html = std::fs::read_to_string(dir.join("r.html")).unwrap();
    // No network resource: outside the inlined case data (whose texts may quote URLs) and
    // the SVG namespace, the page names no URL at all; the CSP forbids loading any.
    let data_start = html.find("<script type=\"application/json\"").unwrap();
    let data_end = data_start + html[data_start..].find("</script>").unwrap();
    let markup = (html[..data_start].to_string() + &html[data_end..]).replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(html.contains("Content-Security-Policy") && html.contains("default-src 'none'"));
    assert!(!markup.contains("http://") && !markup.contains("https://") && !markup.contains("src="), "the page loads something");
    assert!(html.contains("<svg"), "loss curve inline");
    // The overview alone, as a notebook shows it: static tables naming the full report.
    let overview_out = dir.join("o.html");
    let args = [
        &["eval", "report"][..],
        &runs.iter().map(|r| r.to_str().unwrap()).collect::<Vec<_>>(),
        &["--format", "overview", "--full-report", "/reports/full.html", "--out", overview_out.to_str().unwrap()],
    ]
    .concat();
    assert!(tunelab(&args).status.success());
    let overview = std::fs::read_to_string(dir.join("o.html")).unwrap();
    assert!(overview.contains("tunelab-overview") && overview.contains("full.html") && overview.contains("<table"));
    assert!(!overview.contains("<script") && !overview.contains("tunelab-data"), "the overview carries no script or case data");
}

/// Debian's Chromium (installed by scripts/test); fails loudly when missing.
fn chromium() -> PathBuf {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file())));
    found.unwrap_or_else(|| panic!("chromium is not installed: run scripts/test (it installs Debian's chromium); this test never skips"))
}

/// The DOM after the page's scripts ran, from headless Chromium.
fn rendered_dom(page: &Path) -> String {
    let profile = page.parent().unwrap().join("chromium-profile");
    let out = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hostile_outputs_show_as_text_in_a_real_browser() {
    let dir = scratch("report-xss");
    let hostile = [
        "<script>document.body.setAttribute('data-pwned','script')</script>",
        "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">",
        "</textarea><svg onload=\"document.body.setAttribute('data-pwned','svg')\"></svg>",
        "</script><script>document.body.setAttribute('data-pwned','close')</script><!--",
    ];
    std::fs::write(dir.join("rubric.toml"), "name = \"r\"\n[[checks]]\nname = \"len\"\nscorer = \"length\"\nmin_chars = 1\n").unwrap();
    let cases: String = hostile
        .iter()
        .enumerate()
        .map(|(i, h)| {
            serde_json::json!({"id": format!("c{i}"), "instruction": format!("prompt {h}"), "output": format!("reference {h}"), "tags": [h]}).to_string() + "\n"
        })
        .collect();
    std::fs::write(dir.join("cases.jsonl"), cases).unwrap();
    std::fs::write(dir.join("suite.toml"), "name = \"x\"\nrubric = \"rubric.toml\"\n[[sets]]\ncategory = \"guard\"\ncases = \"cases.jsonl\"\n").unwrap();
    for (run, prefix) in [("a", "base says "), ("b", "adapter says ")] {
        let preds: String =
            hostile.iter().enumerate().map(|(i, h)| serde_json::json!({"id": format!("c{i}"), "output": format!("{prefix}{h}")}).to_string() + "\n").collect();
        std::fs::write(dir.join(format!("{run}.jsonl")), preds).unwrap();
        score_predictions(&dir.join("suite.toml"), &dir.join(format!("{run}.jsonl")), &dir, run);
    }
    let page = dir.join("report.html");
    let out = tunelab(&["eval", "report", dir.join("a").to_str().unwrap(), dir.join("b").to_str().unwrap(), "--out", page.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dom = rendered_dom(&page);
    // The page's own script ran (it marks how many cases it rendered) …
    assert!(dom.contains("data-rendered=\"4\""), "the per-case view did not render:\n{dom}");
    // … and none of the outputs' scripts or handlers did (each would mark the body).
    let body = &dom[dom.find("<body").expect("a body")..];
    let body_tag = &body[..body.find('>').unwrap()];
    assert!(!body_tag.contains("data-pwned") && !dom.contains("data-pwned=\""), "a hostile output ran: {body_tag}");
    // Each payload is visible as text: the baseline's output, the prompt and the reference.
    for h in hostile {
        let shown = h.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        for text in [format!("base says {shown}"), format!("prompt {shown}"), format!("reference {shown}")] {
            assert!(dom.contains(&text), "{text} is not visible as text:\n{dom}");
        }
    }
}

#[test]
fn a_transformers_trainer_state_draws_the_adapter_s_loss_curve() {
    // An adapter trained elsewhere (LLaMA-Factory) has trainer_state.json, no trainer_log.jsonl.
    let dir = scratch("report-trainer-state");
    let a = |i: usize| format!("answer {i}");
    let runs = common::review_runs(&dir, 4, &[("base", &a), ("tuned", &a)]);
    let adapter = dir.join("lf-adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::write(
        adapter.join("trainer_state.json"),
        // Python's json writes a non-finite gradient norm as a bare Infinity.
        r#"{"max_steps": 20, "log_history": [{"loss": 2.5, "learning_rate": 5e-05, "epoch": 1.0, "step": 10, "grad_norm": Infinity}, {"loss": 1.5, "learning_rate": 2e-05, "epoch": 2.0, "step": 20}, {"train_loss": 2.0, "step": 20}]}"#,
    )
    .unwrap();
    // Point the second run at that adapter (as a run of it would record).
    let record_path = runs[1].join("run.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record["backend"]["adapter"] = Value::from(adapter.display().to_string());
    std::fs::write(&record_path, record.to_string()).unwrap();
    let out_path = dir.join("report.json");
    let out = tunelab(&["eval", "report", runs[0].to_str().unwrap(), runs[1].to_str().unwrap(), "--format", "json", "--out", out_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    let curve = &report["loss_curves"][0];
    assert_eq!(curve["run"], "tuned");
    assert_eq!(curve["points"], serde_json::json!([[10, 2.5, 5e-05], [20, 1.5, 2e-05]]));

    // A log that is there but unreadable is named in the report, not silently left out.
    std::fs::write(adapter.join("trainer_state.json"), r#"{"log_history": [{"loss": 2.5}"#).unwrap();
    let out = tunelab(&["eval", "report", runs[0].to_str().unwrap(), runs[1].to_str().unwrap(), "--format", "json", "--out", out_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    let problem = report["loss_curves"][0]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("trainer_state.json"), "{}", report["loss_curves"]);
}
