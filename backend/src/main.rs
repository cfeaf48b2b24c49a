//! The `still` binary: see `still --help`.

/// mimalloc, keeping freed tensor buffers for reuse (see `still_engine::alloc`): otherwise every
/// training step pays page faults for fresh ones.
#[global_allocator]
static ALLOCATOR: still_engine::alloc::MiMalloc = still_engine::alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    still_engine::alloc::keep_freed_memory();
    still_backend::cli::main()
}
