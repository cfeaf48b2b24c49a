//! Fused CPU kernels with their own backward, where the composed op graph is slow.
//!
//! Softmax cross-entropy over the vocabulary is the biggest: composed from candle ops it
//! allocates several `[tokens, vocab]` temporaries forward and more backward. Fused, the forward
//! makes one pass per row and the backward writes `softmax − one_hot` once.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};

fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// Runs `f(row_index, row_out)` over rows of `out` (each `width` long) on the candle thread count.
fn par_rows<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let rows = out.len() / width.max(1);
    let per = rows.div_ceil(threads()).max(1);
    std::thread::scope(|scope| {
        for (chunk_index, chunk) in out.chunks_mut(per * width).enumerate() {
            let f = &f;
            scope.spawn(move || {
                for (i, row) in chunk.chunks_mut(width).enumerate() {
                    f(chunk_index * per + i, row);
                }
            });
        }
    });
}

fn slices<'a, T: WithDType>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
) -> candle_core::Result<(&'a [T], &'a [u32], usize, usize)> {
    let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
    else {
        candle_core::bail!("fused cross-entropy needs contiguous inputs");
    };
    let (rows, vocab) = l1.shape().dims2()?;
    if l2.shape().dims1()? != rows {
        candle_core::bail!(
            "fused cross-entropy: {rows} rows of logits but {} targets",
            l2.shape().dims1()?
        );
    }
    Ok((
        &s1.as_slice::<T>()?[a0..a1],
        &s2.as_slice::<u32>()?[b0..b1],
        rows,
        vocab,
    ))
}

/// `nll[n] = logsumexp(logits[n]) − logits[n, target[n]]`.
struct CrossEntropy;

/// `grad[n] = softmax(logits[n]) − one_hot(target[n])`.
struct SoftmaxMinusOneHot;

fn nll_rows<T: num_traits_like::Float>(
    logits: &[T],
    targets: &[u32],
    rows: usize,
    vocab: usize,
) -> Vec<T> {
    let mut out = vec![T::zero(); rows];
    par_rows(&mut out, 1, |n, slot| {
        let row = &logits[n * vocab..(n + 1) * vocab];
        let max = row.iter().copied().fold(T::neg_infinity(), T::max);
        let sum = row.iter().fold(T::zero(), |acc, &x| acc + (x - max).exp());
        slot[0] = max + sum.ln() - row[(targets[n] as usize).min(vocab - 1)];
    });
    out
}

fn grad_rows<T: num_traits_like::Float>(
    logits: &[T],
    targets: &[u32],
    rows: usize,
    vocab: usize,
) -> Vec<T> {
    let mut out = vec![T::zero(); rows * vocab];
    par_rows(&mut out, vocab, |n, dst| {
        let row = &logits[n * vocab..(n + 1) * vocab];
        let max = row.iter().copied().fold(T::neg_infinity(), T::max);
        let mut sum = T::zero();
        for (d, &x) in dst.iter_mut().zip(row) {
            *d = (x - max).exp();
            sum = sum + *d;
        }
        for d in dst.iter_mut() {
            *d = *d / sum;
        }
        let t = (targets[n] as usize).min(vocab - 1);
        dst[t] = dst[t] - T::one();
    });
    out
}

/// The few float operations the kernels need, for f32 and f64.
mod num_traits_like {
    pub trait Float:
        Copy
        + Send
        + Sync
        + std::ops::Add<Output = Self>
        + std::ops::Sub<Output = Self>
        + std::ops::Div<Output = Self>
    {
        fn zero() -> Self;
        fn one() -> Self;
        fn neg_infinity() -> Self;
        fn max(self, other: Self) -> Self;
        fn exp(self) -> Self;
        fn mul(self, other: Self) -> Self;
        fn ln(self) -> Self;
    }
    macro_rules! float {
        ($t:ty) => {
            impl Float for $t {
                fn zero() -> Self {
                    0.0
                }
                fn one() -> Self {
                    1.0
                }
                fn neg_infinity() -> Self {
                    <$t>::NEG_INFINITY
                }
                fn max(self, other: Self) -> Self {
                    <$t>::max(self, other)
                }
                fn exp(self) -> Self {
                    <$t>::exp(self)
                }
                fn mul(self, other: Self) -> Self {
                    self * other
                }
                fn ln(self) -> Self {
                    <$t>::ln(self)
                }
            }
        };
    }
    float!(f32);
    float!(f64);
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        rows_kernel(self, s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = logits.apply_op2_no_bwd(targets, &SoftmaxMinusOneHot)?;
        Ok((Some(grad.broadcast_mul(&grad_res.unsqueeze(1)?)?), None))
    }
}

impl CustomOp2 for SoftmaxMinusOneHot {
    fn name(&self) -> &'static str {
        "softmax-minus-one-hot"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        rows_kernel(self, s1, l1, s2, l2)
    }
}

/// A kernel over (logits `[rows, vocab]`, targets `[rows]`) written once for f32 and f64.
trait RowsKernel {
    const NAME: &'static str;
    fn run<T: num_traits_like::Float>(
        &self,
        logits: &[T],
        targets: &[u32],
        rows: usize,
        vocab: usize,
    ) -> (Vec<T>, Shape);
}

impl RowsKernel for CrossEntropy {
    const NAME: &'static str = "fused cross-entropy";
    fn run<T: num_traits_like::Float>(
        &self,
        x: &[T],
        t: &[u32],
        rows: usize,
        vocab: usize,
    ) -> (Vec<T>, Shape) {
        (nll_rows(x, t, rows, vocab), Shape::from(rows))
    }
}

impl RowsKernel for SoftmaxMinusOneHot {
    const NAME: &'static str = "softmax-minus-one-hot";
    fn run<T: num_traits_like::Float>(
        &self,
        x: &[T],
        t: &[u32],
        rows: usize,
        vocab: usize,
    ) -> (Vec<T>, Shape) {
        (grad_rows(x, t, rows, vocab), Shape::from((rows, vocab)))
    }
}

/// Runs a [`RowsKernel`] on f32 or f64 logits.
fn rows_kernel<K: RowsKernel>(
    kernel: &K,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> candle_core::Result<(CpuStorage, Shape)> {
    match s1 {
        CpuStorage::F32(_) => {
            let (x, t, rows, vocab) = slices::<f32>(s1, l1, s2, l2)?;
            let (out, shape) = kernel.run(x, t, rows, vocab);
            Ok((CpuStorage::F32(out), shape))
        }
        CpuStorage::F64(_) => {
            let (x, t, rows, vocab) = slices::<f64>(s1, l1, s2, l2)?;
            let (out, shape) = kernel.run(x, t, rows, vocab);
            Ok((CpuStorage::F64(out), shape))
        }
        _ => candle_core::bail!("{}: logits must be f32 or f64", K::NAME),
    }
}

/// Per-row negative log-likelihood of `targets` under `logits` (`[N, V]`, `[N]` u32) → `[N]`.
/// Fused on the CPU; composed from candle ops elsewhere (e.g. CUDA).
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    if logits.device().is_cpu() {
        return logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, CrossEntropy);
    }
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    (lse - picked)?.squeeze(1)
}

/// Softmax over the last dimension (attention probabilities), with its own backward: the
/// composed op graph allocates several `[B, H, L, L]` temporaries each way; fused, the forward
/// is one pass per row and the backward is `p ⊙ (g − Σ g⊙p)`.
struct SoftmaxLast;

/// The backward of [`SoftmaxLast`]: `(probs, grad) → probs ⊙ (grad − rowsum(grad ⊙ probs))`.
struct SoftmaxLastBackward;

fn last_dim(layout: &Layout, what: &str) -> candle_core::Result<(usize, usize, usize)> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what} needs a contiguous input");
    };
    let width = layout.shape().dims().last().copied().unwrap_or(1).max(1);
    Ok((start, end, width))
}

fn softmax_rows<T: num_traits_like::Float>(x: &[T], width: usize) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    par_rows(&mut out, width, |n, dst| {
        let row = &x[n * width..(n + 1) * width];
        let max = row.iter().copied().fold(T::neg_infinity(), T::max);
        let mut sum = T::zero();
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = (v - max).exp();
            sum = sum + *d;
        }
        for d in dst.iter_mut() {
            *d = *d / sum;
        }
    });
    out
}

fn softmax_grad_rows<T: num_traits_like::Float>(p: &[T], g: &[T], width: usize) -> Vec<T> {
    let mut out = vec![T::zero(); p.len()];
    par_rows(&mut out, width, |n, dst| {
        let (pr, gr) = (
            &p[n * width..(n + 1) * width],
            &g[n * width..(n + 1) * width],
        );
        let dot = pr
            .iter()
            .zip(gr)
            .fold(T::zero(), |acc, (&a, &b)| acc + a.mul(b));
        for ((d, &a), &b) in dst.iter_mut().zip(pr).zip(gr) {
            *d = a.mul(b - dot);
        }
    });
    out
}

impl CustomOp1 for SoftmaxLast {
    fn name(&self) -> &'static str {
        "fused-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b, width) = last_dim(l, "fused softmax")?;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(softmax_rows(&x[a..b], width)),
            CpuStorage::F64(x) => CpuStorage::F64(softmax_rows(&x[a..b], width)),
            _ => candle_core::bail!("fused softmax: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &SoftmaxLastBackward,
        )?))
    }
}

impl CustomOp2 for SoftmaxLastBackward {
    fn name(&self) -> &'static str {
        "fused-softmax-last-dim-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a1, b1, width) = last_dim(l1, "fused softmax backward")?;
        let (a2, b2, _) = last_dim(l2, "fused softmax backward")?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("fused softmax backward: shapes differ");
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => {
                CpuStorage::F32(softmax_grad_rows(&p[a1..b1], &g[a2..b2], width))
            }
            (CpuStorage::F64(p), CpuStorage::F64(g)) => {
                CpuStorage::F64(softmax_grad_rows(&p[a1..b1], &g[a2..b2], width))
            }
            _ => candle_core::bail!("fused softmax backward: f32 or f64, both the same"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Softmax over the last dimension, differentiable. Fused on the CPU; candle's composed
/// softmax elsewhere (which also has a backward).
pub fn softmax_last(xs: &Tensor) -> candle_core::Result<Tensor> {
    if xs.device().is_cpu() {
        return xs.contiguous()?.apply_op1(SoftmaxLast);
    }
    candle_nn::ops::softmax(xs, candle_core::D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_softmax_matches_the_composed_op_forward_and_backward() {
        let dev = Device::Cpu;
        let x =
            candle_core::Var::from_tensor(&Tensor::randn(0f64, 3.0, (2, 3, 5, 7), &dev).unwrap())
                .unwrap();
        let w = Tensor::randn(0f64, 1.0, (2, 3, 5, 7), &dev).unwrap();
        let fused = (softmax_last(x.as_tensor()).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap();
        let composed = (candle_nn::ops::softmax(x.as_tensor(), candle_core::D::Minus1).unwrap()
            * &w)
            .unwrap()
            .sum_all()
            .unwrap();
        let (a, b) = (
            fused.to_scalar::<f64>().unwrap(),
            composed.to_scalar::<f64>().unwrap(),
        );
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        let grad = |t: &Tensor| {
            t.backward()
                .unwrap()
                .get(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        let (ga, gb) = (grad(&fused), grad(&composed));
        assert!(ga.iter().zip(&gb).all(|(p, q)| (p - q).abs() < 1e-12));
    }

    #[test]
    fn fused_matches_the_composed_op_forward_and_backward() {
        let dev = Device::Cpu;
        let logits =
            candle_core::Var::from_tensor(&Tensor::randn(0f64, 2.0, (7, 11), &dev).unwrap())
                .unwrap();
        let targets = Tensor::new(&[0u32, 3, 10, 5, 5, 1, 9], &dev).unwrap();
        let weights = Tensor::new(&[1f64, 0.5, 0.0, 2.0, 1.0, 1.0, 3.0], &dev).unwrap();
        let fused = (cross_entropy_rows(logits.as_tensor(), &targets).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap();
        let max = logits.max_keepdim(1).unwrap().detach();
        let shifted = logits.broadcast_sub(&max).unwrap();
        let lse = shifted
            .exp()
            .unwrap()
            .sum_keepdim(1)
            .unwrap()
            .log()
            .unwrap();
        let picked = shifted.gather(&targets.unsqueeze(1).unwrap(), 1).unwrap();
        let composed = ((lse - picked).unwrap().squeeze(1).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap();
        let (a, b) = (
            fused.to_scalar::<f64>().unwrap(),
            composed.to_scalar::<f64>().unwrap(),
        );
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        let ga = fused
            .backward()
            .unwrap()
            .get(&logits)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let gb = composed
            .backward()
            .unwrap()
            .get(&logits)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!(ga.iter().zip(&gb).all(|(x, y)| (x - y).abs() < 1e-12));
    }
}
