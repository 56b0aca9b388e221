"""Both example notebooks run top to bottom in the tunelab kernel under nbclient (any cell
error fails the test) and show what they promise: HTML tables, an SVG loss chart that
updated live, a loss that fell, and side-by-side generations."""
import copy
import json
import os
import re
from pathlib import Path

import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# The compare-adapters notebook runs the `tunelab` CLI (built by scripts/test before this).
TUNELAB_BIN = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/tunelab/target")) / "release/tunelab"
os.environ.setdefault("TUNELAB_BIN", str(TUNELAB_BIN))


def execute(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb = copy.deepcopy(nb)
    client = nbclient.NotebookClient(nb, kernel_name="tunelab", timeout=1800, startup_timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    if os.environ.get("TUNELAB_STORE_NOTEBOOK_OUTPUTS"):
        nbformat.write(nb, NOTEBOOKS / name)
    return nb


def outputs(nb):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            yield cell, out


def html_of(nb):
    return [out["data"]["text/html"] for _, out in outputs(nb) if "data" in out and "text/html" in out["data"]]


def test_quickstart_notebook():
    nb = execute("quickstart.ipynb")
    html = html_of(nb)
    assert any("<table" in h for h in html), "no HTML table (data report / preview / comparison)"
    assert any("<svg" in h and "<polyline" in h for h in html), "no SVG loss chart"
    assert any(out.get("output_type") == "display_data" and "transient" not in out and "<progress" in out["data"].get("text/html", "")
               for _, out in outputs(nb)), "the live training display is missing"
    text = "".join(out.get("text", "") for _, out in outputs(nb) if out.get("output_type") == "stream")
    m = re.search(r"training loss ([0-9.]+) -> ([0-9.]+)", text)
    assert m, text
    first, last = float(m.group(1)), float(m.group(2))
    assert last < first, f"loss did not fall: {first} -> {last}"
    # Model output is escaped: the comparison table never contains raw tags from generations.
    assert any("adapter" in h and "<th>" in h for h in html)
    print_training_speed(NOTEBOOKS.parent / "runs/notebook-quickstart/trainer_log.jsonl")


def throughputs(log):
    return [json.loads(line)["throughput"] for line in Path(log).read_text().splitlines() if '"throughput"' in line]


def print_training_speed(kernel_log, steps=6):
    """Prints the notebook's training tokens/s (the kernel's code-running process) beside
    `tunelab train` from the CLI on the same data, settings and seed, so on the same batches
    (a figure, not an assertion)."""
    import statistics
    import subprocess
    import tempfile
    kernel = throughputs(kernel_log)[:steps]
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([TUNELAB_BIN, "train", "--data", str(NOTEBOOKS.parent / "examples/security-audit/train.jsonl"), "--out", out,
                        "--lr", "5e-4", "--max-steps", str(steps), "--batch-size", "2", "--cutoff", "384"], check=True, stdout=subprocess.DEVNULL)
        cli = throughputs(Path(out) / "trainer_log.jsonl")
    k, c = statistics.median(kernel[1:]), statistics.median(cli[1:])
    print(f"\ntraining tokens/s, steps 2-{steps} (median): notebook kernel {k:.1f}, tunelab train {c:.1f}, ratio {k / c:.2f}")


def test_compare_adapters_notebook():
    nb = execute("compare-adapters.ipynb")
    html = html_of(nb)
    assert sum("<svg" in h for h in html) >= 2, "each training shows its chart"
    table = [h for h in html if "A: r4 q,v" in h]
    assert table and "B: r8 all" in table[0]
    text = "".join(out.get("text", "") for _, out in outputs(nb) if out.get("output_type") == "stream")
    assert re.search(r"A: \d+ parameters, B: \d+ parameters", text), text
    assert re.search(r"\d+ of 3 prompts give different answers", text), text
    # It ends with the two suite runs compared: the report's static overview inline, with
    # verdicts, and the path of the full report.
    overview = [h for h in html if "tunelab-overview" in h]
    assert overview, "the comparison overview is not shown"
    assert "adapter-b vs adapter-a" in overview[-1] and "Forgetting" in overview[-1] and "report.html" in overview[-1]
    assert "<script" not in overview[-1]
    assert (NOTEBOOKS.parent / "runs/notebook-eval/report.html").is_file()
