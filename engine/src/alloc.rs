//! The allocator training runs best with: mimalloc, told to keep memory it has freed.
//!
//! A training step frees and re-allocates the same large tensors (logits, attention
//! probabilities, gradients) every step. glibc returns large blocks to the kernel, and mimalloc
//! by default purges (decommits) freed memory after a delay; either way the next step page-faults
//! the memory back in and the kernel zeroes it, which measured 10–15% of a step on 2 cores. The
//! binaries (`still`, the engine benchmark) set [`MiMalloc`] as the global allocator and call
//! [`keep_freed_memory`] first thing in `main`.

pub use mimalloc::MiMalloc;

/// mimalloc 3's index of `mi_option_purge_delay` (libmimalloc-sys has no constant for it) and
/// its default, which [`keep_freed_memory`] checks before changing anything.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const PURGE_DELAY_DEFAULT: std::ffi::c_long = 1000;

/// Turns mimalloc's purging of freed memory off (`MIMALLOC_PURGE_DELAY=-1`), unless the
/// environment already sets it. Returns whether it did. Memory stays with the process until it
/// exits, at its peak size, which for a training process is what it needs again next step.
// The one FFI call of the workspace (which denies unsafe code elsewhere).
#[allow(unsafe_code)]
pub fn keep_freed_memory() -> bool {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return false;
    }
    // SAFETY: reading and setting a mimalloc option has no memory-safety preconditions; the
    // index is checked against the option's documented default first, so a mimalloc whose
    // option table differs is left alone.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) != PURGE_DELAY_DEFAULT {
            return false;
        }
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_get(PURGE_DELAY) == -1
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_where_mimalloc_3_has_it() {
        // SAFETY: reading an option.
        let before = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                before,
                super::PURGE_DELAY_DEFAULT,
                "mimalloc's option table moved"
            );
            assert!(super::keep_freed_memory());
        }
    }
}
