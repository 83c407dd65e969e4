//! The `opsqueue` client against the real binaries: each test starts an API
//! (and a worker when operations must run) on a temporary database with the
//! e2e harness (`opsqueue-tests`), runs the real `opsqueue` binary as a
//! process and checks what a pipeline gets (exit code, stdout, stderr) and
//! what a person sees (under tmux).
//!
//! Each `opsqueue` process gets a fresh `HOME` (so no real config file is
//! read) and the cluster's URL and key through `OPSQUEUE_URL` and
//! `OPSQUEUE_TOKEN`, unless the test says otherwise. Tests wait with the
//! harness's generous deadline and never assert timings.

mod helpers;
mod login;
mod operations;
mod outcomes;
mod shortcuts;
mod terminal;
mod tls;
mod workflows;
