//! The model's own chat template rendered by minijinja equals HF `apply_chat_template`
//! output recorded in tests/vectors/chat_template.json.

mod common;

use tunelab::prelude::*;

#[test]
fn smollm_template_matches_hf_apply_chat_template() {
    let model = Model::load(common::smollm_path()).unwrap();
    let cases = common::vectors("chat_template.json");
    let cases = cases.as_array().expect("a list of cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let got = model.template.render(&messages, add).unwrap();
        assert_eq!(got, case["text"].as_str().unwrap(), "messages {messages:?}, add_generation_prompt {add}");
    }
}
