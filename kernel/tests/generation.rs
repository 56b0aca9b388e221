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

/// Q8_0 decoding weights: prompt logits equal f32's (prompts use the f32 weights),
/// decoding-step logits stay within a small distance of f32's (and do differ, so the
/// quantized path ran), batches still equal single prompts,
/// and q8_0 picks f32's token at ≥ 95% of the steps along f32's greedy answers (printed).
#[test]
fn q8_0_decoding_stays_close_to_f32() {
    use candle_core::{quantized::GgmlDType, Device, Tensor};
    let model = Model::load(common::smollm_path()).unwrap();
    let q8 = model.transformer.quantized_for_decoding(GgmlDType::Q8_0).unwrap();
    let prompt = model.template.render_prompt(None, "Explain photosynthesis in three sentences.").unwrap();
    let ids = model.tokenizer.encode(&prompt).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let none = tunelab::model::Padding::default();
    let (mut c32, mut c8) = (model.transformer.new_cache(ids.len() + 1), q8.new_cache(ids.len() + 1));
    let p32 = model.transformer.forward_step(&input, &mut c32, &none).unwrap();
    let p8 = q8.forward_step(&input, &mut c8, &none).unwrap();
    let next = Tensor::new(&[[ids[5]]], &Device::Cpu).unwrap();
    let s32 = model.transformer.forward_step(&next, &mut c32, &none).unwrap();
    let s8 = q8.forward_step(&next, &mut c8, &none).unwrap();
    let diff = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    // Prompts run through the f32 weights; decoding steps read the 8-bit ones.
    assert_eq!(diff(&p32, &p8), 0.0, "a prompt pass read the quantized weights");
    let scale = s32.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let d = diff(&s32, &s8);
    eprintln!("decoding-step logits: max |f32 − q8_0| = {d:.4} (max |logit| {scale:.2})");
    assert!(d > 0.0 && d < 0.05 * scale, "decoding-step q8_0 logits differ by {d} (scale {scale})");

    let prompts: Vec<String> = ["What is 2+2?", "Explain photosynthesis in three sentences.", "Summarize the benefits of unit testing."]
        .iter()
        .map(|p| model.template.render_prompt(None, p).unwrap())
        .collect();
    let cfg = GenerationConfig::greedy(48);
    let g8 = Generator::new(&q8, &model.tokenizer);
    let batch = g8.generate_batch(&prompts, &cfg, |_, _| {}).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let single = g8.generate(p, &cfg, |_| {}).unwrap();
        assert_eq!(batch[i].token_ids, single.token_ids, "prompt {i}: batched q8_0 greedy differs from single");
    }
    let (agree, steps) = choices_along_f32_answers(&model, &q8, "q8_0", &prompts, &cfg);
    assert!(agree * 100 >= steps * 95, "q8_0 picks f32's token at only {agree} of {steps} steps");
}

/// How often `other`'s greedy choice equals f32's along f32's own answers to `prompts`
/// (teacher-forced, so one near-tie does not decide the rest: the rounding's real effect
/// on each choice), as (agreeing steps, steps); each prompt's figures are printed.
fn choices_along_f32_answers(model: &Model, other: &tunelab::Transformer, label: &str, prompts: &[String], cfg: &GenerationConfig) -> (usize, usize) {
    let (g32, g) = (Generator::new(&model.transformer, &model.tokenizer), Generator::new(other, &model.tokenizer));
    let (mut agree, mut steps) = (0, 0);
    for (i, p) in prompts.iter().enumerate() {
        let reference = g32.generate(p, cfg, |_| {}).unwrap();
        let free = g.generate(p, cfg, |_| {}).unwrap();
        let same = reference.token_ids.iter().zip(&free.token_ids).take_while(|(a, b)| a == b).count();
        let ids = model.tokenizer.encode_with_bos(p).unwrap();
        let (mut cache, logits) = other.prefill(&ids, ids.len() + reference.token_ids.len()).unwrap();
        let mut next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        let mut matched = 0;
        for (k, &want) in reference.token_ids.iter().enumerate() {
            matched += usize::from(next == want);
            if k + 1 < reference.token_ids.len() {
                next = other.decode_rows(&[want], &mut [&mut cache]).unwrap().get(0).unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap();
            }
        }
        eprintln!(
            "prompt {i}: {label} greedy equals f32 for the first {same} of {} tokens; {label}'s choice equals f32's at {matched} of {} steps along f32's answer",
            reference.token_ids.len(),
            reference.token_ids.len()
        );
        agree += matched;
        steps += reference.token_ids.len();
    }
    (agree, steps)
}

/// A rounding path (`label`) against the exact f32 one: its prompt logits differ from
/// f32's (the path ran) but stay close; continuous batching still equals one prompt at a
/// time; and it picks f32's token at ≥ `min_percent` % of the steps along f32's greedy
/// answers (printed).
fn stays_close_to_f32(model: &Model, rounded: &tunelab::Transformer, label: &str, min_percent: usize) {
    let prompt = model.template.render_prompt(None, "Explain photosynthesis in three sentences.").unwrap();
    let ids = model.tokenizer.encode_with_bos(&prompt).unwrap();
    let (_, p32) = model.transformer.prefill(&ids, ids.len()).unwrap();
    let (_, pr) = rounded.prefill(&ids, ids.len()).unwrap();
    let scale = p32.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let d = (&p32 - &pr).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!("prompt logits: max |f32 − {label}| = {d:.4} (max |logit| {scale:.2})");
    assert!(d > 0.0 && d < 0.05 * scale, "{label} prompt logits differ by {d} (scale {scale})");

    let prompts: Vec<String> = ["What is 2+2?", "Explain photosynthesis in three sentences.", "Summarize the benefits of unit testing."]
        .iter()
        .map(|p| model.template.render_prompt(None, p).unwrap())
        .collect();
    let cfg = GenerationConfig::greedy(48);
    let encoded: Vec<Vec<u32>> = prompts.iter().map(|p| model.tokenizer.encode_with_bos(p).unwrap()).collect();
    let gen = Generator::new(rounded, &model.tokenizer);
    let by_slots = |slots: usize| {
        let mut out = vec![Vec::new(); encoded.len()];
        gen.generate_continuous(&encoded, &cfg, slots, |_, _| {}, |i, r| out[i] = r.unwrap().token_ids).unwrap();
        out
    };
    assert_eq!(by_slots(3), by_slots(1), "batched {label} greedy differs from one prompt at a time");
    let (agree, steps) = choices_along_f32_answers(model, rounded, label, &prompts, &cfg);
    assert!(agree * 100 >= steps * min_percent, "{label} picks f32's token at only {agree} of {steps} steps");
}

/// bf16 weights (`--weights bf16`): prompt and decoding passes both read them.
#[test]
fn bf16_decoding_stays_close_to_f32() {
    let model = Model::load(common::smollm_path()).unwrap();
    stays_close_to_f32(&model, &model.transformer.bf16_for_decoding().unwrap(), "bf16", 95);
}

/// Integer dot products with 8-bit activations (`--weights int8-dot`), as llama.cpp
/// computes: prompt and decoding passes both take them.
#[test]
fn int8_dot_decoding_stays_close_to_f32() {
    use candle_core::{Device, Tensor};
    use tunelab::DecodeWeights;
    let model = Model::load(common::smollm_path()).unwrap();
    let int8 = model.transformer.int8_for_decoding().unwrap();
    stays_close_to_f32(&model, &int8, "int8-dot", 90);

    // An adapter stays f32 beside the integer blocks: it moves the logits as it moves the
    // exact path's, up to the rounding's own noise (about 1 logit here, so a strong adapter:
    // B drawn from a fixed seed on every projection, moving the logits by 16). Dropping any
    // one projection kind's term from the int8 path (or layer 0's v_proj alone) moves them
    // differently by 40 % or more; over 60 seeds the rounding's own share stayed under 24 %.
    let adapter = AdapterSet::new(&model.transformer, LoraConfig::default(), 7).unwrap();
    let mut rng = tunelab::splitmix::SplitMix64(1);
    for l in adapter.layers().values() {
        let values: Vec<f32> = (0..l.b.elem_count()).map(|_| rng.normal() as f32 * 0.3).collect();
        l.b.set(&Tensor::from_vec(values, l.b.dims(), &Device::Cpu).unwrap()).unwrap();
    }
    let ids = model.tokenizer.encode_with_bos(&model.template.render_prompt(None, "List three fruits.").unwrap()).unwrap();
    let last = |t: &tunelab::Transformer| t.prefill(&ids, ids.len()).unwrap().1;
    let max_abs = |t: Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let exact_move = (last(&adapter.for_inference(&model.transformer).unwrap()) - last(&model.transformer)).unwrap();
    let int8_move = (last(&DecodeWeights::Int8Dot.prepare(&model.transformer, Some(&adapter)).unwrap()) - last(&int8)).unwrap();
    let (moved, off) = (max_abs(exact_move.clone()), max_abs((&exact_move - &int8_move).unwrap()));
    eprintln!("with an adapter: it moves f32 logits by up to {moved:.3}; int8-dot's move differs by up to {off:.3}");
    assert!(moved > 10.0 && off < 0.25 * moved, "int8-dot with an adapter: moved {moved}, off by {off}");
}

/// Prompts prefilled together in one step (as continuous batching admits them) get exactly
/// the logits each gets alone, bit for bit, also a prompt longer than the few-rows kernel's
/// 64 rows (its rows are multiplied 64 at a time, not by the blocked GEMM) and the step's
/// 150-odd rows in all; the dense f32 weights' GEMM offers no such guarantee, so their
/// prompts are prefilled one at a time.
#[test]
fn prompts_prefilled_together_equal_each_prefilled_alone() {
    let model = Model::load(common::smollm_path()).unwrap();
    let t = &model.transformer;
    assert!(t.prefills_rows_independently(), "the GGUF model's prompt passes read its blocks row by row");
    assert!(!t.without_packed_weights().prefills_rows_independently(), "dense f32 prompts go through the GEMM past 64 rows");
    let long = format!("Summarize this text: {}", "Leaves turn red and gold in autumn, then fall to the ground. ".repeat(6));
    let prompts: Vec<Vec<u32>> = ["What is 2+2?", long.as_str(), "什么是SQL注入？"]
        .iter()
        .map(|p| model.tokenizer.encode_with_bos(&model.template.render_prompt(None, p).unwrap()).unwrap())
        .collect();
    assert!(prompts[1].len() > tunelab::model::DETERMINISTIC_DECODE_ROWS, "the long prompt has {} tokens", prompts[1].len());
    let mut caches: Vec<_> = prompts.iter().map(|p| t.sequence_cache(p.len() + 1).unwrap()).collect();
    let tokens: Vec<u32> = prompts.iter().flatten().copied().collect();
    let seq: Vec<usize> = prompts.iter().enumerate().flat_map(|(s, p)| std::iter::repeat_n(s, p.len())).collect();
    let together = t.step_sequences(&tokens, &seq, &mut caches.iter_mut().collect::<Vec<_>>()).unwrap();
    for (s, p) in prompts.iter().enumerate() {
        let (_, alone) = t.prefill(p, p.len() + 1).unwrap();
        let (joint, alone) = (together.get(s).unwrap().to_vec1::<f32>().unwrap(), alone.to_vec1::<f32>().unwrap());
        assert_eq!(joint.len(), alone.len());
        let differing = joint.iter().zip(&alone).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differing, 0, "prompt {s} ({} tokens): {differing} of {} logits differ from the prompt prefilled alone", p.len(), alone.len());
    }
}

/// Prefix caching's model side: a cache started with a prefix's keys and values
/// (`SequenceCache::start_with`) and then given the rest of the prompt yields the logits of
/// the whole prompt prefilled alone, bit for bit; a cache that cannot take the prefix
/// (already used, too small) is refused.
#[test]
fn a_prompt_prefilled_after_a_copied_prefix_equals_its_whole_prefill() {
    let model = Model::load(common::smollm_path()).unwrap();
    let t = &model.transformer;
    let prompt = model.tokenizer.encode_with_bos(&model.template.render_prompt(None, "Write a haiku about autumn leaves falling slowly.").unwrap()).unwrap();
    let split = prompt.len() - 6;
    let (prefix, _) = t.prefill(&prompt[..split], split).unwrap();
    let mut cache = t.sequence_cache(prompt.len() + 1).unwrap();
    cache.start_with(&prefix).unwrap();
    assert_eq!(cache.len(), split);
    let rest = t.step_sequences(&prompt[split..], &vec![0; prompt.len() - split], &mut [&mut cache]).unwrap();
    let (_, whole) = t.prefill(&prompt, prompt.len() + 1).unwrap();
    let (rest, whole) = (rest.get(0).unwrap().to_vec1::<f32>().unwrap(), whole.to_vec1::<f32>().unwrap());
    let differing = rest.iter().zip(&whole).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "{differing} of {} logits differ from the whole prompt's prefill", whole.len());
    assert!(cache.start_with(&prefix).unwrap_err().to_string().contains("cannot start with"), "a used cache");
    let mut small = t.sequence_cache(split - 1).unwrap();
    assert!(small.start_with(&prefix).unwrap_err().to_string().contains("cannot start with"), "a cache too small");
}

/// Prefix caching in continuous batching: prompts that share the chat template's system turn
/// prefill it once, each reports the shared tokens as cached and answers exactly as it does
/// alone; a prompt that is all prefix runs whole. Dense f32 weights (whose long products
/// depend on the rows sharing them) share nothing.
#[test]
fn prompts_sharing_a_prefix_prefill_it_once_and_answer_as_alone() {
    let model = Model::load(common::smollm_path()).unwrap();
    let gen = Generator::new(&model.transformer, &model.tokenizer);
    let mut prompts: Vec<Vec<u32>> = ["What is 2+2?", "Name a color.", "Write a haiku about autumn leaves falling slowly.", "Say yes."]
        .iter()
        .map(|p| model.tokenizer.encode_with_bos(&model.template.render_prompt(None, p).unwrap()).unwrap())
        .collect();
    let shared = (0..prompts[0].len()).take_while(|&j| prompts.iter().all(|p| p.get(j) == prompts[0].get(j))).count();
    assert!(shared >= 10, "the chat template's system turn is shared ({shared} tokens)");
    prompts.push(prompts[0][..shared].to_vec());
    let cfg = GenerationConfig::greedy(12);
    let mut done: Vec<Option<Generation>> = vec![None; prompts.len()];
    gen.generate_continuous(&prompts, &cfg, 2, |_, _| {}, |i, r| done[i] = Some(r.unwrap())).unwrap();
    for (i, (p, got)) in prompts.iter().zip(done).enumerate() {
        let got = got.unwrap();
        let alone = gen.generate_ids(std::slice::from_ref(p), &cfg, |_, _| {}).unwrap().remove(0);
        assert_eq!(alone.cached_prompt_tokens, 0, "a prompt alone shares nothing");
        let expected = if p.len() > shared { shared } else { 0 };
        assert_eq!(got.cached_prompt_tokens, expected, "prompt {i}");
        assert_eq!(got.token_ids, alone.token_ids, "prompt {i}: the shared prefix changed the greedy answer");
    }
    let dense = model.transformer.without_packed_weights();
    let dense_out = Generator::new(&dense, &model.tokenizer).generate_ids(&prompts, &cfg, |_, _| {}).unwrap();
    assert!(dense_out.iter().all(|g| g.cached_prompt_tokens == 0), "dense f32 weights prefill every prompt whole");
}

/// Per-sequence decoding (continuous batching's model step): two rows at different
/// positions decoded in one step give the same logits as a full forward pass over each
/// row's whole sequence.
#[test]
fn sequence_decoding_matches_the_full_forward_pass() {
    use candle_core::{Device, Tensor};
    let model = Model::load(common::smollm_path()).unwrap();
    let t = &model.transformer;
    assert!(t.supports_sequence_decoding());
    let mut seqs: Vec<Vec<u32>> = ["What is 2+2?", "Write a haiku about autumn leaves falling slowly."]
        .iter()
        .map(|p| model.tokenizer.encode_with_bos(&model.template.render_prompt(None, p).unwrap()).unwrap())
        .collect();
    assert_ne!(seqs[0].len(), seqs[1].len());
    let full_last = |ids: &[u32]| {
        let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let logits = t.forward(&input).unwrap();
        logits.get(0).unwrap().get(ids.len() - 1).unwrap()
    };
    let close = |what: &str, a: &Tensor, b: &Tensor| {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 2e-3, "{what}: per-sequence logits differ from the full pass by {d}");
    };
    let mut caches = Vec::new();
    for s in &seqs {
        let (cache, logits) = t.prefill(s, s.len() + 8).unwrap();
        close("prefill", &logits, &full_last(s));
        caches.push(cache);
    }
    let continuation = model.tokenizer.encode(" The answer is four, and leaves fall").unwrap();
    for step in 0..6 {
        let tokens = [continuation[step], continuation[step + 1]];
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let logits = t.decode_rows(&tokens, &mut refs).unwrap();
        for (r, s) in seqs.iter_mut().enumerate() {
            s.push(tokens[r]);
            close(&format!("step {step} row {r}"), &logits.get(r).unwrap(), &full_last(s));
        }
    }
    // A full cache is refused, not overrun.
    let mut small = t.prefill(&seqs[0][..4], 5).unwrap().0;
    t.decode_rows(&[1], &mut [&mut small]).unwrap();
    assert!(t.decode_rows(&[1], &mut [&mut small]).is_err(), "a full cache accepted another position");
}

/// Continuous batching with fewer slots than prompts: each prompt's greedy answer equals
/// decoding it alone, every prompt is reported once, and a prompt that cannot run is
/// reported as an error without stopping the others.
#[test]
fn continuous_batching_refills_slots_and_isolates_bad_prompts() {
    let model = Model::load(common::smollm_path()).unwrap();
    let gen = Generator::new(&model.transformer, &model.tokenizer);
    let texts = ["What is 2+2?", "Name a color.", "Write a haiku about autumn leaves falling slowly.", "Say yes.", "Count to five."];
    let mut prompts: Vec<Vec<u32>> = texts.iter().map(|p| model.tokenizer.encode_with_bos(&model.template.render_prompt(None, p).unwrap()).unwrap()).collect();
    prompts.insert(2, Vec::new());
    let context = model.transformer.config().max_position_embeddings;
    // As long as the context, beginning as the others do (it shares their prefix).
    let mut too_long = prompts[0].clone();
    too_long.resize(context, 1);
    prompts.insert(4, too_long);
    let cfg = GenerationConfig::greedy(20);
    let mut done: Vec<Option<tunelab::Result<Generation>>> = prompts.iter().map(|_| None).collect();
    let mut order = Vec::new();
    let mut streamed = vec![String::new(); prompts.len()];
    gen.generate_continuous(
        &prompts,
        &cfg,
        2,
        |i, piece| streamed[i].push_str(piece),
        |i, r| {
            assert!(done[i].is_none(), "prompt {i} reported twice");
            order.push(i);
            done[i] = Some(r);
        },
    )
    .unwrap();
    assert_eq!(order.len(), prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let got = done[i].take().unwrap();
        if p.is_empty() {
            assert!(got.unwrap_err().to_string().contains("empty"));
            continue;
        }
        if p.len() == context {
            let e = got.unwrap_err().to_string();
            assert!(e.contains(&format!("prompt {i} has {context} tokens")) && e.contains("does not fit the context"), "{e}");
            continue;
        }
        let got = got.unwrap();
        let alone = gen.generate_ids(std::slice::from_ref(p), &cfg, |_, _| {}).unwrap().remove(0);
        assert_eq!(got.token_ids, alone.token_ids, "prompt {i}: continuous batching changed the greedy answer");
        assert_eq!(streamed[i], got.text);
    }
}

/// Prompts that finish at their first token (one new token each) free their slots at
/// once: with two slots, all five prompts still run and are reported.
#[test]
fn prompts_finishing_at_their_first_token_do_not_end_continuous_batching_early() {
    let model = Model::load(common::smollm_path()).unwrap();
    let gen = Generator::new(&model.transformer, &model.tokenizer);
    let prompts: Vec<Vec<u32>> = ["What is 2+2?", "Name a color.", "Say yes.", "Count to five.", "Name a fruit."]
        .iter()
        .map(|p| model.tokenizer.encode_with_bos(&model.template.render_prompt(None, p).unwrap()).unwrap())
        .collect();
    let mut reported = vec![0; prompts.len()];
    gen.generate_continuous(
        &prompts,
        &GenerationConfig::greedy(1),
        2,
        |_, _| {},
        |i, r| {
            assert_eq!(r.unwrap().token_ids.len(), 1, "prompt {i}");
            reported[i] += 1;
        },
    )
    .unwrap();
    assert_eq!(reported, vec![1; prompts.len()], "every prompt reported once");
}

/// Decoding steps read the GGUF file's own Q4_1 / Q8_0 blocks, dequantized on the fly to
/// exactly the f32 values: the logits equal the dense f32 path's bit for bit, one row or
/// several at once, and greedy answers are the same. With a LoRA adapter attached the
/// adapter's term is added after the base product, so logits agree closely (printed).
#[test]
fn decoding_from_the_file_blocks_equals_the_dense_f32_weights() {
    use candle_core::{DType, Device, Tensor};
    let model = Model::load(common::smollm_path()).unwrap();
    let packed = &model.transformer;
    let dense = packed.without_packed_weights();
    let (n, all) = packed.packed_projections();
    assert_eq!((n, all), (211, 211), "every projection and the output head of SmolLM2's GGUF decode from its blocks");
    assert_eq!(dense.packed_projections(), (0, 211));

    let prompts: Vec<Vec<u32>> = ["Explain photosynthesis in three sentences.", "What is 2+2?", "什么是SQL注入？"]
        .iter()
        .map(|p| model.tokenizer.encode_with_bos(&model.template.render_prompt(None, p).unwrap()).unwrap())
        .collect();
    let step = |m: &tunelab::model::Transformer| -> Tensor {
        let mut caches: Vec<_> = prompts.iter().map(|ids| m.prefill(ids, ids.len() + 2).unwrap().0).collect();
        let mut refs: Vec<&mut _> = caches.iter_mut().collect();
        m.decode_rows(&[29, 1820, 30], &mut refs).unwrap()
    };
    let (a, b) = (step(packed), step(&dense));
    let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b), "decoding-step logits from the blocks differ from the f32 weights'");

    let texts: Vec<String> =
        ["Explain photosynthesis in three sentences.", "List three fruits."].iter().map(|p| model.template.render_prompt(None, p).unwrap()).collect();
    let cfg = GenerationConfig::greedy(32);
    let from_blocks = Generator::new(packed, &model.tokenizer).generate_batch(&texts, &cfg, |_, _| {}).unwrap();
    let from_f32 = Generator::new(&dense, &model.tokenizer).generate_batch(&texts, &cfg, |_, _| {}).unwrap();
    for (x, y) in from_blocks.iter().zip(&from_f32) {
        assert_eq!(x.token_ids, y.token_ids);
    }

    let adapter = AdapterSet::new(packed, LoraConfig::default(), 7).unwrap();
    for l in adapter.layers().values() {
        l.b.set(&(Tensor::ones(l.b.dims(), DType::F32, &Device::Cpu).unwrap() * 0.003).unwrap()).unwrap();
    }
    let (with_blocks, with_f32) = (adapter.apply(packed), adapter.apply(&dense));
    let (a, b) = (step(&with_blocks), step(&with_f32));
    let d = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let moved = (&a - &step(packed)).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!("with an adapter: max |blocks − f32| = {d:.2e}; the adapter moves logits by up to {moved:.3}");
    assert!(moved > 1e-2, "the adapter had no effect on the packed path ({moved})");
    assert!(d < 1e-3, "with an adapter the packed path differs from the f32 one by {d}");
}
