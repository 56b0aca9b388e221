//! Files someone else wrote: seeded mutation fuzzing of the dataset loader and the GGUF and
//! adapter readers (no panic; every error names the file), unusable adapters refused at
//! load, bounded reads, directory installs that never lose the old copy, and a trainer log
//! whose last line was torn by a kill.

mod common;
#[path = "common/fuzz.rs"]
mod fuzz;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fuzz::fuzz;
use tunelab::data::{Dataset, ValidationOptions, ValidationReport};
use tunelab::lora::{AdapterSet, LoraConfig};
use tunelab::model::{Architecture, ModelConfig, Transformer, Weights};
use tunelab::{fsutil, Model};

#[test]
fn dataset_loader_survives_mutated_files() {
    let dir = common::scratch_dir("fuzz-data");
    let jsonl = b"{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n";
    let array =
        b"[{\"instruction\": \"a\", \"output\": \"b\"}, {\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a\"}]}]";
    let csv = b"instruction,input,output\n\"Say, hi\",,hi\nq,ctx,a\n";
    for (file, seed) in [("d.jsonl", &jsonl[..]), ("d.json", &array[..]), ("d.csv", &csv[..])] {
        fuzz(&dir.join(file), seed, 400, |p| {
            let ds = Dataset::load(p).map_err(|e| e.to_string())?;
            let report = ValidationReport::build(&ds, None, None, &ValidationOptions::default()).map_err(|e| e.to_string())?;
            // Every problem is located in this file.
            for issue in &report.issues {
                let shown = issue.to_string();
                if !shown.contains(file) {
                    return Err(format!("issue without its file: {shown}"));
                }
            }
            Ok(())
        });
    }
}

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A small GGUF (v3): architecture, alignment, a string array, one f32 tensor.
fn tiny_gguf(alignment: u32) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(3u64.to_le_bytes()); // metadata entries
    gguf_string(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    gguf_string(&mut b, "llama");
    gguf_string(&mut b, "tokenizer.ggml.tokens");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(3u64.to_le_bytes());
    for t in ["a", "b", "c"] {
        gguf_string(&mut b, t);
    }
    gguf_string(&mut b, "general.alignment");
    b.extend(4u32.to_le_bytes());
    b.extend(alignment.to_le_bytes());
    gguf_string(&mut b, "token_embd.weight");
    b.extend(2u32.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(2u64.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // f32
    b.extend(0u64.to_le_bytes()); // offset
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend([0u8; 32]);
    b
}

#[test]
fn gguf_alignment_zero_is_refused_and_mutated_headers_do_not_panic() {
    let dir = common::scratch_dir("fuzz-gguf");
    let zero = dir.join("zero-align.gguf");
    std::fs::write(&zero, tiny_gguf(0)).unwrap();
    let Err(e) = Model::load(&zero) else { panic!("alignment 0 must be refused") };
    let e = e.to_string();
    assert!(e.contains("zero-align.gguf") && e.contains("general.alignment is 0"), "{e}");
    fuzz(&dir.join("m.gguf"), &tiny_gguf(32), 600, |p| Model::load(p).map(|_| ()).map_err(|e| e.to_string()));
}

fn tiny_model() -> Transformer {
    let c = ModelConfig {
        architecture: Architecture::Llama,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        vocab_size: 20,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 32,
        tie_word_embeddings: true,
    };
    Transformer::load(&c, &Weights::random(&c, 1, DType::F32, &Device::Cpu).unwrap()).unwrap()
}

fn saved_adapter(model: &Transformer, dir: &Path) -> PathBuf {
    AdapterSet::new(model, LoraConfig::default(), 3).unwrap().save(dir).unwrap();
    dir.to_path_buf()
}

#[test]
fn unusable_adapters_are_refused_naming_file_and_tensor() {
    let model = tiny_model();
    let root = common::scratch_dir("bad-adapters");
    let config_edits: [(&str, &str, &str); 4] = [
        ("rank-0", "\"r\": 8", "\"r\": 0"),
        ("alpha-negative", "\"lora_alpha\": 16.0", "\"lora_alpha\": -1.0"),
        ("alpha-huge", "\"lora_alpha\": 16.0", "\"lora_alpha\": 1e9"),
        ("dropout-1", "\"lora_dropout\": 0.0", "\"lora_dropout\": 1.0"),
    ];
    for (name, from, to) in config_edits {
        let dir = saved_adapter(&model, &root.join(name));
        let cfg = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&cfg, text.replace(from, to)).unwrap();
        let e = AdapterSet::load(&dir, &model).err().unwrap_or_else(|| panic!("{name} was accepted")).to_string();
        assert!(e.contains("adapter_config.json"), "{name}: {e}");
    }
    // NaN and infinity in a weight: the tensor is named.
    for (name, value) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        let dir = saved_adapter(&model, &root.join(name));
        let w = dir.join("adapter_model.safetensors");
        let mut tensors = candle_core::safetensors::load(&w, &Device::Cpu).unwrap();
        let key = "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight";
        let mut values = tensors[key].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        values[5] = value;
        tensors.insert(key.into(), Tensor::from_vec(values, tensors[key].dims(), &Device::Cpu).unwrap());
        candle_core::safetensors::save(&tensors, &w).unwrap();
        let e = AdapterSet::load(&dir, &model).err().unwrap_or_else(|| panic!("{name} weights were accepted")).to_string();
        assert!(e.contains(key) && e.contains("element 5"), "{name}: {e}");
    }
    // Training refuses the same settings before it starts.
    let zero = LoraConfig { r: 0, ..LoraConfig::default() };
    assert!(AdapterSet::new(&model, zero, 1).is_err());
    // Mutated weight files: errors, never panics.
    let dir = saved_adapter(&model, &root.join("fuzz"));
    let w = dir.join("adapter_model.safetensors");
    let seed = std::fs::read(&w).unwrap();
    fuzz(&w, &seed, 300, |_| AdapterSet::load(&dir, &model).map(|_| ()).map_err(|e| e.to_string()));
}

#[test]
fn reads_are_bounded() {
    let e = fsutil::read_bounded(Path::new("/dev/zero"), 1 << 16).unwrap_err().to_string();
    assert!(e.contains("/dev/zero") && e.contains("--max-input-mb"), "{e}");
    // A FIFO whose writer never stops.
    let dir = common::scratch_dir("fifo");
    let fifo = dir.join("endless.jsonl");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let writer_path = fifo.clone();
    std::thread::spawn(move || {
        use std::io::Write;
        let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&writer_path) else { return };
        let line = b"{\"instruction\": \"a\", \"output\": \"b\"}\n".repeat(1000);
        while w.write_all(&line).is_ok() {}
    });
    let e = fsutil::read_bounded(&fifo, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("endless.jsonl") && e.contains("input limit"), "{e}");
    let small = dir.join("small.txt");
    std::fs::write(&small, "12345").unwrap();
    assert_eq!(fsutil::read_bounded(&small, 5).unwrap(), b"12345");
    assert!(fsutil::read_bounded(&small, 4).is_err());
}

#[test]
fn installing_a_directory_keeps_old_or_new_and_cleans_up_after_the_dead() {
    let root = common::scratch_dir("install-dir");
    let target = root.join("run");
    let write_dir = |dir: &Path, content: &str| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("file"), content).unwrap();
    };
    let staged = fsutil::sibling(&target, "partial");
    write_dir(&staged, "first");
    fsutil::install_dir(&staged, &target).unwrap();
    write_dir(&staged, "second");
    fsutil::install_dir(&staged, &target).unwrap();
    assert_eq!(std::fs::read_to_string(target.join("file")).unwrap(), "second");
    assert!(!staged.exists());
    // A process that died mid-write left its staging directory; one that died between the
    // two renames of the fallback left the old run aside and no run.
    let dead = u32::MAX - 7;
    write_dir(&root.join(format!(".run.partial-{dead}")), "half");
    fsutil::recover_dir(&target).unwrap();
    assert!(!root.join(format!(".run.partial-{dead}")).exists());
    std::fs::rename(&target, root.join(format!(".run.old-{dead}"))).unwrap();
    fsutil::recover_dir(&target).unwrap();
    assert_eq!(std::fs::read_to_string(target.join("file")).unwrap(), "second");
    // A living process's staging directory (this one's) is left alone.
    write_dir(&staged, "in progress");
    fsutil::recover_dir(&target).unwrap();
    assert!(staged.exists());
}

#[test]
fn a_torn_last_trainer_log_line_is_dropped_and_other_bad_lines_are_errors() {
    let dir = common::scratch_dir("torn-log");
    let log = dir.join("trainer_log.jsonl");
    let line = |step: usize| {
        format!(
            "{{\"current_steps\": {step}, \"total_steps\": 4, \"loss\": 2.5, \"lr\": 0.0001, \"epoch\": 0.5, \"percentage\": 25.0, \"elapsed_time\": \"0:00:01\", \"remaining_time\": \"0:00:03\"}}\n"
        )
    };
    let full = line(1) + &line(2);
    let read = |text: &str| {
        std::fs::write(&log, text).unwrap();
        tunelab::train::TrainerLog::read(&log)
    };
    let complete = read(&full).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(complete.len(), 2);
    let torn = full.clone() + &line(3)[..40];
    assert_eq!(read(&torn).unwrap().len(), 2);
    let broken_middle = line(1) + "{\"current_steps\": 2, \"lo\n" + &line(3);
    let e = read(&broken_middle).unwrap_err().to_string();
    assert!(e.contains("trainer_log.jsonl:2"), "{e}");
}
