//! The OpenAI-compatible HTTP backend against a real llama.cpp server
//! (`python -m llama_cpp.server` from the llama-cpp-python package) serving the SmolLM2 GGUF
//! on loopback: a full `eval run`, a wrong model name, a dead endpoint, and retries through
//! a proxy that answers 503 before passing requests on to the real server.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{model_path, root, scratch, tunelab};
use tunelab_evalsuite::run::store::read_results;

/// The Python that has llama-cpp-python[server] (scripts/test installs it).
fn python() -> PathBuf {
    let p = std::env::var_os("TUNELAB_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tunelab/testvenv/bin/python"));
    let ok = Command::new(&p).args(["-c", "import llama_cpp.server"]).status().is_ok_and(|s| s.success());
    assert!(ok, "{} cannot import llama_cpp.server: run scripts/test (it installs llama-cpp-python[server]); this test never skips", p.display());
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The key the test server requires; passed to tunelab through [`KEY_VAR`].
const API_KEY: &str = "tunelab-test-key";
/// The environment variable tunelab reads the key from.
const KEY_VAR: &str = "TUNELAB_TEST_API_KEY";

/// A llama.cpp server process, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let port = free_port();
    let log = std::fs::File::create(scratch("llama-server-log").join("server.log")).unwrap();
    let child = Command::new(python())
        .args(["-m", "llama_cpp.server", "--model", model_path().to_str().unwrap(), "--model_alias", "smollm2", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--n_ctx", "2048", "--n_threads", "2", "--chat_format", "chatml", "--api_key", API_KEY])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start llama_cpp.server");
    wait_until_serving(Server { child, url: format!("http://127.0.0.1:{port}") }, port, "smollm2", Some(API_KEY))
}

/// Waits until the server on `port` lists `alias` among its models (sending `api_key` when
/// it needs one); panics when the process exits or takes longer than three minutes.
fn wait_until_serving(mut server: Server, port: u16, alias: &str, api_key: Option<&str>) -> Server {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let auth = api_key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
            let _ = write!(s, "GET /v1/models HTTP/1.0\r\n{auth}\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.contains(alias) {
                return server;
            }
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("llama_cpp.server exited with {status}; see its log under the test tmp dir");
        }
        assert!(start.elapsed() < Duration::from_secs(180), "llama_cpp.server did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Forwards connections to `target`, but answers the first `failures` requests with 503.
fn flaky_proxy(target: u16, failures: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut client) = stream else { continue };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                if n < failures {
                    let mut buf = [0u8; 65536];
                    let _ = client.read(&mut buf);
                    let body = "{\"error\": \"busy\"}";
                    let _ = write!(
                        client,
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)) else { return };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut upstream, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = up.join();
            });
        }
    });
    (port, seen)
}

#[test]
fn eval_run_against_a_real_llama_cpp_server() {
    let server = start_server();
    let dir = scratch("http-eval");
    let suite = root().join("rubrics/guard/suite.toml");
    let (s, o) = (suite.to_str().unwrap(), dir.to_str().unwrap());
    let run = |endpoint: &str, model: &str, name: &str, extra: &[&str]| {
        let args = [
            &["eval", "run", "--suite", s, "--endpoint", endpoint, "--api-model", model, "--limit", "3", "--max-tokens", "32", "--out", o, "--name", name],
            extra,
        ]
        .concat();
        std::process::Command::new(env!("CARGO_BIN_EXE_tunelab")).args(&args).env(KEY_VAR, API_KEY).output().expect("run tunelab")
    };
    let key = ["--api-key-env", KEY_VAR];
    // Without the key the server refuses, and the error says so.
    let refused = run(&server.url, "smollm2", "no-key", &[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("401"), "{err}");
    let ok = run(&server.url, "smollm2", "served", &key);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let df = read_results(&dir.join("served")).unwrap();
    let outputs: Vec<&str> = df.column("output").unwrap().str().unwrap().iter().map(Option::unwrap).collect();
    assert!(outputs.iter().all(|o| !o.trim().is_empty()), "{outputs:?}");
    let tokens = df.column("completion_tokens").unwrap().u64().unwrap();
    assert!(tokens.iter().all(|t| t.is_some_and(|t| t > 0)));
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("served/run.json")).unwrap()).unwrap();
    assert_eq!(meta["backend"]["kind"], "http");
    assert_eq!(meta["backend"]["endpoint"], server.url.as_str());

    // A model the server does not serve: the error lists what it does serve.
    let wrong = run(&server.url, "gpt-4o", "wrong", &key);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && err.contains("does not serve a model named \"gpt-4o\"") && err.contains("smollm2"), "{err}");

    // 503s are retried with backoff, then the real server answers (a fresh cache, so every
    // case goes through the proxy).
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let (proxy, seen) = flaky_proxy(port, 2);
    let fresh_cache = dir.join("flaky-cache.jsonl");
    let flaky =
        run(&format!("http://127.0.0.1:{proxy}"), "smollm2", "flaky", &[&key[..], &["--cache", fresh_cache.to_str().unwrap(), "--concurrency", "1"]].concat());
    assert!(flaky.status.success(), "{}", String::from_utf8_lossy(&flaky.stderr));
    assert!(seen.load(Ordering::SeqCst) >= 3, "connections through the proxy: {}", seen.load(Ordering::SeqCst));
    let cached = std::fs::read_to_string(&fresh_cache).unwrap();
    assert_eq!(cached.lines().count(), 3, "every case answered through the flaky proxy");
    judge_through_the_server(&server, &dir);
    drop(server);
}

/// The LLM judge scorer (1–10 and pairwise) with the llama.cpp server as the judge, scoring
/// predictions: each row records the judge's parsed score and its verdicts.
fn judge_through_the_server(server: &Server, dir: &std::path::Path) {
    let rubric = format!(
        "name = \"judged\"\n[[checks]]\nname = \"score\"\nscorer = \"judge\"\nendpoint = \"{url}\"\nmodel = \"smollm2\"\n\
         [[checks]]\nname = \"versus-reference\"\nscorer = \"judge\"\nendpoint = \"{url}\"\nmodel = \"smollm2\"\npairwise = true\n",
        url = server.url
    );
    std::fs::write(dir.join("judge.toml"), &rubric).unwrap();
    std::fs::write(dir.join("cases.jsonl"), "{\"id\": \"q1\", \"instruction\": \"What is 2 + 2?\", \"output\": \"4\"}\n").unwrap();
    std::fs::write(dir.join("judge-suite.toml"), "name = \"j\"\nrubric = \"judge.toml\"\n[[sets]]\ncategory = \"guard\"\ncases = \"cases.jsonl\"\n").unwrap();
    std::fs::write(dir.join("preds.jsonl"), "{\"id\": \"q1\", \"output\": \"2 + 2 = 4\"}\n").unwrap();
    let (suite, preds) = (dir.join("judge-suite.toml"), dir.join("preds.jsonl"));
    let allow = ["--allow-judge-endpoint", server.url.as_str(), "--judge-api-key-env", KEY_VAR];
    let judged = |name: &str, key: &str, extra: &[&str]| {
        let args = [
            &["eval", "run", "--suite", suite.to_str().unwrap(), "--predictions", preds.to_str().unwrap(), "--out", dir.to_str().unwrap(), "--name", name],
            extra,
        ]
        .concat();
        std::process::Command::new(env!("CARGO_BIN_EXE_tunelab")).env(KEY_VAR, key).args(&args).output().unwrap()
    };
    // A rubric's judge endpoint is not called unless the user allows it: refused before
    // anything is scored, naming the endpoint.
    let refused = judged("judge-not-allowed", API_KEY, &[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains(&format!("would send outputs to {}", server.url)), "{err}");
    assert!(!dir.join("judge-not-allowed").exists());
    // A rubric may not name the key variable (it would choose which secret is sent where).
    std::fs::write(dir.join("judge.toml"), rubric.replace("model = \"smollm2\"\n", &format!("model = \"smollm2\"\napi_key_env = \"{KEY_VAR}\"\n"))).unwrap();
    let err = String::from_utf8_lossy(&judged("judge-key-in-rubric", API_KEY, &allow).stderr).into_owned();
    assert!(err.contains("`api_key_env` is not read from rubrics"), "{err}");
    std::fs::write(dir.join("judge.toml"), &rubric).unwrap();

    let out = judged("judged", API_KEY, &[&allow[..], &["--allow-errors"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let df = read_results(&dir.join("judged")).unwrap();
    let details: Vec<&str> = df.column("detail").unwrap().str().unwrap().iter().map(Option::unwrap).collect();
    let values: Vec<f64> = df.column("value").unwrap().f64().unwrap().iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    let errors: Vec<bool> = df.column("error").unwrap().bool().unwrap().iter().map(Option::unwrap).collect();
    // The 1–10 judge (SmolLM2-135M, greedy) either gives a score, parsed into value =
    // score / 10, or a reply without one, recorded as an error state that quotes the
    // reply (this small model tends to repeat the prompt) — never a made-up score.
    match details[0].strip_prefix("judge: ").and_then(|d| d.strip_suffix("/10")).and_then(|n| n.parse::<f64>().ok()) {
        Some(parsed) => assert!(!errors[0] && (1.0..=10.0).contains(&parsed) && (values[0] - parsed / 10.0).abs() < 1e-12, "{details:?} {values:?}"),
        None => assert!(errors[0] && values[0].is_nan() && details[0].contains("reply has no 1–10 score: \""), "{details:?}"),
    }
    assert!(details[1].starts_with("output first: ") && [0.0, 0.5, 1.0].contains(&values[1]), "{details:?} {values:?}");

    // A wrong key is found before anything is scored: the judge's endpoint is contacted
    // (and its model checked) when the run starts, and no run directory is written.
    let refused = judged("judge-refused", "wrong-key", &allow);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("401") && err.contains(server.url.as_str()), "{err}");
    assert!(!dir.join("judge-refused").exists());

    // A judge request that fails for one output (longer than the judge's 2048-token
    // context): the run is written with both checks marked as errors (not as 0), and the
    // command fails unless errors are allowed.
    let long_output = "The answer is four. ".repeat(1500);
    std::fs::write(&preds, format!("{{\"id\": \"q1\", \"output\": \"{long_output}\"}}\n")).unwrap();
    let overflow = judged("judge-overflow", API_KEY, &allow);
    let err = String::from_utf8_lossy(&overflow.stderr);
    assert!(!overflow.status.success() && err.contains("2 check(s) could not be computed"), "{err}");
    let df = read_results(&dir.join("judge-overflow")).unwrap();
    let errors: Vec<bool> = df.column("error").unwrap().bool().unwrap().iter().map(Option::unwrap).collect();
    let details: Vec<&str> = df.column("detail").unwrap().str().unwrap().iter().map(Option::unwrap).collect();
    assert_eq!(errors, [true, true]);
    assert!(details.iter().all(|d| d.contains("judge failed") && d.contains("400")), "{details:?}");
    assert!(df.column("case_score").unwrap().f64().unwrap().iter().all(|x| x.is_none_or(f64::is_nan)));
    assert!(judged("judge-overflow-allowed", API_KEY, &[&allow[..], &["--allow-errors"]].concat()).status.success());
}

#[test]
fn a_dead_endpoint_fails_clearly_after_retries() {
    let dir = scratch("http-dead");
    let suite = root().join("rubrics/guard/suite.toml");
    let run = |endpoint: String| {
        let start = Instant::now();
        let out = tunelab(&[
            "eval",
            "run",
            "--suite",
            suite.to_str().unwrap(),
            "--endpoint",
            &endpoint,
            "--api-model",
            "m",
            "--attempts",
            "3",
            "--out",
            dir.to_str().unwrap(),
        ]);
        eprintln!("{endpoint}: failed after {:.2}s", start.elapsed().as_secs_f64());
        out
    };
    // Nothing listens: every attempt is refused.
    let out = run(format!("http://127.0.0.1:{}/v1", free_port()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("gave up after 3 attempts") && err.contains("cannot connect"), "{err}");
    // A listener that drops every connection counts the attempts: exactly three.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let out = run(format!("http://127.0.0.1:{port}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("gave up after 3 attempts"), "{err}");
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "one connection per attempt");
    // Nothing was written for either failed run.
    assert_eq!(std::fs::read_dir(&dir).unwrap().filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count(), 0);
}

#[test]
fn several_models_one_server_serves_by_name_make_one_run_each() {
    // llama.cpp's server with a base and two LoRA adapters by name (as vLLM serves a base and
    // `--lora-modules`): two tunelab adapters exported with `tunelab export gguf-lora`, each
    // applied by the server to the same base GGUF when a request names it.
    let port = free_port();
    let dir = scratch("http-two-models");
    let base = tunelab::Model::load(model_path()).unwrap();
    let mut loras = Vec::new();
    for (seed, name) in [(1, "adapter-a"), (2, "adapter-b")] {
        let set = common::random_adapter(&base.transformer, tunelab::LoraConfig::default(), seed, 0.1);
        let (adapter, gguf) = (dir.join(name), dir.join(format!("{name}.gguf")));
        set.save(&adapter).unwrap();
        let out = tunelab(&[
            "export",
            "gguf-lora",
            "--adapter",
            adapter.to_str().unwrap(),
            "--model",
            model_path().to_str().unwrap(),
            "--out",
            gguf.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        loras.push((name, gguf));
    }
    let model = |alias: &str, lora: Option<&std::path::Path>| {
        let mut m = serde_json::json!({"model": model_path(), "model_alias": alias, "chat_format": "chatml", "n_ctx": 2048, "n_threads": 2});
        if let Some(l) = lora {
            m["lora_path"] = l.to_str().unwrap().into();
        }
        m
    };
    let models = [model("base-model", None), model(loras[0].0, Some(&loras[0].1)), model(loras[1].0, Some(&loras[1].1))];
    let config = serde_json::json!({"host": "127.0.0.1", "port": port, "models": models});
    std::fs::write(dir.join("server.json"), config.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = Command::new(python())
        .args(["-m", "llama_cpp.server", "--config_file", dir.join("server.json").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = wait_until_serving(Server { child, url: format!("http://127.0.0.1:{port}") }, port, "adapter-a", None);
    let suite = root().join("rubrics/guard/suite.toml");
    let out = tunelab(&[
        "eval",
        "run",
        "--suite",
        suite.to_str().unwrap(),
        "--endpoint",
        &server.url,
        "--api-model",
        "base-model",
        "--api-model",
        "adapter-a",
        "--api-model",
        "adapter-b",
        "--limit",
        "2",
        "--max-tokens",
        "16",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "served",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut outputs = Vec::new();
    for (run, model) in [("served-base-model", "base-model"), ("served-adapter-a", "adapter-a"), ("served-adapter-b", "adapter-b")] {
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(run).join("run.json")).unwrap()).unwrap();
        assert_eq!(record["backend"]["model"], model, "{run}");
        let results = read_results(&dir.join(run)).unwrap();
        assert!(results.height() > 0);
        let texts: Vec<String> = results.column("output").unwrap().str().unwrap().iter().map(|s| s.unwrap_or_default().to_string()).collect();
        outputs.push(texts);
    }
    // Each name served its own weights: the adapters' answers differ from the base's and
    // from each other's.
    assert_ne!(outputs[0], outputs[1], "adapter-a answered as the base");
    assert_ne!(outputs[0], outputs[2], "adapter-b answered as the base");
    assert_ne!(outputs[1], outputs[2], "the two adapters answered alike");
    let twice = tunelab(&[
        "eval",
        "run",
        "--suite",
        suite.to_str().unwrap(),
        "--endpoint",
        &server.url,
        "--api-model",
        "adapter-a",
        "--api-model",
        "adapter-a",
        "--name",
        "x",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(!twice.status.success() && String::from_utf8_lossy(&twice.stderr).contains("a second time"));
}
