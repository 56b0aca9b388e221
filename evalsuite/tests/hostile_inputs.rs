//! Files and servers someone else controls, through the `tunelab` command and the library:
//! mutated suites, rubrics and predictions (no panic, errors name the file), inputs that
//! never end (a device, a FIFO, an endless HTTP body), a rubric path that must not echo the
//! file it read, a corrupted results table, an empty dataset, and `--overwrite` runs killed
//! at random moments (the run directory is always a complete run, and staging is cleaned).

mod common;
#[path = "../../kernel/tests/common/fuzz.rs"]
mod fuzz;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{predictions_run_args, score_predictions, scratch, tunelab};
use fuzz::fuzz;
use tunelab_evalsuite::backend::predictions::PredictionsBackend;
use tunelab_evalsuite::rubric::Rubric;
use tunelab_evalsuite::run::store::{read_record, read_results};
use tunelab_evalsuite::suite::Suite;

const RUBRIC: &str = "name = \"r\"\ndescription = \"d\"\n[[checks]]\nname = \"len\"\nscorer = \"length\"\nmin_chars = 1\nweight = 2.0\n\
                      [[checks]]\nname = \"kw\"\nscorer = \"contains\"\ntext = \"4\"\n";
const CASES: &str = "{\"id\": \"q1\", \"instruction\": \"What is 2 + 2?\", \"output\": \"4\", \"tags\": [\"math\"]}\n\
                     {\"id\": \"q2\", \"instruction\": \"Name a colour\", \"output\": \"red\"}\n";
const PREDICTIONS: &str = "{\"id\": \"q1\", \"output\": \"4\"}\n{\"id\": \"q2\", \"output\": \"red\"}\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A suite (with its rubric and cases) and predictions for it.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    write(dir, "rubric.toml", RUBRIC);
    write(dir, "cases.jsonl", CASES);
    let suite = write(dir, "suite.toml", "name = \"s\"\nrubric = \"rubric.toml\"\n[[sets]]\ncategory = \"heldout\"\ncases = \"cases.jsonl\"\n");
    (suite, write(dir, "preds.jsonl", PREDICTIONS))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn mutated_suites_rubrics_and_predictions_are_errors_not_panics() {
    let dir = scratch("hostile-fuzz");
    let (suite, _) = fixture(&dir);
    let suite_text = std::fs::read(&suite).unwrap();
    fuzz(&dir.join("rubric.toml"), RUBRIC.as_bytes(), 400, |p| Rubric::load(p).map_err(|e| e.to_string()));
    write(&dir, "rubric.toml", RUBRIC);
    fuzz(&suite, &suite_text, 300, |p| Suite::load(p).map_err(|e| e.to_string()));
    write(&dir, "suite.toml", std::str::from_utf8(&suite_text).unwrap());
    fuzz(&dir.join("cases.jsonl"), CASES.as_bytes(), 300, |_| Suite::load(&suite).map_err(|e| e.to_string()));
    fuzz(&dir.join("preds.jsonl"), PREDICTIONS.as_bytes(), 400, |p| PredictionsBackend::load(p).map_err(|e| e.to_string()));
}

#[test]
fn inputs_that_never_end_are_refused_at_the_limit() {
    let dir = scratch("hostile-endless");
    let (suite, _) = fixture(&dir);
    let out =
        tunelab(&["--max-input-mb", "1", "eval", "run", "--suite", suite.to_str().unwrap(), "--predictions", "/dev/zero", "--out", dir.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("/dev/zero") && err.contains("1 MiB") && err.contains("--max-input-mb"), "{err}");
    let out = tunelab(&["--max-input-mb", "1", "data", "check", "--no-tokens", "/dev/zero"]);
    assert!(!out.status.success() && stderr(&out).contains("--max-input-mb"), "{}", stderr(&out));
}

#[test]
fn an_empty_dataset_fails_data_check() {
    let dir = scratch("hostile-empty");
    for (name, text) in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n")] {
        let out = tunelab(&["data", "check", "--no-tokens", write(&dir, name, text).to_str().unwrap()]);
        let all = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
        assert!(!out.status.success() && all.contains("holds no records"), "{name}: {all}");
    }
}

#[test]
fn a_rubric_path_error_does_not_echo_the_file() {
    let dir = scratch("hostile-echo");
    fixture(&dir);
    write(&dir, "secret.txt", "SECRET_TOKEN=hunter2-do-not-print\nmore\n");
    let suite = write(&dir, "leaky.toml", "name = \"s\"\nrubric = \"secret.txt\"\n[[sets]]\ncategory = \"heldout\"\ncases = \"cases.jsonl\"\n");
    let e = Suite::load(&suite).unwrap_err().to_string();
    assert!(e.contains("secret.txt") && e.contains("line ") && !e.contains("hunter2"), "{e}");
    let e = Suite::load(&write(&dir, "notoml.toml", "SECRET_TOKEN=hunter2 x\n")).unwrap_err().to_string();
    assert!(e.contains("notoml.toml") && !e.contains("hunter2"), "{e}");
}

#[test]
fn a_corrupted_results_table_is_an_error_naming_it() {
    let dir = scratch("hostile-parquet");
    let (suite, preds) = fixture(&dir);
    score_predictions(&suite, &preds, &dir, "r");
    let table = dir.join("r/results.parquet");
    let good = std::fs::read(&table).unwrap();
    for (i, bytes) in fuzz::mutations(&good, 60, 11).into_iter().enumerate() {
        std::fs::write(&table, &bytes).unwrap();
        let out = tunelab(&["eval", "summary", dir.join("r").to_str().unwrap()]);
        // Exit code 101 is a panic; a corrupted file is an error (1) naming it, or read.
        assert!(out.status.code() != Some(101), "case {i} panicked: {}", stderr(&out));
        if !out.status.success() {
            assert!(stderr(&out).contains("results.parquet"), "case {i}: {}", stderr(&out));
        }
    }
}

/// A server that answers every request with `200 OK` and a JSON body that never ends.
fn endless_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = s.read(&mut request);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"data\": [");
                let chunk = b"{\"id\": \"m\"},".repeat(4096);
                while s.write_all(&chunk).is_ok() {}
            });
        }
    });
    url
}

#[test]
fn an_endless_http_body_is_cut_at_the_limit() {
    let dir = scratch("hostile-http");
    let (suite, _) = fixture(&dir);
    let url = endless_server();
    let out = tunelab(&[
        "eval",
        "run",
        "--suite",
        suite.to_str().unwrap(),
        "--endpoint",
        &url,
        "--api-model",
        "m",
        "--max-response-mb",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("longer than 1 MiB") && err.contains("--max-response-mb"), "{err}");
}

/// A one-purpose HTTP server: each connection's request is read, then `answer` writes to
/// the stream (it may trickle forever); returns the base URL and how many requests came.
fn raw_server(answer: fn(&mut std::net::TcpStream)) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = s.read(&mut request);
                answer(&mut s);
            });
        }
    });
    (url, requests)
}

/// `tunelab eval run` of the fixture suite against `endpoint`, given `limit` to finish.
fn run_against(dir: &Path, endpoint: &str, extra: &[&str], limit: Duration) -> std::process::Output {
    let (suite, _) = fixture(dir);
    let args =
        [&["eval", "run", "--suite", suite.to_str().unwrap(), "--endpoint", endpoint, "--api-model", "m", "--out", dir.to_str().unwrap()][..], extra].concat();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunelab")).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("eval run against {endpoint} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// A redirect is not followed (it would carry outputs, or a judge's prompt, to an address
/// the user never named): the run fails naming it, and the target never hears a request.
#[test]
fn redirects_are_refused_not_followed() {
    let dir = scratch("hostile-redirect");
    let (target, target_requests) = raw_server(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"data\": []}");
    });
    static TARGET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TARGET.set(target).unwrap();
    let (redirecting, _) = raw_server(|s| {
        let reply = format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {}/v1/models\r\nContent-Length: 0\r\n\r\n", TARGET.get().unwrap());
        let _ = s.write_all(reply.as_bytes());
    });
    let out = run_against(&dir, &redirecting, &["--attempts", "1"], Duration::from_secs(60));
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("307") && err.contains("redirects are not followed"), "{err}");
    assert_eq!(target_requests.load(std::sync::atomic::Ordering::SeqCst), 0, "the redirect was followed");
}

/// `--timeout` bounds a whole reply: a server that sends its headers and then one byte at a
/// time (each read well within the timeout) is cut off, not waited on for ever.
#[test]
fn a_trickled_reply_is_cut_off_at_the_timeout() {
    let dir = scratch("hostile-trickle");
    let (url, _) = raw_server(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{");
        while s.write_all(b" ").is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let out = run_against(&dir, &url, &["--attempts", "1", "--timeout", "2"], Duration::from_secs(120));
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("still arriving when the request timed out"), "{err}");
}

/// `eval run --overwrite` killed at moments spread over its run time, again and again: the
/// run directory is always one complete run (old or new), and the next run leaves no
/// staging or set-aside directories behind.
#[test]
fn overwrite_killed_at_any_moment_keeps_a_complete_run() {
    let dir = scratch("hostile-kill");
    let (suite, preds) = fixture(&dir);
    let mut args = predictions_run_args(&suite, &preds, &dir, "r");
    args.push("--overwrite".into());
    let run = || Command::new(env!("CARGO_BIN_EXE_tunelab")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    assert!(run().wait().unwrap().success());
    let full = start.elapsed();
    let complete = |when: &str| {
        let run_dir = dir.join("r");
        let record = read_record(&run_dir).unwrap_or_else(|e| panic!("{when}: run.json unreadable: {e}"));
        assert_eq!(record.counts.cases, 2, "{when}");
        let rows = read_results(&run_dir).unwrap_or_else(|e| panic!("{when}: results unreadable: {e}")).height();
        assert_eq!(rows, record.counts.rows, "{when}");
        assert!(run_dir.join("results.csv").exists(), "{when}");
    };
    complete("first run");
    const KILLS: u32 = 24;
    for k in 0..KILLS {
        let mut child = run();
        std::thread::sleep(full * k / KILLS + Duration::from_millis(u64::from(k % 3)));
        let _ = child.kill();
        let _ = child.wait();
        complete(&format!("kill {k}"));
    }
    assert!(run().wait().unwrap().success());
    complete("after the kills");
    let leftovers: Vec<_> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(".r.")).collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}
