//! Generation on the real model: batches equal single prompts, streaming equals the final
//! text, seeds reproduce samples, stop strings cut the text.

mod common;

use tunelab::prelude::*;

#[test]
fn batch_greedy_equals_one_prompt_at_a_time_and_streaming_is_complete() {
    let model = Model::load(common::smollm_path()).unwrap();
    let gen = Generator::new(&model.transformer, &model.tokenizer);
    let prompts: Vec<String> = ["What is 2+2?", "Write a haiku about autumn leaves falling slowly.", "什么是SQL注入？"]
        .iter()
        .map(|p| model.template.render_prompt(None, p).unwrap())
        .collect();
    let cfg = GenerationConfig::greedy(24);
    let mut streamed = vec![String::new(); prompts.len()];
    let batch = gen.generate_batch(&prompts, &cfg, |row, piece| streamed[row].push_str(piece)).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let single = gen.generate(p, &cfg, |_| {}).unwrap();
        assert_eq!(batch[i].token_ids, single.token_ids, "prompt {i}: batched greedy differs from single");
        assert_eq!(batch[i].text, single.text);
        assert_eq!(streamed[i], batch[i].text, "prompt {i}: streamed pieces do not add up to the text");
        assert!(!single.text.is_empty());
    }
}

#[test]
fn sampling_depends_on_the_seed_only() {
    let model = Model::load(common::smollm_path()).unwrap();
    let gen = Generator::new(&model.transformer, &model.tokenizer);
    let prompt = model.template.render_prompt(None, "Tell me a story about a dragon.").unwrap();
    let cfg = |seed| GenerationConfig { max_new_tokens: 20, temperature: 1.0, top_p: Some(0.95), seed, ..Default::default() };
    let a = gen.generate(&prompt, &cfg(1), |_| {}).unwrap();
    let b = gen.generate(&prompt, &cfg(1), |_| {}).unwrap();
    assert_eq!(a.token_ids, b.token_ids);
    let others: Vec<_> = (2..6).map(|s| gen.generate(&prompt, &cfg(s), |_| {}).unwrap().token_ids).collect();
    assert!(others.iter().any(|o| *o != a.token_ids), "five seeds gave the same sample");
}

#[test]
fn stop_strings_end_generation_before_the_match() {
    let model = Model::load(common::smollm_path()).unwrap();
    let gen = Generator::new(&model.transformer, &model.tokenizer);
    let prompt = model.template.render_prompt(None, "List three fruits, one per line.").unwrap();
    let full = gen.generate(&prompt, &GenerationConfig::greedy(40), |_| {}).unwrap();
    let first_newline = full.text.find('\n').expect("a multi-line answer");
    let cfg = GenerationConfig { stop_strings: vec!["\n".into()], ..GenerationConfig::greedy(40) };
    let mut streamed = String::new();
    let cut = gen.generate(&prompt, &cfg, |p| streamed.push_str(p)).unwrap();
    assert_eq!(cut.text, full.text[..first_newline]);
    assert_eq!(streamed, cut.text);
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    let short = gen.generate(&prompt, &GenerationConfig::greedy(3), |_| {}).unwrap();
    assert_eq!(short.token_ids.len(), 3);
    assert_eq!(short.finish_reason, FinishReason::Length);
}
