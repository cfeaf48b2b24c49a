//! Fused CPU kernels with their own backward, where the composed op graph is slow.
//!
//! Softmax cross-entropy over the vocabulary is the biggest: composed from candle ops it
//! allocates several `[tokens, vocab]` temporaries forward and more backward. Fused, the forward
//! makes one pass per row and the backward writes `softmax − one_hot` once.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType,
};

/// Whether the fused CPU kernels take `t` (on the CPU, in f32 or f64); other devices and dtypes
/// (bf16 compute) use composed candle ops, which have a backward too.
pub(crate) fn fused_kernels(t: &Tensor) -> bool {
    fused_kernels_for(t.device(), t.dtype())
}

/// [`fused_kernels`] for tensors of `dtype` on `device`.
pub(crate) fn fused_kernels_for(device: &candle_core::Device, dtype: DType) -> bool {
    device.is_cpu() && matches!(dtype, DType::F32 | DType::F64)
}

pub(crate) use crate::pool::{par_rows, threads};

/// The elements of a contiguous CPU tensor as a `T` slice; `what` names the op in the error.
pub(crate) fn contiguous_slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} needs contiguous inputs")))?;
    Ok(&s.as_slice::<T>()?[a..b])
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
    // Any rank: rows are every position before the last (vocabulary) dimension.
    let vocab = l1.shape().dims().last().copied().unwrap_or(1).max(1);
    let rows = l1.shape().elem_count() / vocab;
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

/// `grad[n] = (softmax(logits[n]) − one_hot(target[n])) · row_grad[n]`: the backward of
/// [`CrossEntropy`] with the incoming gradient folded in (one pass over `[rows, vocab]`).
struct SoftmaxMinusOneHot;

fn nll_rows<T: num_traits_like::Float>(
    logits: &[T],
    targets: &[u32],
    rows: usize,
    vocab: usize,
) -> Vec<T> {
    let mut out = vec![T::zero(); rows];
    let per = rows.div_ceil(crate::pool::parts_for(rows * vocab)).max(1);
    crate::pool::for_each_part(out.chunks_mut(per).collect(), |chunk_index, chunk| {
        let mut scratch = vec![T::zero(); vocab];
        for (i, slot) in chunk.iter_mut().enumerate() {
            let n = chunk_index * per + i;
            let row = &logits[n * vocab..(n + 1) * vocab];
            let max = row.iter().copied().fold(T::neg_infinity(), T::max);
            let sum = exp_shifted(&mut scratch, row, max);
            *slot = max + sum.ln() - row[(targets[n] as usize).min(vocab - 1)];
        }
    });
    out
}

fn grad_rows<T: num_traits_like::Float>(
    logits: &[T],
    targets: &[u32],
    row_grad: &[T],
    vocab: usize,
) -> Vec<T> {
    let rows = targets.len();
    let mut out = vec![T::zero(); rows * vocab];
    par_rows(&mut out, vocab, |n, dst| {
        let g = row_grad[n];
        if g == T::zero() {
            // A position without a target (padding, prompt): its gradient is exactly zero.
            return;
        }
        let row = &logits[n * vocab..(n + 1) * vocab];
        let max = row.iter().copied().fold(T::neg_infinity(), T::max);
        let scale = g / exp_shifted(dst, row, max);
        for d in dst.iter_mut() {
            *d = d.mul(scale);
        }
        let t = (targets[n] as usize).min(vocab - 1);
        dst[t] = dst[t] - g;
    });
    out
}

/// The few float operations the kernels need, for f32 and f64.
pub(crate) mod num_traits_like {
    pub trait Float:
        Copy
        + Send
        + Sync
        + PartialEq
        + std::ops::Neg<Output = Self>
        + std::ops::Add<Output = Self>
        + std::ops::AddAssign
        + std::ops::Sub<Output = Self>
        + std::ops::Div<Output = Self>
    {
        fn zero() -> Self;
        fn neg_infinity() -> Self;
        fn max(self, other: Self) -> Self;
        fn exp(self) -> Self;
        fn mul(self, other: Self) -> Self;
        fn ln(self) -> Self;
        fn one_over(x: Self) -> Self;
        fn sqrt(self) -> Self;
        /// `1 / (1 + e^−x)`.
        fn sigmoid(self) -> Self;
        fn from_f64(x: f64) -> Self;
        fn to_f64(self) -> f64;
    }
    macro_rules! float {
        ($t:ty, $exp:expr) => {
            impl Float for $t {
                fn zero() -> Self {
                    0.0
                }
                fn neg_infinity() -> Self {
                    <$t>::NEG_INFINITY
                }
                #[inline(always)]
                fn max(self, other: Self) -> Self {
                    <$t>::max(self, other)
                }
                #[inline(always)]
                fn exp(self) -> Self {
                    $exp(self)
                }
                #[inline(always)]
                fn mul(self, other: Self) -> Self {
                    self * other
                }
                fn ln(self) -> Self {
                    <$t>::ln(self)
                }
                fn one_over(x: Self) -> Self {
                    1.0 / x
                }
                #[inline(always)]
                fn sqrt(self) -> Self {
                    <$t>::sqrt(self)
                }
                #[inline(always)]
                fn sigmoid(self) -> Self {
                    1.0 / (1.0 + $exp(-self))
                }
                fn from_f64(x: f64) -> Self {
                    x as $t
                }
                fn to_f64(self) -> f64 {
                    self as f64
                }
            }
        };
    }
    float!(f32, super::exp_f32);
    float!(f64, f64::exp);
}

/// `exp` for f32 without a libm call and without branches, so the row loops vectorise:
/// Cephes' range reduction `x = n·ln 2 + r` (|r| ≤ ln 2 / 2) and its degree-6 polynomial for
/// `e^r`, scaled by `2^n` through the exponent bits. Within 2 ulp of `f32::exp` on
/// [−87.3, 88] (a test checks; the softmax kernels take `x − max ≤ 0`, the sigmoid any sign);
/// `e^88` above; exactly 0
/// below (so `−∞` entries of a mask stay exact zeros); NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOW: f32 = -87.336_54;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer with plain adds.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(LOW, 88.0);
    let n = (xc * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    let scaled = y * f32::from_bits(((n as i32 + 127) << 23) as u32);
    if x < LOW { 0.0 } else { scaled }
}

/// `Σ row`, in eight interleaved partial sums (a float sum in one accumulator cannot vectorise).
#[inline(always)]
pub(crate) fn sum_lanes<T: num_traits_like::Float>(row: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut total = rest.iter().fold(T::zero(), |a, &b| a + b);
    for a in acc {
        total += a;
    }
    total
}

/// `dst[i] = exp(src[i] − max)`, returning `Σ dst`.
#[inline(always)]
fn exp_shifted<T: num_traits_like::Float>(dst: &mut [T], src: &[T], max: T) -> T {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = (x - max).exp();
    }
    sum_lanes(dst)
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
        let out = match s1 {
            CpuStorage::F32(_) => {
                let (x, t, rows, vocab) = slices::<f32>(s1, l1, s2, l2)?;
                CpuStorage::F32(nll_rows(x, t, rows, vocab))
            }
            CpuStorage::F64(_) => {
                let (x, t, rows, vocab) = slices::<f64>(s1, l1, s2, l2)?;
                CpuStorage::F64(nll_rows(x, t, rows, vocab))
            }
            _ => candle_core::bail!("fused cross-entropy: logits must be f32 or f64"),
        };
        // One value per row; `slices` checked that there is one target per row.
        Ok((out, Shape::from(l2.shape().elem_count())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad =
            logits.apply_op3_no_bwd(targets, &grad_res.contiguous()?, &SoftmaxMinusOneHot)?;
        Ok((Some(grad), None))
    }
}

impl CustomOp3 for SoftmaxMinusOneHot {
    fn name(&self) -> &'static str {
        "softmax-minus-one-hot"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((a3, b3)) = l3.contiguous_offsets() else {
            candle_core::bail!("softmax-minus-one-hot: row gradient must be contiguous");
        };
        let out = match (s1, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(g)) => {
                let (x, t, _, vocab) = slices::<f32>(s1, l1, s2, l2)?;
                CpuStorage::F32(grad_rows(x, t, &g[a3..b3], vocab))
            }
            (CpuStorage::F64(_), CpuStorage::F64(g)) => {
                let (x, t, _, vocab) = slices::<f64>(s1, l1, s2, l2)?;
                CpuStorage::F64(grad_rows(x, t, &g[a3..b3], vocab))
            }
            _ => candle_core::bail!("softmax-minus-one-hot: f32 or f64, all the same"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Per-row negative log-likelihood of `targets` under `logits` (`[…, V]`, `[N]` u32 with N the
/// number of rows) → `[N]`. Fused on the CPU (a `[B, L, V]` tensor is taken as it is: no
/// reshape node, whose backward would cost a zeroed buffer and an add of the whole gradient);
/// composed from candle ops elsewhere (e.g. CUDA).
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    if fused_kernels(logits) {
        return logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, CrossEntropy);
    }
    let v = logits.dim(candle_core::D::Minus1)?;
    let logits = logits.reshape(((), v))?;
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    (lse - picked)?.squeeze(1)
}

/// Attention probabilities `softmax(scale · scores + mask)` over the last dimension, with its own
/// backward. Composed, the scale, the mask and the softmax each allocate a `[B, H, L, K]` tensor
/// each way; fused, the forward is one pass per row and the backward is
/// `scale · p ⊙ (g − Σ g⊙p)`. The mask (`[B, 1, L, K]`, shared by the heads) is a constant.
struct AttentionSoftmax {
    scale: f64,
}

/// The backward of [`AttentionSoftmax`]: `(probs, grad) → scale · p ⊙ (g − rowsum(g ⊙ p))`.
struct AttentionSoftmaxBackward {
    scale: f64,
}

fn last_dim(layout: &Layout, what: &str) -> candle_core::Result<(usize, usize, usize)> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what} needs a contiguous input");
    };
    let width = layout.shape().dims().last().copied().unwrap_or(1).max(1);
    Ok((start, end, width))
}

/// Rows of `x` (`[B, H, L, K]`) with the scale and the row `(b, i)` of `mask` (`[B, 1, L, K]`).
fn softmax_rows<T: num_traits_like::Float>(
    x: &[T],
    mask: &[T],
    dims: (usize, usize, usize, usize),
    scale: T,
) -> Vec<T> {
    let (_, h, l, k) = dims;
    let mut out = vec![T::zero(); x.len()];
    par_rows(&mut out, k, |n, dst| {
        let (b, i) = (n / (h * l), n % l);
        let row = &x[n * k..(n + 1) * k];
        let m = &mask[(b * l + i) * k..(b * l + i + 1) * k];
        for ((d, &v), &mv) in dst.iter_mut().zip(row).zip(m) {
            *d = v.mul(scale) + mv;
        }
        let max = dst.iter().copied().fold(T::neg_infinity(), T::max);
        if max == T::neg_infinity() {
            // A row with every key masked attends to nothing.
            dst.fill(T::zero());
            return;
        }
        for d in dst.iter_mut() {
            *d = (*d - max).exp();
        }
        let inv = T::one_over(sum_lanes(dst));
        for d in dst.iter_mut() {
            *d = d.mul(inv);
        }
    });
    out
}

fn softmax_grad_rows<T: num_traits_like::Float>(
    p: &[T],
    g: &[T],
    width: usize,
    scale: T,
) -> Vec<T> {
    let mut out = vec![T::zero(); p.len()];
    par_rows(&mut out, width, |n, dst| {
        let (pr, gr) = (
            &p[n * width..(n + 1) * width],
            &g[n * width..(n + 1) * width],
        );
        for ((d, &a), &b) in dst.iter_mut().zip(pr).zip(gr) {
            *d = a.mul(b);
        }
        let dot = sum_lanes(dst);
        for ((d, &a), &b) in dst.iter_mut().zip(pr).zip(gr) {
            *d = a.mul(b - dot).mul(scale);
        }
    });
    out
}

impl CustomOp2 for AttentionSoftmax {
    fn name(&self) -> &'static str {
        "fused-attention-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims4()?;
        let (mb0, m1, ml, mk) = l2.shape().dims4()?;
        if (mb0, m1, ml, mk) != (dims.0, 1, dims.2, dims.3) {
            candle_core::bail!(
                "fused attention softmax: mask {:?} does not fit scores {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        pair_kernel(self, s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = res.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &AttentionSoftmaxBackward { scale: self.scale },
        )?;
        Ok((Some(grad), None))
    }
}

impl CustomOp2 for AttentionSoftmaxBackward {
    fn name(&self) -> &'static str {
        "fused-attention-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("fused softmax backward: shapes differ");
        }
        pair_kernel(self, s1, l1, s2, l2)
    }
}

impl PairKernel for AttentionSoftmax {
    const NAME: &'static str = "fused attention softmax";
    fn run<T: num_traits_like::Float>(
        &self,
        x: &[T],
        mask: &[T],
        l1: &Layout,
        _: &Layout,
    ) -> Vec<T> {
        let dims = l1.shape().dims4().expect("checked by the caller");
        softmax_rows(x, mask, dims, T::from_f64(self.scale))
    }
}

impl PairKernel for AttentionSoftmaxBackward {
    const NAME: &'static str = "fused softmax backward";
    fn run<T: num_traits_like::Float>(&self, p: &[T], g: &[T], l1: &Layout, _: &Layout) -> Vec<T> {
        let width = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        softmax_grad_rows(p, g, width, T::from_f64(self.scale))
    }
}

/// A kernel over two same-dtype contiguous inputs, written once for f32 and f64; its output
/// has the first input's shape.
pub(crate) trait PairKernel {
    const NAME: &'static str;
    fn run<T: num_traits_like::Float>(&self, a: &[T], b: &[T], l1: &Layout, l2: &Layout) -> Vec<T>;
}

pub(crate) fn pair_kernel<K: PairKernel>(
    kernel: &K,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (a1, b1, _) = last_dim(l1, K::NAME)?;
    let (a2, b2, _) = last_dim(l2, K::NAME)?;
    let out = match (s1, s2) {
        (CpuStorage::F32(x), CpuStorage::F32(y)) => {
            CpuStorage::F32(kernel.run(&x[a1..b1], &y[a2..b2], l1, l2))
        }
        (CpuStorage::F64(x), CpuStorage::F64(y)) => {
            CpuStorage::F64(kernel.run(&x[a1..b1], &y[a2..b2], l1, l2))
        }
        _ => candle_core::bail!("{}: f32 or f64, both the same", K::NAME),
    };
    Ok((out, l1.shape().clone()))
}

/// `softmax(scale · scores + mask)` over the last dimension, differentiable in `scores`
/// (`[B, H, L, K]`; `mask` `[B, 1, L, K]`, additive, a constant). Fused on the CPU; composed from
/// candle ops elsewhere (which also have a backward).
pub fn attention_softmax(
    scores: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    if fused_kernels(scores) {
        return scores
            .contiguous()?
            .apply_op2(&mask.contiguous()?, AttentionSoftmax { scale });
    }
    if !matches!(scores.dtype(), DType::F32 | DType::F64) {
        // Mixed precision: the softmax's sums in f32 (as transformers does), then back.
        let wide = attention_softmax(
            &scores.to_dtype(DType::F32)?,
            &mask.to_dtype(DType::F32)?,
            scale,
        )?;
        return wide.to_dtype(scores.dtype());
    }
    candle_nn::ops::softmax(
        &(scores * scale)?.broadcast_add(mask)?,
        candle_core::D::Minus1,
    )
}

/// Rotary position embedding in the `rotate_half` form HF Qwen2 uses, with its own backward:
/// for each pair `(x₁, x₂) = (x[i], x[i + D/2])`, `(x₁ cos − x₂ sin, x₂ cos + x₁ sin)`. The
/// backward is the same rotation by the opposite angle. `cos`/`sin` are `[L, D/2]` constants.
struct Rope {
    cos: Tensor,
    sin: Tensor,
    /// Rotate by −θ (the backward).
    inverse: bool,
}

/// `dst = R(±θ) src` for one row in the `rotate_half` form of HF Qwen2: for each pair
/// `(x₁, x₂) = (src[i], src[i + D/2])`, `(x₁ cos − x₂ sin, x₂ cos + x₁ sin)`. The one rotation
/// of the engine (this op and [`crate::fused::split_heads`]), so the KV-cached and training
/// paths agree exactly.
#[inline(always)]
pub(crate) fn rotate_half_row<T: num_traits_like::Float>(
    dst: &mut [T],
    src: &[T],
    cos: &[T],
    sin: &[T],
    inverse: bool,
) {
    let half = src.len() / 2;
    for i in 0..half {
        let (x1, x2) = (src[i], src[i + half]);
        let si = if inverse { -sin[i] } else { sin[i] };
        dst[i] = x1.mul(cos[i]) - x2.mul(si);
        dst[i + half] = x2.mul(cos[i]) + x1.mul(si);
    }
}

fn rope_rows<T: num_traits_like::Float>(
    x: &[T],
    cos: &[T],
    sin: &[T],
    l: usize,
    d: usize,
    inverse: bool,
) -> Vec<T> {
    let half = d / 2;
    let mut out = vec![T::zero(); x.len()];
    par_rows(&mut out, d, |n, dst| {
        let t = n % l;
        let (c, s) = (
            &cos[t * half..(t + 1) * half],
            &sin[t * half..(t + 1) * half],
        );
        rotate_half_row(dst, &x[n * d..(n + 1) * d], c, s, inverse);
    });
    out
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b, d) = last_dim(l, "fused rope")?;
        let (_, _, seq, _) = l.shape().dims4()?;
        if self.cos.dims2()? != (seq, d / 2) || d % 2 != 0 {
            candle_core::bail!(
                "fused rope: cos/sin {:?} do not fit {:?}",
                self.cos.shape(),
                l.shape()
            );
        }
        let table = |t: &Tensor| t.flatten_all()?.contiguous();
        let (cos, sin) = (table(&self.cos)?, table(&self.sin)?);
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(rope_rows(
                &x[a..b],
                &cos.to_vec1::<f32>()?,
                &sin.to_vec1::<f32>()?,
                seq,
                d,
                self.inverse,
            )),
            CpuStorage::F64(x) => CpuStorage::F64(rope_rows(
                &x[a..b],
                &cos.to_vec1::<f64>()?,
                &sin.to_vec1::<f64>()?,
                seq,
                d,
                self.inverse,
            )),
            _ => candle_core::bail!("fused rope: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            inverse: !self.inverse,
        })?))
    }
}

/// RoPE over `[B, H, L, D]` with `cos`/`sin` `[L, D/2]`, differentiable. Fused on the CPU (the
/// KV-cached path uses it; the training forward rotates inside [`crate::fused::split_heads`]
/// with the same arithmetic, so they agree exactly); composed from candle ops elsewhere.
pub fn rope(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    if fused_kernels(xs) {
        return xs.contiguous()?.apply_op1(Rope {
            cos: cos.clone(),
            sin: sin.clone(),
            inverse: false,
        });
    }
    let d = candle_core::D::Minus1;
    let cos = Tensor::cat(&[cos, cos], d)?.unsqueeze(0)?.unsqueeze(0)?;
    let sin = Tensor::cat(&[sin, sin], d)?.unsqueeze(0)?.unsqueeze(0)?;
    let last = xs.dim(d)?;
    let x1 = xs.narrow(d, 0, last / 2)?;
    let x2 = xs.narrow(d, last / 2, last / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], d)?;
    xs.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `Σ w ⊙ f(x)` and its gradient in `x`, for comparing a fused op with the composed one.
    fn value_and_grad(
        x: &candle_core::Var,
        w: &Tensor,
        f: impl Fn(&Tensor) -> Tensor,
    ) -> (f64, Vec<f64>) {
        let y = (f(x.as_tensor()) * w).unwrap().sum_all().unwrap();
        let g = y.backward().unwrap().get(x).unwrap().flatten_all().unwrap();
        (y.to_scalar::<f64>().unwrap(), g.to_vec1::<f64>().unwrap())
    }

    fn assert_close(a: (f64, Vec<f64>), b: (f64, Vec<f64>)) {
        assert!((a.0 - b.0).abs() < 1e-12, "{} vs {}", a.0, b.0);
        assert!(a.1.iter().any(|g| g.abs() > 1e-6), "a gradient flows");
        for (p, q) in a.1.iter().zip(&b.1) {
            assert!((p - q).abs() < 1e-12, "gradient {p} vs {q}");
        }
    }

    #[test]
    fn fast_exp_is_within_two_ulp_of_libm_and_exact_at_the_ends() {
        let mut worst = 0f64;
        let mut x = -87.3f32;
        while x < 88.0 {
            let (fast, libm) = (exp_f32(x), x.exp());
            let ulp = (libm.to_bits() as i64 - fast.to_bits() as i64).abs();
            worst = worst.max(ulp as f64);
            x += 0.001_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn fused_attention_softmax_matches_the_composed_op_forward_and_backward() {
        let dev = Device::Cpu;
        let (b, h, l) = (2, 3, 5);
        let x =
            candle_core::Var::from_tensor(&Tensor::randn(0f64, 3.0, (b, h, l, l), &dev).unwrap())
                .unwrap();
        let w = Tensor::randn(0f64, 1.0, (b, h, l, l), &dev).unwrap();
        let mask = crate::model::attention_mask(&[5, 3], l, &dev)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        let fused = value_and_grad(&x, &w, |x| attention_softmax(x, &mask, 0.125).unwrap());
        let composed = value_and_grad(&x, &w, |x| {
            candle_nn::ops::softmax(
                &(x * 0.125).unwrap().broadcast_add(&mask).unwrap(),
                candle_core::D::Minus1,
            )
            .unwrap()
        });
        assert_close(fused, composed);
    }

    #[test]
    fn fused_rope_matches_the_composed_op_forward_and_backward() {
        let dev = Device::Cpu;
        let (b, h, l, d) = (2, 3, 5, 8);
        let x =
            candle_core::Var::from_tensor(&Tensor::randn(0f64, 1.0, (b, h, l, d), &dev).unwrap())
                .unwrap();
        let w = Tensor::randn(0f64, 1.0, (b, h, l, d), &dev).unwrap();
        let angles = Tensor::randn(0f64, 2.0, (l, d / 2), &dev).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let fused = value_and_grad(&x, &w, |x| rope(x, &cos, &sin).unwrap());
        // candle's composed rope (differentiable), in the same rotate_half form.
        let composed = value_and_grad(&x, &w, |x| {
            candle_nn::rotary_emb::rope_slow(x, &cos, &sin).unwrap()
        });
        assert_close(fused, composed);
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
