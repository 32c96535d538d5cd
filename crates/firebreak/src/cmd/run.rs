//! `firebreak run`: execute workflows locally (placeholder until the executor lands).

use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args)]
pub struct RunArgs {}

pub fn run(_args: RunArgs) -> Result<ExitCode> {
    anyhow::bail!("firebreak run is not implemented yet")
}
