//! A frozen projection with its LoRA update as one op: `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ`.
//!
//! Forward writes the LoRA term into the base product's output (one output-sized tensor
//! instead of four). Backward recomputes the rank-`r` bottleneck `x·Aᵀ` (`r` columns, cheap)
//! and returns `dX = dY·W + s·(dY·B)·A`, `dA = s·(dY·B)ᵀ·x`, `dB = s·dYᵀ·(x·Aᵀ)`; the frozen
//! `W` gets no gradient and costs no `dW` product. It is [`super::project`] with one part
//! and nothing around it.

use candle_core::Tensor;

use super::projection::{project, Input, Part, PartLora};

/// `x·Wᵀ + scale·(x·Aᵀ)·Bᵀ` for `x` `[..., in]`, a frozen `w` `[out, in]`, trainable `a`
/// `[r, in]` and `b` `[out, r]`; gradients flow to `x`, `a` and `b`.
pub fn lora_linear(x: &Tensor, w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    project(x, Input::Plain, &[Part { weight: w, bias: None, lora: Some(PartLora { a, b, scale }) }], None)
}
