//! End to end on the real SmolLM2: `tunelab train` on the demo data (loss falls, held-out
//! loss reported, PEFT files written), a second process resuming from a checkpoint
//! continues the same loss curve, Ctrl-C checkpoints, NaN stops with the step named,
//! invalid data is refused unless skipped, and the adapter changes the model.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{model_path, root};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tunelab-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tunelab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tunelab")).args(args).output().expect("run tunelab")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "tunelab failed ({:?}):\n{stderr}", out.status);
    String::from_utf8_lossy(&out.stdout).to_string() + &stderr
}

fn log(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("trainer_log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn demo(name: &str) -> String {
    root().join("examples/security-audit").join(name).display().to_string()
}

/// Common arguments: small batches and a short cutoff keep each step a few seconds.
fn train_args<'a>(model: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["train", "--model", model, "--data", data, "--out", out, "--batch-size", "2", "--cutoff", "384", "--lr", "5e-4", "--seed", "1"]
}

#[test]
fn training_lowers_the_loss_and_a_resumed_process_continues_the_same_curve() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let (train, heldout) = (demo("train.jsonl"), demo("heldout.jsonl"));
    let a = scratch("run-a");
    let a_str = a.to_str().unwrap();
    let mut args = train_args(m, &train, a_str);
    args.extend(["--eval-data", &heldout, "--max-steps", "24", "--save-steps", "12", "--eval-steps", "12"]);
    let out = ok(&tunelab(&args));
    assert!(out.contains("adapter:"), "{out}");

    // The log: LLaMA-Factory's fields, every step, held-out loss at 12 and 24.
    let records = log(&a);
    assert_eq!(records.len(), 24);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["current_steps"], i + 1);
        assert_eq!(r["total_steps"], 24);
        for key in ["loss", "lr", "epoch", "percentage", "elapsed_time", "remaining_time"] {
            assert!(r.get(key).is_some(), "step {}: no {key}", i + 1);
        }
    }
    let evals: Vec<f64> = records.iter().filter_map(|r| r["eval_loss"].as_f64()).collect();
    assert_eq!(evals.len(), 2, "held-out loss at steps 12 and 24");
    let loss: Vec<f64> = records.iter().map(|r| r["loss"].as_f64().unwrap()).collect();
    let first = loss[..6].iter().sum::<f64>() / 6.0;
    let last = loss[18..].iter().sum::<f64>() / 6.0;
    eprintln!("loss: first six {first:.4}, last six {last:.4}; eval {evals:?}");
    assert!(last < first * 0.8, "training loss did not fall clearly: {first:.4} → {last:.4}");
    assert!(evals[1] < evals[0] + 0.05, "held-out loss went up: {evals:?}");

    // Output directory contents.
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "trainer_log.jsonl",
        "training_loss.svg",
        "train_config.json",
        "checkpoint-12/adapter_model.safetensors",
        "checkpoint-12/optimizer.safetensors",
        "checkpoint-12/trainer_state.json",
    ] {
        assert!(a.join(f).exists(), "missing {f}");
    }
    let tc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("train_config.json")).unwrap()).unwrap();
    assert_eq!(tc["lora"]["r"], 8);
    assert_eq!(tc["learning_rate"], 5e-4);
    assert_eq!(tc["train_data_sha256"].as_str().unwrap().len(), 64);
    assert_eq!((tc["device"].as_str(), tc["base_dtype"].as_str()), (Some("cpu"), Some("f32")));
    assert!(std::fs::read_to_string(a.join("training_loss.svg")).unwrap().contains("<polyline"));

    // A second process resumes from the step-12 checkpoint and follows the same curve.
    let b = scratch("run-b");
    copy_dir(&a.join("checkpoint-12"), &b.join("checkpoint-12"));
    let b_str = b.to_str().unwrap();
    let mut args = train_args(m, &train, b_str);
    args.extend(["--eval-data", &heldout, "--max-steps", "24", "--save-steps", "12", "--eval-steps", "12", "--resume"]);
    ok(&tunelab(&args));
    let resumed = log(&b);
    assert_eq!(resumed.first().unwrap()["current_steps"], 13, "resumed run starts after the checkpoint");
    assert_eq!(resumed.len(), 12);
    for r in &resumed {
        let step = r["current_steps"].as_u64().unwrap() as usize;
        let (x, y) = (r["loss"].as_f64().unwrap(), loss[step - 1]);
        assert!((x - y).abs() < 2e-3, "step {step}: resumed loss {x} vs uninterrupted {y}");
    }

    // The saved adapter reloads and changes the model's logits.
    let base = tunelab::Model::load(&model).unwrap();
    let adapter = tunelab::AdapterSet::load(&a, &base.transformer).unwrap();
    let prompt = base.template.render_prompt(None, "Review this Flask code: @app.route('/') def i(): return eval(request.args['q'])").unwrap();
    let ids = base.tokenizer.encode(&prompt).unwrap();
    let input = candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let before = base.transformer.forward(&input).unwrap();
    let after = adapter.apply(&base.transformer).forward(&input).unwrap();
    let d = (before - after).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d > 0.1, "adapter barely changes the logits ({d})");

    // And the CLI applies it: its greedy answer differs from the base's and equals the
    // library's answer with the adapter folded into the weights.
    let flask = "Review this Flask code for vulnerabilities:\nimport os\n@app.route('/run')\ndef run():\n    os.system(request.args['cmd'])";
    let answer = |out: Output| {
        ok(&out);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let without = answer(tunelab(&["generate", "--model", m, "--prompt", flask, "--max-tokens", "40"]));
    let with = answer(tunelab(&["generate", "--model", m, "--adapter", a_str, "--prompt", flask, "--max-tokens", "40"]));
    assert_ne!(with.trim(), without.trim(), "the adapter did not change the CLI's answer");
    let merged = adapter.merged(&base.transformer).unwrap();
    let want = tunelab::Generator::new(&merged, &base.tokenizer)
        .generate(&base.template.render_prompt(None, flask).unwrap(), &tunelab::GenerationConfig::greedy(40), |_| {})
        .unwrap();
    assert_eq!(with.trim_end(), want.text.trim_end(), "the CLI's adapter answer is not the adapted model's");
}

/// The low-memory mode (layers recomputed in the backward pass) follows the same loss curve
/// as the default path; both report their memory plan, peak RSS per step in the log and per
/// epoch on the console; and a run that would not fit is refused before anything is written.
#[test]
fn low_memory_mode_follows_the_same_curve_and_memory_is_reported_and_bounded() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let train = demo("train.jsonl");
    let curve = |tag: &str, extra: &[&str]| -> (Vec<f64>, Vec<serde_json::Value>, String) {
        let dir = scratch(tag);
        let d = dir.to_str().unwrap();
        let mut args = train_args(m, &train, d);
        args.extend(["--max-steps", "4"]);
        args.extend(extra);
        let out = ok(&tunelab(&args));
        let records = log(&dir);
        (records.iter().map(|r| r["loss"].as_f64().unwrap()).collect(), records, out)
    };
    let (plain, records, out) = curve("mem-plain", &[]);
    let (low, _, low_out) = curve("mem-low", &["--low-memory"]);
    assert_eq!(plain.len(), 4);
    for (step, (a, b)) in plain.iter().zip(&low).enumerate() {
        assert!((a - b).abs() < 1e-3, "step {}: low-memory loss {b} vs default {a}", step + 1);
    }
    assert!(out.contains("memory: about") && out.contains("MiB available"), "{out}");
    assert!(low_out.contains("low-memory mode"), "{low_out}");
    assert!(out.contains("epoch 1 done: peak RSS"), "{out}");
    for r in &records {
        let rss = r["peak_rss_mb"].as_u64().expect("peak_rss_mb on every step");
        assert!(rss > 100, "implausible peak RSS {rss} MB");
    }

    // A budget too small to train in is refused, naming the knobs, and writes nothing.
    let dir = scratch("mem-refused");
    let d = dir.join("out");
    let d = d.to_str().unwrap();
    let mut args = train_args(m, &train, d);
    args.extend(["--max-steps", "1", "--memory-budget", "50"]);
    let refused = tunelab(&args);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for needle in ["50 MiB", "batch size 2", "cutoff 384", "--batch-size", "--cutoff", "--low-memory"] {
        assert!(stderr.contains(needle), "refusal does not mention {needle:?}: {stderr}");
    }
    assert!(!Path::new(d).join("trainer_log.jsonl").exists(), "a refused run wrote a log");
    // The low-memory estimate is far smaller, so the same budget can be enough for it.
    let mut args = train_args(m, &train, d);
    args.extend(["--max-steps", "1", "--memory-budget", "600", "--low-memory"]);
    ok(&tunelab(&args));
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let train = demo("train.jsonl");
    let dir = scratch("ctrlc");
    let d = dir.to_str().unwrap();
    let mut args = vec!["train", "--model", m, "--data", &train, "--out", d, "--batch-size", "1", "--cutoff", "256", "--lr", "5e-4", "--max-steps", "8"];
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_tunelab")).args(&args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let log_path = dir.join("trainer_log.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&log_path).map_or(0, |t| t.lines().count()) < 2 {
        if start.elapsed().as_secs() > 300 || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("training did not start: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("interrupted; resume with --resume"), "{stdout}");
    let steps_done = log(&dir).len();
    assert!(steps_done < 8 && dir.join(format!("checkpoint-{steps_done}/trainer_state.json")).exists(), "no checkpoint at step {steps_done}");

    args.push("--resume");
    ok(&tunelab(&args));
    let steps: Vec<u64> = log(&dir).iter().map(|r| r["current_steps"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

#[test]
fn a_nan_loss_stops_training_naming_the_step() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let train = demo("train.jsonl");
    let dir = scratch("nan");
    let d = dir.to_str().unwrap();
    let args = [
        "train",
        "--model",
        m,
        "--data",
        &train,
        "--out",
        d,
        "--batch-size",
        "1",
        "--cutoff",
        "128",
        "--lr",
        "1e30",
        "--max-grad-norm",
        "0",
        "--warmup-ratio",
        "0",
        "--max-steps",
        "20",
        "--save-steps",
        "1",
    ];
    let out = tunelab(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exploding run did not fail");
    assert!(stderr.contains("training diverged at step"), "{stderr}");
    assert!(stderr.contains("the last good state is saved in"), "{stderr}");
    // What it names is a state to resume from: its weights are all numbers.
    let saved = stderr.split("the last good state is saved in ").nth(1).and_then(|t| t.lines().next()).unwrap().trim();
    let base = tunelab::Model::load(&model).unwrap();
    tunelab::AdapterSet::load(Path::new(saved), &base.transformer).unwrap_or_else(|e| panic!("the named good state does not load: {e}"));
    let records = log(&dir);
    assert!(records.iter().all(|r| r["loss"].as_f64().is_some_and(f64::is_finite)), "a non-finite loss was logged");
}

#[test]
fn invalid_data_is_refused_unless_skipped_and_then_counted() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let dir = scratch("invalid");
    let data = dir.join("d.jsonl");
    let good: String = (0..6).map(|i| format!("{{\"instruction\": \"Add {i} and {i}.\", \"output\": \"{}\"}}\n", 2 * i)).collect();
    std::fs::write(&data, format!("{good}{{\"instruction\": \"no output\"}}\n")).unwrap();
    let (d, out_dir) = (data.to_str().unwrap(), dir.join("out"));
    let o = out_dir.to_str().unwrap();

    let check = tunelab(&["data", "check", d, "--no-tokens"]);
    assert!(!check.status.success());
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("d.jsonl:7: error: field `output` missing field"), "{text}");

    let refused = tunelab(&["train", "--model", m, "--data", d, "--out", o, "--max-steps", "1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("1 invalid record(s)") && stderr.contains("d.jsonl:7"), "{stderr}");

    let out = ok(&tunelab(&["train", "--model", m, "--data", d, "--out", o, "--max-steps", "1", "--skip-invalid"]));
    assert!(out.contains("skipped 1 invalid record(s)"), "{out}");

    let json = tunelab(&["data", "check", &demo("train.jsonl"), "--against", &demo("heldout.jsonl"), "--json", "--model", m]);
    assert!(json.status.success(), "the demo data must be clean: {}", String::from_utf8_lossy(&json.stdout));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["near_duplicates"], 0);
    assert_eq!(report["eval_overlap"], 0);
    assert!(report["prompt_tokens"]["max"].as_u64().unwrap() > 0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `--resume` never continues another run: a checkpoint past this run's planned steps is
/// refused, and a run started without `--resume` removes the folder's earlier checkpoints.
#[test]
fn resume_continues_only_this_run_s_checkpoints() {
    let model = model_path();
    let m = model.to_str().unwrap();
    let train = demo("train.jsonl");
    let dir = scratch("resume-other");
    let d = dir.to_str().unwrap();
    let run = |steps: &str, extra: &[&str]| {
        let base = ["train", "--model", m, "--data", &train, "--out", d, "--batch-size", "1", "--cutoff", "128", "--max-steps", steps, "--save-steps", "2"];
        tunelab(&[&base[..], extra].concat())
    };
    // --resume with nothing to resume says so (and trains from step 0).
    let first = ok(&run("4", &["--resume"]));
    assert!(first.contains("--resume found no checkpoint"), "{first}");
    assert!(dir.join("checkpoint-2").exists());
    let refused = run("1", &["--resume"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("past this run's 1 planned steps"), "{stderr}");
    ok(&run("1", &[]));
    assert!(!dir.join("checkpoint-2").exists(), "a fresh run left the earlier run's checkpoint behind");
}
