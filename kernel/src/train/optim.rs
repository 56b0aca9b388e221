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

    /// The variables it updates, in the order [`AdamW::step`] takes their gradients.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// One update with learning rate `lr` from `grads` (one per variable, same order).
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> candle_core::Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        // β^t is 0 long before t passes i32::MAX.
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
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
            let (dtype, device) = (self.vars[i].dtype(), self.vars[i].device());
            self.m[i] = m.to_dtype(dtype).and_then(|m| m.to_device(device)).map_err(|e| e.to_string())?;
            self.v[i] = v.to_dtype(dtype).and_then(|v| v.to_device(device)).map_err(|e| e.to_string())?;
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One case of `tests/vectors/adamw_reference.py` (torch.optim.AdamW, float64).
    struct Case {
        params: &'static [f64],
        grads: &'static [&'static [f64]],
        lr: f64,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
        /// Restored moments and step count (`exp_avg`, `exp_avg_sq`, `step`), as from a checkpoint.
        warm: Option<(&'static [f64], &'static [f64], usize)>,
        /// Parameters after each step, as torch printed them.
        after: &'static [&'static [f64]],
    }

    /// Recorded with `tests/vectors/adamw_reference.py` (torch 2.15.0, `foreach=False`).
    const CASES: [Case; 3] = [
        Case {
            params: &[1.0, -2.0, 0.5, 0.0],
            grads: &[&[0.5, 0.25, -0.125, 0.0], &[-1.0, 2.0, 0.0, 0.001], &[0.3, -0.7, 4.0, -2.0]],
            lr: 0.1,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            warm: None,
            after: &[
                &[0.899000002, -2.097999996, 0.5994999920000006, 0.0],
                &[0.9347113542385653, -2.1780485712611055, 0.6659063098389146, -0.07441263026631013],
                &[0.9445437622964504, -2.214884816174715, 0.6030063603677441, -0.010485612834462046],
            ],
        },
        Case {
            params: &[0.25, -0.75, 3.0],
            grads: &[&[10.0, -0.01, 0.2], &[-5.0, 0.02, 0.2], &[0.0001, 0.0, -0.2], &[2.0, 2.0, 2.0]],
            lr: 0.05,
            betas: (0.8, 0.95),
            eps: 1e-6,
            weight_decay: 0.1,
            warm: None,
            after: &[
                &[0.1987500049999995, -0.69625499950005, 2.9350002499987498],
                &[0.18713329900918105, -0.7136939419356778, 2.8703254987475058],
                &[0.17841780717287892, -0.7254457278664159, 2.8469575228928874],
                &[0.16545763585536885, -0.7545656197191006, 2.7993992022557115],
            ],
        },
        Case {
            params: &[0.4, -1.5, 2.0],
            grads: &[&[0.1, -0.2, 0.3], &[-0.4, 0.5, 0.0]],
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            warm: Some((&[0.05, -0.02, 0.1], &[0.001, 0.0004, 0.02], 5)),
            after: &[&[0.39942823757668466, -1.4994015150238904, 1.999720291237767], &[0.3993392133700722, -1.4995942680395193, 1.9994760204190831]],
        },
    ];

    #[test]
    fn matches_torch_adamw() {
        let dev = &Device::Cpu;
        for (c, case) in CASES.iter().enumerate() {
            let p = Var::new(case.params, dev).unwrap();
            let mut opt = AdamW::new(vec![p.clone()], case.betas.0, case.betas.1, case.eps, case.weight_decay).unwrap();
            if let Some((m, v, t)) = case.warm {
                let state = HashMap::from([("m.0".to_string(), Tensor::new(m, dev).unwrap()), ("v.0".to_string(), Tensor::new(v, dev).unwrap())]);
                opt.load_state(&state, t).unwrap();
            }
            for (s, (g, want)) in case.grads.iter().zip(case.after).enumerate() {
                opt.step(&[Tensor::new(*g, dev).unwrap()], case.lr).unwrap();
                let got: Vec<f64> = p.as_tensor().to_vec1().unwrap();
                for (x, y) in got.iter().zip(*want) {
                    assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "case {c} step {}: {got:?} vs torch {want:?}", s + 1);
                }
            }
        }
    }
}
