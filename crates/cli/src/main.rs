//! The `braid` binary: parse, run, map to an exit code.

fn main() -> std::process::ExitCode {
    braid::main()
}
