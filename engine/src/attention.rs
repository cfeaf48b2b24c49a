//! Causal self-attention as one graph node on the CPU, with its own backward.
//!
//! Composed from candle ops, attention is four nodes per layer (`Q·Kᵀ`, the masked softmax,
//! `P·V`, and the transposed keys), each `[B, H, L, L]`-sized node paying a zeroed gradient
//! buffer and an add in candle's backward, and every product computes the masked half of the
//! scores too. Here each head walks its query rows in blocks: a block of rows only sees keys up
//! to its last row (and the row's length), so the products skip the masked upper triangle, the
//! probabilities live in a per-thread scratch block, and the backward recomputes them (as flash
//! attention does) instead of keeping `B·H·L²` values per layer. GQA is read in place: query head
//! `h` uses key/value head `h / rep`, so the keys and values are not repeated either.
//!
//! The arithmetic is that of the composed ops (a test compares forward and backward in f64);
//! each head's work runs on one thread in a fixed order, so results do not depend on the thread
//! count.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor, WithDType};

use crate::gemm::{View, matmul};
use crate::ops::num_traits_like::Float;
use crate::ops::{fused_kernels, par_rows, sum_lanes, threads};

/// Query rows per block: small enough that a block's scores stay in cache, large enough for
/// the products to run at speed.
const BLOCK: usize = 64;

/// `softmax(scale · Q Kᵀ + causal and padding mask) V` for `q` `[B, H, L, D]` and `k`, `v`
/// `[B, H/rep, L, D]`; row `b` has `lengths[b]` real tokens (right padding).
struct CausalAttention {
    lengths: Vec<usize>,
    scale: f64,
    /// Query heads per key/value head.
    rep: usize,
    block: usize,
}

/// The shapes the kernels work with.
#[derive(Clone, Copy)]
struct Dims {
    heads: usize,
    kv_heads: usize,
    l: usize,
    d: usize,
}

impl CausalAttention {
    fn dims(&self, q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Dims> {
        let (b, heads, l, d) = q.dims4()?;
        let kv = k.dims4()?;
        if kv != v.dims4()? || kv.0 != b || kv.2 != l || kv.3 != d || kv.1 * self.rep != heads {
            candle_core::bail!(
                "causal attention: queries {q:?} and keys/values {k:?}, {v:?} do not fit \
                 ({} query heads per key head)",
                self.rep
            );
        }
        if self.lengths.len() != b {
            candle_core::bail!(
                "causal attention: {} lengths for a batch of {b}",
                self.lengths.len()
            );
        }
        Ok(Dims {
            heads,
            kv_heads: kv.1,
            l,
            d,
        })
    }

    /// Keys visible from query row `i` of batch row `b`: `j ≤ i` and `j < length` (at least
    /// the first key, so that a row of length 0 stays finite).
    fn visible(&self, b: usize, i: usize) -> usize {
        (i + 1).min(self.lengths[b]).max(1)
    }

    /// `P` for query rows `[i0, i0 + m)` of one head against its first `nk` keys, into `p`
    /// (`m × nk`): the softmax of `scale · q kᵀ` over each row's visible keys, zero elsewhere.
    fn probs<T: Float + 'static>(
        &self,
        p: &mut [T],
        q: &[T],
        k: &[T],
        (b, i0, m, nk): (usize, usize, usize, usize),
        d: usize,
    ) {
        matmul(
            p,
            nk,
            View::rows(&q[i0 * d..], m, d),
            View::rows(k, nk, d).t(),
            false,
        );
        let scale = T::from_f64(self.scale);
        for (r, row) in p.chunks_mut(nk).take(m).enumerate() {
            let (seen, hidden) = row.split_at_mut(self.visible(b, i0 + r));
            let max = seen.iter().copied().fold(T::neg_infinity(), T::max);
            for x in seen.iter_mut() {
                *x = (*x - max).mul(scale).exp();
            }
            let inv = T::one_over(sum_lanes(seen));
            for x in seen.iter_mut() {
                *x = x.mul(inv);
            }
            hidden.fill(T::zero());
        }
    }

    /// The blocks of one head: `(first row, rows, keys they see)`.
    fn blocks(&self, b: usize, l: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..l).step_by(self.block).map(move |i0| {
            let m = self.block.min(l - i0);
            (i0, m, self.visible(b, i0 + m - 1))
        })
    }

    fn forward<T: Float + 'static>(&self, q: &[T], k: &[T], v: &[T], dims: Dims) -> Vec<T> {
        let Dims {
            heads,
            kv_heads,
            l,
            d,
        } = dims;
        let mut out = vec![T::zero(); q.len()];
        par_rows(&mut out, l * d, |n, o| {
            let (b, h) = (n / heads, n % heads);
            let kv = (b * kv_heads + h / self.rep) * l * d;
            let (q, k, v) = (
                &q[n * l * d..][..l * d],
                &k[kv..][..l * d],
                &v[kv..][..l * d],
            );
            let mut p = vec![T::zero(); self.block.min(l) * l];
            for (i0, m, nk) in self.blocks(b, l) {
                let p = &mut p[..m * nk];
                self.probs(p, q, k, (b, i0, m, nk), d);
                matmul(
                    &mut o[i0 * d..],
                    d,
                    View::rows(p, m, nk),
                    View::rows(v, nk, d),
                    false,
                );
            }
        });
        out
    }

    /// `(dQ, dK, dV)` from the output's gradient `go`. One thread per key/value head: it owns
    /// that head's `dK`, `dV` and the `rep` query heads that read it.
    fn backward<T: Float + 'static>(
        &self,
        (q, k, v): (&[T], &[T], &[T]),
        go: &[T],
        dims: Dims,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let Dims { kv_heads, l, d, .. } = dims;
        let (mut dq, mut dk, mut dv) = (
            vec![T::zero(); q.len()],
            vec![T::zero(); k.len()],
            vec![T::zero(); v.len()],
        );
        let group = self.rep * l * d;
        let per = (dk.len() / (l * d)).div_ceil(threads()).max(1);
        let parts: Vec<_> = dq
            .chunks_mut(per * group)
            .zip(dk.chunks_mut(per * l * d))
            .zip(dv.chunks_mut(per * l * d))
            .collect();
        crate::pool::for_each_part(parts, |t, ((dq, dk), dv)| {
            let heads = dq
                .chunks_mut(group)
                .zip(dk.chunks_mut(l * d))
                .zip(dv.chunks_mut(l * d));
            for (i, ((dq, dk), dv)) in heads.enumerate() {
                let g = t * per + i;
                let b = g / kv_heads;
                let (k, v) = (&k[g * l * d..][..l * d], &v[g * l * d..][..l * d]);
                let at = g * group;
                let (q, go) = (&q[at..][..group], &go[at..][..group]);
                self.backward_group(dq, dk, dv, (q, k, v, go), b, (l, d));
            }
        });
        (dq, dk, dv)
    }

    /// One key/value head and its `rep` query heads: for each block of query rows, with `P`
    /// recomputed, `dV += Pᵀ dO`, `dP = dO Vᵀ`, `dS = scale · P ⊙ (dP − rowsum(P ⊙ dP))`,
    /// `dQ = dS K`, `dK += dSᵀ Q`.
    fn backward_group<T: Float + 'static>(
        &self,
        dq: &mut [T],
        dk: &mut [T],
        dv: &mut [T],
        (q, k, v, go): (&[T], &[T], &[T], &[T]),
        b: usize,
        (l, d): (usize, usize),
    ) {
        let scale = T::from_f64(self.scale);
        let mut p = vec![T::zero(); self.block.min(l) * l];
        let mut ds = vec![T::zero(); self.block.min(l) * l];
        let mut prod = vec![T::zero(); l];
        for r in 0..self.rep {
            let (q, go) = (&q[r * l * d..][..l * d], &go[r * l * d..][..l * d]);
            let dq = &mut dq[r * l * d..][..l * d];
            for (i0, m, nk) in self.blocks(b, l) {
                let (p, ds) = (&mut p[..m * nk], &mut ds[..m * nk]);
                self.probs(p, q, k, (b, i0, m, nk), d);
                let go_block = View::rows(&go[i0 * d..], m, d);
                matmul(dv, d, View::rows(p, m, nk).t(), go_block, true);
                matmul(ds, nk, go_block, View::rows(v, nk, d).t(), false);
                for (pr, dr) in p.chunks(nk).zip(ds.chunks_mut(nk)) {
                    let prod = &mut prod[..nk];
                    for ((x, &a), &g) in prod.iter_mut().zip(pr).zip(dr.iter()) {
                        *x = a.mul(g);
                    }
                    let dot = sum_lanes(prod);
                    for (g, &a) in dr.iter_mut().zip(pr) {
                        *g = a.mul(*g - dot).mul(scale);
                    }
                }
                let ds = View::rows(ds, m, nk);
                matmul(&mut dq[i0 * d..], d, ds, View::rows(k, nk, d), false);
                matmul(dk, d, ds.t(), View::rows(&q[i0 * d..], m, d), true);
            }
        }
    }
}

fn cpu_slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    crate::ops::contiguous_slice(s, l, "causal attention")
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
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
        let dims = self.dims(l1.shape(), l2.shape(), l3.shape())?;
        let inputs = [(s1, l1), (s2, l2), (s3, l3)];
        let out = match s1.dtype() {
            DType::F32 => CpuStorage::F32(self.forward_storage::<f32>(inputs, dims)?),
            DType::F64 => CpuStorage::F64(self.forward_storage::<f64>(inputs, dims)?),
            other => candle_core::bail!("causal attention: f32 or f64, not {other:?}"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => self.backward_tensors::<f32>(q, k, v, grad)?,
            DType::F64 => self.backward_tensors::<f64>(q, k, v, grad)?,
            other => candle_core::bail!("causal attention: f32 or f64, not {other:?}"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

impl CausalAttention {
    /// [`Self::forward`] on the op's `(storage, layout)` inputs `q`, `k`, `v`.
    fn forward_storage<T: Float + WithDType>(
        &self,
        [q, k, v]: [(&CpuStorage, &Layout); 3],
        dims: Dims,
    ) -> candle_core::Result<Vec<T>> {
        Ok(self.forward::<T>(
            cpu_slice(q.0, q.1)?,
            cpu_slice(k.0, k.1)?,
            cpu_slice(v.0, v.1)?,
            dims,
        ))
    }

    fn backward_tensors<T: Float + WithDType>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let dims = self.dims(q.shape(), k.shape(), v.shape())?;
        let guards = [q, k, v, &grad].map(|t| t.storage_and_layout());
        let mut slices = Vec::with_capacity(4);
        for (storage, layout) in &guards {
            match &**storage {
                Storage::Cpu(s) => slices.push(cpu_slice::<T>(s, layout)?),
                _ => candle_core::bail!("causal attention: CPU tensors only"),
            }
        }
        let (dq, dk, dv) = self.backward((slices[0], slices[1], slices[2]), slices[3], dims);
        drop(guards);
        Ok((
            Tensor::from_vec(dq, q.shape(), q.device())?,
            Tensor::from_vec(dk, k.shape(), k.device())?,
            Tensor::from_vec(dv, v.shape(), v.device())?,
        ))
    }
}

/// Causal self-attention over right-padded rows: `softmax(scale · Q Kᵀ + mask) V` for `q`
/// `[B, H, L, D]` and `k`, `v` `[B, H_kv, L, D]` (`H` a multiple of `H_kv`, GQA); row `b` has
/// `lengths[b]` real tokens, and a query sees the keys at or before it that are real. One graph
/// node on the CPU in f32/f64; elsewhere (and in bf16) the composed ops with `mask`, the additive
/// `[B, 1, L, L]` mask of [`crate::model::attention_mask`] in the compute dtype.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lengths: &[usize],
    scale: f64,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (heads, kv_heads) = (q.dim(1)?, k.dim(1)?);
    if kv_heads == 0 || heads % kv_heads != 0 {
        candle_core::bail!("causal attention: {heads} query heads over {kv_heads} key heads");
    }
    let rep = heads / kv_heads;
    if fused_kernels(q) {
        let op = CausalAttention {
            lengths: lengths.to_vec(),
            scale,
            rep,
            block: BLOCK,
        };
        return q
            .contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op);
    }
    let built;
    let mask = match mask {
        Some(m) => m,
        None => {
            built = crate::model::attention_mask(lengths, q.dim(2)?, q.device())?
                .to_dtype(q.dtype())?;
            &built
        }
    };
    let k = crate::model::repeat_kv(k, rep)?;
    let v = crate::model::repeat_kv(v, rep)?;
    let probs = crate::ops::attention_softmax(&q.matmul(&k.t()?)?, mask, scale)?;
    probs.matmul(&v)
}

/// One row's keys and values for [`attend_cached`]: token-major `[T, H_kv, D]` with the row's
/// `new` tokens already appended. Rows are packed in order, so a row's new tokens follow the
/// previous row's.
pub(crate) struct CachedRow<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub new: usize,
}

/// Decode attention on the CPU in f32: the new tokens of several rows, packed, against each
/// row's own cache, in one pass (composed from candle ops, this is about ten small ops per row
/// per layer, and at decode sizes those cost more than the weight products).
///
/// `q` is the pack's rotated queries, token-major `[N, H·D]`; new token `i` of a row whose cache holds
/// `T` positions (its own new tokens included) sees the first `T - new + i + 1` of them
/// (causal), query head `h` reading key/value head `h / rep` in place (GQA). Returns the
/// attended values token-major, `[N, H·D]`, ready for the output projection. The arithmetic per
/// (token, head) is a fixed sequence, so results do not depend on the thread count.
pub(crate) fn attend_cached(
    q: &[f32],
    rows: &[CachedRow<'_>],
    heads: usize,
    kv_heads: usize,
    d: usize,
    scale: f32,
) -> Vec<f32> {
    let n: usize = rows.iter().map(|r| r.new).sum();
    debug_assert_eq!(q.len(), heads * n * d);
    let rep = heads / kv_heads;
    // Each packed token's row and its index among the row's new tokens.
    let token_row: Vec<(usize, usize)> = rows
        .iter()
        .enumerate()
        .flat_map(|(r, row)| (0..row.new).map(move |i| (r, i)))
        .collect();
    let width = heads * d;
    let mut out = vec![0f32; n * width];
    // Split by work (each output value costs a pass over the row's visible keys and values),
    // not by output size: a decode step's output is small but its cache reads are not.
    let work: usize = token_row
        .iter()
        .map(|&(r, i)| (rows[r].keys.len() / (kv_heads * d) - rows[r].new + i + 1) * width * 2)
        .sum();
    let per = n.div_ceil(crate::pool::parts_for(work)).max(1);
    let parts: Vec<&mut [f32]> = out.chunks_mut(per * width).collect();
    crate::pool::for_each_part(parts, |p, chunk| {
        for (t, dst) in chunk.chunks_mut(width).enumerate() {
            attend_token(
                q,
                rows,
                token_row[p * per + t],
                p * per + t,
                dst,
                (heads, rep, d),
                scale,
            );
        }
    });
    out
}

/// [`attend_cached`] for one packed token: every head's attended values into `dst` `[H·D]`.
fn attend_token(
    q: &[f32],
    rows: &[CachedRow<'_>],
    (r, i): (usize, usize),
    token: usize,
    dst: &mut [f32],
    (heads, rep, d): (usize, usize, usize),
    scale: f32,
) {
    let stride = heads / rep * d;
    {
        let row = &rows[r];
        let cached = row.keys.len() / stride;
        let visible = cached - row.new + i + 1;
        let mut scores = vec![0f32; visible];
        for h in 0..heads {
            let kvh = h / rep;
            let qh = &q[(token * heads + h) * d..][..d];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let k = &row.keys[j * stride + kvh * d..][..d];
                *s = dot(qh, k) * scale;
                max = max.max(*s);
            }
            let mut total = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            let o = &mut dst[h * d..][..d];
            for (j, &p) in scores.iter().enumerate() {
                let v = &row.values[j * stride + kvh * d..][..d];
                for (o, &v) in o.iter_mut().zip(v) {
                    *o += p * v;
                }
            }
            let inv = 1.0 / total;
            for o in o.iter_mut() {
                *o *= inv;
            }
        }
    }
}

/// `a · b` in eight interleaved partial sums, so it vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn var(shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::randn(0f64, 1.0, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// `Σ c ⊙ attention(q, k, v)` and its gradients, with the op's block size `block`.
    fn run(
        qkv: &[Var; 3],
        c: &Tensor,
        lengths: &[usize],
        block: Option<usize>,
    ) -> (f64, Vec<Vec<f64>>) {
        let (q, k, v) = (qkv[0].as_tensor(), qkv[1].as_tensor(), qkv[2].as_tensor());
        let scale = 0.37;
        let out = match block {
            Some(block) => {
                let op = CausalAttention {
                    lengths: lengths.to_vec(),
                    scale,
                    rep: q.dim(1).unwrap() / k.dim(1).unwrap(),
                    block,
                };
                q.apply_op3(k, v, op).unwrap()
            }
            None => {
                // The composed ops, as the model used them before this op.
                let mask = crate::model::attention_mask(lengths, q.dim(2).unwrap(), q.device())
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap();
                let rep = q.dim(1).unwrap() / k.dim(1).unwrap();
                let k = crate::model::repeat_kv(k, rep).unwrap();
                let v = crate::model::repeat_kv(v, rep).unwrap();
                let s = q.matmul(&k.t().unwrap()).unwrap();
                let p = candle_nn::ops::softmax(
                    &(s * scale).unwrap().broadcast_add(&mask).unwrap(),
                    candle_core::D::Minus1,
                )
                .unwrap();
                p.matmul(&v).unwrap()
            }
        };
        let y = (out * c).unwrap().sum_all().unwrap();
        let grads = y.backward().unwrap();
        let g = qkv
            .iter()
            .map(|x| {
                grads
                    .get(x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            })
            .collect();
        (y.to_scalar::<f64>().unwrap(), g)
    }

    #[test]
    fn blocked_attention_matches_the_composed_masked_softmax_forward_and_backward() {
        // 11 positions in blocks of 4 (a short last block), a padded row, GQA with 3 query heads
        // per key head, and one block size that covers everything.
        let (b, hkv, rep, l, d) = (2, 2, 3, 11, 5);
        let lengths = [11, 7];
        let qkv = [
            var(&[b, hkv * rep, l, d]),
            var(&[b, hkv, l, d]),
            var(&[b, hkv, l, d]),
        ];
        let c = Tensor::randn(0f64, 1.0, (b, hkv * rep, l, d), &Device::Cpu).unwrap();
        let composed = run(&qkv, &c, &lengths, None);
        for block in [4, 64] {
            let fused = run(&qkv, &c, &lengths, Some(block));
            assert!(
                (fused.0 - composed.0).abs() < 1e-10,
                "{} vs {}",
                fused.0,
                composed.0
            );
            for (a, e) in fused.1.iter().zip(&composed.1) {
                assert!(a.iter().any(|g| g.abs() > 1e-6), "a gradient flows");
                for (x, y) in a.iter().zip(e) {
                    assert!((x - y).abs() < 1e-10, "block {block}: gradient {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn padded_keys_and_later_positions_get_no_attention() {
        // Changing a padded key/value or a later position's key/value leaves a query's output
        // as it was.
        let dev = Device::Cpu;
        let (l, d) = (6, 3);
        let q = Tensor::randn(0f32, 1.0, (1, 1, l, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 1, l, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 1, l, d), &dev).unwrap();
        let out = |k: &Tensor, v: &Tensor| {
            causal_attention(&q, k, v, &[4], 0.5, None)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let base = out(&k, &v);
        // Position 4 is padding (length 4); position 2 is after queries 0 and 1.
        let bump = |t: &Tensor, pos: usize| {
            let mut x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for e in &mut x[pos * d..(pos + 1) * d] {
                *e += 3.0;
            }
            Tensor::from_vec(x, (1, 1, l, d), &dev).unwrap()
        };
        let padded = out(&bump(&k, 4), &bump(&v, 4));
        assert_eq!(base, padded, "a padded key changes nothing");
        let later = out(&bump(&k, 2), &bump(&v, 2));
        assert_eq!(
            base[..2 * d],
            later[..2 * d],
            "queries 0, 1 do not see key 2"
        );
        assert_ne!(base[2 * d..3 * d], later[2 * d..3 * d], "query 2 does");
    }
}
