//! AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW`), with its moment
//! estimates exposed so checkpoints can save and restore them.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

/// AdamW over a fixed list of variables.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Steps taken (for bias correction).
    pub t: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// An optimiser with zeroed moments.
    pub fn new(vars: Vec<Var>, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> candle_core::Result<Self> {
        let m = vars.iter().map(|v| v.zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self { vars, m, v, t: 0, beta1, beta2, eps, weight_decay })
    }

    /// One update with learning rate `lr` from `grads` (one per variable, same order).
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> candle_core::Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (i, (var, g)) in self.vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + self.eps)?;
            let update = ((&m / bc1)? / denom)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Moments as named tensors (`m.{i}`, `v.{i}`) for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            out.insert(format!("m.{i}"), m.clone());
            out.insert(format!("v.{i}"), v.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_tensors`] and the step count `t`.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, t: usize) -> Result<(), String> {
        for i in 0..self.vars.len() {
            let get = |k: String| tensors.get(&k).cloned().ok_or_else(|| format!("optimizer state lacks {k}"));
            let (m, v) = (get(format!("m.{i}"))?, get(format!("v.{i}"))?);
            if m.dims() != self.vars[i].dims() || v.dims() != self.vars[i].dims() {
                return Err(format!("optimizer state {i} has shape {:?}, the adapter needs {:?}", m.dims(), self.vars[i].dims()));
            }
            self.m[i] = m.to_dtype(self.vars[i].dtype()).map_err(|e| e.to_string())?;
            self.v[i] = v.to_dtype(self.vars[i].dtype()).map_err(|e| e.to_string())?;
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps of torch.optim.AdamW(lr=0.1, weight_decay=0.01) on p = [1.0, -2.0] with
    /// gradients [0.5, 0.25] then [-1.0, 2.0], computed by hand from PyTorch's update rule.
    #[test]
    fn follows_pytorch_adamw() {
        let p = Var::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![p.clone()], 0.9, 0.999, 1e-8, 0.01).unwrap();
        opt.step(&[Tensor::new(&[0.5f64, 0.25], &Device::Cpu).unwrap()], 0.1).unwrap();
        opt.step(&[Tensor::new(&[-1.0f64, 2.0], &Device::Cpu).unwrap()], 0.1).unwrap();
        let got: Vec<f64> = p.as_tensor().to_vec1().unwrap();
        // Reference recurrence in plain f64.
        let (mut x, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for (t, g) in [[0.5, 0.25], [-1.0, 2.0]].iter().enumerate() {
            let t = t as i32 + 1;
            for i in 0..2 {
                x[i] *= 1.0 - 0.1 * 0.01;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.999f64.powi(t));
                x[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        for i in 0..2 {
            assert!((got[i] - x[i]).abs() < 1e-12, "{got:?} vs {x:?}");
        }
    }
}
