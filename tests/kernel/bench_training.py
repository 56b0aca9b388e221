"""Training speed in the kernel's code-running process against `tunelab train` (not a test):
the same data, settings and seed (the quickstart notebook's: batch 2, cutoff 384, lr 5e-4),
so both runs see the same batches. Prints each run's tokens/s per step, the medians of the
steps after the first (which includes warm-up), peak RSS, and the kernel/CLI ratio.

Run: python tests/kernel/bench_training.py [--steps N]   (with the `tunelab` kernelspec
installed and the CLI built; the first kernel start compiles the library, minutes).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import jupyter_client

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/tunelab/target"))
DATA = ROOT / "examples/security-audit/train.jsonl"
SETTINGS = {"lr": 5e-4, "batch": 2, "cutoff": 384}


def throughput(log: Path):
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "throughput" in r and r.get("throughput") is not None]
    return [r["throughput"] for r in steps], max((r.get("peak_rss_mb") or 0) for r in steps)


def in_kernel(steps: int, out: Path):
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="tunelab", startup_timeout=120)
    try:
        code = f"""
use tunelab::prelude::*;
let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
let train = Dataset::load({json.dumps(str(DATA))})?;
let config = TrainConfig {{ learning_rate: {SETTINGS['lr']}, max_steps: {steps}, batch_size: {SETTINGS['batch']}, cutoff_len: {SETTINGS['cutoff']}, ..TrainConfig::default() }};
let outcome = Trainer::new(&model, config, {json.dumps(str(out))}).run(&train, None, |_e: &TrainEvent| {{}})?;
"""
        errors = []
        reply = kc.execute_interactive(code, timeout=3600, output_hook=lambda m: errors.append(m["content"]) if m["msg_type"] == "error" else None)
        if reply["content"]["status"] != "ok":
            raise SystemExit(f"the training cell failed: {reply['content']} {errors}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return throughput(out / "trainer_log.jsonl")


def in_cli(steps: int, out: Path):
    cmd = [str(TARGET / "release/tunelab"), "train", "--data", str(DATA), "--out", str(out), "--lr", str(SETTINGS["lr"]),
           "--max-steps", str(steps), "--batch-size", str(SETTINGS["batch"]), "--cutoff", str(SETTINGS["cutoff"])]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return throughput(out / "trainer_log.jsonl")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, run in (("kernel", in_kernel), ("cli", in_cli)):
            per_step, rss = run(args.steps, Path(tmp) / name)
            median = statistics.median(per_step[1:] or per_step)
            results[name] = median
            print(json.dumps({"run": name, "tokens_per_s_per_step": per_step, "median_after_first": median, "peak_rss_mb": rss}))
        print(json.dumps({"kernel_over_cli": round(results["kernel"] / results["cli"], 3), **SETTINGS, "steps": args.steps}))


if __name__ == "__main__":
    main()
