//! The output layer and its cross-entropy as one graph node on the CPU (the SFT loss).
//!
//! Composed, the loss of a batch of 8 × 256 tokens over a vocabulary of 8k holds a 64 MiB logits
//! tensor from the forward to the backward, writes another for its gradient, and candle's
//! backward zero-fills a third and adds the gradient into it before the product that consumes it.
//! Here the rows go through in chunks: a chunk's logits are made, turned into their gradient
//! `w·(softmax − one_hot)` in place and consumed by the two products of the backward (`dX = D W`,
//! `dW += Dᵀ X`) while they are still in cache, and nothing vocabulary-sized outlives the chunk.
//! Rows without a target weight (prompt, padding) are skipped entirely, forward and backward.
//!
//! The gradient is therefore computed in the forward, for an incoming gradient of 1, and kept
//! (`[rows, hidden]` and `[vocab, hidden]`) until candle's backward asks for it and scales it by
//! the actual incoming gradient. The arithmetic is that of the composed layer and loss (a test
//! compares both in f64).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use crate::gemm::{View, matmul_threads};
use crate::ops::num_traits_like::Float;
use crate::ops::{fused_kernels, sum_lanes};

/// Rows per chunk: as many as fit [`CHUNK_BYTES`] of logits, within `[64, 512]`. Each chunk
/// adds its share into the whole `dW` (`[vocab, hidden]`), so fewer, larger chunks stream `dW`
/// fewer times; smaller ones keep the logits in cache. On the bench config (vocab 8k) 512 rows
/// (16 MiB) measured ~9% faster a step than 128 and on par with one chunk of 2048; with Qwen's
/// vocabulary of 152k, 110 rows (64 MiB) instead of a `[tokens, vocab]` tensor of gigabytes.
pub(crate) fn chunk_rows(vocab: usize, elem_bytes: usize) -> usize {
    (CHUNK_BYTES / (vocab * elem_bytes).max(1)).clamp(64, 512)
}

/// The logits of one chunk of rows, at most (above 64 rows).
const CHUNK_BYTES: usize = 64 << 20;

/// `Σ_n weights[n] · (logsumexp(z_n) − z_n[targets[n]])` with `z = X Wᵀ`, for `X` `[rows,
/// hidden]` and `W` `[vocab, hidden]`.
struct HeadCrossEntropy {
    targets: Vec<u32>,
    weights: Vec<f64>,
    /// Whether a backward can follow (an input is tracked): without, the forward skips the
    /// gradient's two products (a validation loss pays for the logits only).
    with_grads: bool,
    /// `(dX, dW)` for an incoming gradient of 1, made by the forward, taken by the backward.
    grads: Mutex<Option<Grads>>,
}

enum Grads {
    F32(Vec<f32>, Vec<f32>),
    F64(Vec<f64>, Vec<f64>),
}

/// The loss and its gradients in `X` and `W` for one dtype.
struct Outcome<T> {
    loss: T,
    dx: Vec<T>,
    dw: Vec<T>,
}

impl HeadCrossEntropy {
    fn run<T: Float + 'static>(&self, x: &[T], w: &[T], hidden: usize, vocab: usize) -> Outcome<T> {
        let rows = self.targets.len();
        let selected: Vec<usize> = (0..rows).filter(|&n| self.weights[n] != 0.0).collect();
        let grad_len = |n: usize| if self.with_grads { n } else { 0 };
        let (mut dx, mut dw) = (
            vec![T::zero(); grad_len(rows * hidden)],
            vec![T::zero(); grad_len(vocab * hidden)],
        );
        let chunk_size = chunk_rows(vocab, std::mem::size_of::<T>());
        let scratch_rows = chunk_size.min(selected.len().max(1));
        let mut xs = vec![T::zero(); scratch_rows * hidden];
        let mut dxs = vec![T::zero(); scratch_rows * hidden];
        let mut z = vec![T::zero(); scratch_rows * vocab];
        let mut nll = vec![0f64; scratch_rows];
        let mut loss = 0f64;
        let w_view = View::rows(w, vocab, hidden);
        for chunk in selected.chunks(chunk_size) {
            let m = chunk.len();
            for (dst, &n) in xs.chunks_mut(hidden).zip(chunk) {
                dst.copy_from_slice(&x[n * hidden..(n + 1) * hidden]);
            }
            let x_chunk = View::rows(&xs, m, hidden);
            let z = &mut z[..m * vocab];
            matmul_threads(z, vocab, x_chunk, w_view.t(), false);
            self.softmax_grad(z, &mut nll[..m], chunk, vocab);
            // In a fixed order, whatever the thread count.
            loss += nll[..m].iter().sum::<f64>();
            if !self.with_grads {
                continue;
            }
            let d = View::rows(z, m, vocab);
            matmul_threads(&mut dxs[..m * hidden], hidden, d, w_view, false);
            matmul_threads(&mut dw, hidden, d.t(), x_chunk, true);
            for (src, &n) in dxs.chunks(hidden).zip(chunk) {
                dx[n * hidden..(n + 1) * hidden].copy_from_slice(src);
            }
        }
        Outcome {
            loss: T::from_f64(loss),
            dx,
            dw,
        }
    }

    /// Each row of `z` (the logits of rows `chunk`) becomes `w·(softmax − one_hot(target))`, and
    /// `nll[r]` its weighted negative log-likelihood `w·(logsumexp − z[target])`.
    fn softmax_grad<T: Float>(&self, z: &mut [T], nll: &mut [f64], chunk: &[usize], vocab: usize) {
        let per = nll
            .len()
            .div_ceil(crate::pool::parts_for(nll.len() * vocab))
            .max(1);
        let parts: Vec<_> = z.chunks_mut(per * vocab).zip(nll.chunks_mut(per)).collect();
        crate::pool::for_each_part(parts, |part, (zs, ls)| {
            for (i, (row, slot)) in zs.chunks_mut(vocab).zip(ls.iter_mut()).enumerate() {
                let n = chunk[part * per + i];
                let t = (self.targets[n] as usize).min(vocab - 1);
                let weight = self.weights[n];
                let target_logit = row[t];
                let max = row.iter().copied().fold(T::neg_infinity(), T::max);
                for e in row.iter_mut() {
                    *e = (*e - max).exp();
                }
                let sum = sum_lanes(row);
                let lse = max + sum.ln();
                *slot = weight * (lse - target_logit).to_f64();
                let scale = T::from_f64(weight) / sum;
                for e in row.iter_mut() {
                    *e = e.mul(scale);
                }
                row[t] = row[t] - T::from_f64(weight);
            }
        });
    }
}

fn slice<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [T]> {
    crate::ops::contiguous_slice(s, l, "output-layer cross-entropy")
}

impl CustomOp2 for HeadCrossEntropy {
    fn name(&self) -> &'static str {
        "output-layer-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (vocab, hidden) = lw.shape().dims2()?;
        let rows = lx.shape().elem_count() / hidden.max(1);
        if lx.shape().dims().last() != Some(&hidden) || rows != self.targets.len() {
            candle_core::bail!(
                "output-layer cross-entropy: hidden states {:?}, weight {:?} and {} targets \
                 do not fit",
                lx.shape(),
                lw.shape(),
                self.targets.len()
            );
        }
        let (loss, grads) = match (sx, sw) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let o = self.run::<f32>(slice(sx, lx)?, slice(sw, lw)?, hidden, vocab);
                (CpuStorage::F32(vec![o.loss]), Grads::F32(o.dx, o.dw))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let o = self.run::<f64>(slice(sx, lx)?, slice(sw, lw)?, hidden, vocab);
                (CpuStorage::F64(vec![o.loss]), Grads::F64(o.dx, o.dw))
            }
            _ => candle_core::bail!("output-layer cross-entropy: f32 or f64, both the same"),
        };
        *self.grads.lock().expect("not poisoned") = Some(grads);
        Ok((loss, Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let taken = self.grads.lock().expect("not poisoned").take();
        let (dx, dw) = match taken {
            Some(Grads::F32(dx, dw)) => scaled(dx, dw, g as f32, x, w)?,
            Some(Grads::F64(dx, dw)) => scaled(dx, dw, g, x, w)?,
            None => candle_core::bail!(
                "output-layer cross-entropy: its gradient was already taken (one backward per \
                 forward)"
            ),
        };
        Ok((Some(dx), Some(dw)))
    }
}

/// The gradients made by the forward (for an incoming gradient of 1), times the real incoming
/// gradient `g`, as tensors shaped like `x` and `w`.
fn scaled<T: Float + candle_core::WithDType>(
    mut dx: Vec<T>,
    mut dw: Vec<T>,
    g: T,
    x: &Tensor,
    w: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    for v in dx.iter_mut().chain(dw.iter_mut()) {
        *v = Float::mul(*v, g);
    }
    Ok((
        Tensor::from_vec(dx, x.shape(), x.device())?,
        Tensor::from_vec(dw, w.shape(), w.device())?,
    ))
}

/// `Σ_n weights[n] · nll_n` of the targets under the logits `hidden Wᵀ` (`hidden` `[…, H]`, `W`
/// `[V, H]`, `targets` and `weights` one per row of `hidden`), as a scalar. One node on the CPU
/// in f32/f64 that never holds the logits of more than a chunk of rows; elsewhere the composed
/// product and [`crate::ops::cross_entropy_rows`].
pub fn head_cross_entropy_sum(
    hidden: &Tensor,
    w: &Tensor,
    targets: &[u32],
    weights: &[f64],
) -> candle_core::Result<Tensor> {
    if targets.len() != weights.len() {
        candle_core::bail!(
            "output-layer cross-entropy: {} targets, {} weights",
            targets.len(),
            weights.len()
        );
    }
    if fused_kernels(hidden) && hidden.dtype() == w.dtype() {
        let op = HeadCrossEntropy {
            targets: targets.to_vec(),
            weights: weights.to_vec(),
            with_grads: hidden.track_op() || w.track_op(),
            grads: Mutex::new(None),
        };
        return hidden.contiguous()?.apply_op2(&w.contiguous()?, op);
    }
    let logits = crate::fused::linear(hidden, &w.to_dtype(hidden.dtype())?, None)?;
    let wide = match logits.dtype() {
        DType::F32 | DType::F64 => logits,
        _ => logits.to_dtype(DType::F32)?,
    };
    let dev = hidden.device();
    let t = Tensor::from_vec(targets.to_vec(), targets.len(), dev)?;
    let nll = crate::ops::cross_entropy_rows(&wide, &t)?;
    let weights = Tensor::from_vec(weights.to_vec(), weights.len(), dev)?.to_dtype(nll.dtype())?;
    (nll * weights)?.sum_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_head_loss_matches_the_composed_layer_and_loss_forward_and_backward() {
        // More rows than a chunk (and not a multiple of it), some with weight 0.
        let dev = Device::Cpu;
        let (hidden, vocab) = (6, 11);
        let rows = 2 * chunk_rows(vocab, 8) + 37;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (rows, hidden), &dev).unwrap()).unwrap();
        let w =
            Var::from_tensor(&Tensor::randn(0f64, 1.0, (vocab, hidden), &dev).unwrap()).unwrap();
        let targets: Vec<u32> = (0..rows).map(|n| (n * 7 % vocab) as u32).collect();
        let weights: Vec<f64> = (0..rows)
            .map(|n| {
                if n % 5 == 0 {
                    0.0
                } else {
                    1.0 + (n % 3) as f64
                }
            })
            .collect();
        let fused = head_cross_entropy_sum(x.as_tensor(), w.as_tensor(), &targets, &weights)
            .unwrap()
            .affine(0.5, 0.0)
            .unwrap();
        let logits = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        let t = Tensor::from_vec(targets.clone(), rows, &dev).unwrap();
        let nll = crate::ops::cross_entropy_rows(&logits, &t).unwrap();
        let composed = (nll * Tensor::from_vec(weights.clone(), rows, &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .affine(0.5, 0.0)
            .unwrap();
        let (a, b) = (
            fused.to_scalar::<f64>().unwrap(),
            composed.to_scalar::<f64>().unwrap(),
        );
        assert!(a > 1.0 && (a - b).abs() < 1e-9 * a, "{a} vs {b}");
        // Untracked inputs (no backward can follow): the same loss, without the gradient.
        let untracked = head_cross_entropy_sum(
            &x.as_tensor().detach(),
            &w.as_tensor().detach(),
            &targets,
            &weights,
        )
        .unwrap();
        assert!(!untracked.track_op());
        assert_eq!(untracked.to_scalar::<f64>().unwrap(), 2.0 * a);
        let (gf, gc) = (fused.backward().unwrap(), composed.backward().unwrap());
        let values = |grads: &candle_core::backprop::GradStore, var: &Var| {
            let g = grads.get(var).unwrap().flatten_all().unwrap();
            g.to_vec1::<f64>().unwrap()
        };
        for var in [&x, &w] {
            let (f, c) = (values(&gf, var), values(&gc, var));
            assert!(f.iter().any(|g| g.abs() > 1e-3));
            for (p, q) in f.iter().zip(&c) {
                assert!((p - q).abs() < 1e-12, "gradient {p} vs {q}");
            }
        }
        // Rows without weight get no gradient.
        let dx = gf
            .get(&x)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!(dx.iter().all(|&g| g == 0.0));
        assert!(
            fused.backward().is_err(),
            "a second backward is refused, not silently zero"
        );
    }
}
