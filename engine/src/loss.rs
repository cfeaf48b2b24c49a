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
fn log_softmax(xs: &Tensor) -> candle_core::Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let shifted = xs.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Logits `[B, L, V]` and ids `[B, L]`: position `t` predicts token `t+1`. Returns the summed
/// negative log-likelihood over targets where `weights[b, t+1] = 1`, as a scalar tensor.
pub fn cross_entropy_sum(logits: &Tensor, ids: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let (_, l, _) = logits.dims3()?;
    let pred = logits.narrow(1, 0, l - 1)?;
    let targets = ids.narrow(1, 1, l - 1)?;
    let pred = widen(&pred)?;
    let (b, t, v) = pred.dims3()?;
    let nll = crate::ops::cross_entropy_rows(&pred.reshape((b * t, v))?, &targets.flatten_all()?)?;
    let w = weights
        .narrow(1, 1, l - 1)?
        .to_dtype(nll.dtype())?
        .flatten_all()?;
    Ok((nll * w)?.sum_all()?)
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
    let (_, l, _) = student.dims3()?;
    let s = (widen(&student.narrow(1, 0, l - 1)?)? / temperature)?;
    let t = (widen(&teacher.narrow(1, 0, l - 1)?)?
        .to_dtype(s.dtype())?
        .detach()
        / temperature)?;
    let w = weights.narrow(1, 1, l - 1)?.to_dtype(s.dtype())?;
    let log_s = log_softmax(&s)?;
    let log_t = log_softmax(&t)?;
    let per_position = match divergence {
        Divergence::ForwardKl => (log_t.exp()? * (&log_t - &log_s)?)?.sum(D::Minus1)?,
        Divergence::ReverseKl => (log_s.exp()? * (&log_s - &log_t)?)?.sum(D::Minus1)?,
        Divergence::Jsd { beta } => {
            let (p_s, p_t) = (log_s.exp()?, log_t.exp()?);
            let m = ((&p_t * beta)? + (&p_s * (1.0 - beta))?)?;
            let log_m = m.clamp(1e-30, 1.0)?.log()?;
            let kl_t = (&p_t * (&log_t - &log_m)?)?.sum(D::Minus1)?;
            let kl_s = (&p_s * (&log_s - &log_m)?)?.sum(D::Minus1)?;
            ((kl_t * beta)? + (kl_s * (1.0 - beta))?)?
        }
    };
    Ok((per_position * w)?.sum_all()?)
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
}
