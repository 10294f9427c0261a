//! Integration tests of the `braid` binary, run as a process.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod ballista;
mod batch_kill;
mod broker;
mod cluster;
mod e2e;
mod faults;
mod replicas;
mod s3;
mod speed_kill;
mod up;
mod views;

use std::process::{Command, Output};

/// Runs `braid` with `args` from the project root.
pub fn braid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("BRAID_BROKERS")
        .output()
        .expect("braid runs")
}

/// The shipped view definitions.
pub fn views() -> braid_core::ViewSet {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/views.toml"
    ))
    .expect("views");
    braid_core::ViewSet::parse(&text).expect("views parse")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
