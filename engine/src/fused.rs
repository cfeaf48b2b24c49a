//! The layers of a decoder block as single graph nodes with their own backward, on the CPU.
//!
//! candle's backward starts every node's gradient as a zeroed tensor and adds into it, so a
//! layer composed of reshapes, a transposed weight, a broadcast bias, and the five ops of an
//! RMSNorm pays a zeroed buffer and an add per node on top of the arithmetic, plus strided sums
//! for broadcast parameters. Here a linear layer (matrix product and bias), an RMSNorm and the
//! SwiGLU product are one node each: forward and backward are the same arithmetic as the
//! composed ops (tests compare both in f64), done in one pass. Parameter gradients that are sums
//! over rows (bias, norm weight) are summed in fixed blocks of rows, so they do not depend on
//! the thread count. Other devices and dtypes use the composed ops, which have a backward too.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use crate::gemm::{View, matmul_threads};
use crate::ops::num_traits_like::Float;
use crate::ops::{PairKernel, fused_kernels, pair_kernel, par_rows, sum_lanes};

/// Rows per partial sum of a parameter gradient (fixed, so results do not depend on threads).
const BLOCK_ROWS: usize = 64;

fn contiguous_range(layout: &Layout, what: &str) -> candle_core::Result<(usize, usize)> {
    layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} needs a contiguous input")))
}

/// `y = x Wᵀ (+ b)` over the last dimension of `x` (`[…, in]`, `W` `[out, in]`, `b` `[out]`).
struct Linear;

/// `A·B` of row-major CPU matrices in f32/f64, either read transposed in place (`ta`, `tb`):
/// `A` is `[m, k]` (`[k, m]` with `ta`), `B` `[k, n]` (`[n, k]` with `tb`); a leading batch
/// dimension on both multiplies batch by batch. On the kernels' threads through
/// [`crate::gemm`], without candle's per-call thread-count probe.
struct Product {
    ta: bool,
    tb: bool,
}

/// Batch, rows and columns of a contiguous `[m, n]` or `[batch, m, n]` layout, its start.
fn matrices(l: &Layout, what: &str) -> candle_core::Result<(usize, usize, usize, usize)> {
    let (start, _) = contiguous_range(l, what)?;
    match *l.shape().dims() {
        [r, c] => Ok((1, r, c, start)),
        [b, r, c] => Ok((b, r, c, start)),
        _ => candle_core::bail!("{what}: matrices or a batch of them, not {:?}", l.shape()),
    }
}

fn product_slices<T: Float + 'static>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    (ta, tb): (bool, bool),
) -> candle_core::Result<(Vec<T>, Shape)> {
    let (batch, ar, ac, a0) = matrices(la, "product")?;
    let (b_batch, br, bc, b0) = matrices(lb, "product")?;
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if tb { (bc, br) } else { (br, bc) };
    if k != k2 || batch != b_batch {
        candle_core::bail!(
            "product: {:?}{} does not fit {:?}{}",
            la.shape(),
            if ta { "ᵀ" } else { "" },
            lb.shape(),
            if tb { "ᵀ" } else { "" }
        );
    }
    let mut out = vec![T::zero(); batch * m * n];
    for (i, dst) in out.chunks_mut((m * n).max(1)).enumerate().take(batch) {
        let a = View::rows(&a[a0 + i * ar * ac..], ar, ac);
        let b = View::rows(&b[b0 + i * br * bc..], br, bc);
        let a = if ta { a.t() } else { a };
        let b = if tb { b.t() } else { b };
        matmul_threads(dst, n, a, b, false);
    }
    let shape = if la.shape().rank() == 3 {
        Shape::from((batch, m, n))
    } else {
        Shape::from((m, n))
    };
    Ok((out, shape))
}

/// `A·Bᵀ` of a few rows of `A` by a row-major `B` (`x Wᵀ` in a decode step) through
/// [`crate::skinny`]; `None` for every other product.
fn skinny_slices(
    a: &[f32],
    la: &Layout,
    b: &[f32],
    lb: &Layout,
    (ta, tb): (bool, bool),
) -> candle_core::Result<Option<(Vec<f32>, Shape)>> {
    let (batch, m, k, a0) = matrices(la, "product")?;
    let (_, n, k2, b0) = matrices(lb, "product")?;
    if ta || !tb || batch != 1 || la.shape().rank() != 2 || m > crate::skinny::MAX_ROWS || k != k2 {
        return Ok(None);
    }
    let out = crate::skinny::product(&a[a0..a0 + m * k], m, k, &b[b0..b0 + n * k], n);
    Ok(out.map(|out| (out, Shape::from((m, n)))))
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "product"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        la: &Layout,
        b: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let flags = (self.ta, self.tb);
        match (a, b) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let (out, shape) = match skinny_slices(a, la, b, lb, flags)? {
                    Some(done) => done,
                    None => product_slices(a, la, b, lb, flags)?,
                };
                Ok((CpuStorage::F32(out), shape))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let (out, shape) = product_slices(a, la, b, lb, flags)?;
                Ok((CpuStorage::F64(out), shape))
            }
            _ => candle_core::bail!("product: f32 or f64, both the same"),
        }
    }
}

/// `A·B` (either transposed) of contiguous CPU f32/f64 matrices, `[m, k]` or `[batch, m, k]`:
/// a graph node without a backward (for gradients and inference, not for training graphs).
pub(crate) fn product(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> candle_core::Result<Tensor> {
    a.contiguous()?
        .apply_op2_no_bwd(&b.contiguous()?, &Product { ta, tb })
}

/// `x Wᵀ` of `x` `[…, in]` (any rank, contiguous) and `W` `[out, in]`.
fn linear_fwd(
    x: &CpuStorage,
    lx: &Layout,
    w: &CpuStorage,
    lw: &Layout,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (out_dim, in_dim) = lw.shape().dims2()?;
    let dims = lx.shape().dims();
    if dims.last() != Some(&in_dim) {
        candle_core::bail!(
            "fused linear: input {:?} does not fit weight {:?}",
            lx.shape(),
            lw.shape()
        );
    }
    let (x0, _) = contiguous_range(lx, "fused linear")?;
    let rows = lx.shape().elem_count() / in_dim.max(1);
    let lhs = Layout::contiguous_with_offset((rows, in_dim), x0);
    let (out, _) = Product {
        ta: false,
        tb: true,
    }
    .cpu_fwd(x, &lhs, w, lw)?;
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("rank ≥ 1") = out_dim;
    Ok((out, Shape::from(out_dims)))
}

fn add_rows<T: Float>(out: &mut [T], bias: &[T]) {
    par_rows(out, bias.len(), |_, row| {
        for (o, &b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    });
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        linear_fwd(x, lx, w, lw)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = linear_bwd(x, w, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear-bias"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: &CpuStorage,
        lw: &Layout,
        b: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (mut out, shape) = linear_fwd(x, lx, w, lw)?;
        let (b0, b1) = contiguous_range(lb, "fused linear bias")?;
        if b1 - b0 != lw.shape().dims2()?.0 {
            candle_core::bail!(
                "fused linear: bias {:?} does not fit weight {:?}",
                lb.shape(),
                lw.shape()
            );
        }
        match (&mut out, b) {
            (CpuStorage::F32(o), CpuStorage::F32(b)) => add_rows(o, &b[b0..b1]),
            (CpuStorage::F64(o), CpuStorage::F64(b)) => add_rows(o, &b[b0..b1]),
            _ => candle_core::bail!("fused linear: f32 or f64, all the same"),
        }
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = linear_bwd(x, w, grad, true)?;
        Ok((Some(dx), Some(dw), db))
    }
}

/// `dx = g W`, `dW = gᵀ x`, `db = 1ᵀ g` (as a matrix product: a column sum in a fixed order).
fn linear_bwd(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    bias: bool,
) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
    let (out_dim, in_dim) = w.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    let g = grad.contiguous()?.reshape((rows, out_dim))?;
    let x2 = x.reshape((rows, in_dim))?;
    let dx = product(&g, w, false, false)?.reshape(x.shape())?;
    let dw = product(&g, &x2, true, false)?;
    let db = if bias {
        let ones = Tensor::ones((1, rows), g.dtype(), g.device())?;
        Some(product(&ones, &g, false, false)?.reshape(out_dim)?)
    } else {
        None
    };
    Ok((dx, dw, db))
}

/// `x Wᵀ + b` over the last dimension (`x` `[…, in]`, `W` `[out, in]`, `b` `[out]`): one graph
/// node on the CPU in f32/f64, composed elsewhere.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    if fused_kernels(x) {
        let x = x.contiguous()?;
        return match b {
            Some(b) => x.apply_op3(w, b, Linear),
            None => x.apply_op2(w, Linear),
        };
    }
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().expect("rank ≥ 1");
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let out = x.reshape((rows, in_dim))?.matmul(&w.t()?)?;
    let out = match b {
        // As `1 · bᵀ`, a product, so that the bias gradient `1ᵀ g` accumulates in f32 even in
        // bf16 (a broadcast's backward would sum the rows in bf16 on the CPU).
        Some(b) => {
            (out + Tensor::ones((rows, 1), b.dtype(), b.device())?.matmul(&b.reshape((1, ()))?)?)?
        }
        None => out,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank ≥ 1") = w.dim(0)?;
    out.reshape(out_dims)
}

/// RMSNorm over the last dimension: `y = x / √(mean(x²) + ε) ⊙ w`.
struct RmsNorm {
    eps: f64,
}

/// Its backward, `(x, w, dy) → [dx…, dw…]` in one buffer (the caller splits it):
/// `dx = r·(g − x̂·mean(g ⊙ x̂))` with `g = dy ⊙ w`, `x̂ = r·x`, `r = 1/√(mean(x²)+ε)`;
/// `dw = Σ_rows dy ⊙ x̂`.
struct RmsNormBackward {
    eps: f64,
}

fn inv_rms<T: Float>(row: &[T], scratch: &mut [T], eps: f64) -> T {
    for (s, &x) in scratch.iter_mut().zip(row) {
        *s = x.mul(x);
    }
    let mean = sum_lanes(scratch) / T::from_f64(row.len() as f64);
    T::one_over((mean + T::from_f64(eps)).sqrt())
}

fn rms_norm_rows<T: Float>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let h = w.len();
    let mut out = vec![T::zero(); x.len()];
    par_rows(&mut out, h, |n, dst| {
        let row = &x[n * h..(n + 1) * h];
        let r = inv_rms(row, dst, eps);
        for ((d, &v), &wi) in dst.iter_mut().zip(row).zip(w) {
            *d = v.mul(r).mul(wi);
        }
    });
    out
}

fn rms_norm_grad_rows<T: Float>(x: &[T], w: &[T], dy: &[T], eps: f64) -> Vec<T> {
    let h = w.len();
    let rows = x.len() / h.max(1);
    let blocks = rows.div_ceil(BLOCK_ROWS);
    // dx for every row, then one partial dw per block of rows.
    let mut out = vec![T::zero(); rows * h + h];
    let mut partial = vec![T::zero(); blocks * h];
    let (dx, dw) = out.split_at_mut(rows * h);
    let per = blocks.div_ceil(crate::pool::parts_for(rows * h)).max(1);
    let parts: Vec<_> = dx
        .chunks_mut(per * BLOCK_ROWS * h)
        .zip(partial.chunks_mut(per * h))
        .collect();
    crate::pool::for_each_part(parts, |chunk, (dx_chunk, part_chunk)| {
        let mut scratch = vec![T::zero(); h];
        for (b, (dx_block, part)) in dx_chunk
            .chunks_mut(BLOCK_ROWS * h)
            .zip(part_chunk.chunks_mut(h))
            .enumerate()
        {
            let first = (chunk * per + b) * BLOCK_ROWS;
            for (i, dst) in dx_block.chunks_mut(h).enumerate() {
                let n = first + i;
                let (row, g) = (&x[n * h..(n + 1) * h], &dy[n * h..(n + 1) * h]);
                let r = inv_rms(row, &mut scratch, eps);
                for ((s, &gi), (&wi, &xi)) in scratch.iter_mut().zip(g).zip(w.iter().zip(row)) {
                    *s = gi.mul(wi).mul(xi);
                }
                let c = sum_lanes(&scratch).mul(r.mul(r).mul(r)) / T::from_f64(h as f64);
                for (((d, p), &gi), (&wi, &xi)) in dst
                    .iter_mut()
                    .zip(part.iter_mut())
                    .zip(g)
                    .zip(w.iter().zip(row))
                {
                    *d = gi.mul(wi).mul(r) - xi.mul(c);
                    *p += gi.mul(xi.mul(r));
                }
            }
        }
    });
    for part in partial.chunks(h) {
        for (d, &p) in dw.iter_mut().zip(part) {
            *d += p;
        }
    }
    out
}

/// The weight of a norm must match the last dimension of its input.
fn check_norm(lx: &Layout, lw: &Layout) -> candle_core::Result<()> {
    if lx.shape().dims().last() != Some(&lw.shape().elem_count()) {
        candle_core::bail!(
            "fused rms norm: weight {:?} does not fit {:?}",
            lw.shape(),
            lx.shape()
        );
    }
    Ok(())
}

impl PairKernel for RmsNorm {
    const NAME: &'static str = "fused rms norm";
    fn run<T: Float>(&self, x: &[T], w: &[T], _: &Layout, _: &Layout) -> Vec<T> {
        rms_norm_rows(x, w, self.eps)
    }
}

/// A kernel over three same-dtype contiguous inputs, for f32 and f64 (the backward ops).
trait TripleKernel {
    const NAME: &'static str;
    fn run<T: Float>(&self, a: &[T], b: &[T], c: &[T], l1: &Layout) -> Vec<T>;
}

fn triple_kernel<K: TripleKernel>(
    kernel: &K,
    [(s1, l1), (s2, l2), (s3, l3)]: [(&CpuStorage, &Layout); 3],
    shape: Shape,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (a1, b1) = contiguous_range(l1, K::NAME)?;
    let (a2, b2) = contiguous_range(l2, K::NAME)?;
    let (a3, b3) = contiguous_range(l3, K::NAME)?;
    let out = match (s1, s2, s3) {
        (CpuStorage::F32(x), CpuStorage::F32(y), CpuStorage::F32(z)) => {
            CpuStorage::F32(kernel.run(&x[a1..b1], &y[a2..b2], &z[a3..b3], l1))
        }
        (CpuStorage::F64(x), CpuStorage::F64(y), CpuStorage::F64(z)) => {
            CpuStorage::F64(kernel.run(&x[a1..b1], &y[a2..b2], &z[a3..b3], l1))
        }
        _ => candle_core::bail!("{}: f32 or f64, all the same", K::NAME),
    };
    Ok((out, shape))
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        check_norm(lx, lw)?;
        pair_kernel(self, sx, lx, sw, lw)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(
            &w.detach(),
            &grad.contiguous()?,
            &RmsNormBackward { eps: self.eps },
        )?;
        let n = x.elem_count();
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, w.elem_count())?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "fused-rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        check_norm(lx, lw)?;
        if lg.shape() != lx.shape() {
            candle_core::bail!("fused rms norm backward: gradient and input shapes differ");
        }
        let len = lx.shape().elem_count() + lw.shape().elem_count();
        triple_kernel(self, [(sx, lx), (sw, lw), (sg, lg)], Shape::from(len))
    }
}

impl TripleKernel for RmsNormBackward {
    const NAME: &'static str = "fused rms norm backward";
    fn run<T: Float>(&self, x: &[T], w: &[T], dy: &[T], _: &Layout) -> Vec<T> {
        rms_norm_grad_rows(x, w, dy, self.eps)
    }
}

/// RMSNorm over the last dimension with weight `w`, differentiable in both: one graph node on
/// the CPU in f32/f64 (the training forward and the KV-cached path share it, so they agree
/// exactly), candle's composed `rms_norm_slow` elsewhere.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if fused_kernels(x) {
        return x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps });
    }
    candle_nn::ops::rms_norm_slow(x, w, eps as f32)
}

/// `silu(gate) ⊙ up`, the gated activation of Qwen2's MLP.
struct SwiGlu;

/// Its backward, `(gate, up, dy) → [d_gate…, d_up…]` in one buffer: with `s = σ(gate)`,
/// `d_up = dy ⊙ gate·s` and `d_gate = dy ⊙ up ⊙ s·(1 + gate·(1 − s))`.
struct SwiGluBackward;

fn swiglu_rows<T: Float>(gate: &[T], up: &[T], width: usize) -> Vec<T> {
    let mut out = vec![T::zero(); gate.len()];
    par_rows(&mut out, width, |n, dst| {
        let range = n * width..(n + 1) * width;
        for ((d, &g), &u) in dst.iter_mut().zip(&gate[range.clone()]).zip(&up[range]) {
            *d = g.mul(g.sigmoid()).mul(u);
        }
    });
    out
}

fn swiglu_grad_rows<T: Float>(gate: &[T], up: &[T], dy: &[T], width: usize) -> Vec<T> {
    let len = gate.len();
    let mut out = vec![T::zero(); 2 * len];
    let (d_gate, d_up) = out.split_at_mut(len);
    let per = (len / width.max(1))
        .div_ceil(crate::pool::parts_for(len))
        .max(1)
        * width.max(1);
    let parts: Vec<_> = d_gate.chunks_mut(per).zip(d_up.chunks_mut(per)).collect();
    crate::pool::for_each_part(parts, |c, (dg, du)| {
        let start = c * per;
        let range = start..start + dg.len();
        for (((dg, du), (&g, &u)), &d) in dg
            .iter_mut()
            .zip(du.iter_mut())
            .zip(gate[range.clone()].iter().zip(&up[range.clone()]))
            .zip(&dy[range])
        {
            let s = g.sigmoid();
            *du = d.mul(g.mul(s));
            *dg = d
                .mul(u)
                .mul(s.mul(T::from_f64(1.0) + g.mul(T::from_f64(1.0) - s)));
        }
    });
    out
}

fn check_pair(l1: &Layout, l2: &Layout) -> candle_core::Result<()> {
    if l1.shape() != l2.shape() {
        candle_core::bail!("fused swiglu: {:?} and {:?} differ", l1.shape(), l2.shape());
    }
    Ok(())
}

fn last_width(l: &Layout) -> usize {
    l.shape().dims().last().copied().unwrap_or(1).max(1)
}

impl PairKernel for SwiGlu {
    const NAME: &'static str = "fused swiglu";
    fn run<T: Float>(&self, g: &[T], u: &[T], l1: &Layout, _: &Layout) -> Vec<T> {
        swiglu_rows(g, u, last_width(l1))
    }
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        check_pair(l1, l2)?;
        pair_kernel(self, s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = gate.apply_op3_no_bwd(up, &grad.contiguous()?, &SwiGluBackward)?;
        let n = gate.elem_count();
        let d_gate = packed.narrow(0, 0, n)?.reshape(gate.shape())?;
        let d_up = packed.narrow(0, n, n)?.reshape(up.shape())?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

impl CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "fused-swiglu-backward"
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
        check_pair(l1, l2)?;
        check_pair(l1, l3)?;
        let shape = Shape::from(2 * l1.shape().elem_count());
        triple_kernel(self, [(s1, l1), (s2, l2), (s3, l3)], shape)
    }
}

impl TripleKernel for SwiGluBackward {
    const NAME: &'static str = "fused swiglu backward";
    fn run<T: Float>(&self, g: &[T], u: &[T], dy: &[T], l1: &Layout) -> Vec<T> {
        swiglu_grad_rows(g, u, dy, last_width(l1))
    }
}

/// `silu(gate) ⊙ up`, differentiable in both: one graph node on the CPU in f32/f64 (shared by
/// the training and the KV-cached forward), composed elsewhere.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    if fused_kernels(gate) {
        return gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu);
    }
    candle_nn::ops::silu(gate)? * up
}

/// The attention's change of layout between the projections (`[B, L, H·D]`) and the heads
/// (`[B, H·rep, L, D]`), with RoPE applied on the way in and each of the `H` heads repeated
/// `rep` times (grouped-query attention). Composed, that is a reshape, a transpose, a copy, the
/// rotation, a broadcast and another copy, each a node whose backward zero-fills and adds. Fused
/// it is one copy each way; the way back rotates by the opposite angle and sums the repeats.
/// (Keys stay `[B, H, L, D]` and are multiplied through a transposed view: a contiguous `[D, L]`
/// copy measured no faster and changes the product's rounding against the KV-cached path.)
#[derive(Clone)]
struct Heads {
    heads: usize,
    rep: usize,
    /// `cos`, `sin` `[L, D/2]`.
    rope: Option<(Tensor, Tensor)>,
}

/// `dst = R(±θ_l) src` for one head row ([`crate::ops::rotate_half_row`]), or a copy.
#[inline(always)]
fn rotate<T: Float>(dst: &mut [T], src: &[T], rope: Option<(&[T], &[T])>, inverse: bool) {
    match rope {
        Some((c, s)) => crate::ops::rotate_half_row(dst, src, c, s, inverse),
        None => dst.copy_from_slice(src),
    }
}

impl Heads {
    fn tables<T: candle_core::WithDType>(
        tables: &Option<(Vec<T>, Vec<T>)>,
        l: usize,
        half: usize,
    ) -> Option<(&[T], &[T])> {
        tables
            .as_ref()
            .map(|(c, s)| (&c[l * half..(l + 1) * half], &s[l * half..(l + 1) * half]))
    }

    fn rope_vecs<T: candle_core::WithDType>(
        &self,
        l: usize,
        d: usize,
    ) -> candle_core::Result<Option<(Vec<T>, Vec<T>)>> {
        let Some((cos, sin)) = &self.rope else {
            return Ok(None);
        };
        if cos.dims2()? != (l, d / 2) || !d.is_multiple_of(2) {
            candle_core::bail!(
                "fused heads: rope tables {:?} do not fit {l} positions of {d}",
                cos.shape()
            );
        }
        let v = |t: &Tensor| t.flatten_all()?.to_vec1::<T>();
        Ok(Some((v(cos)?, v(sin)?)))
    }

    /// `[B, L, H·D]` → heads.
    fn scatter<T: Float + candle_core::WithDType>(
        &self,
        x: &[T],
        (b, l, d): (usize, usize, usize),
    ) -> candle_core::Result<Vec<T>> {
        let (h, rep) = (self.heads, self.rep);
        let tables = self.rope_vecs::<T>(l, d)?;
        let mut out = vec![<T as Float>::zero(); b * h * rep * l * d];
        par_rows(&mut out, l * d, |n, block| {
            let (bi, head) = (n / (h * rep), (n % (h * rep)) / rep);
            for li in 0..l {
                let src = &x[(bi * l + li) * h * d + head * d..][..d];
                let rope = Self::tables(&tables, li, d / 2);
                rotate(&mut block[li * d..(li + 1) * d], src, rope, false);
            }
        });
        Ok(out)
    }

    /// Heads → `[B, L, H·D]`, rotating back and summing the repeats (the adjoint of `scatter`).
    fn gather<T: Float + candle_core::WithDType>(
        &self,
        y: &[T],
        (b, l, d): (usize, usize, usize),
    ) -> candle_core::Result<Vec<T>> {
        let (h, rep) = (self.heads, self.rep);
        let tables = self.rope_vecs::<T>(l, d)?;
        let mut out = vec![<T as Float>::zero(); b * l * h * d];
        par_rows(&mut out, h * d, |n, dst| {
            let (bi, li) = (n / l, n % l);
            let rope = Self::tables(&tables, li, d / 2);
            let mut rotated = vec![<T as Float>::zero(); d];
            for head in 0..h {
                for r in 0..rep {
                    let row = &y[((bi * h * rep + head * rep + r) * l + li) * d..][..d];
                    rotate(&mut rotated, row, rope, true);
                    for (o, &v) in dst[head * d..(head + 1) * d].iter_mut().zip(&rotated) {
                        *o += v;
                    }
                }
            }
        });
        Ok(out)
    }
}

/// Splits projections `[B, L, H·D]` into heads (see [`Heads`]); its backward is [`MergeHeads`].
struct SplitHeads(Heads);

/// Merges heads back into `[B, L, H·D]` (the adjoint of [`SplitHeads`]); its backward splits.
struct MergeHeads(Heads);

fn heads_storage<T: Float + candle_core::WithDType>(
    s: &CpuStorage,
    layout: &Layout,
    f: impl Fn(&[T]) -> candle_core::Result<Vec<T>>,
) -> candle_core::Result<Vec<T>> {
    let (a, z) = contiguous_range(layout, "fused heads")?;
    f(&s.as_slice::<T>()?[a..z])
}

impl candle_core::CustomOp1 for SplitHeads {
    fn name(&self) -> &'static str {
        "fused-split-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, l, width) = layout.shape().dims3()?;
        let hs = &self.0;
        if width % hs.heads != 0 {
            candle_core::bail!(
                "fused heads: {width} features do not split into {} heads",
                hs.heads
            );
        }
        let d = width / hs.heads;
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(heads_storage(s, layout, |x| {
                hs.scatter::<f32>(x, (b, l, d))
            })?),
            CpuStorage::F64(_) => CpuStorage::F64(heads_storage(s, layout, |x| {
                hs.scatter::<f64>(x, (b, l, d))
            })?),
            _ => candle_core::bail!("fused heads: f32 or f64 only"),
        };
        Ok((out, Shape::from((b, hs.heads * hs.rep, l, d))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&MergeHeads(self.0.clone()))?,
        ))
    }
}

impl candle_core::CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "fused-merge-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, all_heads, l, d) = layout.shape().dims4()?;
        let hs = &self.0;
        if all_heads != hs.heads * hs.rep {
            candle_core::bail!(
                "fused heads: {all_heads} heads, expected {}",
                hs.heads * hs.rep
            );
        }
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(heads_storage(s, layout, |v| {
                hs.gather::<f32>(v, (b, l, d))
            })?),
            CpuStorage::F64(_) => CpuStorage::F64(heads_storage(s, layout, |v| {
                hs.gather::<f64>(v, (b, l, d))
            })?),
            _ => candle_core::bail!("fused heads: f32 or f64 only"),
        };
        Ok((out, Shape::from((b, l, hs.heads * d))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&SplitHeads(self.0.clone()))?,
        ))
    }
}

/// Projections `[B, L, heads·D]` → `[B, heads·rep, L, D]`, with RoPE (`cos`, `sin`
/// `[L, D/2]`) when given and each head repeated `rep` times; differentiable. One node on the
/// CPU in f32/f64, composed elsewhere.
pub fn split_heads(
    x: &Tensor,
    heads: usize,
    rep: usize,
    rope: Option<(&Tensor, &Tensor)>,
) -> candle_core::Result<Tensor> {
    if fused_kernels(x) {
        return x.contiguous()?.apply_op1(SplitHeads(Heads {
            heads,
            rep,
            rope: rope.map(|(c, s)| (c.clone(), s.clone())),
        }));
    }
    let (b, l, width) = x.dims3()?;
    let mut out = x
        .reshape((b, l, heads, width / heads))?
        .transpose(1, 2)?
        .contiguous()?;
    if let Some((cos, sin)) = rope {
        out = crate::ops::rope(&out, cos, sin)?;
    }
    crate::model::repeat_kv(&out, rep)
}

/// Heads `[B, H, L, D]` → `[B, L, H·D]`, differentiable: one node on the CPU in f32/f64.
pub fn merge_heads(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, l, d) = x.dims4()?;
    if fused_kernels(x) {
        return x.contiguous()?.apply_op1(MergeHeads(Heads {
            heads: h,
            rep: 1,
            rope: None,
        }));
    }
    x.transpose(1, 2)?.reshape((b, l, h * d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// `Σ c ⊙ f(inputs)` and its gradient in every input.
    fn value_and_grads(
        inputs: &[Var],
        c: &Tensor,
        f: impl Fn(&[Tensor]) -> Tensor,
    ) -> (f64, Vec<Vec<f64>>) {
        let ts: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let y = (f(&ts) * c).unwrap().sum_all().unwrap();
        let grads = y.backward().unwrap();
        let g = inputs
            .iter()
            .map(|v| {
                grads
                    .get(v)
                    .expect("every input gets a gradient")
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            })
            .collect();
        (y.to_scalar::<f64>().unwrap(), g)
    }

    fn assert_same(fused: (f64, Vec<Vec<f64>>), composed: (f64, Vec<Vec<f64>>)) {
        assert!(
            (fused.0 - composed.0).abs() < 1e-10,
            "{} vs {}",
            fused.0,
            composed.0
        );
        for (a, b) in fused.1.iter().zip(&composed.1) {
            assert_eq!(a.len(), b.len());
            assert!(a.iter().any(|g| g.abs() > 1e-6), "a gradient flows");
            for (p, q) in a.iter().zip(b) {
                assert!((p - q).abs() < 1e-10, "gradient {p} vs {q}");
            }
        }
    }

    fn var(shape: &[usize], std: f64) -> Var {
        Var::from_tensor(&Tensor::randn(0f64, std, shape, &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn fused_linear_matches_the_composed_layer_forward_and_backward() {
        for bias in [false, true] {
            let (x, w, b) = (var(&[2, 5, 6], 1.0), var(&[4, 6], 0.5), var(&[4], 1.0));
            let c = Tensor::randn(0f64, 1.0, (2, 5, 4), &Device::Cpu).unwrap();
            let inputs = if bias { vec![x, w, b] } else { vec![x, w] };
            let fused = value_and_grads(&inputs, &c, |t| linear(&t[0], &t[1], t.get(2)).unwrap());
            let composed = value_and_grads(&inputs, &c, |t| {
                let out = t[0].broadcast_matmul(&t[1].t().unwrap()).unwrap();
                match t.get(2) {
                    Some(b) => out.broadcast_add(b).unwrap(),
                    None => out,
                }
            });
            assert_same(fused, composed);
        }
    }

    #[test]
    fn fused_rms_norm_matches_candles_composed_norm_forward_and_backward() {
        // More rows than one block, and not a multiple of it, so partial sums meet.
        let (x, w) = (var(&[3, 50, 8], 2.0), var(&[8], 1.0));
        let c = Tensor::randn(0f64, 1.0, (3, 50, 8), &Device::Cpu).unwrap();
        let inputs = [x, w];
        let fused = value_and_grads(&inputs, &c, |t| rms_norm(&t[0], &t[1], 1e-6).unwrap());
        let composed = value_and_grads(&inputs, &c, |t| {
            candle_nn::ops::rms_norm_slow(&t[0], &t[1], 1e-6).unwrap()
        });
        assert_same(fused, composed);
    }

    #[test]
    fn fused_swiglu_matches_the_composed_product_forward_and_backward() {
        let (g, u) = (var(&[4, 7, 9], 3.0), var(&[4, 7, 9], 1.0));
        let c = Tensor::randn(0f64, 1.0, (4, 7, 9), &Device::Cpu).unwrap();
        let inputs = [g, u];
        let fused = value_and_grads(&inputs, &c, |t| swiglu(&t[0], &t[1]).unwrap());
        let composed = value_and_grads(&inputs, &c, |t| {
            (candle_nn::ops::silu(&t[0]).unwrap() * &t[1]).unwrap()
        });
        assert_same(fused, composed);
    }

    #[test]
    fn f32_kernels_agree_with_candles_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 70, 16), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, 16, &dev).unwrap();
        let max_diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let fused = rms_norm(&x, &w, 1e-6).unwrap();
        assert!(max_diff(&fused, &candle_nn::ops::rms_norm(&x, &w, 1e-6).unwrap()) < 1e-5);
        let u = Tensor::randn(0f32, 1.0, (3, 70, 16), &dev).unwrap();
        let fused = swiglu(&x, &u).unwrap();
        let composed = (candle_nn::ops::silu(&x).unwrap() * &u).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-5);
    }

    #[test]
    fn fused_heads_match_the_composed_reshapes_rope_and_repeats() {
        let (b, l, h, d) = (2, 5, 2, 4);
        let angles = Tensor::randn(0f64, 2.0, (l, d / 2), &Device::Cpu).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        for rep in [1, 3] {
            for rope in [None, Some((&cos, &sin))] {
                let x = var(&[b, l, h * d], 1.0);
                let c = Tensor::randn(0f64, 1.0, (b, h * rep, l, d), &Device::Cpu).unwrap();
                let inputs = [x];
                let fused =
                    value_and_grads(&inputs, &c, |t| split_heads(&t[0], h, rep, rope).unwrap());
                let composed = value_and_grads(&inputs, &c, |t| {
                    let mut out = t[0].reshape((b, l, h, d)).unwrap().transpose(1, 2).unwrap();
                    if let Some((cos, sin)) = rope {
                        out =
                            candle_nn::rotary_emb::rope_slow(&out.contiguous().unwrap(), cos, sin)
                                .unwrap();
                    }
                    out.unsqueeze(2)
                        .unwrap()
                        .broadcast_as((b, h, rep, l, d))
                        .unwrap()
                        .reshape((b, h * rep, l, d))
                        .unwrap()
                });
                assert_same(fused, composed);
            }
        }
        let x = var(&[b, h, l, d], 1.0);
        let c = Tensor::randn(0f64, 1.0, (b, l, h * d), &Device::Cpu).unwrap();
        let inputs = [x];
        let fused = value_and_grads(&inputs, &c, |t| merge_heads(&t[0]).unwrap());
        let composed = value_and_grads(&inputs, &c, |t| {
            t[0].transpose(1, 2)
                .unwrap()
                .reshape((b, l, h * d))
                .unwrap()
        });
        assert_same(fused, composed);
    }
}
