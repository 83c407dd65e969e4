//! `opsqueue`: the command-line client. Everything is in the library
//! (`opsqueue_cli::main`), so the tests and this binary run the same code.

fn main() -> std::process::ExitCode {
    opsqueue_cli::main()
}
