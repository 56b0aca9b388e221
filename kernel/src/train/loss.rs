//! Next-token cross-entropy over labelled positions only: the training loss (with its
//! gradients) and the held-out loss.

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::data::{Batch, Encoded, IGNORE_INDEX};
use crate::error::Result;
use crate::model::ops::cross_entropy_rows;
use crate::model::Transformer;

/// Positions (flattened `b·t + i`) whose next label counts, and those labels.
fn labelled_positions(labels: &Tensor) -> candle_core::Result<(Vec<u32>, Vec<u32>)> {
    let (_, t) = labels.dims2()?;
    let rows = labels.to_vec2::<i64>()?;
    let (mut pos, mut targets) = (Vec::new(), Vec::new());
    for (b, row) in rows.iter().enumerate() {
        for i in 0..t.saturating_sub(1) {
            if row[i + 1] != IGNORE_INDEX {
                pos.push((b * t + i) as u32);
                targets.push(row[i + 1] as u32);
            }
        }
    }
    Ok((pos, targets))
}

/// Mean cross-entropy of `logits` `[b, t, v]` predicting `labels` `[b, t]` shifted by one
/// (position i predicts label i+1), over labels ≠ [`IGNORE_INDEX`]. Returns the loss and the
/// number of labelled positions.
pub fn masked_cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<(Tensor, usize)> {
    let (b, t, v) = logits.dims3()?;
    let (pos, targets) = labelled_positions(labels)?;
    let idx = Tensor::from_vec(pos, targets.len(), logits.device())?;
    let rows = logits.reshape((b * t, v))?.index_select(&idx, 0)?;
    let n = targets.len();
    Ok(((cross_entropy_rows(&rows, &targets)?.sum_all()? / n.max(1) as f64)?, n))
}

/// The training loss of `model` on a batch: the output head runs only on positions whose
/// next label counts (prompt positions cost no vocabulary-sized work), then fused
/// cross-entropy. Returns the mean loss and the number of labelled positions.
pub fn causal_lm_loss(model: &Transformer, ids: &Tensor, labels: &Tensor) -> Result<(Tensor, usize)> {
    let hidden = model.forward_train_hidden(ids)?;
    let (pos, targets) = labelled_positions(labels)?;
    Ok((head_loss(model, &hidden, pos, &targets)?, targets.len()))
}

/// The training loss and its gradients in one call: `(loss, labelled positions, gradients)`.
/// With `recompute`, activations are recomputed layer by layer in the backward pass
/// ([`Transformer::loss_and_grads_recomputed`]): the same gradients in a fraction of the
/// memory, for about a third more compute.
pub fn causal_lm_loss_and_grads(model: &Transformer, ids: &Tensor, labels: &Tensor, recompute: bool) -> Result<(Tensor, usize, GradStore)> {
    if !recompute {
        let (loss, n) = causal_lm_loss(model, ids, labels)?;
        let grads = loss.backward()?;
        return Ok((loss, n, grads));
    }
    let (pos, targets) = labelled_positions(labels)?;
    let n = targets.len();
    let (loss, grads) = model.loss_and_grads_recomputed(ids, |hidden| head_loss(model, hidden, pos, &targets))?;
    Ok((loss, n, grads))
}

/// Mean loss over `data` with the inference kernels (no dropout, no gradients), weighted by
/// labelled tokens. Like the training loss, the output head runs only on labelled positions
/// and, on the fused path, a chunk of rows at a time: no `[batch, seq, vocab]` logits (half
/// a gigabyte at 4 × 585 tokens) are ever held.
pub fn eval_loss(model: &Transformer, data: &[Encoded], batch_size: usize, pad_id: u32) -> Result<f64> {
    let (mut total, mut count) = (0.0, 0usize);
    for chunk in data.chunks(batch_size.max(1)) {
        let items: Vec<&Encoded> = chunk.iter().collect();
        let batch = Batch::collate(&items, pad_id, model.device())?;
        let hidden = model.forward_hidden(&batch.input_ids)?;
        let (pos, targets) = labelled_positions(&batch.labels)?;
        let n = targets.len();
        let loss = head_loss(model, &hidden, pos, &targets)?.detach();
        total += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? * n as f64;
        count += n;
    }
    Ok(total / count.max(1) as f64)
}

/// Mean cross-entropy of the final hidden states at positions `pos` against `targets`.
fn head_loss(model: &Transformer, hidden: &Tensor, pos: Vec<u32>, targets: &[u32]) -> Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    let n = targets.len();
    if n == 0 {
        // Keeps the graph connected (zero gradients) so callers need no special case.
        return Ok((hidden.sum_all()? * 0.0)?);
    }
    let idx = Tensor::from_vec(pos, n, hidden.device())?;
    let rows = hidden.reshape((b * t, h))?.index_select(&idx, 0)?;
    Ok((model.head_cross_entropy(&rows, targets)?.sum_all()? / n as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Architecture, ModelConfig, Weights};
    use candle_core::Device;

    #[test]
    fn held_out_loss_equals_cross_entropy_over_the_full_logits() {
        let cfg = ModelConfig::tiny(Architecture::Llama);
        let model = Transformer::load(&cfg, &Weights::random(&cfg, 4, candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
        let encoded = |ids: &[u32], prompt: usize| Encoded {
            input_ids: ids.to_vec(),
            labels: ids.iter().enumerate().map(|(i, &t)| if i < prompt { IGNORE_INDEX } else { i64::from(t) }).collect(),
            prompt_tokens: prompt,
            response_tokens: ids.len() - prompt,
            truncated: false,
        };
        // Two batches of two, different lengths (right padding), prompts masked.
        let data = [encoded(&[1, 4, 2, 9, 3, 7], 2), encoded(&[5, 6, 2], 1), encoded(&[3, 3, 8, 1, 10], 3), encoded(&[2, 7, 9, 4], 0)];
        let (mut total, mut count) = (0.0, 0);
        for chunk in data.chunks(2) {
            let batch = Batch::collate(&chunk.iter().collect::<Vec<_>>(), 0, &Device::Cpu).unwrap();
            let (loss, n) = masked_cross_entropy(&model.forward(&batch.input_ids).unwrap(), &batch.labels).unwrap();
            total += f64::from(loss.to_scalar::<f32>().unwrap()) * n as f64;
            count += n;
        }
        let got = eval_loss(&model, &data, 2, 0).unwrap();
        assert!((got - total / count as f64).abs() < 1e-5, "{got} vs {}", total / count as f64);
    }

    #[test]
    fn prompt_positions_contribute_nothing() {
        let logits = Tensor::arange(0f32, 2.0 * 4.0 * 5.0, &Device::Cpu).unwrap().reshape((2, 4, 5)).unwrap().sin().unwrap();
        let labels = Tensor::new(&[[-100i64, -100, 3, 1], [-100, 2, -100, -100]], &Device::Cpu).unwrap();
        let (loss, count) = masked_cross_entropy(&logits, &labels).unwrap();
        assert_eq!(count, 3);
        // Changing logits at positions whose next label is ignored leaves the loss unchanged.
        let mut data: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        for v in &mut data[0..5] {
            *v += 7.0;
        } // row 0, position 0 predicts label[1] = -100
        for v in &mut data[(4 + 2) * 5..(4 + 3) * 5] {
            *v -= 3.0;
        } // row 1, position 2 predicts -100
        let changed = Tensor::from_vec(data, (2, 4, 5), &Device::Cpu).unwrap();
        let (loss2, _) = masked_cross_entropy(&changed, &labels).unwrap();
        assert_eq!(loss.to_scalar::<f32>().unwrap(), loss2.to_scalar::<f32>().unwrap());
        // And equals candle's cross-entropy over just the labelled positions.
        let rows = Tensor::stack(&[logits.get(0).unwrap().get(1).unwrap(), logits.get(0).unwrap().get(2).unwrap(), logits.get(1).unwrap().get(0).unwrap()], 0)
            .unwrap();
        let want = candle_nn::loss::cross_entropy(&rows, &Tensor::new(&[3u32, 1, 2], &Device::Cpu).unwrap()).unwrap();
        assert!((want.to_scalar::<f32>().unwrap() - loss.to_scalar::<f32>().unwrap()).abs() < 1e-6);
    }
}
