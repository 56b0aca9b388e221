//! Decoding many independent sequences in one step, each at its own position with its own
//! key/value cache (the model side of continuous batching).
//!
//! A step's rows may belong to different sequences and several rows to one sequence (a
//! prompt being prefilled). The projections and the MLP run once for all rows (one matrix
//! product per weight, so the weights are read once per step whatever the number of rows);
//! attention runs per row over exactly its sequence's cached positions up to its own.
//! Compared with a left-padded batch there is no padding, no mask, no per-step copy of the
//! cache, and a finished sequence's slot can take a new prompt in the next step.

use candle_core::{DType, Tensor};

use super::attend::{attend, HeadGroup};
use super::{DecoderLayer, Transformer};
use crate::error::{Error, Result};
use crate::model::ops::{self, OpMode};
use crate::model::{fused, team, Linear};

/// One sequence's rotated keys and values for every layer, stored head by head
/// (`[kv_heads, capacity, head_dim]` per layer) with room for a fixed number of positions.
#[derive(Debug, Clone)]
pub struct SequenceCache {
    layers: Vec<LayerKv>,
    len: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
}

#[derive(Debug, Clone)]
struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl SequenceCache {
    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions this cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Starts this empty cache with everything `prefix` holds, so a prompt that begins with
    /// `prefix`'s tokens is prefilled from there on (prefix caching). Where the model
    /// prefills rows independently ([`Transformer::prefills_rows_independently`]) these are
    /// exactly the keys and values the prompt's own prefill would write.
    pub fn start_with(&mut self, prefix: &SequenceCache) -> Result<()> {
        let fits = self.len == 0
            && prefix.len <= self.capacity
            && prefix.layers.len() == self.layers.len()
            && (prefix.kv_heads, prefix.head_dim) == (self.kv_heads, self.head_dim);
        if !fits {
            return Err(Error::InvalidArgument(format!(
                "a cache of {} positions ({} used, {} layers of {}×{}) cannot start with a prefix of {} positions ({} layers of {}×{})",
                self.capacity,
                self.len,
                self.layers.len(),
                self.kv_heads,
                self.head_dim,
                prefix.len,
                prefix.layers.len(),
                prefix.kv_heads,
                prefix.head_dim
            )));
        }
        let n = prefix.len * self.head_dim;
        for (to, from) in self.layers.iter_mut().zip(&prefix.layers) {
            // Head by head: a head's positions are contiguous, its cache's capacity apart.
            for h in 0..self.kv_heads {
                let (src, dst) = (h * prefix.capacity * self.head_dim, h * self.capacity * self.head_dim);
                to.k[dst..dst + n].copy_from_slice(&from.k[src..src + n]);
                to.v[dst..dst + n].copy_from_slice(&from.v[src..src + n]);
            }
        }
        self.len = prefix.len;
        Ok(())
    }
}

/// Head layout of one attention layer.
#[derive(Debug, Clone, Copy)]
struct Heads {
    heads: usize,
    kv_heads: usize,
    dim: usize,
}

impl Transformer {
    /// Whether [`Transformer::decode_rows`] and its kin apply: f32 weights on the CPU (other
    /// devices decode in padded batches).
    pub fn supports_sequence_decoding(&self) -> bool {
        crate::model::portable::cpu_kernels(&self.embed_tokens) && self.dtype() == DType::F32 && self.lm_head.weight().dtype() == DType::F32
    }

    /// Whether prompts prefilled together in one [`Transformer::step_sequences`] get exactly
    /// what each gets alone: every projection and the output head multiply row by row in
    /// prompt passes (the file's or integer blocks, see `Linear`). Everything else in a step
    /// (norms, attention over a row's own sequence, activations) already works row by row.
    pub fn prefills_rows_independently(&self) -> bool {
        self.all_multiply_by_blocks(OpMode::Prompt)
    }

    /// Whether every projection and the output head multiply by the few-rows kernels over
    /// block weights in passes of kind `mode`.
    fn all_multiply_by_blocks(&self, mode: OpMode) -> bool {
        self.layers.iter().all(|l| l.projections().into_iter().all(|p| p.multiplies_by_blocks(mode))) && self.lm_head.multiplies_by_blocks(mode)
    }

    /// An empty cache for one sequence of at most `capacity` positions.
    pub fn sequence_cache(&self, capacity: usize) -> Result<SequenceCache> {
        if capacity > self.rotary.len() {
            return Err(Error::InvalidArgument(format!("a sequence of {capacity} positions exceeds the model's context of {}", self.rotary.len())));
        }
        let h = self.heads();
        let size = h.kv_heads * capacity * h.dim;
        let layers = self.layers.iter().map(|_| LayerKv { k: vec![0.0; size], v: vec![0.0; size] }).collect();
        Ok(SequenceCache { layers, len: 0, capacity, kv_heads: h.kv_heads, head_dim: h.dim })
    }

    /// Runs the prompt `ids` and returns its cache, sized for `capacity` positions, and the
    /// logits of its last position `[vocab]`.
    pub fn prefill(&self, ids: &[u32], capacity: usize) -> Result<(SequenceCache, Tensor)> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        let mut cache = self.sequence_cache(capacity)?;
        let logits = self.step_sequences(ids, &vec![0; ids.len()], &mut [&mut cache])?;
        Ok((cache, logits.squeeze(0)?))
    }

    /// Feeds one token per sequence (`tokens[r]` after what `caches[r]` holds) and returns
    /// the next-token logits `[rows, vocab]`. Each cache grows by one position.
    pub fn decode_rows(&self, tokens: &[u32], caches: &mut [&mut SequenceCache]) -> Result<Tensor> {
        let seq: Vec<usize> = (0..tokens.len()).collect();
        self.step_sequences(tokens, &seq, caches)
    }

    /// One step over several sequences at once: row `r` feeds `tokens[r]` to sequence
    /// `seq[r]`, after what its cache holds and the earlier rows of the same sequence (so a
    /// step can prefill new prompts, several tokens each, beside sequences decoding one
    /// token). Every sequence needs at least one row. Returns the next-token logits after
    /// each sequence's last row, `[sequences, vocab]`. Only a step of one row per sequence
    /// reads quantized decoding weights; a step that prefills reads the f32 weights.
    pub fn step_sequences(&self, tokens: &[u32], seq: &[usize], caches: &mut [&mut SequenceCache]) -> Result<Tensor> {
        // A step whose products all run the few-rows kernels over blocks (every parallel
        // loop of the step a `team::for_each`) keeps the pool's threads spinning between its
        // ~120 short loops (a decoding step's are tens of microseconds each).
        let mode = Self::step_mode(tokens.len(), caches.len());
        if self.all_multiply_by_blocks(mode) {
            team::with_spinning_team(|| self.step_sequences_on_pool(tokens, seq, caches, mode))
        } else {
            fused::on_pool(|| self.step_sequences_on_pool(tokens, seq, caches, mode))
        }
    }

    /// [`Transformer::step_sequences`], run by a thread of rayon's pool, a pass of kind `mode`.
    fn step_sequences_on_pool(&self, tokens: &[u32], seq: &[usize], caches: &mut [&mut SequenceCache], mode: OpMode) -> Result<Tensor> {
        if !self.supports_sequence_decoding() {
            return Err(Error::InvalidArgument("sequence decoding needs f32 weights on the CPU".into()));
        }
        if seq.len() != tokens.len() || tokens.is_empty() {
            return Err(Error::InvalidArgument(format!("{} tokens for {} sequence indices", tokens.len(), seq.len())));
        }
        // Each row's position, and each sequence's last row.
        let mut next: Vec<usize> = caches.iter().map(|c| c.len).collect();
        let mut last_row = vec![usize::MAX; caches.len()];
        let mut positions = Vec::with_capacity(tokens.len());
        for (r, &s) in seq.iter().enumerate() {
            let c = caches.get(s).ok_or_else(|| Error::InvalidArgument(format!("row {r} names sequence {s} of {}", caches.len())))?;
            if next[s] >= c.capacity || c.layers.len() != self.layers.len() {
                return Err(Error::InvalidArgument(format!(
                    "sequence {s}'s cache is full or belongs to another model ({} of {} positions, {} layers)",
                    next[s],
                    c.capacity,
                    c.layers.len()
                )));
            }
            positions.push(next[s]);
            next[s] += 1;
            last_row[s] = r;
        }
        if let Some(s) = last_row.iter().position(|&r| r == usize::MAX) {
            return Err(Error::InvalidArgument(format!("sequence {s} has no row in this step")));
        }
        let half = self.heads().dim / 2;
        let at = Tensor::from_vec(positions.iter().map(|&p| p as u32).collect::<Vec<_>>(), (tokens.len(), 1), &self.device)?;
        let (cos, sin) = self.rotary.gather(&at)?;
        let table = |t: Tensor| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>();
        let rotary = Rotary { cos: &table(cos)?, sin: &table(sin)?, half };
        let eps = self.cfg.rms_norm_eps;
        let rows = Rows { seq, positions: &positions, mode };
        let mut x = self.embed_tokens.index_select(&Tensor::from_slice(tokens, tokens.len(), &self.device)?, 0)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let attended = self.attend_rows(layer, l, &x, caches, &rows, &rotary)?;
            let h = (&x + layer.self_attn.o_proj.forward(&attended, mode)?)?;
            let normed = ops::rms_norm(&h, &layer.post_attention_layernorm, eps, mode)?;
            x = (&h + layer.mlp.forward(&normed, mode)?)?;
        }
        for (c, n) in caches.iter_mut().zip(next) {
            c.len = n;
        }
        let last = Tensor::from_vec(last_row.iter().map(|&r| r as u32).collect::<Vec<_>>(), last_row.len(), &self.device)?;
        let x = ops::rms_norm(&x.index_select(&last, 0)?, &self.norm, eps, mode)?;
        Ok(self.lm_head.forward(&x, mode)?)
    }

    /// The kind of pass a step of `rows` rows over `sequences` sequences is: one token per
    /// sequence is a decoding pass (quantized weights when there are any), else a prompt pass.
    fn step_mode(rows: usize, sequences: usize) -> OpMode {
        if rows == sequences {
            OpMode::Inference
        } else {
            OpMode::Prompt
        }
    }

    fn heads(&self) -> Heads {
        Heads { heads: self.cfg.num_attention_heads, kv_heads: self.cfg.num_key_value_heads, dim: self.cfg.head_dim() }
    }

    /// Layer `l`'s attention for a step's rows: projects, rotates, writes each row's key and
    /// value into its sequence's cache, then attends each row over its sequence's positions
    /// up to its own. Returns the heads' outputs `[rows, heads · head_dim]`, ready for the
    /// output projection.
    fn attend_rows(&self, layer: &DecoderLayer, l: usize, x: &Tensor, caches: &mut [&mut SequenceCache], rows: &Rows, rotary: &Rotary) -> Result<Tensor> {
        let a = &layer.self_attn;
        let hd = self.heads();
        let normed = ops::rms_norm(x, &layer.input_layernorm, self.cfg.rms_norm_eps, rows.mode)?;
        let values = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let [q, k, v] = Linear::forward_joined([&a.q_proj, &a.k_proj, &a.v_proj], &normed, rows.mode)?;
        let (q, k, v) = (values(q)?, values(k)?, values(v)?);
        let (qw, kw) = (hd.heads * hd.dim, hd.kv_heads * hd.dim);
        // Keys and values first, written in order (a few hundred values per row); then every
        // row reads its sequence.
        for (r, &s) in rows.seq.iter().enumerate() {
            let cache = &mut caches[s];
            let cap = cache.capacity;
            let kv = &mut cache.layers[l];
            let mut key = k[r * kw..(r + 1) * kw].to_vec();
            key.chunks_exact_mut(hd.dim).for_each(|h| rotary.apply(h, r));
            for g in 0..hd.kv_heads {
                let at = (g * cap + rows.positions[r]) * hd.dim;
                kv.k[at..at + hd.dim].copy_from_slice(&key[g * hd.dim..(g + 1) * hd.dim]);
                kv.v[at..at + hd.dim].copy_from_slice(&v[r * kw + g * hd.dim..r * kw + (g + 1) * hd.dim]);
            }
        }
        let caches: &[&mut SequenceCache] = caches;
        // One task per row and key/value head (the query heads sharing it), so a single
        // sequence's step also spreads over the threads; each head's arithmetic is the same
        // whatever the split.
        let group = qw / hd.kv_heads;
        let mut out = vec![0f32; rows.seq.len() * qw];
        team::for_each_chunk_mut(&mut out, group, |unit, out| {
            let (r, g) = (unit / hd.kv_heads, unit % hd.kv_heads);
            let mut query = q[r * qw + g * group..r * qw + (g + 1) * group].to_vec();
            query.chunks_exact_mut(hd.dim).for_each(|h| rotary.apply(h, r));
            let cache = &caches[rows.seq[r]];
            let (kv, len) = (&cache.layers[l], rows.positions[r] + 1);
            let head = g * cache.capacity * hd.dim..(g * cache.capacity + len) * hd.dim;
            let group = HeadGroup { q: &query, keys: &kv.k[head.clone()], values: &kv.v[head], reps: hd.heads / hd.kv_heads, dim: hd.dim };
            attend(&group, out);
        });
        Ok(Tensor::from_vec(out, (rows.seq.len(), qw), &self.device)?)
    }
}

/// Which sequence each row of a step feeds, at which position, and the kind of pass.
struct Rows<'a> {
    seq: &'a [usize],
    positions: &'a [usize],
    mode: OpMode,
}

/// Each row's rotary table entries, `[rows, half]`.
struct Rotary<'a> {
    cos: &'a [f64],
    sin: &'a [f64],
    half: usize,
}

impl Rotary<'_> {
    /// Rotates one head vector of row `r` at that row's position.
    fn apply(&self, head: &mut [f32], r: usize) {
        let span = r * self.half..(r + 1) * self.half;
        fused::rotate(head, 1, 2 * self.half, &self.cos[span.clone()], &self.sin[span], 1.0);
    }
}
