//! Helpers shared by the CLI's end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("evalsuite/ has a parent").to_path_buf()
}

/// The fetched SmolLM2 GGUF; fails loudly when missing (these tests never skip).
pub fn model_path() -> PathBuf {
    let dir = std::env::var_os("TUNELAB_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is missing: run scripts/fetch-models (this test never skips)", path.display());
    path
}

/// The fetched all-MiniLM-L6-v2 directory; fails loudly when missing.
pub fn minilm_path() -> PathBuf {
    let dir = std::env::var_os("TUNELAB_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let path = dir.join("all-MiniLM-L6-v2");
    assert!(path.join("model.safetensors").exists(), "{} is missing: run scripts/fetch-models (this test never skips)", path.display());
    path
}

/// A fresh scratch directory under the target directory's tmp.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the `tunelab` binary.
pub fn tunelab(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tunelab")).args(args).output().expect("run tunelab")
}

/// Runs the `tunelab` binary, which must succeed; returns its stdout then stderr.
pub fn run_ok(args: &[&str]) -> String {
    let out = tunelab(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tunelab {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}

/// The `eval run` arguments that score `predictions` on `suite` into `out/name`.
pub fn predictions_run_args(suite: &std::path::Path, predictions: &std::path::Path, out: &std::path::Path, name: &str) -> Vec<String> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    ["eval", "run", "--suite", &path(suite), "--predictions", &path(predictions), "--out", &path(out), "--name", name].iter().map(|s| s.to_string()).collect()
}

/// Scores `predictions` on `suite` into `out/name` with the `tunelab` binary; panics with its
/// stderr when it fails.
pub fn score_predictions(suite: &std::path::Path, predictions: &std::path::Path, out: &std::path::Path, name: &str) {
    let args = predictions_run_args(suite, predictions, out, name);
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_tunelab")).args(&args).output().expect("run tunelab");
    assert!(run.status.success(), "tunelab {args:?} failed:\n{}", String::from_utf8_lossy(&run.stderr));
}

/// A suite of `n` cases (alternately `seen` and `guard`) scored by a length check, and one
/// predictions run per `(name, answer)` in `runs`, written under `dir`; returns the run
/// directories. `answer(i)` is the run's output for case `i`.
pub fn review_runs(dir: &std::path::Path, n: usize, runs: &[(&str, &dyn Fn(usize) -> String)]) -> Vec<PathBuf> {
    std::fs::write(dir.join("rubric.toml"), "name = \"r\"\n[[checks]]\nname = \"len\"\nscorer = \"length\"\nmin_chars = 1\n").unwrap();
    for category in ["seen", "guard"] {
        let cases: String = (0..n)
            .filter(|i| (i % 2 == 0) == (category == "seen"))
            .map(|i| {
                serde_json::json!({"id": format!("c{i}"), "instruction": format!("Question {i}: explain item {i}."), "output": format!("reference {i}")})
                    .to_string()
                    + "\n"
            })
            .collect();
        std::fs::write(dir.join(format!("{category}.jsonl")), cases).unwrap();
    }
    std::fs::write(
        dir.join("suite.toml"),
        "name = \"review\"\nrubric = \"rubric.toml\"\n[[sets]]\ncategory = \"seen\"\ncases = \"seen.jsonl\"\n[[sets]]\ncategory = \"guard\"\ncases = \"guard.jsonl\"\n",
    )
    .unwrap();
    runs.iter()
        .map(|(name, answer)| {
            let preds: String = (0..n).map(|i| serde_json::json!({"id": format!("c{i}"), "output": answer(i)}).to_string() + "\n").collect();
            let file = dir.join(format!("{name}.jsonl"));
            std::fs::write(&file, preds).unwrap();
            score_predictions(&dir.join("suite.toml"), &file, dir, name);
            dir.join(name)
        })
        .collect()
}

/// `tunelab review invite` for `reviewer`; returns the token from the printed link.
pub fn invite(study: &std::path::Path, reviewer: &str) -> String {
    let out = tunelab(&["review", "invite", study.to_str().unwrap(), "--reviewer", reviewer]);
    assert!(out.status.success(), "invite failed: {}", String::from_utf8_lossy(&out.stderr));
    let link = String::from_utf8(out.stdout).unwrap();
    link.trim().rsplit_once("#t=").expect("a link with a token").1.to_string()
}

/// A running `tunelab serve`, killed when dropped.
pub struct Server {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Server {
    /// Starts `tunelab serve` with `args` (and `--addr` unless given) and waits for its
    /// "serving on" line.
    pub fn start(args: &[&str], admin_token: Option<&str>) -> Self {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tunelab"));
        cmd.arg("serve").args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::inherit());
        if !args.contains(&"--addr") {
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
        match admin_token {
            Some(t) => cmd.env("TUNELAB_ADMIN_TOKEN", t),
            None => cmd.env_remove("TUNELAB_ADMIN_TOKEN"),
        };
        let mut child = cmd.spawn().expect("start tunelab serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("read the serve line");
        let base = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no address in {line:?}")).to_string();
        Self { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tunelab review new --runs RUNS… EXTRA… --out study`; returns what it printed, panics
/// with its stderr when it fails.
pub fn new_study(runs: &[PathBuf], study: &std::path::Path, extra: &[&str]) -> String {
    let mut args: Vec<&str> = vec!["review", "new", "--runs"];
    args.extend(runs.iter().map(|r| r.to_str().unwrap()));
    args.extend(extra);
    args.extend(["--out", study.to_str().unwrap()]);
    let out = tunelab(&args);
    assert!(out.status.success(), "tunelab {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A LoRA adapter on `model` (settings `config`, A initialised from `seed`) whose B matrices
/// are drawn with standard deviation `std`: PEFT's zero B would leave every output unchanged.
pub fn random_adapter(model: &tunelab::Transformer, config: tunelab::LoraConfig, seed: u64, std: f32) -> tunelab::AdapterSet {
    let set = tunelab::AdapterSet::new(model, config, seed).unwrap();
    // Drawn from `seed` (candle's CPU `randn` is not seedable), so every run of a test gets
    // the same adapter and what it changes does not depend on the draw.
    let mut rng = tunelab::splitmix::SplitMix64(seed);
    for var in set.vars() {
        // B is [out, r]; A is [r, in].
        if var.dims()[1] == set.config.r {
            let values: Vec<f32> = (0..var.elem_count()).map(|_| rng.normal() as f32 * std).collect();
            var.set(&candle_core::Tensor::from_vec(values, var.dims(), var.device()).unwrap()).unwrap();
        }
    }
    set
}
