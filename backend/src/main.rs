//! The `still` binary: see `still --help`.

fn main() -> std::process::ExitCode {
    still_backend::cli::main()
}
