//! The `still` binary: see `still --help`.

/// mimalloc keeps freed tensor buffers for reuse; glibc returns large ones to the kernel and
/// every training step then pays page faults for fresh ones (about 15% of a step on 2 cores).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    still_backend::cli::main()
}
