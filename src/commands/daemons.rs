//! `seawall coordinator` and `seawall agent`: the two daemons, stopped
//! gracefully by SIGTERM or SIGINT.

use crate::args::{AgentArgs, CoordinatorArgs};
use seawall_coordinator::config::CoordinatorConfig;

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
    tracing::info!("stopping");
}

/// Runs a coordinator replica.
pub async fn coordinator(a: CoordinatorArgs) -> anyhow::Result<u8> {
    let config = CoordinatorConfig::load(&a.config)?;
    seawall_coordinator::server::run(config, a.dev, shutdown_signal()).await?;
    Ok(0)
}

/// Runs the agent daemon.
pub async fn agent(a: AgentArgs) -> anyhow::Result<u8> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the seawall binary to run jobs with: {e}"))?;
    seawall_agent::daemon::run(&a.config, exe, shutdown_signal()).await?;
    Ok(0)
}
