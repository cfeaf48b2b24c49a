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
    /// Update f32 CPU parameters in place (off only to test against the composed update).
    fused: bool,
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
            fused: true,
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
            let shrink =
                (decays(name) && c.weight_decay > 0.0).then_some(1.0 - lr * c.weight_decay);
            if self.fused && fused::applies(var.as_tensor(), g, &self.m[i], &self.v[i]) {
                fused::step(
                    var.as_tensor(),
                    g,
                    [&self.m[i], &self.v[i]],
                    fused::Step {
                        clip,
                        beta1: c.beta1,
                        beta2: c.beta2,
                        bias1,
                        bias2,
                        eps: c.eps,
                        lr,
                        shrink,
                    },
                )?;
                continue;
            }
            let g = (g.to_dtype(DType::F32)? * clip)?;
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / bias1)? / ((&v / bias2)?.sqrt()? + c.eps)?)?;
            let theta = var.as_tensor().to_dtype(DType::F32)?;
            let theta = match shrink {
                Some(factor) => (theta * factor)?,
                None => theta,
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

/// The update as three in-place passes over f32 CPU memory (moments, then the parameter), with
/// the same float operations in the same order as the composed update above, so both give the
/// same bits (a test checks); the composed one allocates about ten temporaries per parameter,
/// which for an embedding matrix is most of a step's optimizer time and a memory peak.
mod fused {
    use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor};

    #[derive(Clone, Copy)]
    pub struct Step {
        pub clip: f64,
        pub beta1: f64,
        pub beta2: f64,
        pub bias1: f64,
        pub bias2: f64,
        pub eps: f64,
        pub lr: f64,
        /// `1 − lr·weight_decay` for parameters that decay.
        pub shrink: Option<f64>,
    }

    pub fn applies(theta: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> bool {
        [theta, g, m, v].iter().all(|t| {
            t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous()
        }) && [g, m, v].iter().all(|t| t.shape() == theta.shape())
    }

    /// `m ← m·β + (g·clip)·(1 − β)`, or with `(g·clip)²` for the second moment.
    struct Moment {
        beta: f32,
        one_minus_beta: f32,
        clip: f32,
        square: bool,
    }

    /// `θ ← θ·shrink − lr · (m·(1/b₁)) / (√(v·(1/b₂)) + ε)`.
    struct Update {
        inv_bias1: f32,
        inv_bias2: f32,
        eps: f32,
        lr: f32,
        shrink: Option<f32>,
    }

    const CHUNK: usize = 1 << 14;

    fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("fused AdamW: not contiguous".into()))?;
        Ok(&s.as_slice::<f32>()?[a..b])
    }

    fn f32s_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("fused AdamW: not contiguous".into()))?;
        match s {
            CpuStorage::F32(v) => Ok(&mut v[a..b]),
            _ => candle_core::bail!("fused AdamW: f32 only"),
        }
    }

    impl InplaceOp2 for Moment {
        fn name(&self) -> &'static str {
            "fused-adamw-moment"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<()> {
            let g = f32s(s2, l2)?;
            let m = f32s_mut(s1, l1)?;
            crate::ops::par_rows(m, CHUNK, |n, chunk| {
                let g = &g[n * CHUNK..n * CHUNK + chunk.len()];
                for (m, &g) in chunk.iter_mut().zip(g) {
                    let g = g * self.clip;
                    let g = if self.square { g * g } else { g };
                    *m = *m * self.beta + g * self.one_minus_beta;
                }
            });
            Ok(())
        }
    }

    impl InplaceOp3 for Update {
        fn name(&self) -> &'static str {
            "fused-adamw-update"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> candle_core::Result<()> {
            let (m, v) = (f32s(s2, l2)?, f32s(s3, l3)?);
            let theta = f32s_mut(s1, l1)?;
            crate::ops::par_rows(theta, CHUNK, |n, chunk| {
                let range = n * CHUNK..n * CHUNK + chunk.len();
                for ((t, &m), &v) in chunk.iter_mut().zip(&m[range.clone()]).zip(&v[range]) {
                    let update = (m * self.inv_bias1) / ((v * self.inv_bias2).sqrt() + self.eps);
                    let shrunk = match self.shrink {
                        Some(s) => *t * s,
                        None => *t,
                    };
                    *t = shrunk - update * self.lr;
                }
            });
            Ok(())
        }
    }

    /// One AdamW step on `theta` in place, moments `[m, v]` in place.
    pub fn step(
        theta: &Tensor,
        g: &Tensor,
        [m, v]: [&Tensor; 2],
        s: Step,
    ) -> candle_core::Result<()> {
        // candle's `x * c` and `x / c` multiply by `c as f32` and `1/c as f32`: the same here.
        let moment = |beta: f64, square: bool| Moment {
            beta: beta as f32,
            one_minus_beta: (1.0 - beta) as f32,
            clip: s.clip as f32,
            square,
        };
        m.inplace_op2(g, &moment(s.beta1, false))?;
        v.inplace_op2(g, &moment(s.beta2, true))?;
        theta.inplace_op3(
            m,
            v,
            &Update {
                inv_bias1: (1.0 / s.bias1) as f32,
                inv_bias2: (1.0 / s.bias2) as f32,
                eps: s.eps as f32,
                lr: s.lr as f32,
                shrink: s.shrink.map(|f| f as f32),
            },
        )
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

    #[test]
    fn the_in_place_update_gives_the_same_bits_as_the_composed_one() {
        let config = AdamWConfig {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            max_grad_norm: Some(0.5),
        };
        let init = Tensor::randn(0f32, 1.0, (70_000,), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, (5,), &Device::Cpu).unwrap();
        let run = |fused: bool| -> Vec<Vec<f32>> {
            let w = Var::from_tensor(&init).unwrap();
            let b = Var::from_tensor(&bias).unwrap();
            let params = vec![("l.weight".into(), w.clone()), ("l.bias".into(), b.clone())];
            let mut opt = AdamW::new(params, config).unwrap();
            opt.fused = fused;
            for step in 0..4 {
                // A loss whose gradient changes with the weights and the step.
                let loss = ((w.as_tensor().sqr().unwrap() * (step as f64 + 1.0))
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    + b.as_tensor().exp().unwrap().sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                let g = grads.get(&w).unwrap();
                assert!(fused::applies(w.as_tensor(), g, &opt.m[0], &opt.v[0]));
                opt.step(&grads, 0.01 * (step as f64 + 1.0)).unwrap();
            }
            let mut out = vec![
                w.as_tensor().to_vec1::<f32>().unwrap(),
                b.as_tensor().to_vec1::<f32>().unwrap(),
            ];
            out.extend(
                opt.m
                    .iter()
                    .chain(&opt.v)
                    .map(|t| t.to_vec1::<f32>().unwrap()),
            );
            out
        };
        let (fused, composed) = (run(true), run(false));
        assert_ne!(
            fused[0],
            init.to_vec1::<f32>().unwrap(),
            "the weights moved"
        );
        for (a, b) in fused.iter().zip(&composed) {
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}
