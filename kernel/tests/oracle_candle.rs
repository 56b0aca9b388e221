//! Oracle: our f32 transformer (HF layout, rotate-half rope) against candle-transformers'
//! `quantized_llama` (GGUF layout, interleaved rope) run with every tensor dequantized to
//! f32 (`CANDLE_DEQUANTIZE_ALL=1`), on the real SmolLM2 file.

mod common;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use tunelab::Model;

/// Both models compute in f32 with different op orders (and different rope layouts), so
/// logits agree to float rounding, not bit for bit: max |Δ| ≤ 5e-4 on logits of size ~10–30
/// (measured: 4.5e-5 to 5.5e-5).
const TOLERANCE: f32 = 5e-4;

#[test]
fn last_position_logits_match_candle_quantized_llama() {
    let path = common::smollm_path();
    // Read when candle builds its QMatMuls: must be set before loading.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let model = Model::load(&path).unwrap();

    for text in ["Explain photosynthesis in two sentences.", "用两句话解释光合作用。", "def add(a, b):\n    return a + b"] {
        let prompt = model.template.render_prompt(None, text).unwrap();
        let ids = model.tokenizer.encode(&prompt).unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        reference.clear_kv_cache();
        let want: Vec<f32> = reference.forward(&input, 0).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        let logits = model.transformer.forward(&input).unwrap();
        let got: Vec<f32> = logits.get(0).unwrap().get(ids.len() - 1).unwrap().to_vec1().unwrap();
        let max_diff = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{text:?}: {} tokens, max |Δlogit| = {max_diff:.2e}", ids.len());
        assert!(max_diff <= TOLERANCE, "{text:?}: max |Δlogit| = {max_diff} > {TOLERANCE}");
        let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(argmax(&want), argmax(&got));
    }
}
