//! `agent.toml`: who the agent is (its certificate must agree), which
//! coordinators it dials, its region's repository, and the sources it backs
//! up with their retention rules. Unknown keys are refused.

use crate::engine::forget::KeepPolicy;
use crate::engine::operation::SourceSpec;
use crate::engine::repository::RepositorySpec;
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
    /// On SIGTERM, how long running jobs may go on before they are stopped
    /// (keep it under the service manager's stop timeout).
    #[serde(
        default = "default_shutdown_grace",
        with = "seawall_common::duration::serde_text"
    )]
    pub shutdown_grace: std::time::Duration,
    /// Certificate, key and CA.
    pub tls: TlsFiles,
    /// The region's repository.
    pub repository: RepositoryConfig,
    /// What this agent backs up.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Other regions' repositories this agent's repository replicates
    /// (mirror jobs name them).
    #[serde(default)]
    pub mirrors: Vec<MirrorConfig>,
    /// Where and with which programs restore drills run.
    #[serde(default)]
    pub drills: DrillsConfig,
    /// The check files a coordinator may name (a failover's post-check, a
    /// restore drill's checks): the agent reads them as its own user, so
    /// any other path a coordinator sends is refused.
    #[serde(default)]
    pub check_files: Vec<PathBuf>,
}

/// `[drills]`: restore drills restore into scratch instances here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillsConfig {
    /// Directory scratch instances are made in (default:
    /// `<state_dir>/scratch`); it needs room for the largest restore.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// Directory of the PostgreSQL programs (default: a PostgreSQL
    /// source's `pg_bin`, else PATH).
    #[serde(default)]
    pub pg_bin: Option<PathBuf>,
    /// The redis-server program (default: found on PATH).
    #[serde(default)]
    pub redis_server: Option<PathBuf>,
}

impl AgentConfig {
    /// The check file a coordinator named (`None` for none), when this
    /// agent's `check_files` lists it; else why not, naming the fix.
    pub fn allowed_check_file(&self, named: &str) -> seawall_common::Result<Option<PathBuf>> {
        if named.is_empty() {
            return Ok(None);
        }
        let path = Path::new(named);
        // Compared as the files they are, so `a/../b` or a link cannot
        // stand for a listed path it is not.
        let real = |p: &Path| std::fs::canonicalize(p).ok();
        let listed = path.is_absolute()
            && real(path).is_some_and(|r| {
                self.check_files
                    .iter()
                    .any(|allowed| real(allowed).as_ref() == Some(&r))
            });
        if listed {
            Ok(Some(path.to_path_buf()))
        } else {
            Err(seawall_common::Error::new(
                seawall_common::ErrorKind::InvalidInput,
                format!(
                    "the coordinator named the check file {named:?}, which agent {}'s check_files does not list: add it to check_files in agent.toml (the agent reads no other file a coordinator names)",
                    self.id
                ),
            ))
        }
    }

    /// The check files as a coordinator may name them: each as listed and,
    /// where it differs, as the file it resolves to (a topology naming
    /// either passes the plan's check; the agent compares files).
    pub fn check_files_as_named(&self) -> Vec<String> {
        let mut out = Vec::new();
        for listed in &self.check_files {
            out.push(listed.display().to_string());
            if let Ok(real) = std::fs::canonicalize(listed) {
                if &real != listed {
                    out.push(real.display().to_string());
                }
            }
        }
        out
    }

    /// Passwords written in the file itself (in a source's `dsn`,
    /// `rebuild_dsn` or Redis `url`), named, when users other than the
    /// file's owner may read `path`: each a sentence with the fix.
    pub fn exposed_secrets(&self, path: &Path) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let readable_by_others = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o044 != 0)
            .unwrap_or(false);
        if !readable_by_others {
            return Vec::new();
        }
        let pg = |dsn: &str| {
            crate::engine::postgres::conn::split_password(dsn)
                .1
                .is_some()
        };
        let mut found = Vec::new();
        for s in &self.sources {
            let (what, has) = match &s.kind {
                SourceSpec::Postgres { dsn, .. } => (
                    "dsn",
                    pg(dsn) || s.server.rebuild_dsn.as_deref().is_some_and(pg),
                ),
                SourceSpec::Redis { url, .. } => ("url", url_has_password(url)),
                SourceSpec::Files { .. } => continue,
            };
            if has {
                found.push(format!(
                    "source {:?}: its {what} holds a password and {} is readable by other users: chmod 600 it (or 640 with the agent's group), or move the password to a file (PGPASSFILE, SEAWALL_REDIS_PASSWORD_FILE)",
                    s.name,
                    path.display()
                ));
            }
        }
        found
    }

    /// The drill settings with their defaults filled in.
    pub fn drill_places(&self) -> (PathBuf, Option<PathBuf>, PathBuf) {
        let scratch = self
            .drills
            .scratch_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("scratch"));
        let pg_bin = self.drills.pg_bin.clone().or_else(|| {
            self.sources.iter().find_map(|s| match &s.kind {
                SourceSpec::Postgres { pg_bin, .. } => pg_bin.clone(),
                _ => None,
            })
        });
        let redis = self
            .drills
            .redis_server
            .clone()
            .unwrap_or_else(crate::engine::redis::rdb::server_on_path);
        (scratch, pg_bin, redis)
    }
}

/// Whether a Redis URL carries a password (`redis://[user]:PASSWORD@host`).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, password)| !password.is_empty())
}

/// Another region's repository, copied into this agent's by mirror jobs.
/// Copying is by object, so no password is needed: the replica opens with
/// the source's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Name mirror schedules use as their `source`.
    pub name: String,
    /// Path, file:// or s3:// URL of the repository copied from.
    pub from: String,
    /// S3-compatible endpoint of `from`.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// S3 region of `from`.
    #[serde(default)]
    pub s3_region: Option<String>,
    /// Path-style addressing.
    #[serde(default)]
    pub s3_path_style: bool,
    /// Access key id (else the standard AWS chain).
    #[serde(default)]
    pub s3_access_key_id: Option<String>,
    /// File holding the secret access key (owner-only).
    #[serde(default)]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Delete from this agent's repository what `from` no longer holds.
    #[serde(default)]
    pub prune: bool,
    /// Copy nothing: S3 replication fills this agent's repository, and the
    /// job only checks that everything arrived (it fails naming what did not).
    #[serde(default)]
    pub check_only: bool,
    /// Also copy new WAL this often, between mirror jobs, so this region's
    /// repository can be replayed to within moments of the primary's
    /// archive (off when absent).
    #[serde(
        default,
        deserialize_with = "seawall_common::duration::serde_text::option::deserialize"
    )]
    pub wal_every: Option<std::time::Duration>,
}

impl MirrorConfig {
    /// The repository copied from.
    pub fn spec(&self) -> RepositorySpec {
        RepositorySpec {
            repo: self.from.clone(),
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_path_style: self.s3_path_style,
            s3_access_key_id: self.s3_access_key_id.clone(),
            s3_secret_access_key_file: self.s3_secret_access_key_file.clone(),
            ..RepositorySpec::default()
        }
    }
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
    /// Server-side encryption to request (AES256 or aws:kms).
    #[serde(default)]
    pub s3_sse: Option<String>,
    /// KMS key for aws:kms.
    #[serde(default)]
    pub s3_sse_kms_key_id: Option<String>,
    /// Access key id (else the standard AWS chain: environment, profile,
    /// instance role).
    #[serde(default)]
    pub s3_access_key_id: Option<String>,
    /// File holding the secret access key (owner-only).
    #[serde(default)]
    pub s3_secret_access_key_file: Option<PathBuf>,
}

/// One source.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "SourceTable")]
pub struct SourceConfig {
    /// Name jobs and schedules use.
    pub name: String,
    /// What it is.
    pub kind: SourceSpec,
    /// Retention rules for retention jobs.
    pub retention: Option<Retention>,
    /// PostgreSQL: how the agent stops and starts the server (failback).
    pub server: crate::stores::postgres::server::ServerControl,
    /// An RDS instance: its control plane (`kind = "rds-postgres"`).
    pub rds: Option<crate::cloud::rds::config::RdsInstance>,
    /// An ElastiCache replication group: its control plane
    /// (`kind = "elasticache-redis"`).
    pub elasticache: Option<crate::cloud::elasticache::config::ElastiCacheGroup>,
    /// An Aurora cluster: its control plane (`kind = "aurora-postgres"`).
    pub aurora: Option<crate::cloud::aurora::config::AuroraCluster>,
}

/// A `[[sources]]` table as written. Each kind is its own struct variant so
/// serde can refuse a key that kind does not have (a flattened enum cannot):
/// a misspelt `exclude` must not silently back up everything.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum SourceTable {
    Files {
        name: String,
        paths: Vec<PathBuf>,
        #[serde(default)]
        exclude: Vec<String>,
        #[serde(default)]
        retention: Option<Retention>,
    },
    Postgres {
        name: String,
        dsn: String,
        #[serde(default)]
        physical: bool,
        #[serde(default)]
        file_level: bool,
        #[serde(default)]
        pg_bin: Option<PathBuf>,
        #[serde(default)]
        retention: Option<Retention>,
        #[serde(default)]
        data_dir: Option<PathBuf>,
        #[serde(default)]
        stop_command: Vec<String>,
        #[serde(default)]
        start_command: Vec<String>,
        #[serde(default)]
        rebuild_from: Vec<String>,
        #[serde(default)]
        rebuild_dsn: Option<String>,
    },
    Redis {
        name: String,
        url: String,
        #[serde(default)]
        keys: Vec<String>,
        #[serde(default)]
        retention: Option<Retention>,
    },
    #[serde(rename = "aurora-postgres")]
    AuroraPostgres {
        name: String,
        dsn: String,
        #[serde(default)]
        pg_bin: Option<PathBuf>,
        #[serde(default)]
        retention: Option<Retention>,
        cluster: String,
        #[serde(default)]
        global_cluster: Option<String>,
        aws_region: String,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        access_key_id: Option<String>,
        #[serde(default)]
        secret_access_key_file: Option<PathBuf>,
    },
    #[serde(rename = "elasticache-redis")]
    ElastiCacheRedis {
        name: String,
        url: String,
        #[serde(default)]
        keys: Vec<String>,
        #[serde(default)]
        retention: Option<Retention>,
        replication_group: String,
        aws_region: String,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        access_key_id: Option<String>,
        #[serde(default)]
        secret_access_key_file: Option<PathBuf>,
    },
    #[serde(rename = "rds-postgres")]
    RdsPostgres {
        name: String,
        dsn: String,
        #[serde(default)]
        pg_bin: Option<PathBuf>,
        #[serde(default)]
        retention: Option<Retention>,
        instance: String,
        aws_region: String,
        app_roles: Vec<String>,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        access_key_id: Option<String>,
        #[serde(default)]
        secret_access_key_file: Option<PathBuf>,
        #[serde(default = "default_backup_retention_days")]
        backup_retention_days: i32,
        #[serde(default)]
        snapshot_copy_region: Option<String>,
        #[serde(default)]
        snapshot_copy_kms_key_id: Option<String>,
        #[serde(default = "default_snapshot_copies_kept")]
        snapshot_copies_kept: u32,
    },
}

fn default_snapshot_copies_kept() -> u32 {
    crate::cloud::rds::config::DEFAULT_SNAPSHOT_COPIES_KEPT
}

fn default_backup_retention_days() -> i32 {
    crate::cloud::rds::config::DEFAULT_BACKUP_RETENTION_DAYS
}

impl From<SourceTable> for SourceConfig {
    fn from(table: SourceTable) -> SourceConfig {
        let mut server = crate::stores::postgres::server::ServerControl::default();
        let mut rds = None;
        let mut elasticache = None;
        let mut aurora = None;
        let (name, kind, retention) = match table {
            SourceTable::Files {
                name,
                paths,
                exclude,
                retention,
            } => (name, SourceSpec::Files { paths, exclude }, retention),
            SourceTable::Postgres {
                name,
                dsn,
                physical,
                file_level,
                pg_bin,
                retention,
                data_dir,
                stop_command,
                start_command,
                rebuild_from,
                rebuild_dsn,
            } => {
                // A file-level backup is a physical one; an empty path
                // means the server's own data_directory.
                let physical = physical || file_level;
                let file_level = file_level.then(|| data_dir.clone().unwrap_or_default());
                server = crate::stores::postgres::server::ServerControl {
                    data_dir,
                    stop_command,
                    start_command,
                    rebuild_from,
                    rebuild_dsn,
                };
                (
                    name,
                    SourceSpec::Postgres {
                        dsn,
                        physical,
                        file_level,
                        pg_bin,
                    },
                    retention,
                )
            }
            SourceTable::Redis {
                name,
                url,
                keys,
                retention,
            } => (name, SourceSpec::Redis { url, keys }, retention),
            SourceTable::AuroraPostgres {
                name,
                dsn,
                pg_bin,
                retention,
                cluster,
                global_cluster,
                aws_region,
                endpoint,
                access_key_id,
                secret_access_key_file,
            } => {
                aurora = Some(crate::cloud::aurora::config::AuroraCluster {
                    cluster,
                    global_cluster,
                    access: crate::cloud::access::AwsAccess {
                        aws_region,
                        endpoint,
                        access_key_id,
                        secret_access_key_file,
                    },
                });
                // Aurora gives no base backup either: its backups are logical.
                (
                    name,
                    SourceSpec::Postgres {
                        dsn,
                        physical: false,
                        file_level: None,
                        pg_bin,
                    },
                    retention,
                )
            }
            SourceTable::ElastiCacheRedis {
                name,
                url,
                keys,
                retention,
                replication_group,
                aws_region,
                endpoint,
                access_key_id,
                secret_access_key_file,
            } => {
                elasticache = Some(crate::cloud::elasticache::config::ElastiCacheGroup {
                    replication_group,
                    access: crate::cloud::access::AwsAccess {
                        aws_region,
                        endpoint,
                        access_key_id,
                        secret_access_key_file,
                    },
                });
                (name, SourceSpec::Redis { url, keys }, retention)
            }
            SourceTable::RdsPostgres {
                name,
                dsn,
                pg_bin,
                retention,
                instance,
                aws_region,
                app_roles,
                endpoint,
                access_key_id,
                secret_access_key_file,
                backup_retention_days,
                snapshot_copy_region,
                snapshot_copy_kms_key_id,
                snapshot_copies_kept,
            } => {
                rds = Some(crate::cloud::rds::config::RdsInstance {
                    instance,
                    access: crate::cloud::access::AwsAccess {
                        aws_region,
                        endpoint,
                        access_key_id,
                        secret_access_key_file,
                    },
                    app_roles,
                    backup_retention_days,
                    snapshot_copy: snapshot_copy_region.map(|region| {
                        crate::cloud::rds::config::SnapshotCopy {
                            region,
                            kms_key_id: snapshot_copy_kms_key_id,
                            kept: snapshot_copies_kept,
                        }
                    }),
                });
                // RDS gives no replication connection for a base backup
                // and no data directory: its backups are logical.
                (
                    name,
                    SourceSpec::Postgres {
                        dsn,
                        physical: false,
                        file_level: None,
                        pg_bin,
                    },
                    retention,
                )
            }
        };
        SourceConfig {
            name,
            kind,
            retention,
            server,
            rds,
            elasticache,
            aurora,
        }
    }
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
    /// One per year for N years.
    #[serde(default)]
    pub keep_yearly: u32,
    /// Every snapshot within this long of the newest ("30d"), as the old
    /// runbook's retentionDays.
    #[serde(default, deserialize_with = "keep_within")]
    pub keep_within: Option<std::time::Duration>,
}

/// `keep_within`, named in its error (serde reports it at the source table).
fn keep_within<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    seawall_common::duration::serde_text::option::deserialize(d)
        .map_err(|e: D::Error| serde::de::Error::custom(format!("keep_within: {e}")))
}

fn default_max_jobs() -> u32 {
    2
}

fn default_shutdown_grace() -> std::time::Duration {
    std::time::Duration::from_secs(20)
}

impl RepositoryConfig {
    /// The repository as the engine opens it (jobs and `agent --check`).
    pub fn spec(&self) -> RepositorySpec {
        RepositorySpec {
            repo: self.repo.clone(),
            password_file: Some(self.password_file.clone()),
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_path_style: self.s3_path_style,
            s3_sse: self.s3_sse.clone(),
            s3_sse_kms_key_id: self.s3_sse_kms_key_id.clone(),
            s3_access_key_id: self.s3_access_key_id.clone(),
            s3_secret_access_key_file: self.s3_secret_access_key_file.clone(),
            s3_max_concurrency: None,
        }
    }
}

impl SourceConfig {
    /// The source as the engine reads it.
    pub fn spec(&self) -> SourceSpec {
        self.kind.clone()
    }
}

impl Retention {
    /// The rules as forget applies them.
    pub fn policy(&self) -> KeepPolicy {
        KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within_secs: self.keep_within.map_or(0, |d| d.as_secs()),
        }
    }
}

impl AgentConfig {
    /// Reads and checks the file; `id`, when given, replaces the file's
    /// (one file for every pod of a DaemonSet, each named by its pod).
    pub fn load(path: &Path, id: Option<&str>) -> seawall_common::Result<AgentConfig> {
        use seawall_common::{Error, ErrorKind};
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let mut config: AgentConfig = toml::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is not a valid agent configuration: {e}(see docs/configuration.md)",
                    path.display()
                ),
            )
        })?;
        if let Some(id) = id {
            config.id = id.to_string();
        }
        // Every problem at once: fixing one at a time and restarting to
        // find the next is no way to bring up a host.
        let mut problems: Vec<String> = Vec::new();
        for (what, value) in [("id", &config.id), ("region", &config.region)] {
            if let Err(e) = seawall_common::tls::check_label(what, value) {
                problems.push(e.to_string());
            }
        }
        if config.coordinators.is_empty() {
            problems.push("coordinators is empty: list at least one address".into());
        }
        if config.shutdown_grace > std::time::Duration::from_secs(3600) {
            problems.push("shutdown_grace is over 1h: keep it under the service manager's stop timeout (default 20s)".into());
        }
        let r = &config.repository;
        if r.s3_access_key_id.is_some() != r.s3_secret_access_key_file.is_some() {
            problems.push("[repository] s3_access_key_id and s3_secret_access_key_file go together: give both, or neither for the standard AWS chain".into());
        }
        if config.max_jobs == 0 {
            problems.push("max_jobs is 0: the agent would run nothing; the default is 2".into());
        }
        let mut names = std::collections::HashSet::new();
        for s in &config.sources {
            if !names.insert(&s.name) {
                problems.push(format!("source {:?} is defined twice", s.name));
            }
            if let SourceSpec::Files { paths, .. } = &s.kind {
                if paths.is_empty() {
                    problems.push(format!("source {:?} lists no paths", s.name));
                }
            }
            if let (Some(rds), SourceSpec::Postgres { dsn, .. }) = (&s.rds, &s.kind) {
                let user = dsn
                    .parse::<tokio_postgres::Config>()
                    .ok()
                    .and_then(|c| c.get_user().map(str::to_string));
                problems.extend(rds.problems(&s.name, user.as_deref()));
            }
            if let Some(group) = &s.elasticache {
                problems.extend(group.problems(&s.name));
            }
            if let Some(cluster) = &s.aurora {
                problems.extend(cluster.problems(&s.name));
            }
        }
        let (scratch, _, _) = config.drill_places();
        if let Some(why) = crate::engine::drill::scratch::unfit_root(&scratch, &config.state_dir) {
            problems.push(why);
        }
        for m in &config.mirrors {
            if let Some(every) = m.wal_every {
                if every < std::time::Duration::from_secs(1) {
                    problems.push(format!("mirror {:?}: wal_every is under 1s: every run lists the archive; use 5s or more", m.name));
                }
                if m.check_only {
                    problems.push(format!(
                        "mirror {:?}: wal_every copies WAL, check_only copies nothing: choose one",
                        m.name
                    ));
                }
            }
        }
        match problems.len() {
            0 => {}
            1 => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("{}: {}", path.display(), problems[0]),
                ))
            }
            n => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{}: {n} problems:\n  - {}",
                        path.display(),
                        problems.join("\n  - ")
                    ),
                ))
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"
id = "a1"
region = "eu"
coordinators = ["127.0.0.1:7000"]
state_dir = "/var/lib/seawall"
[tls]
ca = "ca.pem"
cert = "a1.pem"
key = "a1.key"
[repository]
repo = "/srv/repo"
password_file = "/etc/seawall/pw"
"#;

    fn load(sources: &str) -> seawall_common::Result<AgentConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, format!("{HEAD}{sources}")).unwrap();
        AgentConfig::load(&path, None)
    }

    #[test]
    fn an_rds_source_reads_as_a_logical_postgres_source_with_its_instance() {
        let config = load(
            "[[sources]]\nname = \"orders\"\nkind = \"rds-postgres\"\ndsn = \"host=orders-west.x.rds.amazonaws.com user=seawall dbname=orders sslmode=verify-full\"\ninstance = \"orders-west\"\naws_region = \"us-west-2\"\napp_roles = [\"orders_app\"]\n",
        )
        .unwrap();
        let source = &config.sources[0];
        assert!(matches!(
            source.kind,
            SourceSpec::Postgres {
                physical: false,
                file_level: None,
                ..
            }
        ));
        let rds = source.rds.as_ref().unwrap();
        assert_eq!(rds.instance, "orders-west");
        assert_eq!(rds.backup_retention_days, 7);
        assert_eq!(rds.snapshot_copy, None);
        assert_eq!(rds.arn(), "arn:aws:rds:us-west-2:*:db:orders-west");
    }

    #[test]
    fn an_elasticache_source_reads_as_a_redis_source_with_its_group() {
        let config = load(
            "[[sources]]\nname = \"sessions\"\nkind = \"elasticache-redis\"\nurl = \"rediss://seawall@master.sessions.x.cache.amazonaws.com:6379\"\nreplication_group = \"sessions-west\"\naws_region = \"us-west-2\"\n",
        )
        .unwrap();
        let source = &config.sources[0];
        assert!(matches!(source.kind, SourceSpec::Redis { .. }));
        let group = source.elasticache.as_ref().unwrap();
        assert_eq!(group.replication_group, "sessions-west");
        assert_eq!(
            group.arn(),
            "arn:aws:elasticache:us-west-2:*:replicationgroup:sessions-west"
        );
        let e = load(
            "[[sources]]\nname = \"sessions\"\nkind = \"elasticache-redis\"\nurl = \"redis://h:6379\"\nreplication_group = \"sessions-west\"\naws_region = \"us-west-2\"\naccess_key_id = \"AKIA\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("access_key_id and secret_access_key_file go together"),
            "{e}"
        );
    }

    #[test]
    fn an_aurora_source_reads_as_a_logical_postgres_source_with_its_cluster() {
        let config = load(
            "[[sources]]\nname = \"orders\"\nkind = \"aurora-postgres\"\ndsn = \"host=orders.cluster-x.us-west-2.rds.amazonaws.com user=seawall dbname=orders\"\ncluster = \"orders-west\"\nglobal_cluster = \"orders-global\"\naws_region = \"us-west-2\"\n",
        )
        .unwrap();
        let source = &config.sources[0];
        assert!(matches!(
            source.kind,
            SourceSpec::Postgres {
                physical: false,
                ..
            }
        ));
        let cluster = source.aurora.as_ref().unwrap();
        assert_eq!(cluster.global_cluster.as_deref(), Some("orders-global"));
        assert_eq!(cluster.arn(), "arn:aws:rds:us-west-2:*:cluster:orders-west");
        assert!(source.rds.is_none());
    }

    #[test]
    fn an_rds_source_that_would_fence_out_seawall_itself_is_refused() {
        let e = load(
            "[[sources]]\nname = \"orders\"\nkind = \"rds-postgres\"\ndsn = \"host=h user=orders_app dbname=orders\"\ninstance = \"orders-west\"\naws_region = \"us-west-2\"\napp_roles = [\"orders_app\"]\nbackup_retention_days = 40\nphysical = true\n",
        )
        .unwrap_err()
        .to_string();
        // A base backup is not a key an RDS source has.
        assert!(e.contains("physical"), "{e}");
        let e = load(
            "[[sources]]\nname = \"orders\"\nkind = \"rds-postgres\"\ndsn = \"host=h user=orders_app dbname=orders\"\ninstance = \"orders-west\"\naws_region = \"us-west-2\"\napp_roles = [\"orders_app\"]\nbackup_retention_days = 40\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("the fence would lock Seawall out"), "{e}");
        assert!(e.contains("backup_retention_days must be 0 to 35"), "{e}");
        // Copies into the instance's own region guard against nothing.
        let e = load(
            "[[sources]]\nname = \"orders\"\nkind = \"rds-postgres\"\ndsn = \"host=h user=seawall dbname=orders\"\ninstance = \"orders-west\"\naws_region = \"us-west-2\"\napp_roles = [\"orders_app\"]\nsnapshot_copy_region = \"us-west-2\"\nsnapshot_copies_kept = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("snapshot_copy_region is the instance's own region"),
            "{e}"
        );
        assert!(
            e.contains("snapshot_copies_kept = 0 would delete every copy"),
            "{e}"
        );
    }

    #[test]
    fn the_documented_three_region_agents_read_and_check() {
        // docs/fleet.md, section 7: the primary region's agent (RDS and
        // ElastiCache sources) and the cold region's.
        let doc = include_str!("../../../docs/fleet.md");
        let from = doc
            .find("## 7. The runbook's three regions")
            .expect("section");
        let blocks: Vec<&str> = doc[from..]
            .split("```toml")
            .skip(2)
            .filter_map(|b| b.split("```").next())
            .collect();
        assert_eq!(blocks.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, blocks[0]).unwrap();
        let west = AgentConfig::load(&path, None).expect("the primary region's agent");
        let orders = west.sources.iter().find(|s| s.name == "orders").unwrap();
        assert_eq!(
            orders
                .rds
                .as_ref()
                .and_then(|r| r.snapshot_copy.as_ref())
                .map(|c| c.region.as_str()),
            Some("eu-west-1")
        );
        assert!(west.sources.iter().any(|s| s.elasticache.is_some()));
        std::fs::write(&path, blocks[1]).unwrap();
        let cold = AgentConfig::load(&path, None).expect("the cold region's agent");
        assert_eq!(cold.mirrors.len(), 1);
    }

    #[test]
    fn the_documented_agent_toml_reads_with_its_drill_places() {
        // docs/fleet.md shows an agent's file; it must stay a valid one.
        let doc = include_str!("../../../docs/fleet.md");
        let from = doc.find("## 3. Agent").expect("section");
        let block = doc[from..]
            .split("```toml")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("toml block");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, block).unwrap();
        let config = AgentConfig::load(&path, None).expect("the documented file loads");
        let (scratch, pg_bin, _) = config.drill_places();
        assert_eq!(scratch, PathBuf::from("/var/lib/seawall/scratch"));
        assert_eq!(pg_bin, Some(PathBuf::from("/usr/lib/postgresql/15/bin")));
        // Without [drills]: under the state directory, the source's programs.
        let mut bare = config.clone();
        bare.drills = DrillsConfig::default();
        assert_eq!(bare.drill_places().0, config.state_dir.join("scratch"));
    }

    #[test]
    fn a_password_in_a_file_others_can_read_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let sources = r#"
[[sources]]
name = "db"
kind = "postgres"
dsn = "host=/run/postgresql user=app password=hunter2"

[[sources]]
name = "cache"
kind = "redis"
url = "redis://:s3cret@127.0.0.1:6379"

[[sources]]
name = "plain"
kind = "redis"
url = "redis://127.0.0.1:6379"
"#;
        std::fs::write(&path, format!("{HEAD}{sources}")).unwrap();
        let config = AgentConfig::load(&path, None).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let found = config.exposed_secrets(&path);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("\"db\"") && found[0].contains("chmod 600"));
        assert!(found[1].contains("\"cache\""));
        assert!(!found.join(" ").contains("hunter2"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(config.exposed_secrets(&path).is_empty());
    }

    #[test]
    fn a_listed_check_file_is_announced_as_listed_and_as_the_file_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path())
            .unwrap()
            .join("shop-checks.toml");
        std::fs::write(&real, "").unwrap();
        let link = dir.path().join("current.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut config = load("").unwrap();
        config.check_files = vec![link.clone(), real.clone()];
        assert_eq!(
            config.check_files_as_named(),
            vec![
                link.display().to_string(),
                real.display().to_string(),
                real.display().to_string()
            ]
        );
    }

    #[test]
    fn a_coordinator_may_name_only_the_check_files_agent_toml_lists() {
        let dir = tempfile::tempdir().unwrap();
        let listed = dir.path().join("shop-checks.toml");
        let other = dir.path().join("key.toml");
        std::fs::write(&listed, "").unwrap();
        std::fs::write(&other, "").unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&other, &link).unwrap();
        let mut config = load("").unwrap();
        config.check_files = vec![listed.clone()];
        assert_eq!(config.allowed_check_file("").unwrap(), None);
        assert_eq!(
            config
                .allowed_check_file(&listed.display().to_string())
                .unwrap(),
            Some(listed.clone())
        );
        // The same file by another spelling is the same file.
        let dotted = dir.path().join("x/../shop-checks.toml");
        std::fs::create_dir(dir.path().join("x")).unwrap();
        assert!(config
            .allowed_check_file(&dotted.display().to_string())
            .is_ok());
        for named in [
            other.display().to_string(),
            link.display().to_string(),
            "/etc/shadow".to_string(),
            "shop-checks.toml".to_string(),
        ] {
            let e = config.allowed_check_file(&named).unwrap_err().to_string();
            assert!(e.contains("check_files"), "{e}");
        }
    }

    #[test]
    fn every_source_kind_parses_with_its_settings() {
        let config = load(
            r#"
[[sources]]
name = "home"
kind = "files"
paths = ["/home"]
exclude = ["*.tmp"]
retention = { keep_daily = 7 }
[[sources]]
name = "db"
kind = "postgres"
dsn = "host=/run/postgresql"
physical = true
[[sources]]
name = "db-files"
kind = "postgres"
dsn = "host=/run/postgresql"
file_level = true
data_dir = "/var/lib/postgresql/15/main"
[[sources]]
name = "state"
kind = "redis"
url = "redis://127.0.0.1:6379"
keys = ["agent:*"]
"#,
        )
        .unwrap();
        let kinds: Vec<_> = config.sources.iter().map(|s| s.kind.name()).collect();
        assert_eq!(
            kinds,
            [
                "files",
                "postgres-physical",
                "postgres-physical",
                "redis-keys"
            ]
        );
        match &config.sources[2].kind {
            SourceSpec::Postgres { file_level, .. } => assert_eq!(
                file_level.as_deref(),
                Some(Path::new("/var/lib/postgresql/15/main"))
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(config.sources[0].retention.as_ref().unwrap().keep_daily, 7);
        match &config.sources[0].kind {
            SourceSpec::Files { exclude, .. } => assert_eq!(exclude, &["*.tmp"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_misspelt_source_key_is_refused_by_name() {
        let err = load(
            r#"
[[sources]]
name = "home"
kind = "files"
paths = ["/home"]
exclud = ["*.tmp"]
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exclud"), "{err}");
        let err = load(
            r#"
[[sources]]
name = "db"
kind = "postgres"
dsn = "host=/tmp"
keys = ["x"]
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("keys"), "{err}");
    }

    #[test]
    fn every_problem_of_a_file_is_reported_at_once() {
        let text = HEAD
            .replace("coordinators = [\"127.0.0.1:7000\"]", "coordinators = []")
            .replace("region = \"eu\"", "region = \"EU West\"");
        let twice = "[[sources]]\nname = \"x\"\nkind = \"files\"\npaths = [\"/a\"]\n".repeat(2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, format!("{text}\n{twice}")).unwrap();
        let err = AgentConfig::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("3 problems"), "{err}");
        assert!(err.contains("region"), "{err}");
        assert!(err.contains("coordinators is empty"), "{err}");
        assert!(err.contains("defined twice"), "{err}");
    }

    #[test]
    fn keep_within_must_be_a_duration() {
        let source = |within: &str| {
            format!("[[sources]]\nname = \"x\"\nkind = \"files\"\npaths = [\"/a\"]\nretention = {{ keep_within = \"{within}\" }}\n")
        };
        assert!(load(&source("30d")).is_ok());
        let err = load(&source("a month")).unwrap_err().to_string();
        assert!(err.contains("keep_within") && err.contains("30d"), "{err}");
    }

    #[test]
    fn an_unknown_kind_and_a_twice_defined_source_are_refused() {
        let err = load("[[sources]]\nname = \"x\"\nkind = \"mysql\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql"), "{err}");
        let twice = "[[sources]]\nname = \"x\"\nkind = \"files\"\npaths = [\"/a\"]\n";
        let err = load(&format!("{twice}{twice}")).unwrap_err().to_string();
        assert!(err.contains("defined twice"), "{err}");
    }
}
