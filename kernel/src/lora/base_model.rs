//! Whether an adapter was trained on the model it is being applied to, by the names both
//! go by (PEFT's `base_model_name_or_path` against the model's file name and metadata).
//!
//! Shapes already catch an adapter for another model size. A name catches what shapes
//! cannot: an adapter trained on `SmolLM2-135M` applied to `SmolLM2-135M-Instruct`, or on one
//! fine-tune of a family applied to another. Names are compared after normalization: the
//! last path component, without the file extension and quantization tag, lower-cased,
//! letters and digits only; so `HuggingFaceTB/SmolLM2-135M-Instruct`,
//! `models/SmolLM2-135M-Instruct.Q4_1.gguf` and the GGUF name `SmolLM2 135M Instruct` agree.

/// `Ok` when `declared` (an adapter's `base_model_name_or_path`) names the model known by
/// `names`, or when either side has no name to compare; else why not.
pub(crate) fn check(declared: &str, names: &[String]) -> std::result::Result<(), String> {
    let want = normalize(declared);
    let known: Vec<&String> = names.iter().filter(|n| !normalize(n).is_empty()).collect();
    if want.is_empty() || known.is_empty() || known.iter().any(|n| normalize(n) == want) {
        return Ok(());
    }
    let shown: Vec<String> = known.iter().map(|n| format!("{n:?}")).collect();
    Err(format!(
        "the adapter was trained on {declared:?} (base_model_name_or_path), but the loaded model is {}; \
         load the model it was trained on, or set base_model_name_or_path in adapter_config.json \
         to the loaded model's name if the adapter is meant for it",
        shown.join(", also named ")
    ))
}

/// The comparable core of a model name (see the module documentation).
fn normalize(name: &str) -> String {
    let last = name.trim().trim_end_matches(['/', '\\']).rsplit(['/', '\\']).next().unwrap_or("");
    let lower = last.to_lowercase();
    let stem = [".gguf", ".safetensors", ".bin"].iter().find_map(|ext| lower.strip_suffix(ext)).unwrap_or(&lower);
    let tokens: Vec<&str> = stem.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).collect();
    let end = tokens.iter().position(|t| is_quantization_tag(t)).unwrap_or(tokens.len());
    tokens[..end].concat()
}

/// Whether a name token starts a file's quantization tag (`q4`, `iq3`, `f16`, `bf16` …).
fn is_quantization_tag(token: &str) -> bool {
    let digits_after = |prefix: &str| token.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    digits_after("q") || digits_after("iq") || ["f16", "bf16", "f32", "fp16", "fp32", "fp8"].contains(&token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_model_s_names_agree() {
        let smol = names(&["models/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2 135M Instruct"]);
        for declared in
            ["HuggingFaceTB/SmolLM2-135M-Instruct", "/data/hf/SmolLM2-135M-Instruct/", "smollm2-135m-instruct", "models/SmolLM2-135M-Instruct.Q4_1.gguf"]
        {
            assert_eq!(check(declared, &smol), Ok(()), "{declared}");
        }
        assert_eq!(normalize("qwen2.5-7b-instruct-q4_k_m.gguf"), "qwen257binstruct");
        assert_eq!(normalize("Qwen/Qwen2.5-7B-Instruct"), "qwen257binstruct");
        assert_eq!(normalize("Llama-3.2-1B-Instruct-bf16"), "llama321binstruct");
    }

    #[test]
    fn another_model_is_refused_naming_both() {
        let smol = names(&["models/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2 135M Instruct"]);
        let why = check("HuggingFaceTB/SmolLM2-135M", &smol).unwrap_err();
        assert!(
            why.contains("\"HuggingFaceTB/SmolLM2-135M\"") && why.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && why.contains("base_model_name_or_path"),
            "{why}"
        );
        assert!(check("Qwen/Qwen2.5-0.5B-Instruct", &smol).is_err());
    }

    #[test]
    fn nothing_to_compare_is_no_mismatch() {
        assert_eq!(check("", &names(&["a.gguf"])), Ok(()));
        assert_eq!(check("org/model", &[]), Ok(()));
        assert_eq!(check("org/model", &names(&["", "Q4_1.gguf"])), Ok(()));
    }
}
