//! Running the reference scripts (`shared/bench/*.py`) and tunelab's own worker processes,
//! each as a child whose last stdout line is one JSON object; Python children report their
//! peak RSS through a small wrapper.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use super::ReferenceArgs;

/// The environment variable through which [`References::run_with_lora`] hands the wrapper
/// a GGUF LoRA file.
const LORA_ENV: &str = "TUNELAB_REFERENCE_LLAMA_LORA";

/// Runs `script` under the wrapper that appends `peak_rss_mb` to its JSON line. With
/// `TUNELAB_REFERENCE_LLAMA_LORA` set, every `llama_cpp.Llama` the script creates loads that
/// GGUF LoRA file (`lora_path`), so the unchanged reference script measures llama.cpp with
/// the same adapter; llama-cpp-python raises when the file does not load.
const RSS_WRAPPER: &str = r#"
import json, os, resource, runpy, sys, io, contextlib
script, args = sys.argv[1], sys.argv[2:]
sys.argv = [script] + args
lora = os.environ.get("TUNELAB_REFERENCE_LLAMA_LORA")
if lora:
    import llama_cpp
    class _LlamaWithLora(llama_cpp.Llama):
        def __init__(self, *a, **k):
            k["lora_path"] = lora
            super().__init__(*a, **k)
    llama_cpp.Llama = _LlamaWithLora
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    runpy.run_path(script, run_name="__main__")
line = json.loads(buf.getvalue().strip().splitlines()[-1])
def peak_kb():
    # VmHWM belongs to this program's own address space; ru_maxrss would carry over the
    # peak of the tunelab process that forked it (Linux keeps it across execve).
    try:
        for l in open("/proc/self/status"):
            if l.startswith("VmHWM:"):
                return int(l.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
line["peak_rss_mb"] = round(peak_kb() / 1024)
print(json.dumps(line))
"#;

/// A Python interpreter and the directory of the reference scripts, checked to be usable.
pub struct References {
    python: PathBuf,
    dir: PathBuf,
}

impl References {
    /// Finds Python and the scripts; `None` when `--reference` was not given.
    pub fn find(args: &ReferenceArgs) -> anyhow::Result<Option<Self>> {
        if !args.reference {
            return Ok(None);
        }
        let python = args.python.clone().or_else(|| std::env::var_os("TUNELAB_REF_PYTHON").map(PathBuf::from)).unwrap_or_else(default_python);
        let dir = match args.reference_dir.clone().or_else(|| std::env::var_os("TUNELAB_SHARED_BENCH").map(PathBuf::from)) {
            Some(d) => d,
            None => find_upwards(Path::new("shared/bench")).context("no shared/bench directory above the current directory; pass --reference-dir")?,
        };
        if !dir.join("torch_lora_reference.py").is_file() {
            bail!("{}: torch_lora_reference.py is not there; pass --reference-dir", dir.display());
        }
        Ok(Some(Self { python, dir }))
    }

    /// Python modules from `modules` that the reference Python cannot import.
    pub fn missing_modules(&self, modules: &[&str]) -> anyhow::Result<Vec<String>> {
        let out = Command::new(&self.python)
            .arg("-c")
            .arg("import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))")
            .args(modules)
            .output()
            .with_context(|| format!("running {}", self.python.display()))?;
        if !out.status.success() {
            bail!("{} failed: {}", self.python.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect())
    }

    /// Runs reference script `name` with `args` and returns its JSON line (with peak RSS).
    pub fn run(&self, name: &str, args: &[String]) -> anyhow::Result<Value> {
        self.run_script(name, args, None)
    }

    /// Runs llama.cpp reference script `name` with every model it loads carrying the GGUF
    /// LoRA adapter `lora` (as `tunelab export gguf-lora` writes it).
    pub fn run_with_lora(&self, name: &str, args: &[String], lora: &Path) -> anyhow::Result<Value> {
        self.run_script(name, args, Some(lora))
    }

    fn run_script(&self, name: &str, args: &[String], lora: Option<&Path>) -> anyhow::Result<Value> {
        let script = self.dir.join(name);
        let mut cmd = Command::new(&self.python);
        cmd.arg("-c").arg(RSS_WRAPPER).arg(&script).args(args);
        let what = match lora {
            Some(lora) => {
                cmd.env(LORA_ENV, lora);
                format!("{} with LoRA {}", script.display(), lora.display())
            }
            None => {
                cmd.env_remove(LORA_ENV);
                script.display().to_string()
            }
        };
        last_json_line(cmd, &what)
    }

    /// The message for modules the reference needs but Python lacks.
    pub fn missing_message(&self, missing: &[String]) -> String {
        format!("reference skipped: {} cannot import {} (pip install {})", self.python.display(), missing.join(", "), missing.join(" "))
    }
}

fn default_python() -> PathBuf {
    let venv = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tunelab/refvenv/bin/python"));
    venv.filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("python3"))
}

/// `rel` under the current directory or the nearest parent that has it.
fn find_upwards(rel: &Path) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().map(|d| d.join(rel)).find(|p| p.is_dir())
}

/// Runs `tunelab bench worker …` in a child process and returns its JSON line.
pub fn run_worker(args: &[String]) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("locating the tunelab binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench").arg("worker").args(args);
    last_json_line(cmd, &format!("tunelab bench worker {}", args.join(" ")))
}

/// Runs `cmd` (stderr passed through) and parses the last line of its stdout as JSON.
fn last_json_line(mut cmd: Command, what: &str) -> anyhow::Result<Value> {
    let out = cmd.stderr(std::process::Stdio::inherit()).output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).with_context(|| format!("{what} printed nothing"))?;
    serde_json::from_str(line).with_context(|| format!("{what} printed a line that is not JSON: {line}"))
}
