//! Oracle: HF transformers in f32 on the same GGUF (recorded by
//! `tests/vectors/record-all.sh`, see tests/vectors/README.md). The chat-templated prompt
//! ids, the last-position top-5 logits and the first 32 greedy tokens must agree.

mod common;

use tunelab::prelude::*;

/// Logit tolerance vs PyTorch (different summation order in f32; vectors rounded to 1e-4).
const LOGIT_TOLERANCE: f64 = 2e-3;

#[test]
fn prompts_logits_and_greedy_tokens_match_hf_transformers() {
    let model = Model::load(common::smollm_path()).unwrap();
    let cases = common::vectors("hf_greedy.json");
    let cases = cases.as_array().expect("a list of cases");
    assert!(cases.len() >= 5, "need at least 5 recorded prompts");
    let ids_of = common::ids;
    for case in cases {
        let text = case["prompt"].as_str().unwrap();
        let prompt = model.template.render_prompt(None, text).unwrap();
        let prompt_ids = model.tokenizer.encode_with_bos(&prompt).unwrap();
        assert_eq!(prompt_ids, ids_of(&case["prompt_ids"]), "{text:?}: chat-templated prompt ids differ");

        let input = candle_core::Tensor::new(prompt_ids.as_slice(), model.transformer.device()).unwrap().unsqueeze(0).unwrap();
        let logits = model.transformer.forward(&input).unwrap();
        let last: Vec<f32> = logits.get(0).unwrap().get(prompt_ids.len() - 1).unwrap().to_vec1().unwrap();
        for (id, want) in ids_of(&case["top5_ids"]).iter().zip(case["top5_logits"].as_array().unwrap()) {
            let got = last[*id as usize] as f64;
            let want = want.as_f64().unwrap();
            assert!((got - want).abs() <= LOGIT_TOLERANCE, "{text:?}: logit of token {id} is {got}, HF has {want}");
        }

        let want = ids_of(&case["greedy_ids"]);
        let out = Generator::new(&model.transformer, &model.tokenizer).generate(&prompt, &GenerationConfig::greedy(want.len()), |_| {}).unwrap();
        let mut got = out.token_ids.clone();
        // HF includes the end-of-turn token it stopped on; tunelab reports it as the finish reason.
        if out.finish_reason == tunelab::FinishReason::Stop {
            got.push(*want.last().unwrap());
        }
        let n = want.len().min(32);
        assert_eq!(&got[..n.min(got.len())], &want[..n], "{text:?}: greedy continuation differs from HF");
        assert_eq!(got.len(), want.len(), "{text:?}: greedy continuation length differs from HF");
    }
}
