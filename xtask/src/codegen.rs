//! `cargo xtask codegen [--check]`: regenerate the API crates' protobuf/gRPC code
//! from `proto/`, or fail when the committed code is stale.
//!
//! The generator itself lives in `drover-api-codegen` so drover-api's own
//! staleness test runs the very same code.

use anyhow::Context;

pub(crate) fn run(check: bool) -> anyhow::Result<()> {
    let root = crate::project_root();
    if check {
        drover_api_codegen::check(&root).context("checking generated code")?;
        println!("generated code is up to date");
        return Ok(());
    }
    let changed = drover_api_codegen::write(&root).context("generating code from proto/")?;
    if changed.is_empty() {
        println!("generated code is up to date");
    } else {
        for file in &changed {
            println!("updated: {file}");
        }
    }
    Ok(())
}
