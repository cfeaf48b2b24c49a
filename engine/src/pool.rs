//! Data parallelism for the CPU kernels, on candle's own persistent worker threads.
//!
//! The kernels split their output into disjoint parts and run one part per thread. Spawning
//! scoped OS threads for each call cost a `clone` and a stack per thread per kernel (a small
//! model's step runs thousands of kernels), and gemm's rayon pool added a second set of
//! threads that spin on `sched_yield` next to candle's. Everything here runs on candle's
//! barrier pool (the threads its element-wise ops already use: `candle-bp-N`, parked when
//! idle), with the calling thread taking a share; work too small to pay for a hand-off runs
//! inline. The thread count is read once: candle's `get_num_threads` reads `/proc/cpuinfo` on
//! every call (`num_cpus::get_physical`), which was 4% of a small model's step.

use std::cell::Cell;
use std::sync::{Mutex, OnceLock};

thread_local! {
    /// Set while a part runs: a part that asks for parallelism again runs it inline (the pool
    /// is busy with the outer call, and its lock is not reentrant).
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

/// Elements below which a kernel's work runs on the calling thread: waking a parked worker
/// costs a few microseconds, about what this many cheap element operations take.
pub(crate) const MIN_PARALLEL_ELEMENTS: usize = 16 * 1024;

/// The number of threads kernels split their work over: candle's (`CANDLE_NUM_THREADS`,
/// `RAYON_NUM_THREADS`, or the physical cores), read once.
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| candle_core::utils::barrier_pool().n_workers() + 1)
}

/// How many parts to cut `elements` of work into: one per thread, or fewer when each part
/// would be smaller than [`MIN_PARALLEL_ELEMENTS`].
pub(crate) fn parts_for(elements: usize) -> usize {
    threads().min(elements / MIN_PARALLEL_ELEMENTS).max(1)
}

/// Runs `f(index, part)` for every part, in parallel on the pool. Parts are independent (each
/// owns its slice of the output), so the result does not depend on which thread ran which.
pub(crate) fn for_each_part<P: Send>(parts: Vec<P>, f: impl Fn(usize, P) + Sync) {
    let nested = IN_PART.with(Cell::get);
    if parts.len() <= 1 || threads() == 1 || nested {
        for (i, part) in parts.into_iter().enumerate() {
            f(i, part);
        }
        return;
    }
    let slots: Vec<Mutex<Option<P>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    // A panicking part must not unwind through candle's pool: that would poison its call lock
    // and fail every later kernel of the process (a worker runs job after job). The first
    // panic is kept and resumed here, after the pool is done.
    let panicked: Mutex<Option<Box<dyn std::any::Any + Send>>> = Mutex::new(None);
    candle_core::utils::barrier_pool().execute_chunked(slots.len(), |range| {
        let _flag = InPart::enter();
        for i in range {
            let part = slots[i].lock().map(|mut slot| slot.take()).ok().flatten();
            if let Some(part) = part {
                let run = std::panic::AssertUnwindSafe(|| f(i, part));
                if let Err(payload) = std::panic::catch_unwind(run)
                    && let Ok(mut first) = panicked.lock()
                {
                    first.get_or_insert(payload);
                }
            }
        }
    });
    if let Some(payload) = panicked.into_inner().ok().flatten() {
        std::panic::resume_unwind(payload);
    }
}

/// Marks this thread as running a part until dropped (also when the part panics).
struct InPart(bool);

impl InPart {
    fn enter() -> Self {
        InPart(IN_PART.with(|flag| flag.replace(true)))
    }
}

impl Drop for InPart {
    fn drop(&mut self) {
        IN_PART.with(|flag| flag.set(self.0));
    }
}

/// Runs `f(row_index, row)` over the rows of `out` (each `width` long), in parallel when
/// there is enough of it.
pub(crate) fn par_rows<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let width = width.max(1);
    let rows = out.len() / width;
    let per = rows.div_ceil(parts_for(out.len())).max(1);
    let parts: Vec<&mut [T]> = out.chunks_mut(per * width).collect();
    for_each_part(parts, |p, chunk| {
        for (i, row) in chunk.chunks_mut(width).enumerate() {
            f(p * per + i, row);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_visited_once_with_its_index() {
        for len in [0, 1, 7, MIN_PARALLEL_ELEMENTS * 3 + 5] {
            let mut out = vec![0usize; len];
            par_rows(&mut out, 5, |n, row| {
                for (j, x) in row.iter_mut().enumerate() {
                    *x += n * 5 + j + 1;
                }
            });
            assert!(
                out.iter().enumerate().all(|(i, &x)| x == i + 1),
                "len {len}"
            );
        }
    }

    #[test]
    fn a_panicking_part_reaches_the_caller_and_leaves_the_pool_usable() {
        let mut out = vec![0u8; 4 * MIN_PARALLEL_ELEMENTS];
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            par_rows(&mut out, MIN_PARALLEL_ELEMENTS, |n, _| {
                assert!(n != 1, "part 1 fails");
            });
        }));
        assert!(caught.is_err(), "the panic reaches the caller");
        // The pool, candle's included, still works, and in parallel.
        let mut after = vec![0usize; 4 * MIN_PARALLEL_ELEMENTS];
        par_rows(&mut after, 1, |n, row| row[0] = n);
        assert!(after.iter().enumerate().all(|(i, &x)| x == i));
        assert!(
            !IN_PART.with(Cell::get),
            "the flag is reset after the panic"
        );
        let big =
            candle_core::Tensor::ones(1 << 20, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        let sum = (&big + &big)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(sum, (2 << 20) as f32);
    }

    #[test]
    fn nested_parallelism_runs_inline() {
        let mut outer = vec![0u64; 4 * MIN_PARALLEL_ELEMENTS];
        par_rows(&mut outer, MIN_PARALLEL_ELEMENTS, |n, row| {
            let mut inner = vec![0u64; 2 * MIN_PARALLEL_ELEMENTS];
            par_rows(&mut inner, 7, |m, r| {
                r.iter_mut().for_each(|x| *x = m as u64)
            });
            row[0] = n as u64 + inner.iter().sum::<u64>();
        });
        let inner_sum: u64 = (0..2 * MIN_PARALLEL_ELEMENTS as u64).map(|i| i / 7).sum();
        for n in 0..4 {
            assert_eq!(outer[n * MIN_PARALLEL_ELEMENTS], n as u64 + inner_sum);
        }
    }
}
