//! `fleetstream worker` (in progress: see the issue tracker).

use clap::Args;

/// `fleetstream worker` flags.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {}

/// Runs `fleetstream worker`.
pub async fn run(_args: WorkerArgs) -> anyhow::Result<()> {
    anyhow::bail!("`fleetstream worker` is not implemented yet")
}
