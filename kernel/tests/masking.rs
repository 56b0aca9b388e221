//! Response-only labels through the real model's chat template: every prompt token
//! (system, user turns, template scaffolding) is ignored, the response and its end-of-turn
//! token are learned (each assistant turn one run of labels equal to its ids), the loss is
//! the response tokens' mean negative log-likelihood alone, and truncation cuts the prompt,
//! not the response.

mod common;

use tunelab::data::{encode_example, Dataset, EncodeOptions, Encoded, IGNORE_INDEX};
use tunelab::train::masked_cross_entropy;
use tunelab::Model;

fn dataset(lines: &str) -> Dataset {
    let dir = common::scratch_dir("mask");
    let p = dir.join("d.jsonl");
    std::fs::write(&p, lines).unwrap();
    Dataset::load(&p).unwrap()
}

/// The labelled positions as runs `start..end`, after checking that every label is either
/// ignored or the token at its own position (labels are the ids, not shifted).
fn labelled_spans(enc: &Encoded) -> Vec<std::ops::Range<usize>> {
    assert_eq!(enc.labels.len(), enc.input_ids.len());
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, (&id, &label)) in enc.input_ids.iter().zip(&enc.labels).enumerate() {
        if label == IGNORE_INDEX {
            continue;
        }
        assert_eq!(label, i64::from(id), "label {i} is neither ignored nor its token");
        match spans.last_mut() {
            Some(s) if s.end == i => s.end = i + 1,
            _ => spans.push(i..i + 1),
        }
    }
    spans
}

/// Mean of `-log p(ids[i+1] | ids[..=i])` over positions whose next label counts, from the
/// logits `[1, t, vocab]` in f64: the loss computed independently of `masked_cross_entropy`.
fn mean_nll(logits: &candle_core::Tensor, ids: &[u32], labels: &[i64]) -> f64 {
    let rows: Vec<Vec<f32>> = logits.squeeze(0).unwrap().to_vec2().unwrap();
    let nll: Vec<f64> = (0..ids.len() - 1)
        .filter(|&i| labels[i + 1] != IGNORE_INDEX)
        .map(|i| {
            let row = &rows[i];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let log_sum = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
            log_sum - row[ids[i + 1] as usize] as f64
        })
        .collect();
    nll.iter().sum::<f64>() / nll.len() as f64
}

#[test]
fn only_responses_are_labelled() {
    let model = Model::load(common::smollm_path()).unwrap();
    let ds = dataset(concat!(
        r#"{"instruction": "Review this code.", "input": "x = eval(input())", "output": "Vulnerability: eval of user input", "system": "You are a security auditor."}"#,
        "\n",
        r#"{"instruction": "Second question", "output": "Second answer", "history": [["First question", "First answer"]]}"#,
        "\n",
    ));
    let (tok, tmpl) = (&model.tokenizer, &model.template);
    let decode = |ids: &[u32]| tok.decode(ids, false).unwrap();

    // One turn: the labels are exactly the conversation's last tokens — the response and its
    // end-of-turn — and everything before them (system, user turn, scaffolding) is ignored.
    let enc = encode_example(&ds.examples[0], tmpl, tok, &EncodeOptions::default()).unwrap();
    let spans = labelled_spans(&enc);
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].end, enc.input_ids.len());
    assert_eq!(decode(&enc.input_ids[spans[0].clone()]), "Vulnerability: eval of user input<|im_end|>\n");
    let prompt_text = decode(&enc.input_ids[..spans[0].start]);
    assert!(
        prompt_text.starts_with("<|im_start|>system\nYou are a security auditor.")
            && prompt_text.contains("x = eval(input())")
            && prompt_text.ends_with("<|im_start|>assistant\n"),
        "{prompt_text}"
    );
    // The ids are exactly the tokenization of the rendered conversation.
    let full = tmpl.render(&ds.examples[0].messages, false).unwrap();
    assert_eq!(enc.input_ids, tok.encode(&full).unwrap());

    // Multi-turn: each assistant turn is one labelled run; the user turns between are not.
    let enc = encode_example(&ds.examples[1], tmpl, tok, &EncodeOptions::default()).unwrap();
    let spans = labelled_spans(&enc);
    let learned: Vec<String> = spans.iter().map(|s| decode(&enc.input_ids[s.clone()])).collect();
    assert_eq!(learned, ["First answer<|im_end|>\n", "Second answer<|im_end|>\n"]);
    assert_eq!(spans[1].end, enc.input_ids.len());
    let between = decode(&enc.input_ids[spans[0].end..spans[1].start]);
    assert!(between.contains("Second question") && between.ends_with("<|im_start|>assistant\n"), "{between}");
    assert!(decode(&enc.input_ids[..spans[0].start]).contains("First question"));

    // --train-on-prompt labels everything, on the same ids.
    let all = encode_example(&ds.examples[1], tmpl, tok, &EncodeOptions { train_on_prompt: true, ..Default::default() }).unwrap();
    assert_eq!(all.input_ids, enc.input_ids);
    assert_eq!(labelled_spans(&all), vec![0..all.input_ids.len()]);

    // Prompt tokens contribute nothing to the loss: it is the mean negative log-likelihood of
    // the response tokens alone (computed here in f64 from the logits; the loss sums in f32),
    // and differs from the loss with the prompt learned too.
    let dev = &candle_core::Device::Cpu;
    let row = |v: &[i64]| candle_core::Tensor::new(v, dev).unwrap().unsqueeze(0).unwrap();
    let ids = candle_core::Tensor::new(enc.input_ids.as_slice(), dev).unwrap().unsqueeze(0).unwrap();
    let logits = model.transformer.forward(&ids).unwrap();
    let (loss, n) = masked_cross_entropy(&logits, &row(&enc.labels)).unwrap();
    let loss = f64::from(loss.to_scalar::<f32>().unwrap());
    assert_eq!(n, enc.labels[1..].iter().filter(|&&l| l != IGNORE_INDEX).count());
    let want = mean_nll(&logits, &enc.input_ids, &enc.labels);
    assert!((loss - want).abs() < 5e-4, "loss {loss}, response-only NLL {want}");
    let (loss_all, _) = masked_cross_entropy(&logits, &row(&all.labels)).unwrap();
    let loss_all = f64::from(loss_all.to_scalar::<f32>().unwrap());
    let want_all = mean_nll(&logits, &all.input_ids, &all.labels);
    assert!((loss_all - want_all).abs() < 5e-4, "loss {loss_all}, all-token NLL {want_all}");
    assert!((loss - loss_all).abs() > 1e-2, "masking the prompt changed nothing: {loss} vs {loss_all}");
}

#[test]
fn truncation_keeps_the_response() {
    let model = Model::load(common::smollm_path()).unwrap();
    let long_input = "line of context\n".repeat(200);
    let ds = dataset(&format!("{}\n", serde_json::json!({"instruction": "Summarize.", "input": long_input, "output": "A short summary."})));
    let enc = encode_example(&ds.examples[0], &model.template, &model.tokenizer, &EncodeOptions { cutoff_len: 128, train_on_prompt: false }).unwrap();
    assert!(enc.truncated);
    assert_eq!(enc.input_ids.len(), 128);
    // The prompt was cut, not the response: still the last tokens, still labelled.
    let spans = labelled_spans(&enc);
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].end, 128);
    assert_eq!(model.tokenizer.decode(&enc.input_ids[spans[0].clone()], false).unwrap(), "A short summary.<|im_end|>\n");
    let text = model.tokenizer.decode(&enc.input_ids, false).unwrap();
    assert!(text.starts_with("<|im_start|>system") && text.contains("<|im_start|>assistant\nA short summary."), "{text}");
}

/// A template that renders nothing (or raises) for a record is an error naming the record
/// (file:line), not an empty example that reaches the model.
#[test]
fn a_template_that_renders_no_reply_or_raises_names_the_record() {
    let mut model = Model::load(common::smollm_path()).unwrap();
    let ds = dataset("{\"instruction\": \"Hi\", \"output\": \"Hello\"}\n{\"instruction\": \"日本語\", \"output\": \"はい\"}\n");
    let (bos, eos) = (model.tokenizer.bos_token(), model.tokenizer.eos_token());
    model.template = tunelab::chat::ChatTemplate::new("", &bos, &eos).unwrap();
    let e = encode_example(&ds.examples[0], &model.template, &model.tokenizer, &EncodeOptions::default()).unwrap_err().to_string();
    assert!(e.contains("d.jsonl:1") && e.contains("no reply tokens"), "{e}");
    let raising = "{% for m in messages %}{% if '日' in m.content %}{{ raise_exception('cannot render Japanese') }}{% endif %}{{ m.content }}{% endfor %}";
    model.template = tunelab::chat::ChatTemplate::new(raising, &bos, &eos).unwrap();
    assert!(encode_example(&ds.examples[0], &model.template, &model.tokenizer, &EncodeOptions::default()).is_ok());
    let e = encode_example(&ds.examples[1], &model.template, &model.tokenizer, &EncodeOptions::default()).unwrap_err().to_string();
    assert!(e.contains("d.jsonl:2") && e.contains("cannot render Japanese"), "{e}");
}
