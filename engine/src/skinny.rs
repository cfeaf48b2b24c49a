//! `x Wᵀ` for a few rows of `x`: the products of a decode step.
//!
//! A decode step multiplies a handful of rows (one per sequence) by every weight. gemm packs
//! the weight into its panel layout on every call, which for a few rows costs about as much
//! as the product itself; here each weight row is read once, in place, while it sits in L1,
//! two input rows by four weight rows at a time (eight vector accumulators). Every output is
//! one dot product in a fixed order (vector lanes, then the lanes summed as a tree), so the
//! result does not depend on the thread count, the column split, or the other rows of the
//! batch. With AVX-512F or AVX2 + FMA (checked at run time); elsewhere the caller uses gemm.

/// At most this many rows take the skinny product; taller products are gemm's.
pub(crate) const MAX_ROWS: usize = 16;

/// Weight rows per block.
const BLOCK: usize = 4;

/// `x Wᵀ` for `x` `[m, k]` (`m ≤ MAX_ROWS`) and `w` `[n, k]`, both row-major: `[m, n]`, or
/// `None` where the CPU has neither AVX-512F nor AVX2 + FMA.
pub(crate) fn product(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Option<Vec<f32>> {
    assert!(
        m <= MAX_ROWS && x.len() >= m * k && w.len() >= n * k,
        "skinny product shapes"
    );
    let kernel = kernel()?;
    if m == 0 || n == 0 {
        return Some(vec![0f32; m * n]);
    }
    // Computed column-major (`[n, m]`: each part's weight rows own a contiguous slice), then
    // transposed; the output is small next to the weights.
    let mut columns = vec![0f32; n * m];
    let blocks = n.div_ceil(BLOCK);
    let parts = crate::pool::parts_for(n * k * m / 4).min(blocks).max(1);
    let per = blocks.div_ceil(parts) * BLOCK;
    let chunks: Vec<&mut [f32]> = columns.chunks_mut(per * m).collect();
    crate::pool::for_each_part(chunks, |p, out| {
        let first = p * per;
        let count = out.len() / m;
        kernel(x, m, k, &w[first * k..(first + count) * k], out);
    });
    let mut rows = vec![0f32; m * n];
    for (j, column) in columns.chunks_exact(m).enumerate() {
        for (i, &v) in column.iter().enumerate() {
            rows[i * n + j] = v;
        }
    }
    Some(rows)
}

/// `out[j·m + i] = x_i · w_j` for the weight rows `w` (`[count, k]`).
type Kernel = fn(&[f32], usize, usize, &[f32], &mut [f32]);

/// The widest kernel this CPU runs.
fn kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        match crate::simd::level() {
            crate::simd::Level::Avx512 => return Some(x86::columns_avx512),
            crate::simd::Level::Avx2 => return Some(x86::columns_avx2),
            crate::simd::Level::Baseline => {}
        }
    }
    None
}

/// Walks the weight rows four at a time and the input rows two at a time; `dot(x0, x1, w)`
/// gives the eight dot products of a block (a short block repeats its last row, computed and
/// not stored; an odd last input row is paired with itself).
#[inline(always)]
fn walk(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    out: &mut [f32],
    dot: impl Fn(&[f32], &[f32], [&[f32]; BLOCK]) -> [[f32; BLOCK]; 2],
) {
    let n = w.len() / k.max(1);
    let mut j = 0;
    while j < n {
        let b = BLOCK.min(n - j);
        let rows: [&[f32]; BLOCK] = std::array::from_fn(|q| {
            let r = j + q.min(b - 1);
            &w[r * k..(r + 1) * k]
        });
        let mut i = 0;
        while i < m {
            let pair = (i + 1).min(m - 1);
            let sums = dot(&x[i * k..(i + 1) * k], &x[pair * k..(pair + 1) * k], rows);
            for q in 0..b {
                out[(j + q) * m + i] = sums[0][q];
                if pair != i {
                    out[(j + q) * m + pair] = sums[1][q];
                }
            }
            i += 2;
        }
        j += b;
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::{BLOCK, walk};
    use std::arch::x86_64::*;

    pub(super) fn columns_avx512(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32]) {
        // SAFETY: chosen only where the CPU has AVX-512F (`simd::level`).
        walk(x, m, k, w, out, |x0, x1, rows| unsafe {
            dot_avx512(x0, x1, rows)
        })
    }

    pub(super) fn columns_avx2(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32]) {
        // SAFETY: chosen only where the CPU has AVX2 and FMA (`simd::level`).
        walk(x, m, k, w, out, |x0, x1, rows| unsafe {
            dot_avx2(x0, x1, rows)
        })
    }

    // The dot products are whole functions with the target's features (closures and generic
    // helpers called from them need not inherit the features, nor be inlined).

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_avx512(x0: &[f32], x1: &[f32], rows: [&[f32]; BLOCK]) -> [[f32; BLOCK]; 2] {
        let k = x0.len();
        let whole = k - k % 16;
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
        );
        let (mut b0, mut b1, mut b2, mut b3) = (
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
        );
        let mut c = 0;
        while c < whole {
            // SAFETY: `c + 16 ≤ whole ≤ k`, and every row holds `k` floats.
            unsafe {
                let (p, q) = (
                    _mm512_loadu_ps(x0.as_ptr().add(c)),
                    _mm512_loadu_ps(x1.as_ptr().add(c)),
                );
                let v = _mm512_loadu_ps(rows[0].as_ptr().add(c));
                a0 = _mm512_fmadd_ps(p, v, a0);
                b0 = _mm512_fmadd_ps(q, v, b0);
                let v = _mm512_loadu_ps(rows[1].as_ptr().add(c));
                a1 = _mm512_fmadd_ps(p, v, a1);
                b1 = _mm512_fmadd_ps(q, v, b1);
                let v = _mm512_loadu_ps(rows[2].as_ptr().add(c));
                a2 = _mm512_fmadd_ps(p, v, a2);
                b2 = _mm512_fmadd_ps(q, v, b2);
                let v = _mm512_loadu_ps(rows[3].as_ptr().add(c));
                a3 = _mm512_fmadd_ps(p, v, a3);
                b3 = _mm512_fmadd_ps(q, v, b3);
            }
            c += 16;
        }
        let sums = [
            [
                _mm512_reduce_add_ps(a0),
                _mm512_reduce_add_ps(a1),
                _mm512_reduce_add_ps(a2),
                _mm512_reduce_add_ps(a3),
            ],
            [
                _mm512_reduce_add_ps(b0),
                _mm512_reduce_add_ps(b1),
                _mm512_reduce_add_ps(b2),
                _mm512_reduce_add_ps(b3),
            ],
        ];
        finish(sums, x0, x1, rows, whole)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(x0: &[f32], x1: &[f32], rows: [&[f32]; BLOCK]) -> [[f32; BLOCK]; 2] {
        let k = x0.len();
        let whole = k - k % 8;
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let (mut b0, mut b1, mut b2, mut b3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut c = 0;
        while c < whole {
            // SAFETY: `c + 8 ≤ whole ≤ k`, and every row holds `k` floats.
            unsafe {
                let (p, q) = (
                    _mm256_loadu_ps(x0.as_ptr().add(c)),
                    _mm256_loadu_ps(x1.as_ptr().add(c)),
                );
                let v = _mm256_loadu_ps(rows[0].as_ptr().add(c));
                a0 = _mm256_fmadd_ps(p, v, a0);
                b0 = _mm256_fmadd_ps(q, v, b0);
                let v = _mm256_loadu_ps(rows[1].as_ptr().add(c));
                a1 = _mm256_fmadd_ps(p, v, a1);
                b1 = _mm256_fmadd_ps(q, v, b1);
                let v = _mm256_loadu_ps(rows[2].as_ptr().add(c));
                a2 = _mm256_fmadd_ps(p, v, a2);
                b2 = _mm256_fmadd_ps(q, v, b2);
                let v = _mm256_loadu_ps(rows[3].as_ptr().add(c));
                a3 = _mm256_fmadd_ps(p, v, a3);
                b3 = _mm256_fmadd_ps(q, v, b3);
            }
            c += 8;
        }
        let sums = [
            [sum8(a0), sum8(a1), sum8(a2), sum8(a3)],
            [sum8(b0), sum8(b1), sum8(b2), sum8(b3)],
        ];
        finish(sums, x0, x1, rows, whole)
    }

    /// The eight lanes of `v` summed as a tree.
    #[target_feature(enable = "avx2,fma")]
    fn sum8(v: __m256) -> f32 {
        let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)))
    }

    /// The vector sums plus the products past the last whole vector.
    #[inline(always)]
    fn finish(
        sums: [[f32; BLOCK]; 2],
        x0: &[f32],
        x1: &[f32],
        rows: [&[f32]; BLOCK],
        whole: usize,
    ) -> [[f32; BLOCK]; 2] {
        let mut out = sums;
        for q in 0..BLOCK {
            for p in whole..x0.len() {
                out[0][q] += x0[p] * rows[q][p];
                out[1][q] += x1[p] * rows[q][p];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_skinny_product_is_x_times_w_transposed() {
        // Odd sizes: a k with a remainder past the lanes, a short last block, one and many rows.
        for (m, k, n) in [
            (1, 37, 9),
            (8, 256, 1031),
            (16, 19, 4),
            (3, 64, 2),
            (5, 7, 3),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|v| ((v * 37) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|v| ((v * 53) % 97) as f32 / 48.0 - 1.0)
                .collect();
            let Some(got) = super::product(&x, m, k, &w, n) else {
                return; // no AVX2 or AVX-512 here: the products are gemm's
            };
            for i in 0..m {
                for j in 0..n {
                    let e: f64 = (0..k)
                        .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                        .sum();
                    let g = got[i * n + j] as f64;
                    assert!((g - e).abs() < 1e-3, "({m},{k},{n}) [{i},{j}]: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_and_in_a_batch() {
        // A decode row's logits do not depend on which other rows share the step.
        let (k, n) = (96, 300);
        let x: Vec<f32> = (0..8 * k)
            .map(|v| ((v * 31) % 89) as f32 / 40.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|v| ((v * 17) % 83) as f32 / 40.0 - 1.0)
            .collect();
        let (Some(batch), Some(alone)) = (
            super::product(&x, 8, k, &w, n),
            super::product(&x[3 * k..4 * k], 1, k, &w, n),
        ) else {
            return;
        };
        assert_eq!(&batch[3 * n..4 * n], alone.as_slice());
        // Paired with another row or with itself, a row gets the same bits.
        let odd = super::product(&x[..3 * k], 3, k, &w, n).unwrap();
        assert_eq!(&batch[2 * n..3 * n], &odd[2 * n..3 * n]);
    }
}
