//! Memory before training: an estimate of what a run will need on top of the loaded model,
//! what the machine has available, and this process's resident-set figures for the log.

use crate::model::ModelConfig;

/// Bytes a training run needs beyond the loaded model weights, by part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// Forward activations kept for the backward pass (one micro-batch), plus the backward
    /// pass's transient gradients.
    pub activations: u64,
    /// Adapter weights, their gradients and AdamW's two moments.
    pub optimizer: u64,
    /// The output head's working set (one chunk of logits, labelled rows and their gradients).
    pub head: u64,
}

impl MemoryEstimate {
    /// The estimate for micro-batches of up to `tokens` positions (batch × longest padded
    /// sequence) with `trainable` adapter parameters, `elem` bytes per value; `recompute`
    /// is the low-memory path that keeps only each layer's input.
    pub fn new(cfg: &ModelConfig, tokens: usize, trainable: usize, elem: usize, recompute: bool) -> Self {
        let (h, f) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
        let d = cfg.head_dim() as u64;
        let (heads, kv) = (cfg.num_attention_heads as u64, cfg.num_key_value_heads as u64);
        let layers = cfg.num_hidden_layers as u64;
        // Values per token one layer keeps for its backward pass with the fused ops
        // (`fused::project`): its input, the joined q/k/v, the attention output, the
        // residual sum after attention and the joined gate/up (norms, the SwiGLU product and
        // the projections feeding residual sums are recomputed or never kept). Qwen2's
        // biases are applied inside the q/k/v op and keep nothing.
        let per_layer = 2 * h + (heads + 2 * kv) * d + heads * d + 2 * f;
        // The backward pass holds about two layers' worth of gradients and op temporaries.
        let transient = 2 * per_layer;
        let kept = if recompute { layers * h + per_layer } else { layers * per_layer };
        let tokens = tokens as u64;
        let activations = tokens * (kept + transient + h) * elem as u64;
        let optimizer = 5 * trainable as u64 * elem as u64;
        let head = (128 * cfg.vocab_size as u64 + 3 * tokens * h) * elem as u64;
        Self { activations, optimizer, head }
    }

    /// The estimate for the device-generic path a GPU runs (see
    /// [`crate::model::portable`]), which composes candle ops instead of this crate's fused
    /// CPU ops, so its graph keeps every intermediate: per token and layer, about three
    /// values per norm element, four output-sized tensors per LoRA projection, the rotary
    /// arithmetic on q and k, and six `heads × longest` tensors of attention scores
    /// (scaled, masked, and softmax's steps); the output head keeps about six
    /// vocabulary-sized rows per labelled token (logits, log-softmax steps, gradient).
    /// Micro-batches of up to `tokens` positions whose longest padded row is `longest`.
    pub fn composed(cfg: &ModelConfig, tokens: usize, longest: usize, trainable: usize, elem: usize, recompute: bool) -> Self {
        let (h, f) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
        let d = cfg.head_dim() as u64;
        let (heads, kv) = (cfg.num_attention_heads as u64, cfg.num_key_value_heads as u64);
        let layers = cfg.num_hidden_layers as u64;
        let outputs = (heads + 2 * kv) * d + 2 * h + 2 * f;
        let per_layer = 6 * h + 4 * outputs + 5 * (heads + kv) * d + 6 * heads * longest as u64 + 2 * heads * d + 2 * h + 2 * f;
        let kept = if recompute { layers * h + per_layer } else { layers * per_layer };
        let tokens = tokens as u64;
        let activations = tokens * (kept + 2 * per_layer + h) * elem as u64;
        let optimizer = 5 * trainable as u64 * elem as u64;
        let head = 6 * tokens * cfg.vocab_size as u64 * elem as u64;
        Self { activations, optimizer, head }
    }

    /// All parts together.
    pub fn total(&self) -> u64 {
        self.activations + self.optimizer + self.head
    }
}

/// Memory the kernel can give this process without swapping (`MemAvailable`, Linux), or
/// `None` where it cannot be read.
pub fn available_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&info, "MemAvailable:")
}

/// This process's peak resident set size (`VmHWM`, Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, "VmHWM:")
}

/// This process's current resident set size (`VmRSS`, Linux).
pub fn rss_bytes() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, "VmRSS:")
}

/// A `Name:   1234 kB` line's value in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let kib: u64 = text.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes as mebibytes, rounded.
pub(crate) fn mib(bytes: u64) -> u64 {
    (bytes + (1 << 19)) >> 20
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;

    fn smollm() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            vocab_size: 49152,
            rope_theta: 1e5,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
        }
    }

    #[test]
    fn recompute_needs_far_less_and_estimates_grow_with_tokens() {
        let cfg = smollm();
        let full = MemoryEstimate::new(&cfg, 4 * 585, 2_442_240, 4, false);
        let low = MemoryEstimate::new(&cfg, 4 * 585, 2_442_240, 4, true);
        assert!(low.total() * 4 < full.total(), "{low:?} vs {full:?}");
        assert!(MemoryEstimate::new(&cfg, 4 * 256, 2_442_240, 4, false).total() < full.total());
        // 4 × 585 tokens keep about 0.7 MB per token over 30 layers: 1.5–2.2 GiB in all.
        let gib = full.total() as f64 / (1u64 << 30) as f64;
        assert!((1.5..2.2).contains(&gib), "{gib} GiB");
    }

    #[test]
    fn the_composed_path_keeps_far_more_than_the_fused_one() {
        let cfg = smollm();
        let fused = MemoryEstimate::new(&cfg, 4 * 512, 2_442_240, 4, false);
        let composed = MemoryEstimate::composed(&cfg, 4 * 512, 512, 2_442_240, 4, false);
        assert!(composed.activations > 5 * fused.activations, "{composed:?} vs {fused:?}");
        assert!(MemoryEstimate::composed(&cfg, 4 * 512, 512, 2_442_240, 4, true).total() < composed.total());
        // Attention scores grow with the longest row at a fixed token count.
        assert!(MemoryEstimate::composed(&cfg, 4 * 512, 1024, 2_442_240, 4, false).total() > composed.total());
    }

    #[test]
    fn reads_proc_fields() {
        assert_eq!(kib_field("MemTotal: 10 kB\nMemAvailable:  2048 kB\n", "MemAvailable:"), Some(2048 * 1024));
        assert_eq!(kib_field("nothing here", "VmHWM:"), None);
        if cfg!(target_os = "linux") {
            // Both fields from one read: Linux reports the peak as at least the current RSS in
            // the same snapshot, while two separate reads can straddle a release of memory by
            // another test thread (the peak is only updated lazily), so they prove nothing.
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let (rss, peak) = (kib_field(&status, "VmRSS:").unwrap(), kib_field(&status, "VmHWM:").unwrap());
            assert!(rss > 0 && peak >= rss, "VmRSS {rss} VmHWM {peak}");
            assert!(rss_bytes().unwrap() > 0 && peak_rss_bytes().unwrap() > 0);
        }
    }
}
