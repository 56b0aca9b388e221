//! The tokenizer rebuilt from GGUF metadata equals HF's and llama.cpp's tokenization of the
//! same strings (tests/vectors/tokenization.json), and decoding round-trips.

mod common;

use tunelab::Model;

#[test]
fn gguf_tokenizer_matches_hf_and_llama_cpp() {
    let model = Model::load(common::smollm_path()).unwrap();
    let cases = common::vectors("tokenization.json");
    let cases = cases.as_array().expect("a list of cases");
    assert!(cases.len() >= 20, "need at least 20 recorded strings");
    let ids = common::ids;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let got = model.tokenizer.encode(text).unwrap();
        assert_eq!(got, ids(&case["hf_ids"]), "{text:?}: differs from HF");
        assert_eq!(got, ids(&case["llamacpp_ids"]), "{text:?}: differs from llama.cpp");
        if case["hf_decode_roundtrip"].as_bool() == Some(true) {
            assert_eq!(model.tokenizer.decode(&got, false).unwrap(), text, "{text:?}: decode does not round-trip");
        }
    }
}
