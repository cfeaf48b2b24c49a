//! AdamW with decoupled weight decay, f32 moments, a warmup + cosine schedule, global-norm
//! clipping, and state that checkpoints save and restore.
//!
//! `candle_nn::AdamW` keeps moments in the parameter dtype and has no schedule, clipping or state
//! saving; this is what training needs instead.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::{EngineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
}

/// Linear warmup to the peak, then cosine to zero (transformers'
/// `get_cosine_schedule_with_warmup`). `step` counts optimizer steps from 0.
pub fn lr_at(peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// No decay on biases and norm weights (as transformers' Trainer does).
fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("norm"))
}

pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Optimizer steps taken.
    pub t: usize,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let zeros = |var: &Var| Tensor::zeros(var.shape(), DType::F32, var.device());
        let m = params
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = params
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            config,
            params,
            m,
            v,
            t: 0,
        })
    }

    /// The global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum = 0f64;
        for (_, var) in &self.params {
            if let Some(g) = grads.get(var) {
                sum += g
                    .to_dtype(DType::F32)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f32>()? as f64;
            }
        }
        Ok(sum.sqrt())
    }

    /// One update at learning rate `lr`; returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        let clip = match self.config.max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.t += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.t as i32);
        let bias2 = 1.0 - c.beta2.powi(self.t as i32);
        for (i, (name, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            let g = (g.to_dtype(DType::F32)? * clip)?;
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / bias1)? / ((&v / bias2)?.sqrt()? + c.eps)?)?;
            let theta = var.as_tensor().to_dtype(DType::F32)?;
            let theta = if decays(name) && c.weight_decay > 0.0 {
                (theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta
            };
            let theta = (theta - (update * lr)?)?;
            var.set(&theta.to_dtype(var.dtype())?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(norm)
    }

    /// Saves moments and the step count (`m.<name>`, `v.<name>`, `t`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            tensors.insert(format!("m.{name}"), self.m[i].clone());
            tensors.insert(format!("v.{name}"), self.v[i].clone());
        }
        let device = self
            .params
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        tensors.insert("t".into(), Tensor::new(&[self.t as u32], &device)?);
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = self
            .params
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let mut tensors = candle_core::safetensors::load(path, &device)
            .map_err(|e| EngineError::Checkpoint(format!("{}: {e}", path.display())))?;
        for (i, (name, _)) in self.params.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{name}");
                *slot = tensors.remove(&key).ok_or_else(|| {
                    EngineError::Checkpoint(format!("{}: no '{key}'", path.display()))
                })?;
            }
        }
        let t = tensors
            .remove("t")
            .ok_or_else(|| EngineError::Checkpoint(format!("{}: no 't'", path.display())))?;
        self.t = t.to_vec1::<u32>()?[0] as usize;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(lr_at(1.0, 0, 10, 100), 0.0);
        assert!((lr_at(1.0, 5, 10, 100) - 0.5).abs() < 1e-12);
        assert!((lr_at(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(lr_at(1.0, 100, 10, 100).abs() < 1e-12);
    }

    #[test]
    fn one_step_matches_the_adamw_formula_and_clips() {
        // θ=1, g=2 (through loss = 2θ), lr=0.1, wd=0.5: first Adam step moves by lr·sign(g).
        let var = Var::new(&[1f32], &Device::Cpu).unwrap();
        let config = AdamWConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.5,
            max_grad_norm: Some(1.0),
        };
        let mut opt = AdamW::new(vec![("w.weight".into(), var.clone())], config).unwrap();
        let loss = (var.as_tensor() * 2.0).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let norm = opt.step(&grads, 0.1).unwrap();
        assert!((norm - 2.0).abs() < 1e-6);
        let theta = var.as_tensor().to_vec1::<f32>().unwrap()[0];
        let expected = 1.0 * (1.0 - 0.1 * 0.5) - 0.1 * 1.0; // m̂/√v̂ = 1 for the first step
        assert!((theta as f64 - expected).abs() < 1e-5, "{theta}");
    }
}
