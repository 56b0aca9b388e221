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

/// Q8_0 decoding weights: prompt and decoding-step logits stay within a small distance of
/// f32's (and do differ, so the quantized path ran), batches still equal single prompts,
/// and greedy answers mostly agree with f32 (how far is printed).
#[test]
fn q8_0_decoding_stays_close_to_f32() {
    use candle_core::{quantized::GgmlDType, Device, Tensor};
    let model = Model::load(common::smollm_path()).unwrap();
    let q8 = model.transformer.quantized_for_decoding(GgmlDType::Q8_0).unwrap();
    let prompt = model.template.render_prompt(None, "Explain photosynthesis in three sentences.").unwrap();
    let ids = model.tokenizer.encode(&prompt).unwrap();
    assert!(ids.len() > 32, "the prompt must be longer than the quantized path's row limit");
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let none = tunelab::model::Padding::default();
    let (mut c32, mut c8) = (model.transformer.new_cache(ids.len() + 1), q8.new_cache(ids.len() + 1));
    let p32 = model.transformer.forward_step(&input, &mut c32, &none).unwrap();
    let p8 = q8.forward_step(&input, &mut c8, &none).unwrap();
    let next = Tensor::new(&[[ids[5]]], &Device::Cpu).unwrap();
    let s32 = model.transformer.forward_step(&next, &mut c32, &none).unwrap();
    let s8 = q8.forward_step(&next, &mut c8, &none).unwrap();
    for (what, a, b) in [("prompt", &p32, &p8), ("decoding-step", &s32, &s8)] {
        let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        eprintln!("{what} logits: max |f32 − q8_0| = {d:.4} (max |logit| {scale:.2})");
        assert!(d > 0.0 && d < 0.05 * scale, "{what}: q8_0 logits differ by {d} (scale {scale})");
    }

    let prompts: Vec<String> = ["What is 2+2?", "Explain photosynthesis in three sentences.", "Summarize the benefits of unit testing."]
        .iter()
        .map(|p| model.template.render_prompt(None, p).unwrap())
        .collect();
    let cfg = GenerationConfig::greedy(48);
    let (g32, g8) = (Generator::new(&model.transformer, &model.tokenizer), Generator::new(&q8, &model.tokenizer));
    let batch = g8.generate_batch(&prompts, &cfg, |_, _| {}).unwrap();
    let mut agree = 0;
    for (i, p) in prompts.iter().enumerate() {
        let single = g8.generate(p, &cfg, |_| {}).unwrap();
        assert_eq!(batch[i].token_ids, single.token_ids, "prompt {i}: batched q8_0 greedy differs from single");
        let reference = g32.generate(p, &cfg, |_| {}).unwrap();
        let same = reference.token_ids.iter().zip(&single.token_ids).take_while(|(a, b)| a == b).count();
        eprintln!("prompt {i}: q8_0 greedy equals f32 for the first {same} of {} tokens", reference.token_ids.len());
        agree += same;
    }
    assert!(agree >= 48, "q8_0 greedy answers diverge from f32 almost at once ({agree} agreeing tokens over 3 prompts)");
}
