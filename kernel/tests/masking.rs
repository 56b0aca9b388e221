//! Response-only labels through the real model's chat template: every prompt token
//! (system, user turns, template scaffolding) is ignored, the response and its end-of-turn
//! token are learned, and truncation keeps the response.

mod common;

use tunelab::data::{encode_example, Dataset, EncodeOptions, IGNORE_INDEX};
use tunelab::train::masked_cross_entropy;
use tunelab::Model;

fn dataset(lines: &str) -> Dataset {
    let dir = common::scratch_dir("mask");
    let p = dir.join("d.jsonl");
    std::fs::write(&p, lines).unwrap();
    Dataset::load(&p).unwrap()
}

#[test]
fn only_responses_are_labelled() {
    let model = Model::load(common::smollm_path()).unwrap();
    let ds = dataset(concat!(
        r#"{"instruction": "Review this code.", "input": "x = eval(input())", "output": "Vulnerability: eval of user input", "system": "You are a security auditor."}"#, "\n",
        r#"{"instruction": "Second question", "output": "Second answer", "history": [["First question", "First answer"]]}"#, "\n",
    ));
    let (tok, tmpl) = (&model.tokenizer, &model.template);
    let enc = encode_example(&ds.examples[0], tmpl, tok, &EncodeOptions::default()).unwrap();
    let labelled: Vec<u32> = enc.labels.iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect();
    assert_eq!(tok.decode(&labelled, false).unwrap(), "Vulnerability: eval of user input<|im_end|>\n");
    let prompt_part: Vec<u32> = enc.input_ids.iter().zip(&enc.labels).filter(|(_, &l)| l == IGNORE_INDEX).map(|(&i, _)| i).collect();
    let prompt_text = tok.decode(&prompt_part, false).unwrap();
    assert!(prompt_text.contains("You are a security auditor.") && prompt_text.contains("x = eval(input())") && prompt_text.ends_with("<|im_start|>assistant\n"), "{prompt_text}");
    // The ids are exactly the tokenization of the rendered conversation.
    let full = tmpl.render(&ds.examples[0].messages, false).unwrap();
    assert_eq!(enc.input_ids, tok.encode(&full).unwrap());

    // Multi-turn: both assistant turns are learned, no user turn is.
    let enc = encode_example(&ds.examples[1], tmpl, tok, &EncodeOptions::default()).unwrap();
    let labelled: Vec<u32> = enc.labels.iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect();
    assert_eq!(tok.decode(&labelled, false).unwrap(), "First answer<|im_end|>\nSecond answer<|im_end|>\n");

    // --train-on-prompt labels everything.
    let all = encode_example(&ds.examples[1], tmpl, tok, &EncodeOptions { train_on_prompt: true, ..Default::default() }).unwrap();
    assert!(all.labels.iter().all(|&l| l != IGNORE_INDEX));

    // Prompt tokens contribute zero loss: changing the prompt's labels to anything ignored
    // leaves the loss unchanged, while it changes when the response label changes.
    let ids = candle_core::Tensor::new(enc.input_ids.as_slice(), &candle_core::Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let logits = model.transformer.forward(&ids).unwrap();
    let labels = candle_core::Tensor::new(enc.labels.as_slice(), &candle_core::Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let (loss, n) = masked_cross_entropy(&logits, &labels).unwrap();
    assert_eq!(n, enc.labels.iter().filter(|&&l| l != IGNORE_INDEX).count());
    let mut shuffled = enc.labels.clone();
    let first = shuffled.iter().position(|&l| l != IGNORE_INDEX).unwrap();
    shuffled[first] = 0;
    let other = candle_core::Tensor::new(shuffled.as_slice(), &candle_core::Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let (loss2, _) = masked_cross_entropy(&logits, &other).unwrap();
    assert_ne!(loss.to_scalar::<f32>().unwrap(), loss2.to_scalar::<f32>().unwrap());
}

#[test]
fn truncation_keeps_the_response() {
    let model = Model::load(common::smollm_path()).unwrap();
    let long_input = "line of context\n".repeat(200);
    let ds = dataset(&format!("{}\n", serde_json::json!({"instruction": "Summarize.", "input": long_input, "output": "A short summary."})));
    let enc = encode_example(&ds.examples[0], &model.template, &model.tokenizer, &EncodeOptions { cutoff_len: 128, train_on_prompt: false }).unwrap();
    assert!(enc.truncated);
    assert_eq!(enc.input_ids.len(), 128);
    let labelled: Vec<u32> = enc.labels.iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect();
    assert_eq!(model.tokenizer.decode(&labelled, false).unwrap(), "A short summary.<|im_end|>\n");
    let text = model.tokenizer.decode(&enc.input_ids, false).unwrap();
    assert!(text.starts_with("<|im_start|>system") && text.contains("<|im_start|>assistant\nA short summary."), "{text}");
}
