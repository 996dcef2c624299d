//! `fleetstream produce` (in progress: see the issue tracker).

use clap::Args;

/// `fleetstream produce` flags.
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {}

/// Runs `fleetstream produce`.
pub async fn run(_args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::bail!("`fleetstream produce` is not implemented yet")
}
