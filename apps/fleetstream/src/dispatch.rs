//! `fleetstream dispatch ...` (in progress: see the issue tracker).

use clap::Subcommand;

/// `dispatch` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DispatchCommand {}

/// Runs a `dispatch` subcommand.
pub async fn run(cmd: DispatchCommand) -> anyhow::Result<()> {
    match cmd {}
}
