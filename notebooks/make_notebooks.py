"""Writes the example notebooks (source only); run them with nbclient to store outputs:
python notebooks/make_notebooks.py && jupyter-execute / tests/notebooks run them."""
import nbformat as nbf
from pathlib import Path

HERE = Path(__file__).parent
KERNEL = {"display_name": "tunelab (Rust)", "language": "rust", "name": "tunelab"}


def notebook(cells):
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "rust", "file_extension": ".rs"}
    nb.cells = [nbf.v4.new_markdown_cell(c[3:]) if c.startswith("md:") else nbf.v4.new_code_cell(c) for c in cells]
    return nb


quickstart = notebook([
    "md:# tunelab quickstart: the four steps\n\nDecide → prepare data → train a LoRA adapter → evaluate blind. "
    "This notebook walks them on the demo task (Flask security-audit reports) with SmolLM2-135M-Instruct. "
    "The tunelab library is preloaded: no `:dep` line needed.",
    "use tunelab::prelude::*;\nlet model = Model::load(\"SmolLM2-135M-Instruct.Q4_1.gguf\")?;\nprintln!(\"{:?}\", model.config());",
    "md:## 1. Check the data\nEvery problem is located by file and line; the held-out file must not overlap the training file.",
    "let train = Dataset::load(\"../examples/security-audit/train.jsonl\")?;\n"
    "let heldout = Dataset::load(\"../examples/security-audit/heldout.jsonl\")?;\n"
    "let report = ValidationReport::build(&train, Some(&heldout), Some((&model.tokenizer, &model.template)), &Default::default())?;\n"
    "&report",
    "&train",
    "md:## 2. Look at the base model's answers\nOne prompt per test kind: seen in training, held-out, out-of-domain, and a general-capability guard question.",
    "let ood = Dataset::load(\"../examples/security-audit/ood.jsonl\")?;\n"
    "let prompts: Vec<(String, String)> = vec![\n"
    "    (\"seen\".into(), train.examples[0].prompt_text()),\n"
    "    (\"heldout\".into(), heldout.examples[0].prompt_text()),\n"
    "    (\"ood\".into(), ood.examples[0].prompt_text()),\n"
    "    (\"guard\".into(), \"Explain photosynthesis in two sentences.\".to_string()),\n"
    "];\n"
    "let base_answers = compare(&model.tokenizer, &model.template, &[(\"base\", &model.transformer)], &prompts, 96)?;\n"
    "&base_answers",
    "md:## 3. Train a LoRA adapter, watching the loss\nRank 8, alpha 16, all linear projections. "
    "This quick run uses 24 steps at lr 5e-4 so it finishes in about a minute on 2 cores (at the CLI's speed: cells and the "
    "library are compiled optimized, without overflow checks); the method's defaults "
    "(`TrainConfig::default()`: 3 epochs at 5e-5) are what a real run uses. The chart redraws while the cell runs; "
    "interrupting the kernel saves a checkpoint and `.resume(true)` continues from it.",
    "let config = TrainConfig { learning_rate: 5e-4, max_steps: 24, batch_size: 2, cutoff_len: 384, eval_steps: 12, save_steps: 12, ..TrainConfig::default() };\n"
    "let outcome = Trainer::new(&model, config, \"../runs/notebook-quickstart\")\n"
    "    .run(&train, Some(&heldout), live_training(2))?;\n"
    "&outcome",
    "md:## 4. Compare base and adapter\nSame prompts, greedy decoding, side by side (≠ marks rows that differ). "
    "For the full blind evaluation with statistics, use `tunelab eval` on the saved adapter.",
    "let adapted = outcome.adapter.apply(&model.transformer);\n"
    "let comparison = compare(&model.tokenizer, &model.template, &[(\"base\", &model.transformer), (\"adapter\", &adapted)], &prompts, 96)?;\n"
    "&comparison",
    "let losses = outcome.losses();\n"
    "println!(\"training loss {:.4} -> {:.4}; held-out {:?}\", losses[0].1, losses.last().unwrap().1, outcome.eval_losses());\n"
    "println!(\"adapter saved in {} (PEFT format)\", outcome.out_dir.display());",
])

compare_adapters = notebook([
    "md:# Compare two adapters on one base\nTrain two small adapters with different shapes (rank 4 on q/v vs rank 8 on all projections), "
    "load both from disk onto one base model, and see where their answers differ.",
    "use tunelab::prelude::*;\nuse tunelab::lora::LoraConfig;\n"
    "let model = Model::load(\"SmolLM2-135M-Instruct.Q4_1.gguf\")?;\n"
    "let train = Dataset::load(\"../examples/security-audit/train.jsonl\")?;\n"
    "let heldout = Dataset::load(\"../examples/security-audit/heldout.jsonl\")?;",
    "let small = LoraConfig { r: 4, lora_alpha: 8.0, ..LoraConfig::default() }.with_targets(&[\"q_proj\".into(), \"v_proj\".into()])?;\n"
    "fn quick(lora: LoraConfig) -> TrainConfig {\n    TrainConfig { lora, learning_rate: 5e-4, max_steps: 10, batch_size: 2, cutoff_len: 384, ..TrainConfig::default() }\n}\n"
    "let a = Trainer::new(&model, quick(small), \"../runs/notebook-adapter-a\").run(&train, None, live_training(2))?;\n"
    "&a",
    "let b = Trainer::new(&model, quick(LoraConfig::default()), \"../runs/notebook-adapter-b\").run(&train, None, live_training(2))?;\n"
    "&b",
    "md:Both adapters are reloaded from their PEFT files (checked against the base) and share the base weights.",
    "let adapter_a = AdapterSet::load(std::path::Path::new(\"../runs/notebook-adapter-a\"), &model.transformer)?;\n"
    "let adapter_b = AdapterSet::load(std::path::Path::new(\"../runs/notebook-adapter-b\"), &model.transformer)?;\n"
    "println!(\"A: {} parameters, B: {} parameters\", adapter_a.num_parameters(), adapter_b.num_parameters());\n"
    "let (ma, mb) = (adapter_a.apply(&model.transformer), adapter_b.apply(&model.transformer));\n"
    "let prompts: Vec<(String, String)> = heldout.examples.iter().take(3).enumerate().map(|(i, e)| (format!(\"heldout {i}\"), e.prompt_text())).collect();\n"
    "let side_by_side = compare(&model.tokenizer, &model.template, &[(\"base\", &model.transformer), (\"A: r4 q,v\", &ma), (\"B: r8 all\", &mb)], &prompts, 80)?;\n"
    "&side_by_side",
    "println!(\"{} of {} prompts give different answers\", side_by_side.differing().len(), side_by_side.rows.len());",
    "md:Now blind, on the suite: `tunelab eval run` scores each adapter on a few cases per category (seen, held-out, "
    "out-of-domain, guard), and `tunelab eval report` compares the two stored runs. The overview shows here; the full "
    "report, with every case, is an HTML file (`TUNELAB_BIN` names the `tunelab` binary if it is not on `PATH`).",
    "let tunelab_cli = std::env::var(\"TUNELAB_BIN\").unwrap_or_else(|_| \"tunelab\".to_string());\n"
    "let runs = \"../runs/notebook-eval\";\n"
    "for (name, dir) in [(\"adapter-a\", \"../runs/notebook-adapter-a\"), (\"adapter-b\", \"../runs/notebook-adapter-b\")] {\n"
    "    let status = std::process::Command::new(&tunelab_cli)\n"
    "        .args([\"eval\", \"run\", \"--suite\", \"../examples/security-audit/suite.toml\", \"--model\", \"SmolLM2-135M-Instruct.Q4_1.gguf\",\n"
    "               \"--adapter\", dir, \"--limit\", \"2\", \"--max-tokens\", \"64\", \"--out\", runs, \"--name\", name, \"--overwrite\"])\n"
    "        .status()?;\n"
    "    assert!(status.success(), \"tunelab eval run failed for {name}\");\n"
    "}\n"
    "let (a_run, b_run, full) = (format!(\"{runs}/adapter-a\"), format!(\"{runs}/adapter-b\"), format!(\"{runs}/report.html\"));\n"
    "let overview = format!(\"{runs}/overview.html\");\n"
    "for (format, out) in [(\"html\", &full), (\"overview\", &overview)] {\n"
    "    let status = std::process::Command::new(&tunelab_cli)\n"
    "        .args([\"eval\", \"report\", a_run.as_str(), b_run.as_str(), \"--format\", format, \"--full-report\", full.as_str(), \"--out\", out.as_str()])\n"
    "        .status()?;\n"
    "    assert!(status.success(), \"tunelab eval report --format {format} failed\");\n"
    "}\n"
    "tunelab::notebook::HtmlFile::open(&overview)?",
])

nbf.write(quickstart, HERE / "quickstart.ipynb")
nbf.write(compare_adapters, HERE / "compare-adapters.ipynb")
