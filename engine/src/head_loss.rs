//! The output layer and its cross-entropy as one graph node on the CPU (the SFT loss), and
//! the same with a distillation term (the KD loss, [`head_distill_sum`]), where a chunk's
//! teacher logits are made from the teacher's hidden states (or read from a top-k table) beside
//! the student's.
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

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Storage, Tensor};

use crate::loss::Divergence;

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
    /// A distillation term beside the cross-entropy (see [`head_distill_sum`]).
    distill: Option<Distill>,
    /// The weighted sums of the cross-entropy and of the divergence, as the forward found them.
    parts: Arc<Mutex<(f64, f64)>>,
}

/// Logit distillation from the output layer's rows: the loss of a row with weight `w` is
/// `w·((1−α)·CE + α·T²·D(teacher_T ‖ student_T))` over the first `vocab` logits, as
/// [`crate::loss::distill_sum`] and [`crate::loss::distill_topk_sum`] compute it from whole
/// logits tensors.
pub struct Distill {
    pub alpha: f64,
    pub temperature: f64,
    pub divergence: Divergence,
    /// The divergence covers the first `vocab` logits (the tokenizer's; any further rows of the
    /// output layer are padding).
    pub vocab: usize,
    pub teacher: TeacherRows,
}

/// The teacher's side of each student row.
pub enum TeacherRows {
    /// The teacher's final hidden states `[rows, H_t]` (one per student row, no gradient) and
    /// its output layer `[V_t, H_t]`: its logits are made a chunk of rows at a time too.
    Model { hidden: Tensor, weight: Tensor },
    /// A top-k table: per row `k` token ids and `k + 1` log-probabilities at the temperature
    /// (the top-k tokens, then everything else), as [`crate::topk`] stores them.
    TopK {
        k: usize,
        indices: Vec<u32>,
        logprobs: Vec<f32>,
    },
}

/// One row's teacher: its logits, or its top-k ids and bucket log-probabilities.
#[derive(Clone, Copy)]
enum TeacherRow<'a, T> {
    Logits(&'a [T]),
    TopK(&'a [u32], &'a [f32]),
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
    fn run<T: Float + 'static>(
        &self,
        x: &[T],
        w: &[T],
        (hidden, vocab): (usize, usize),
        teacher: Option<(&[T], &[T], usize)>,
    ) -> Outcome<T> {
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
        let mut kd = vec![0f64; scratch_rows];
        // With a model teacher, its hidden rows and logits for the chunk.
        let (t_hidden, t_vocab) = teacher.map_or((0, 0), |(_, tw, h)| (h, tw.len() / h.max(1)));
        let mut ts = vec![T::zero(); scratch_rows * t_hidden];
        let mut zt = vec![T::zero(); scratch_rows * t_vocab];
        let (mut loss, mut ce_sum, mut kd_sum) = (0f64, 0f64, 0f64);
        let w_view = View::rows(w, vocab, hidden);
        for chunk in selected.chunks(chunk_size) {
            let m = chunk.len();
            for (dst, &n) in xs.chunks_mut(hidden).zip(chunk) {
                dst.copy_from_slice(&x[n * hidden..(n + 1) * hidden]);
            }
            let x_chunk = View::rows(&xs, m, hidden);
            let z = &mut z[..m * vocab];
            matmul_threads(z, vocab, x_chunk, w_view.t(), false);
            match &self.distill {
                None => self.softmax_grad(z, &mut nll[..m], chunk, vocab),
                Some(d) => {
                    let zt = match teacher {
                        Some((th, tw, h)) => {
                            for (dst, &n) in ts.chunks_mut(h).zip(chunk) {
                                dst.copy_from_slice(&th[n * h..(n + 1) * h]);
                            }
                            let zt = &mut zt[..m * t_vocab];
                            let tw = View::rows(tw, t_vocab, h);
                            matmul_threads(zt, t_vocab, View::rows(&ts, m, h), tw.t(), false);
                            Some(&*zt)
                        }
                        None => None,
                    };
                    self.distill_grad(z, zt, (&mut nll[..m], &mut kd[..m]), chunk, d);
                }
            }
            // In a fixed order, whatever the thread count.
            let (c, k) = (nll[..m].iter().sum::<f64>(), kd[..m].iter().sum::<f64>());
            ce_sum += c;
            kd_sum += k;
            loss += match &self.distill {
                None => c,
                Some(d) => (1.0 - d.alpha) * c + d.alpha * d.temperature * d.temperature * k,
            };
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
        *self.parts.lock().expect("not poisoned") = (ce_sum, kd_sum);
        Outcome {
            loss: T::from_f64(loss),
            dx,
            dw,
        }
    }

    /// Each row of `z` (the student logits of rows `chunk`; `zt` the teacher's, with a model
    /// teacher) becomes the gradient of its loss `w·((1−α)·CE + α·T²·D)`; `ce[r]` and `kd[r]`
    /// get its weighted cross-entropy and divergence.
    fn distill_grad<T: Float>(
        &self,
        z: &mut [T],
        zt: Option<&[T]>,
        (ce, kd): (&mut [f64], &mut [f64]),
        chunk: &[usize],
        d: &Distill,
    ) {
        let vocab = z.len() / ce.len().max(1);
        let t_vocab = zt.map_or(0, |zt| zt.len() / ce.len().max(1));
        let per = ce
            .len()
            .div_ceil(crate::pool::parts_for(ce.len() * vocab))
            .max(1);
        let parts: Vec<_> = z
            .chunks_mut(per * vocab)
            .zip(ce.chunks_mut(per))
            .zip(kd.chunks_mut(per))
            .collect();
        crate::pool::for_each_part(parts, |part, ((zs, ces), kds)| {
            let mut scratch = vec![T::zero(); 2 * d.vocab.min(vocab)];
            for (i, row) in zs.chunks_mut(vocab).enumerate() {
                let r = part * per + i;
                let n = chunk[r];
                let teacher = match (&d.teacher, zt) {
                    (
                        TeacherRows::TopK {
                            k,
                            indices,
                            logprobs,
                        },
                        _,
                    ) => TeacherRow::TopK(
                        &indices[n * k..(n + 1) * k],
                        &logprobs[n * (k + 1)..(n + 1) * (k + 1)],
                    ),
                    (TeacherRows::Model { .. }, Some(zt)) => {
                        TeacherRow::Logits(&zt[r * t_vocab..(r + 1) * t_vocab])
                    }
                    (TeacherRows::Model { .. }, None) => unreachable!("teacher logits are made"),
                };
                let target = (self.targets[n] as usize).min(vocab - 1);
                let (c, k) = distill_row(row, teacher, target, self.weights[n], d, &mut scratch);
                ces[i] = c;
                kds[i] = k;
            }
        });
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

/// A model teacher's `(hidden rows, output layer, hidden size)` as slices of `T`, from read
/// guards on their storage.
#[allow(clippy::type_complexity)]
fn teacher_slices<'a, T: candle_core::WithDType, G: std::ops::Deref<Target = Storage>>(
    guards: &'a Option<((G, &Layout), (G, &Layout))>,
) -> candle_core::Result<Option<(&'a [T], &'a [T], usize)>> {
    let Some(((hs, hl), (ws, wl))) = guards else {
        return Ok(None);
    };
    let (Storage::Cpu(hs), Storage::Cpu(ws)) = (&**hs, &**ws) else {
        candle_core::bail!("output-layer distillation: the teacher must be on the CPU");
    };
    let h = wl.shape().dims2()?.1;
    Ok(Some((slice(hs, hl)?, slice(ws, wl)?, h)))
}

/// One row of the distillation loss: `row` (the student's logits, all `V` of them) becomes the
/// gradient of `w·((1−α)·CE + α·T²·D)`; returns `(w·CE, w·D)`. With `s` the student's and `P`
/// the teacher's distribution at temperature `T` (over tokens, or over a top-k table's `k + 1`
/// buckets), `∂D/∂z_j = s_j·(a_b(j) − Σ_b S_b·a_b) / T` where `a_b = ∂D/∂S_b` and `S_b` is the
/// student's mass in bucket `b`: `−P_b/S_b` for forward KL, `log S_b − log P_b + 1` for reverse
/// KL, `(1−β)·(log S_b − log M_b)` for the JSD with `M = β·P + (1−β)·S`. Element-wise work is in
/// `T` (the fast `exp` in f32), sums of the loss in f64. `scratch` holds `2·vocab` values.
fn distill_row<T: Float>(
    row: &mut [T],
    teacher: TeacherRow<'_, T>,
    target: usize,
    weight: f64,
    d: &Distill,
    scratch: &mut [T],
) -> (f64, f64) {
    let inv_temp = T::from_f64(1.0 / d.temperature);
    let vk = d.vocab.min(row.len());
    let (log_s, aux) = scratch.split_at_mut(vk);
    // `dst = log_softmax(src / T)`.
    let log_softmax = |dst: &mut [T], src: &[T]| {
        let mut max = T::neg_infinity();
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = v.mul(inv_temp);
            max = max.max(*o);
        }
        let mut sum = T::zero();
        for &v in dst.iter() {
            sum += (v - max).exp();
        }
        let lse = max + sum.ln();
        dst.iter_mut().for_each(|v| *v = *v - lse);
    };
    log_softmax(log_s, &row[..vk]);
    let divergence = d.divergence;
    // Per token: `∂D/∂(z/T)` into `aux`; and D. `log_s` ends up holding the probabilities.
    let kd = match teacher {
        TeacherRow::Logits(t) => {
            log_softmax(aux, &t[..vk]);
            let (mut dv, mut mean) = (0f64, 0f64);
            for (&ls, la) in log_s.iter().zip(aux.iter_mut()) {
                let (term, a, sa) = bucket(divergence, ls, *la);
                dv += term;
                mean += sa.to_f64();
                *la = a; // a_j now; the teacher's log-probability is no longer needed
            }
            let mean = T::from_f64(mean);
            for (&ls, a) in log_s.iter().zip(aux.iter_mut()) {
                *a = token_grad(divergence, ls, ls, *a, mean);
            }
            dv
        }
        TeacherRow::TopK(indices, logprobs) => {
            let k = indices.len();
            // Bucket of each token: `aux[j]` = i + 1 for the teacher's i-th top token, else 0.
            aux.fill(T::zero());
            for (i, &j) in indices.iter().enumerate() {
                if let Some(slot) = aux.get_mut(j as usize) {
                    *slot = T::from_f64((i + 1) as f64);
                }
            }
            let in_tail = |b: &T| *b == T::zero();
            let tail_max = log_s
                .iter()
                .zip(aux.iter())
                .filter(|(_, b)| in_tail(b))
                .fold(T::neg_infinity(), |m, (&v, _)| m.max(v));
            let mut tail_sum = T::zero();
            for (&v, b) in log_s.iter().zip(aux.iter()) {
                if in_tail(b) {
                    tail_sum += (v - tail_max).exp();
                }
            }
            let log_tail = tail_max + tail_sum.ln();
            let (mut dv, mut mean) = (0f64, 0f64);
            let (mut a, mut log_buckets) = (vec![T::zero(); k + 1], vec![T::zero(); k + 1]);
            for (b, (slot, lb)) in a.iter_mut().zip(log_buckets.iter_mut()).enumerate() {
                *lb = match indices.get(b) {
                    Some(&j) => log_s.get(j as usize).copied().unwrap_or(T::neg_infinity()),
                    None => log_tail,
                };
                let (term, ab, sa) = bucket(divergence, *lb, T::from_f64(f64::from(logprobs[b])));
                dv += term;
                mean += sa.to_f64();
                *slot = ab;
            }
            let mean = T::from_f64(mean);
            for (&ls, g) in log_s.iter().zip(aux.iter_mut()) {
                let b = if in_tail(g) {
                    k
                } else {
                    g.to_f64() as usize - 1
                };
                *g = token_grad(divergence, ls, log_buckets[b], a[b], mean);
            }
            dv
        }
    };
    // Cross-entropy over every logit, and the row's gradient.
    let target_logit = row[target];
    let max = row.iter().copied().fold(T::neg_infinity(), T::max);
    for z in row.iter_mut() {
        *z = (*z - max).exp();
    }
    let sum = sum_lanes(row);
    let ce = (max + sum.ln() - target_logit).to_f64();
    let (ce_scale, kd_scale) = (
        T::from_f64(weight * (1.0 - d.alpha)) / sum,
        T::from_f64(weight * d.alpha * d.temperature),
    );
    for (z, &g) in row.iter_mut().zip(aux.iter()) {
        *z = z.mul(ce_scale) + g.mul(kd_scale);
    }
    for z in row[vk..].iter_mut() {
        *z = z.mul(ce_scale);
    }
    row[target] = row[target] - T::from_f64(weight * (1.0 - d.alpha));
    (weight * ce, weight * kd)
}

/// A bucket's (or token's) share of the divergence (in f64), `a = ∂D/∂S` for it, and `S·a`,
/// from the student's and the teacher's log-mass `ls`, `lp` in it. Forward KL's `a = −P/S` would
/// overflow or vanish where the student's mass underflows, so its `a` is given as `S·a = −P` and
/// [`token_grad`] hands it out by each token's share of the bucket.
fn bucket<T: Float>(divergence: Divergence, ls: T, lp: T) -> (f64, T, T) {
    let (s, p) = (ls.exp(), lp.exp());
    let zero = T::zero();
    // `q·x` where `q` is 0: 0, even when `x` is infinite (log 0).
    let times = |q: T, x: T| if q != zero { q.mul(x) } else { zero };
    match divergence {
        Divergence::ForwardKl => (times(p, lp - ls).to_f64(), -p, -p),
        Divergence::ReverseKl => {
            let a = ls - lp + T::from_f64(1.0);
            (times(s, ls - lp).to_f64(), a, times(s, a))
        }
        Divergence::Jsd { beta } => {
            let m =
                (p.mul(T::from_f64(beta)) + s.mul(T::from_f64(1.0 - beta))).max(T::from_f64(1e-30));
            let lm = m.ln();
            let a = (ls - lm).mul(T::from_f64(1.0 - beta));
            let term =
                beta * times(p, lp - lm).to_f64() + (1.0 - beta) * times(s, ls - lm).to_f64();
            (term, a, times(s, a))
        }
    }
}

/// `∂D/∂u_j = s_j·a_b − s_j·Σ_b S_b·a_b` for a token with log-probability `ls` in bucket `b` of
/// log-mass `log_bucket` (a token's own bucket: `log_bucket = ls`), `mean = Σ_b S_b·a_b`. For
/// forward KL `a` is the bucket's `S_b·a_b = −P_b`, so `s_j·a_b = −P_b·s_j/S_b` (exactly `−P_j`
/// for a token), with no division that could overflow.
fn token_grad<T: Float>(divergence: Divergence, ls: T, log_bucket: T, a: T, mean: T) -> T {
    let (s, zero) = (ls.exp(), T::zero());
    let own = match divergence {
        Divergence::ForwardKl if ls == log_bucket => a,
        // The whole bucket underflowed: no share to hand out.
        Divergence::ForwardKl if log_bucket == T::neg_infinity() => zero,
        Divergence::ForwardKl => a.mul((ls - log_bucket).exp()),
        _ if s != zero => s.mul(a),
        _ => zero,
    };
    if s != zero { own - s.mul(mean) } else { own }
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
        // A model teacher's hidden rows and output layer, read in place.
        let model_teacher = match &self.distill {
            Some(Distill {
                teacher: TeacherRows::Model { hidden, weight },
                ..
            }) => Some((hidden.storage_and_layout(), weight.storage_and_layout())),
            _ => None,
        };
        let (loss, grads) = match (sx, sw) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let teacher = teacher_slices::<f32, _>(&model_teacher)?;
                let o = self.run::<f32>(slice(sx, lx)?, slice(sw, lw)?, (hidden, vocab), teacher);
                (CpuStorage::F32(vec![o.loss]), Grads::F32(o.dx, o.dw))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let teacher = teacher_slices::<f64, _>(&model_teacher)?;
                let o = self.run::<f64>(slice(sx, lx)?, slice(sw, lw)?, (hidden, vocab), teacher);
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
        return Ok(apply_head_loss(hidden, w, targets, weights, None)?.0);
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

/// Whether [`head_distill_sum`] takes these: the student's hidden states on the CPU in f32/f64,
/// with a model teacher's in the same dtype.
pub fn distill_fused(hidden: &Tensor, teacher_hidden: Option<&Tensor>) -> bool {
    fused_kernels(hidden)
        && teacher_hidden.is_none_or(|t| t.device().is_cpu() && t.dtype() == hidden.dtype())
}

/// [`head_cross_entropy_sum`] with a distillation term ([`Distill`]): `Σ_n w_n·((1−α)·CE_n +
/// α·T²·D_n)` as a scalar, one node that never holds more than a chunk of rows' logits (the
/// student's, and a model teacher's), with the weighted sums `Σ w·CE` and `Σ w·D` for metrics.
/// Only where [`distill_fused`] says so; otherwise the composed losses of [`crate::loss`].
pub fn head_distill_sum(
    hidden: &Tensor,
    w: &Tensor,
    targets: &[u32],
    weights: &[f64],
    distill: Distill,
) -> candle_core::Result<(Tensor, f64, f64)> {
    let rows = targets.len();
    if weights.len() != rows {
        candle_core::bail!(
            "output-layer distillation: {rows} targets, {} weights",
            weights.len()
        );
    }
    // The op reads a model teacher's tensors in place: contiguous ones.
    let teacher = match distill.teacher {
        TeacherRows::Model {
            hidden: th,
            weight: tw,
        } => TeacherRows::Model {
            hidden: th.contiguous()?,
            weight: tw.contiguous()?,
        },
        top_k => top_k,
    };
    let distill = Distill { teacher, ..distill };
    let teacher_hidden = match &distill.teacher {
        TeacherRows::Model {
            hidden: th,
            weight: tw,
        } => {
            let (t_rows, t_hidden) = (th.elem_count() / tw.dim(1)?.max(1), tw.dim(1)?);
            if th.dims().last() != Some(&t_hidden) || t_rows != rows || tw.dim(0)? < distill.vocab {
                candle_core::bail!(
                    "output-layer distillation: teacher hidden states {:?} and output layer {:?} \
                     do not fit {rows} rows over a vocabulary of {}",
                    th.shape(),
                    tw.shape(),
                    distill.vocab
                );
            }
            Some(th)
        }
        TeacherRows::TopK {
            k,
            indices,
            logprobs,
        } => {
            if indices.len() != rows * k || logprobs.len() != rows * (k + 1) {
                candle_core::bail!(
                    "output-layer distillation: a top-{k} table of {} ids and {} log-probabilities \
                     for {rows} rows",
                    indices.len(),
                    logprobs.len()
                );
            }
            None
        }
    };
    if !distill_fused(hidden, teacher_hidden) || w.dtype() != hidden.dtype() {
        candle_core::bail!("output-layer distillation: CPU f32/f64 tensors of one dtype only");
    }
    if distill.vocab == 0 || distill.vocab > w.dim(0)? || distill.temperature <= 0.0 {
        candle_core::bail!(
            "output-layer distillation: vocabulary {} of {} logits at temperature {}",
            distill.vocab,
            w.dim(0)?,
            distill.temperature
        );
    }
    apply_head_loss(hidden, w, targets, weights, Some(distill))
}

/// The fused op on `hidden` and `w`: the loss, and the weighted CE and divergence sums.
fn apply_head_loss(
    hidden: &Tensor,
    w: &Tensor,
    targets: &[u32],
    weights: &[f64],
    distill: Option<Distill>,
) -> candle_core::Result<(Tensor, f64, f64)> {
    let parts: Arc<Mutex<(f64, f64)>> = Arc::default();
    let op = HeadCrossEntropy {
        targets: targets.to_vec(),
        weights: weights.to_vec(),
        with_grads: hidden.track_op() || w.track_op(),
        grads: Mutex::new(None),
        distill,
        parts: parts.clone(),
    };
    let loss = hidden.contiguous()?.apply_op2(&w.contiguous()?, op)?;
    let (ce, kd) = *parts.lock().expect("not poisoned");
    Ok((loss, ce, kd))
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

    /// The composed reference for [`head_distill_sum`]: logits as a whole, then
    /// [`crate::ops::cross_entropy_rows`] and [`crate::loss::distill_sum`] /
    /// [`crate::loss::distill_topk_sum`] on a `[1, rows + 1, V]` layout (row `n`'s target
    /// weight at position `n + 1`, as training lays them out).
    fn composed_distill(
        (x, w): (&Tensor, &Tensor),
        (targets, weights): (&[u32], &[f64]),
        d: &Distill,
        teacher_logits: &Tensor,
        table: Option<(&Tensor, &Tensor)>,
    ) -> Tensor {
        let dev = x.device();
        let rows = targets.len();
        let logits = x.matmul(&w.t().unwrap()).unwrap();
        let t = Tensor::from_vec(targets.to_vec(), rows, dev).unwrap();
        let wt = Tensor::from_vec(weights.to_vec(), rows, dev).unwrap();
        let ce = (crate::ops::cross_entropy_rows(&logits, &t).unwrap() * &wt)
            .unwrap()
            .sum_all()
            .unwrap();
        let pad = |m: &Tensor| {
            let extra = m.narrow(0, 0, 1).unwrap().zeros_like().unwrap();
            Tensor::cat(&[m, &extra], 0).unwrap().unsqueeze(0).unwrap()
        };
        let student = pad(&logits.narrow(1, 0, d.vocab).unwrap());
        let shifted = Tensor::cat(&[&Tensor::zeros(1, DType::F64, dev).unwrap(), &wt], 0)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let kd = match table {
            None => crate::loss::distill_sum(
                &student,
                &pad(&teacher_logits.narrow(1, 0, d.vocab).unwrap()),
                &shifted,
                d.temperature,
                d.divergence,
            ),
            Some((idx, lp)) => crate::loss::distill_topk_sum(
                &student,
                idx,
                lp,
                &shifted,
                d.temperature,
                d.divergence,
            ),
        }
        .unwrap();
        let tt = d.temperature * d.temperature;
        ((ce * (1.0 - d.alpha)).unwrap() + (kd * (d.alpha * tt)).unwrap()).unwrap()
    }

    #[test]
    fn fused_distillation_matches_the_composed_losses_forward_and_backward() {
        // Two chunks (70 rows), some rows without weight, a divergence vocabulary (9) narrower
        // than the output layer (11), every divergence, a model teacher and a top-4 table.
        let dev = Device::Cpu;
        let (rows, hidden, t_hidden, vocab, kd_vocab, k) = (70, 6, 5, 11, 9, 4);
        let targets: Vec<u32> = (0..rows).map(|n| ((n * 7) % vocab) as u32).collect();
        let weights: Vec<f64> = (0..rows)
            .map(|n| {
                if n % 5 == 0 {
                    0.0
                } else {
                    1.0 + (n % 3) as f64 * 0.5
                }
            })
            .collect();
        let th = Tensor::randn(0f64, 1.0, (rows, t_hidden), &dev).unwrap();
        let tw = Tensor::randn(0f64, 1.0, (vocab, t_hidden), &dev).unwrap();
        let teacher_logits = th.matmul(&tw.t().unwrap()).unwrap();
        let temperature = 2.0;
        // The teacher's top-k table at the temperature, as `crate::topk` makes it.
        let logp = crate::loss::log_softmax(
            &(teacher_logits.narrow(1, 0, kd_vocab).unwrap() / temperature).unwrap(),
        )
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
        let (mut indices, mut logprobs) = (Vec::new(), Vec::new());
        for row in &logp {
            let (top, values, tail) = crate::topk::top_k_row(row, k);
            indices.extend(top);
            logprobs.extend(values);
            logprobs.push(tail);
        }
        let idx_t = Tensor::from_vec(indices.clone(), (1, rows, k), &dev).unwrap();
        let lp_t = Tensor::from_vec(
            logprobs.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
            (1, rows, k + 1),
            &dev,
        )
        .unwrap();
        for divergence in [
            Divergence::ForwardKl,
            Divergence::ReverseKl,
            Divergence::Jsd { beta: 0.3 },
        ] {
            for top_k in [false, true] {
                let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (rows, hidden), &dev).unwrap())
                    .unwrap();
                let w = Var::from_tensor(&Tensor::randn(0f64, 1.0, (vocab, hidden), &dev).unwrap())
                    .unwrap();
                let teacher = if top_k {
                    TeacherRows::TopK {
                        k,
                        indices: indices.clone(),
                        logprobs: logprobs.clone(),
                    }
                } else {
                    TeacherRows::Model {
                        hidden: th.clone(),
                        weight: tw.clone(),
                    }
                };
                let d = Distill {
                    alpha: 0.3,
                    temperature,
                    divergence,
                    vocab: kd_vocab,
                    teacher,
                };
                let reference = composed_distill(
                    (x.as_tensor(), w.as_tensor()),
                    (&targets, &weights),
                    &d,
                    &teacher_logits,
                    top_k.then_some((&idx_t, &lp_t)),
                );
                let (fused, ce, kd) =
                    head_distill_sum(x.as_tensor(), w.as_tensor(), &targets, &weights, d).unwrap();
                let (a, b) = (
                    fused.to_scalar::<f64>().unwrap(),
                    reference.to_scalar::<f64>().unwrap(),
                );
                let what = format!("{divergence:?}, top-k {top_k}");
                assert!((a - b).abs() < 1e-9 * b.abs(), "{what}: {a} vs {b}");
                assert!(kd > 1e-3 && ce > 1.0, "{what}: parts {ce}, {kd}");
                assert!((0.7 * ce + 0.3 * 4.0 * kd - a).abs() < 1e-9 * a.abs());
                let (gf, gc) = (fused.backward().unwrap(), reference.backward().unwrap());
                for var in [&x, &w] {
                    let f = gf.get(var).unwrap().flatten_all().unwrap().to_vec1::<f64>();
                    let c = gc.get(var).unwrap().flatten_all().unwrap().to_vec1::<f64>();
                    for (p, q) in f.unwrap().iter().zip(&c.unwrap()) {
                        assert!((p - q).abs() < 1e-9, "{what}: gradient {p} vs {q}");
                    }
                }
            }
        }
    }

    #[test]
    fn forward_kl_stays_finite_where_the_students_probability_underflows() {
        // Token 3's student logit is −200: its probability is 0 in f32. The teacher is uniform,
        // so forward KL's gradient there is s − P = −1/4 (α = 1, T = 1, weight 1), not 0 or NaN.
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[[1f32, 0.0, 0.0, 0.0]], &dev).unwrap()).unwrap();
        let mut w = vec![0f32; 16];
        w[12] = -200.0;
        let w = Var::from_tensor(&Tensor::from_vec(w, (4, 4), &dev).unwrap()).unwrap();
        for top_k in [false, true] {
            let teacher = if top_k {
                // Tokens 0 and 1 and the rest (2 and 3), uniform.
                TeacherRows::TopK {
                    k: 2,
                    indices: vec![0, 1],
                    logprobs: vec![(0.25f32).ln(), (0.25f32).ln(), (0.5f32).ln()],
                }
            } else {
                TeacherRows::Model {
                    hidden: Tensor::zeros((1, 2), DType::F32, &dev).unwrap(),
                    weight: Tensor::zeros((4, 2), DType::F32, &dev).unwrap(),
                }
            };
            let d = Distill {
                alpha: 1.0,
                temperature: 1.0,
                divergence: Divergence::ForwardKl,
                vocab: 4,
                teacher,
            };
            let (loss, _, kd) =
                head_distill_sum(x.as_tensor(), w.as_tensor(), &[0], &[1.0], d).unwrap();
            // Full: 1/4·ln(1/4 ÷ s_3) dominates; top-k: buckets (1/3, 1/3, 1/3) against
            // (1/4, 1/4, 1/2).
            let want_kd = if top_k {
                0.5 * (0.75f64).ln() + 0.5 * (1.5f64).ln()
            } else {
                45.0
            };
            assert!(kd.is_finite(), "top-k {top_k}: {kd}");
            assert!(
                if top_k {
                    (kd - want_kd).abs() < 1e-5
                } else {
                    kd > want_kd
                },
                "top-k {top_k}: {kd}"
            );
            let dw = loss
                .backward()
                .unwrap()
                .get(&w)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert!(
                dw.iter().flatten().all(|g| g.is_finite()),
                "top-k {top_k}: {dw:?}"
            );
            // Full teacher: token 3's own gradient; top-k: its bucket's (tokens 2 and 3 share
            // the rest bucket, all of whose student mass is token 2's).
            let want = if top_k { 0.0 } else { -0.25 };
            assert!(
                (dw[3][0] - want).abs() < 1e-6,
                "top-k {top_k}: {}",
                dw[3][0]
            );
        }
    }
}
