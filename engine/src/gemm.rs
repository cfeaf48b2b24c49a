//! Small matrix products on slices, for kernels that work block by block inside one graph node
//! (causal attention): the `gemm` crate candle itself multiplies with, behind a checked view.
//!
//! candle's own product allocates its output and cannot accumulate into an existing buffer; a
//! kernel that walks a sequence in blocks needs `C (+)= A·B` on sub-matrices of buffers it owns.

use crate::ops::num_traits_like::Float;

/// A read-only `rows × cols` matrix inside `data`: element `(i, j)` at `i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// One past the last element a `rows × cols` view with strides `rs`, `cs` reads.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

impl<'a, T> View<'a, T> {
    /// Panics when the view reaches past `data` (a bug in the caller's index arithmetic).
    pub(crate) fn new(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            extent(rows, cols, rs, cs) <= data.len(),
            "a {rows}×{cols} view (strides {rs}, {cs}) reaches past {} elements",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// Row-major and contiguous: `rows × cols` at the start of `data`.
    pub(crate) fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose, without moving anything.
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `dst = a·b`, or `dst += a·b` with `accumulate`; `dst` is row-major with rows `ld` apart.
/// Single-threaded: callers run independent blocks on their own threads. f32 or f64.
pub(crate) fn matmul<T: Float + 'static>(
    dst: &mut [T],
    ld: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    accumulate: bool,
) {
    product(dst, ld, a, b, accumulate, gemm::Parallelism::None);
}

/// Rows of a part of a parallel product: a multiple of gemm's tallest f32 micro-kernel (16).
const PART_ROWS: usize = 16;

/// Multiply-adds below which a product runs on the calling thread.
const MIN_PARALLEL_MACS: usize = 1 << 18;

impl<'a, T> View<'a, T> {
    /// Rows `start..start + rows` of the view.
    fn row_range(self, start: usize, rows: usize) -> Self {
        assert!(start + rows <= self.rows, "rows past the view");
        if rows == 0 {
            return Self { rows, ..self };
        }
        Self {
            data: &self.data[start * self.rs..],
            rows,
            ..self
        }
    }
}

/// [`matmul`] over the kernels' threads, for one large product: the output's rows are cut into
/// one band per thread (each a product of its own on the pool, see [`crate::pool`]). Each
/// element is still one dot product over the whole inner dimension in gemm's fixed order.
pub(crate) fn matmul_threads<T: Float + 'static>(
    dst: &mut [T],
    ld: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let parts = if m.saturating_mul(n).saturating_mul(k) < MIN_PARALLEL_MACS {
        1
    } else {
        crate::pool::threads().min(m.div_ceil(PART_ROWS)).max(1)
    };
    if parts == 1 {
        if m.saturating_mul(n).saturating_mul(k) >= MIN_PARALLEL_MACS && n >= 2 * PART_COLS {
            // Few rows (a decode step) but a wide product: cut the columns instead (whatever
            // the thread count, so the result does not depend on it).
            return matmul_columns(dst, ld, a, b, accumulate);
        }
        return matmul(dst, ld, a, b, accumulate);
    }
    let per = m.div_ceil(parts).div_ceil(PART_ROWS) * PART_ROWS;
    let bands: Vec<&mut [T]> = dst.chunks_mut(per * ld).take(m.div_ceil(per)).collect();
    crate::pool::for_each_part(bands, |i, band| {
        let start = i * per;
        let rows = per.min(m.saturating_sub(start));
        matmul(band, ld, a.row_range(start, rows), b, accumulate);
    });
}

/// Columns per band of a product cut by columns: fixed, so each band is the same product
/// whatever the thread count, and wide enough that gemm's per-call cost stays small.
const PART_COLS: usize = 256;

/// [`matmul_threads`] for a product with too few rows to cut: the columns are cut into bands
/// of [`PART_COLS`], each part of the pool computes its bands (one product each) into its own
/// block, and the blocks are copied into `dst`.
fn matmul_columns<T: Float + 'static>(
    dst: &mut [T],
    ld: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    accumulate: bool,
) {
    let (m, n) = (a.rows, b.cols);
    let bands = n.div_ceil(PART_COLS);
    let parts = crate::pool::threads().min(bands).max(1);
    let per = bands.div_ceil(parts) * PART_COLS;
    // Part `p` owns columns `p·per ..` as a row-major `[m, width]` block at `m·p·per`.
    let mut blocks = vec![T::zero(); m * n];
    let width = |p: usize| per.min(n - p * per);
    let cells = |p: usize, i: usize| (p * per * m + i * width(p), i * ld + p * per);
    let used = n.div_ceil(per);
    if accumulate {
        for p in 0..used {
            for i in 0..m {
                let (at, from) = cells(p, i);
                blocks[at..at + width(p)].copy_from_slice(&dst[from..from + width(p)]);
            }
        }
    }
    let chunks: Vec<&mut [T]> = blocks.chunks_mut(m * per).collect();
    crate::pool::for_each_part(chunks, |p, block| {
        let w = block.len() / m;
        for band in (0..w).step_by(PART_COLS) {
            let cols = PART_COLS.min(w - band);
            let b = b.col_range(p * per + band, cols);
            matmul(&mut block[band..], w, a, b, accumulate);
        }
    });
    for p in 0..used {
        for i in 0..m {
            let (at, to) = cells(p, i);
            dst[to..to + width(p)].copy_from_slice(&blocks[at..at + width(p)]);
        }
    }
}

impl<'a, T> View<'a, T> {
    /// Columns `start..start + cols` of the view.
    fn col_range(self, start: usize, cols: usize) -> Self {
        assert!(start + cols <= self.cols, "columns past the view");
        if cols == 0 {
            return Self { cols, ..self };
        }
        Self {
            data: &self.data[start * self.cs..],
            cols,
            ..self
        }
    }
}

#[allow(unsafe_code)]
fn product<T: Float + 'static>(
    dst: &mut [T],
    ld: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions: {m}×{k} times {}×{n}", b.rows);
    assert!(n <= ld, "{n} columns do not fit rows {ld} apart");
    assert!(
        extent(m, n, ld, 1) <= dst.len(),
        "a {m}×{n} product does not fit {} elements",
        dst.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    let as_isize = |x: usize| isize::try_from(x).expect("strides fit isize");
    // SAFETY: every index the product reads (`a`, `b`) or writes (`dst`) is inside its slice:
    // the views checked their extents when made, and `dst`'s extent is checked above; `dst` is
    // borrowed mutably, so it aliases neither input. `gemm` supports f32 and f64, the only
    // implementors of `Float`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            as_isize(ld),
            accumulate,
            a.data.as_ptr(),
            as_isize(a.cs),
            as_isize(a.rs),
            b.data.as_ptr(),
            as_isize(b.cs),
            as_isize(b.rs),
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_strided_views_match_a_naive_loop() {
        // a: 3×4 inside a 5-wide buffer; b: the transpose of a 2×4 row-major block.
        let a_buf: Vec<f64> = (0..15).map(|x| x as f64 * 0.5 - 2.0).collect();
        let b_buf: Vec<f64> = (0..8).map(|x| 1.0 - x as f64 * 0.25).collect();
        let a = View::new(&a_buf, 3, 4, 5, 1);
        let b = View::rows(&b_buf, 2, 4).t();
        let mut dst = vec![1.0; 3 * 3];
        matmul(&mut dst, 3, a, b, true);
        for i in 0..3 {
            for j in 0..2 {
                let want: f64 = (0..4).map(|p| a_buf[i * 5 + p] * b_buf[j * 4 + p]).sum();
                assert!((dst[i * 3 + j] - (1.0 + want)).abs() < 1e-12);
            }
            assert_eq!(dst[i * 3 + 2], 1.0, "the padding column is not touched");
        }
        matmul(&mut dst, 3, a, b, false);
        assert!((dst[0] - (0..4).map(|p| a_buf[p] * b_buf[p]).sum::<f64>()).abs() < 1e-12);
    }

    #[test]
    fn a_product_in_bands_equals_one_product() {
        // Tall enough to be cut into bands (with a short last band), a strided `a`.
        let (m, k, n) = (83, 64, 72);
        let a_buf: Vec<f32> = (0..m * (k + 3))
            .map(|x| ((x * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b_buf: Vec<f32> = (0..n * k)
            .map(|x| ((x * 53) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let a = View::new(&a_buf, m, k, k + 3, 1);
        let b = View::rows(&b_buf, n, k).t();
        let (mut one, mut bands) = (vec![0.5f32; m * n], vec![0.5f32; m * n]);
        matmul(&mut one, n, a, b, true);
        matmul_threads(&mut bands, n, a, b, true);
        assert!(m * n * k >= MIN_PARALLEL_MACS);
        assert_eq!(one, bands);
    }

    #[test]
    fn a_product_cut_by_columns_equals_one_band_at_a_time() {
        // A decode step's shape: few rows, many columns (a short last band), `b` read
        // transposed as a weight is; with and without accumulation, into a wider `dst`.
        let (m, k, n, ld) = (8, 96, 3 * PART_COLS + 40, 3 * PART_COLS + 45);
        let a_buf: Vec<f32> = (0..m * k)
            .map(|x| ((x * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b_buf: Vec<f32> = (0..n * k)
            .map(|x| ((x * 53) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let a = View::rows(&a_buf, m, k);
        let b = View::rows(&b_buf, n, k).t();
        for accumulate in [false, true] {
            let start: Vec<f32> = (0..m * ld).map(|x| (x % 7) as f32).collect();
            let (mut expected, mut cut) = (start.clone(), start.clone());
            for band in (0..n).step_by(PART_COLS) {
                let cols = PART_COLS.min(n - band);
                matmul(
                    &mut expected[band..],
                    ld,
                    a,
                    b.col_range(band, cols),
                    accumulate,
                );
            }
            matmul_columns(&mut cut, ld, a, b, accumulate);
            assert_eq!(expected, cut, "accumulate {accumulate}");
            // The columns past `n` are untouched, and the product is a product.
            assert_eq!(cut[n..ld], start[n..ld]);
            let naive: f32 = (0..k).map(|p| a_buf[k + p] * b_buf[5 * k + p]).sum();
            let got = cut[ld + 5] - if accumulate { start[ld + 5] } else { 0.0 };
            assert!((got - naive).abs() < 1e-3, "{got} vs {naive}");
        }
    }

    #[test]
    #[should_panic(expected = "reaches past")]
    fn a_view_past_its_buffer_is_refused() {
        let data = [0f32; 6];
        let _ = View::new(&data, 3, 3, 2, 1);
    }
}
