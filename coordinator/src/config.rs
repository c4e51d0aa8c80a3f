//! `coordinator.toml`: where the replica listens, its certificates, where
//! its state lives (etcd, or the embedded file in `--dev`), and the
//! schedules. Unknown keys are refused, so a typo is an error, not a
//! silently ignored setting.

use seawall_common::tls::TlsFiles;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// This replica's name (unique among replicas).
    pub id: String,
    /// Address to listen on for gRPC (agents and operators).
    pub listen: String,
    /// Address agents and operators are told to dial (default: `listen`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Address of the Prometheus endpoint (`/metrics`), if any.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// How often agents heartbeat.
    #[serde(default = "default_heartbeat", with = "humantime_serde_compat")]
    pub heartbeat: Duration,
    /// How long a running job may go without news from its agent.
    #[serde(default = "default_job_timeout", with = "humantime_serde_compat")]
    pub job_timeout: Duration,
    /// How long settled jobs, backup records and audit lines are kept
    /// (a source's newest backup record is kept however old).
    #[serde(default = "default_history_keep", with = "humantime_serde_compat")]
    pub history_keep: Duration,
    /// This replica's certificate, key and the CA.
    pub tls: TlsFiles,
    /// A file holding a token operators may present instead of a certificate.
    #[serde(default)]
    pub operator_token_file: Option<PathBuf>,
    /// The etcd cluster (not used with `--dev`).
    #[serde(default)]
    pub etcd: Option<EtcdConfig>,
    /// The embedded store (`--dev`).
    #[serde(default)]
    pub dev: Option<DevConfig>,
    /// What runs when.
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
}

/// The etcd cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the members.
    pub endpoints: Vec<String>,
    /// Key prefix of this installation.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// TTL of the leadership lease.
    #[serde(default = "default_ttl", with = "humantime_serde_compat")]
    pub lease_ttl: Duration,
}

/// The embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// The state file.
    pub state: PathBuf,
}

/// What a schedule starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A backup of the source.
    Backup,
    /// forget + prune by the source's retention rules.
    Retention,
    /// verify the repository.
    Verify,
}

/// Full or incremental, for backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Read everything.
    Full,
    /// Reuse what the parent snapshot has.
    Incremental,
}

/// One schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique name; job ids derive from it.
    pub name: String,
    /// Region whose agents run it.
    pub region: String,
    /// Source name, as the agents configure it.
    pub source: String,
    /// What to run.
    #[serde(default = "default_kind")]
    pub kind: JobKind,
    /// Full or incremental (backups).
    #[serde(default)]
    pub level: Option<Level>,
    /// Cron expression: 5 fields, or 6 with seconds first.
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// Random delay up to this long (spreads load), fixed per run.
    #[serde(default, with = "humantime_serde_compat")]
    pub jitter: Duration,
    /// Attempts after the first failure.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay; doubled for each further attempt.
    #[serde(default = "default_backoff", with = "humantime_serde_compat")]
    pub retry_backoff: Duration,
    /// Run retention for the source after each successful backup.
    #[serde(default)]
    pub retention_after: bool,
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_job_timeout() -> Duration {
    Duration::from_secs(3600)
}
fn default_history_keep() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_prefix() -> String {
    "/seawall".into()
}
fn default_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_kind() -> JobKind {
    JobKind::Backup
}
fn default_tz() -> String {
    "UTC".into()
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_secs(30)
}

/// Durations written as text ("10s", "5m"), or as whole seconds.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Secs(u64),
        Human(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Text::deserialize(d)? {
            Text::Secs(s) => Ok(Duration::from_secs(s)),
            Text::Human(t) => humantime::parse_duration(&t).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a duration ({e}): write it like \"10s\" or \"5m\""
                ))
            }),
        }
    }
}

impl CoordinatorConfig {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> anyhow::Result<CoordinatorConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let config: CoordinatorConfig = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid coordinator configuration: {e}(see docs/configuration.md)",
                path.display()
            )
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, cron expressions, time zones.
    pub fn check(&self) -> anyhow::Result<()> {
        seawall_common::tls::check_label("id", &self.id)?;
        if self.history_keep < Duration::from_secs(1) {
            anyhow::bail!("history_keep must be at least 1s (default 30 days)");
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.schedules {
            seawall_common::tls::check_label("schedule name", &s.name)?;
            seawall_common::tls::check_label("region", &s.region)?;
            if !names.insert(&s.name) {
                anyhow::bail!(
                    "schedule {:?} is defined twice: names must be unique",
                    s.name
                );
            }
            crate::scheduler::parse_cron(&s.cron)
                .map_err(|e| anyhow::anyhow!("schedule {:?}: {e}", s.name))?;
            crate::scheduler::parse_tz(&s.timezone)
                .map_err(|e| anyhow::anyhow!("schedule {:?}: {e}", s.name))?;
            if s.kind != JobKind::Backup && s.level.is_some() {
                anyhow::bail!(
                    "schedule {:?}: level goes with kind = \"backup\" only",
                    s.name
                );
            }
        }
        Ok(())
    }

    /// The address agents and operators dial.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.clone())
    }
}
