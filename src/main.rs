//! The `triage` binary: everything lives in the library; see `triage --help`.

fn main() -> std::process::ExitCode {
    triage::cli::main()
}
