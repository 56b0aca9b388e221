//! Adapter configs written by PEFT and LLaMA-Factory, read as tunelab's [`super::LoraConfig`].
//!
//! PEFT's `adapter_config.json` has many more fields than a plain LoRA update needs. Those
//! that change what the weights mean are checked here, so that an adapter tunelab cannot
//! apply is refused with the field named, instead of loading and giving wrong outputs:
//! DoRA (`use_dora`), extra modules trained in full (`modules_to_save`), LoRA on the
//! embedding or output head (`target_modules`), transposed weights (`fan_in_fan_out`),
//! per-module ranks or alphas (`rank_pattern`, `alpha_pattern`). Settings that do not change
//! the meaning are accepted: `use_rslora` (the scale), a subset of targets or layers
//! (`layers_to_transform`; the weights present decide), `lora_dropout`, `modules_to_save:
//! null`, `target_modules: "all-linear"`.

use serde_json::Value;

/// Modules tunelab never adapts (LoRA on them is refused).
const EMBEDDING_MODULES: [&str; 3] = ["embed_tokens", "lm_head", "wte"];

/// Rewrites `config` (the parsed `adapter_config.json`) into the form [`super::LoraConfig`]
/// reads, or says which field tunelab cannot honour.
pub fn normalize(config: &mut Value) -> Result<(), String> {
    let Some(fields) = config.as_object_mut() else { return Err("the adapter config is not a JSON object".into()) };
    if fields.get("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err("use_dora is true: DoRA adapters (a learned magnitude per output) are not supported; tunelab applies plain LoRA updates".into());
    }
    match fields.get("modules_to_save") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(other) => {
            return Err(format!("modules_to_save is {other}: adapters that also replace whole modules (trained in full) are not supported"));
        }
    }
    if fields.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
        return Err("fan_in_fan_out is true: weights stored [in, out] (GPT-2 style Conv1D) are not supported".into());
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if fields.get(pattern).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
            return Err(format!("{pattern} is set: per-module ranks and alphas are not supported (one r and lora_alpha for every module)"));
        }
    }
    // PEFT allows one string: "all-linear", a module name, or a regular expression.
    let targets = match fields.get("target_modules") {
        Some(Value::String(s)) if s == "all-linear" => super::ALL_TARGETS.iter().map(|t| Value::from(*t)).collect(),
        Some(Value::String(s)) => vec![Value::from(s.clone())],
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => return Err(format!("target_modules is {other}; expected a list of module names")),
    };
    if let Some(t) = targets.iter().filter_map(Value::as_str).find(|t| EMBEDDING_MODULES.iter().any(|e| t.contains(e))) {
        return Err(format!("target_modules includes {t:?}: LoRA on the embedding or the output head is not supported"));
    }
    fields.insert("target_modules".into(), Value::Array(targets));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none", "target_modules": ["q_proj", "v_proj"]})
    }

    #[test]
    fn llamafactory_and_peft_configs_read_and_unsupported_fields_are_named() {
        // LLaMA-Factory's defaults with `lora_target: all`: accepted as written.
        let mut c = base();
        c["modules_to_save"] = Value::Null;
        c["use_rslora"] = json!(true);
        c["use_dora"] = json!(false);
        c["fan_in_fan_out"] = json!(false);
        c["rank_pattern"] = json!({});
        c["layers_to_transform"] = Value::Null;
        normalize(&mut c).unwrap();
        let config: crate::lora::LoraConfig = serde_json::from_value(c).unwrap();
        assert!(config.use_rslora && (config.scale() - 16.0 / 8f64.sqrt()).abs() < 1e-12);
        let mut all = base();
        all["target_modules"] = json!("all-linear");
        normalize(&mut all).unwrap();
        assert_eq!(all["target_modules"].as_array().unwrap().len(), crate::lora::ALL_TARGETS.len());

        for (field, value, named) in [
            ("use_dora", json!(true), "use_dora"),
            ("modules_to_save", json!(["lm_head"]), "modules_to_save"),
            ("target_modules", json!(["q_proj", "embed_tokens"]), "embed_tokens"),
            ("fan_in_fan_out", json!(true), "fan_in_fan_out"),
            ("rank_pattern", json!({"q_proj": 16}), "rank_pattern"),
            ("alpha_pattern", json!({"q_proj": 32}), "alpha_pattern"),
        ] {
            let mut c = base();
            c[field] = value;
            let e = normalize(&mut c).unwrap_err();
            assert!(e.contains(named), "{field}: {e}");
        }
    }
}
