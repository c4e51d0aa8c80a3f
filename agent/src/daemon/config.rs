//! `agent.toml`: who the agent is (its certificate must agree), which
//! coordinators it dials, its region's repository, and the sources it backs
//! up with their retention rules. Unknown keys are refused.

use seawall_common::tls::TlsFiles;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Agent name: the name in its certificate.
    pub id: String,
    /// Region: the region in its certificate.
    pub region: String,
    /// Coordinator addresses (host:port or https://host:port), tried in turn.
    pub coordinators: Vec<String>,
    /// Where the agent keeps the newest epoch it has seen.
    pub state_dir: PathBuf,
    /// Address of the Prometheus endpoint (`/metrics`), if any.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Jobs run at once.
    #[serde(default = "default_max_jobs")]
    pub max_jobs: u32,
    /// Certificate, key and CA.
    pub tls: TlsFiles,
    /// The region's repository.
    pub repository: RepositoryConfig,
    /// What this agent backs up.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

/// The repository, as the `seawall` commands take it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Path, file:// or s3:// URL.
    pub repo: String,
    /// File holding the repository password.
    pub password_file: PathBuf,
    /// S3-compatible endpoint.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[serde(default)]
    pub s3_region: Option<String>,
    /// Path-style addressing.
    #[serde(default)]
    pub s3_path_style: bool,
}

/// One source. (serde cannot refuse unknown keys across a flattened
/// tagged enum; the other tables refuse them.)
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    /// Name jobs and schedules use.
    pub name: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: SourceKind,
    /// Retention rules for retention jobs.
    #[serde(default)]
    pub retention: Option<Retention>,
}

/// Source kinds and their settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceKind {
    /// Files and directories.
    Files {
        /// Paths to back up.
        paths: Vec<PathBuf>,
        /// Exclusion globs.
        #[serde(default)]
        exclude: Vec<String>,
    },
    /// A PostgreSQL server.
    Postgres {
        /// Connection string (prefer a .pgpass file for the password).
        dsn: String,
        /// Base backups instead of logical dumps.
        #[serde(default)]
        physical: bool,
        /// Directory of the PostgreSQL programs.
        #[serde(default)]
        pg_bin: Option<PathBuf>,
    },
    /// A Redis server.
    Redis {
        /// redis[s]:// URL.
        url: String,
        /// Key patterns (application state); empty for a whole RDB.
        #[serde(default)]
        keys: Vec<String>,
    },
}

/// forget rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Newest N.
    #[serde(default)]
    pub keep_last: u32,
    /// One per hour for N hours.
    #[serde(default)]
    pub keep_hourly: u32,
    /// One per day for N days.
    #[serde(default)]
    pub keep_daily: u32,
    /// One per week for N weeks.
    #[serde(default)]
    pub keep_weekly: u32,
    /// One per month for N months.
    #[serde(default)]
    pub keep_monthly: u32,
}

fn default_max_jobs() -> u32 {
    2
}

impl SourceKind {
    /// The kind's name, as the hello reports it.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Files { .. } => "files",
            SourceKind::Postgres { physical: true, .. } => "postgres-physical",
            SourceKind::Postgres { .. } => "postgres",
            SourceKind::Redis { keys, .. } if !keys.is_empty() => "redis-keys",
            SourceKind::Redis { .. } => "redis",
        }
    }
}

impl AgentConfig {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> seawall_common::Result<AgentConfig> {
        use seawall_common::{Error, ErrorKind};
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let config: AgentConfig = toml::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is not a valid agent configuration: {e}(see docs/configuration.md)",
                    path.display()
                ),
            )
        })?;
        seawall_common::tls::check_label("id", &config.id)?;
        seawall_common::tls::check_label("region", &config.region)?;
        if config.coordinators.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{}: coordinators is empty: list at least one address",
                    path.display()
                ),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for s in &config.sources {
            if !names.insert(&s.name) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("{}: source {:?} is defined twice", path.display(), s.name),
                ));
            }
        }
        Ok(config)
    }
}
