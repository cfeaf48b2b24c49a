//! Losses: cross-entropy on the trained tokens, and logit distillation divergences.

use candle_core::{D, DType, Tensor};

use crate::Result;

/// Which divergence logit distillation minimises between teacher `T` and student `S`
/// (both softened by the temperature).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Divergence {
    /// KL(T ‖ S): mode-covering (Hinton et al.).
    ForwardKl,
    /// KL(S ‖ T): mode-seeking (MiniLLM).
    ReverseKl,
    /// Generalised JSD with mixture M = β·T + (1−β)·S: β·KL(T‖M) + (1−β)·KL(S‖M) (as in GKD/TRL).
    Jsd { beta: f64 },
}

/// Losses are computed in f32 at least (f64 stays f64, for gradient checks).
fn widen(xs: &Tensor) -> candle_core::Result<Tensor> {
    match xs.dtype() {
        DType::F64 | DType::F32 => Ok(xs.clone()),
        _ => xs.to_dtype(DType::F32),
    }
}

/// `log_softmax` over the vocabulary, from differentiable ops.
pub(crate) fn log_softmax(xs: &Tensor) -> candle_core::Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let shifted = xs.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Logits `[B, L, V]` and ids `[B, L]`: position `t` predicts token `t+1`. Returns the summed
/// negative log-likelihood over targets where `weights[b, t+1] = 1`, as a scalar tensor.
pub fn cross_entropy_sum(logits: &Tensor, ids: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let (_, l, _) = logits.dims3()?;
    // Every position gets a target (the next token; the last position a dummy with weight 0), so
    // the logits are used as they are: no `[B, L−1, V]` copy forward, no padding copy backward.
    let shift = |t: &Tensor| -> candle_core::Result<Tensor> {
        Tensor::cat(
            &[&t.narrow(1, 1, l - 1)?, &t.narrow(1, 0, 1)?.zeros_like()?],
            1,
        )
    };
    let targets = shift(ids)?.flatten_all()?;
    let nll = crate::ops::cross_entropy_rows(&widen(logits)?, &targets)?;
    let w = shift(weights)?.to_dtype(nll.dtype())?.flatten_all()?;
    Ok((nll * w)?.sum_all()?)
}

/// [`cross_entropy_sum`] from the final hidden states `[B, L, H]` and the output layer's weight
/// `[V, H]` instead of the logits: the SFT loss. On the CPU in f32/f64 the output layer and the
/// loss are one node that never holds more than a chunk of the logits
/// ([`crate::head_loss::head_cross_entropy_sum`]). `ids` and `weights` are the batch's, row-major
/// `[B·L]`, as the host holds them (reading them back from tensors would be a device round trip
/// per micro-batch on a GPU).
pub fn next_token_cross_entropy_sum(
    hidden: &Tensor,
    lm_head: &Tensor,
    ids: &[u32],
    weights: &[f32],
) -> Result<Tensor> {
    let (next, next_weights) = next_targets(hidden, ids, weights)?;
    Ok(crate::head_loss::head_cross_entropy_sum(
        hidden,
        lm_head,
        &next,
        &next_weights,
    )?)
}

/// [`next_token_cross_entropy_sum`] with a distillation term, from the final hidden states:
/// `(Σ w·((1−α)·CE + α·T²·D), Σ w·CE, Σ w·D)` over the batch's targets, with the teacher's rows
/// laid out like the student's (`[B·L]`, row `b·L + i` the teacher at position `i`). See
/// [`crate::head_loss::head_distill_sum`] for where it runs.
pub fn next_token_distill_sum(
    hidden: &Tensor,
    lm_head: &Tensor,
    ids: &[u32],
    weights: &[f32],
    distill: crate::head_loss::Distill,
) -> Result<(Tensor, f64, f64)> {
    let (next, next_weights) = next_targets(hidden, ids, weights)?;
    Ok(crate::head_loss::head_distill_sum(
        hidden,
        lm_head,
        &next,
        &next_weights,
        distill,
    )?)
}

/// Each position's target, the next token, and its weight (the last position of a row a dummy
/// with weight 0), for hidden states `[B, L, H]` and the batch's `[B·L]` ids and weights.
fn next_targets(hidden: &Tensor, ids: &[u32], weights: &[f32]) -> Result<(Vec<u32>, Vec<f64>)> {
    let (b, l, _) = hidden.dims3()?;
    if ids.len() != b * l || weights.len() != b * l {
        return Err(crate::EngineError::Model(format!(
            "output-layer loss: hidden states for {b} × {l} positions, {} ids and {} weights",
            ids.len(),
            weights.len()
        )));
    }
    let (mut next, mut next_weights) = (Vec::with_capacity(b * l), Vec::with_capacity(b * l));
    for (row, w) in ids.chunks(l).zip(weights.chunks(l)) {
        // The last position predicts nothing: a dummy target with weight 0.
        next.extend(row.iter().skip(1).chain([&0]));
        next_weights.extend(w.iter().skip(1).map(|&w| f64::from(w)).chain([0.0]));
    }
    Ok((next, next_weights))
}

/// The student's logits `[B, L, V]` at the positions that have a next token, divided by the
/// temperature, with `L`.
fn tempered_student(student: &Tensor, temperature: f64) -> candle_core::Result<(usize, Tensor)> {
    let (_, l, _) = student.dims3()?;
    Ok((l, (widen(&student.narrow(1, 0, l - 1)?)? / temperature)?))
}

/// The divergence per target position, summed over targets (weights as in [`cross_entropy_sum`]).
/// `teacher` must carry no gradient.
pub fn distill_sum(
    student: &Tensor,
    teacher: &Tensor,
    weights: &Tensor,
    temperature: f64,
    divergence: Divergence,
) -> Result<Tensor> {
    let (l, s) = tempered_student(student, temperature)?;
    let t = (widen(&teacher.narrow(1, 0, l - 1)?)?
        .to_dtype(s.dtype())?
        .detach()
        / temperature)?;
    let w = weights.narrow(1, 1, l - 1)?.to_dtype(s.dtype())?;
    let log_s = log_softmax(&s)?;
    let log_t = log_softmax(&t)?;
    Ok((divergence_rows(&log_s, &log_t, divergence)? * w)?.sum_all()?)
}

/// The divergence between two distributions given as log-probabilities over the last dimension.
fn divergence_rows(
    log_s: &Tensor,
    log_t: &Tensor,
    divergence: Divergence,
) -> candle_core::Result<Tensor> {
    match divergence {
        Divergence::ForwardKl => (log_t.exp()? * (log_t - log_s)?)?.sum(D::Minus1),
        Divergence::ReverseKl => (log_s.exp()? * (log_s - log_t)?)?.sum(D::Minus1),
        Divergence::Jsd { beta } => {
            let (p_s, p_t) = (log_s.exp()?, log_t.exp()?);
            let m = ((&p_t * beta)? + (&p_s * (1.0 - beta))?)?;
            let log_m = m.clamp(1e-30, 1.0)?.log()?;
            let kl_t = (&p_t * (log_t - &log_m)?)?.sum(D::Minus1)?;
            let kl_s = (&p_s * (log_s - &log_m)?)?.sum(D::Minus1)?;
            (kl_t * beta)? + (kl_s * (1.0 - beta))?
        }
    }
}

/// Distillation against a precomputed teacher top-k table ([`crate::topk`]): the divergence
/// between teacher and student coarsened to `k+1` outcomes (the teacher's top-k tokens at each
/// position, and everything else), summed over targets as in [`distill_sum`].
/// `indices`: `[B, L−1, k]` u32; `teacher_logprobs`: `[B, L−1, k+1]` at `temperature`.
pub fn distill_topk_sum(
    student: &Tensor,
    indices: &Tensor,
    teacher_logprobs: &Tensor,
    weights: &Tensor,
    temperature: f64,
    divergence: Divergence,
) -> Result<Tensor> {
    let (l, s) = tempered_student(student, temperature)?;
    let log_s = log_softmax(&s)?;
    let top = log_s.gather(&indices.contiguous()?, D::Minus1)?;
    // The student's tail is the log-sum-exp of the tokens outside the teacher's top-k: the
    // top-k entries are pushed to −∞ by a constant mask (exact; no 1 − Σp cancellation).
    let neg_inf =
        Tensor::full(f64::NEG_INFINITY, indices.dims(), s.device())?.to_dtype(s.dtype())?;
    let mask = log_s
        .zeros_like()?
        .scatter_add(&indices.contiguous()?, &neg_inf, D::Minus1)?;
    let rest = log_s.broadcast_add(&mask)?;
    let max = rest.max_keepdim(D::Minus1)?.detach();
    let tail = (rest
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + max)?;
    let log_s_buckets = Tensor::cat(&[&top, &tail], D::Minus1)?;
    let log_t = teacher_logprobs.to_dtype(s.dtype())?.detach();
    let w = weights.narrow(1, 1, l - 1)?.to_dtype(s.dtype())?;
    Ok((divergence_rows(&log_s_buckets, &log_t, divergence)? * w)?.sum_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_a_hand_computation() {
        // Two positions, vocab 3: logits [0, ln 2, 0] → p = [1/4, 1/2, 1/4].
        let dev = Device::Cpu;
        let ln2 = std::f32::consts::LN_2;
        let logits = Tensor::new(&[[[0f32, ln2, 0.0], [0.0, 0.0, 0.0]]], &dev).unwrap();
        let ids = Tensor::new(&[[0u32, 1]], &dev).unwrap();
        let w = Tensor::new(&[[0f32, 1.0]], &dev).unwrap();
        let ce = cross_entropy_sum(&logits, &ids, &w)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((ce - 2f32.ln()).abs() < 1e-6, "{ce}");
    }

    #[test]
    fn divergences_vanish_for_equal_distributions_and_grow_apart() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[[1f32, 2.0, 0.5], [0.3, -1.0, 2.0]]], &dev).unwrap();
        let b = Tensor::new(&[[[2f32, -1.0, 0.5], [1.3, 1.0, -2.0]]], &dev).unwrap();
        let w = Tensor::new(&[[0f32, 1.0]], &dev).unwrap();
        for div in [
            Divergence::ForwardKl,
            Divergence::ReverseKl,
            Divergence::Jsd { beta: 0.5 },
        ] {
            let same = distill_sum(&a, &a, &w, 1.0, div)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let apart = distill_sum(&a, &b, &w, 1.0, div)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(same.abs() < 1e-6, "{div:?}: {same}");
            assert!(apart > 0.01, "{div:?}: {apart}");
        }
    }

    /// The teacher side of a top-k table for `teacher` logits `[1, L, V]` (f64 tests).
    fn topk_of(teacher: &Tensor, k: usize, temperature: f64) -> (Tensor, Tensor) {
        let (_, l, _) = teacher.dims3().unwrap();
        let logp = log_softmax(&(teacher.narrow(1, 0, l - 1).unwrap() / temperature).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        let (mut idx, mut lp) = (Vec::new(), Vec::new());
        for row in &logp[0] {
            let (top, values, tail) = crate::topk::top_k_row(row, k);
            idx.extend(top);
            lp.extend(values.iter().map(|&v| f64::from(v)));
            lp.push(f64::from(tail));
        }
        let dev = teacher.device();
        (
            Tensor::from_vec(idx, (1, l - 1, k), dev).unwrap(),
            Tensor::from_vec(lp, (1, l - 1, k + 1), dev).unwrap(),
        )
    }

    #[test]
    fn top_k_distillation_equals_full_distillation_when_k_covers_the_vocabulary() {
        // k = V − 1: the k+1 buckets are the vocabulary itself, so loss and gradient equal
        // full distillation (up to the table's f32 storage).
        let dev = Device::Cpu;
        let (l, v) = (5, 9);
        let student =
            candle_core::Var::from_tensor(&Tensor::randn(0f64, 2.0, (1, l, v), &dev).unwrap())
                .unwrap();
        let teacher = Tensor::randn(0f64, 2.0, (1, l, v), &dev).unwrap();
        let w = Tensor::new(&[[0f64, 1.0, 1.0, 0.0, 1.0]], &dev).unwrap();
        let t = 2.0;
        let (idx, lp) = topk_of(&teacher, v - 1, t);
        for div in [
            Divergence::ForwardKl,
            Divergence::ReverseKl,
            Divergence::Jsd { beta: 0.3 },
        ] {
            let full = distill_sum(student.as_tensor(), &teacher, &w, t, div).unwrap();
            let sparse = distill_topk_sum(student.as_tensor(), &idx, &lp, &w, t, div).unwrap();
            let (a, b) = (
                full.to_scalar::<f64>().unwrap(),
                sparse.to_scalar::<f64>().unwrap(),
            );
            assert!(a > 0.01, "{div:?}: {a}");
            assert!(
                (a - b).abs() < 1e-5 * a.max(1.0),
                "{div:?}: full {a}, top-k {b}"
            );
            let grad = |x: &Tensor| {
                x.backward()
                    .unwrap()
                    .get(&student)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            let (ga, gb) = (grad(&full), grad(&sparse));
            assert!(ga.iter().any(|g| g.abs() > 1e-3));
            for (x, y) in ga.iter().zip(&gb) {
                assert!((x - y).abs() < 1e-5, "{div:?}: gradient {x} vs {y}");
            }
        }
    }

    #[test]
    fn top_k_distillation_vanishes_for_the_teacher_itself_and_bounds_forward_kl() {
        let dev = Device::Cpu;
        let (l, v, k) = (6, 40, 4);
        let a = Tensor::randn(0f64, 3.0, (1, l, v), &dev).unwrap();
        let b = Tensor::randn(0f64, 3.0, (1, l, v), &dev).unwrap();
        let w = Tensor::ones((1, l), DType::F64, &dev).unwrap();
        let (idx, lp) = topk_of(&a, k, 1.0);
        for div in [
            Divergence::ForwardKl,
            Divergence::ReverseKl,
            Divergence::Jsd { beta: 0.5 },
        ] {
            let same = distill_topk_sum(&a, &idx, &lp, &w, 1.0, div)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let apart = distill_topk_sum(&b, &idx, &lp, &w, 1.0, div)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(same.abs() < 1e-5, "{div:?}: {same}");
            assert!(apart > 0.01, "{div:?}: {apart}");
        }
        // Coarsening never increases KL (data processing inequality).
        let sparse = distill_topk_sum(&b, &idx, &lp, &w, 1.0, Divergence::ForwardKl)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let full = distill_sum(&b, &a, &w, 1.0, Divergence::ForwardKl)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(sparse <= full + 1e-6, "top-k {sparse} > full {full}");
    }
}
