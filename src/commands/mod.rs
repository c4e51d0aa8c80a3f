//! One module per command; each returns the process exit code.

mod backup;
mod bench_agents;
mod browse;
mod certs;
mod daemons;
mod demo;
mod demo_fleet;
mod drill;
mod failover;
mod forget;
mod init;
mod keys;
mod maintenance;
mod mirror;
mod operator;
mod postgres;
mod redis;
mod replication;
mod restore;
mod run_operation;
mod snapshots;
mod verify;

use crate::args::{CheckWhat, Cli, Command};

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = cli.global;
    match cli.command {
        Command::Init => init::run(&g).await,
        Command::Backup(a) => backup::run(&g, a).await,
        Command::Snapshots(a) => snapshots::run(&g, a).await,
        Command::Restore(a) => restore::run(&g, *a).await,
        Command::Verify(a) => verify::run(&g, a).await,
        Command::Forget(a) => forget::run(&g, a).await,
        Command::Prune(a) => maintenance::prune(&g, a).await,
        Command::Unlock(a) => maintenance::unlock(&g, a).await,
        Command::Mirror(a) => mirror::run(&g, a).await,
        Command::Key(a) => keys::run(&g, a).await,
        Command::Ls(a) => browse::ls(&g, a).await,
        Command::Dump(a) => browse::dump(&g, a).await,
        Command::Stats => browse::stats(&g).await,
        Command::Find(a) => browse::find(&g, a).await,
        Command::Diff(a) => browse::diff(&g, a).await,
        Command::Tag(a) => browse::tag(&g, a).await,
        Command::Repair(a) => maintenance::repair(&g, a).await,
        Command::WalPush(a) => postgres::push(&g, a).await,
        Command::WalFetch(a) => postgres::fetch(&g, a).await,
        Command::WalStream(a) => postgres::stream(&g, a).await,
        Command::Check(a) => match a.what {
            CheckWhat::Postgres(p) => postgres::check(&g, p).await,
            CheckWhat::Replication(r) => replication::check(&g, r).await,
        },
        Command::Certs(a) => certs::run(&g, a),
        Command::Coordinator(a) => daemons::coordinator(a).await,
        Command::Agent(a) => daemons::agent(a).await,
        Command::Status(a) => operator::status(&g, a).await,
        Command::Agents(a) => operator::agents(&g, a).await,
        Command::Schedules(a) => operator::schedules(&g, a).await,
        Command::Jobs(a) => operator::jobs(&g, a).await,
        Command::Backups(a) => operator::backups(&g, a).await,
        Command::Audit(a) => operator::audit(&g, a).await,
        Command::Revoke(a) => operator::revoke(&g, a).await,
        Command::Revoked(a) => operator::revoked(&g, a).await,
        Command::Replication(a) => operator::replication(&g, a).await,
        Command::Failover(a) => failover::run(&g, a).await,
        Command::Drill(a) => drill::run(&g, a).await,
        Command::Demo(a) => demo::run(&g, a).await,
        Command::BenchData(a) => demo::bench_data(a).await,
        Command::BenchAgents(a) => bench_agents::run(a).await,
        Command::RunOperation => run_operation::run_from_stdin().await,
    }
}

/// Storage settings of a stream backup from the common flags.
fn stream_settings(
    g: &crate::args::Global,
    compression_level: i32,
    threads: Option<usize>,
) -> seawall_agent::engine::stream::StreamSettings {
    let mut settings = seawall_agent::engine::stream::StreamSettings {
        compression_level,
        lock_wait: std::time::Duration::from_secs(g.lock_wait),
        ..Default::default()
    };
    if let Some(t) = threads {
        settings.threads = t.max(1);
    }
    settings
}
