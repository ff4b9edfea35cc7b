//! End-to-end tests that span several crates live in `tests/tests/`.
//!
//! The `orchestrator` binary's own end-to-end tests live beside it, in
//! `crates/orchestrator/tests/e2e.rs`, where Cargo hands them the freshly
//! built binary (`CARGO_BIN_EXE_orchestrator`). `tests/python/` holds the
//! Python gRPC client (grpcio, stubs generated from `proto/`) those tests run.
