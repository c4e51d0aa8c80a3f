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
    #[serde(
        default = "default_heartbeat",
        with = "seawall_common::duration::serde_text"
    )]
    pub heartbeat: Duration,
    /// How long a running job may go without news from its agent.
    #[serde(
        default = "default_job_timeout",
        with = "seawall_common::duration::serde_text"
    )]
    pub job_timeout: Duration,
    /// How long settled jobs, backup records and audit lines are kept
    /// (a source's newest backup record is kept however old).
    #[serde(
        default = "default_history_keep",
        with = "seawall_common::duration::serde_text"
    )]
    pub history_keep: Duration,
    /// This replica's certificate, key and the CA (re-read when they
    /// change on disk).
    pub tls: TlsFiles,
    /// Connections open at once, handshaking or established (lowered to
    /// what the open-file limit allows).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Of those, connections without a client certificate (health probes,
    /// operators with the token only) open at once.
    #[serde(default = "default_max_anonymous_connections")]
    pub max_anonymous_connections: usize,
    /// Time a client has to finish its TLS handshake, and then again to
    /// send its first HTTP/2 bytes.
    #[serde(
        default = "default_handshake_timeout",
        with = "seawall_common::duration::serde_text"
    )]
    pub handshake_timeout: Duration,
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
    /// The regions and what each is for.
    #[serde(default)]
    pub regions: Vec<crate::model::topology::RegionConfig>,
    /// The protected services: their stores per region and objectives.
    #[serde(default)]
    pub services: Vec<crate::model::topology::ServiceConfig>,
    /// How the replication checks run.
    #[serde(default)]
    pub replication: crate::model::topology::ReplicationConfig,
    /// The objectives table: each scenario, its drill and objectives.
    #[serde(default)]
    pub scenarios: Vec<crate::model::scenarios::ScenarioConfig>,
    /// The status page served over HTTPS (off unless set).
    #[serde(default)]
    pub status_page: Option<StatusPageConfig>,
}

/// `[status_page]`: each region, store, failover and drill on one page,
/// for operators (their certificate or the operator token).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPageConfig {
    /// Address to serve it on (host:port), with the replica's certificate.
    pub listen: String,
    /// How often the page reloads itself in the browser.
    #[serde(
        default = "default_status_refresh",
        with = "seawall_common::duration::serde_text"
    )]
    pub refresh: Duration,
}

fn default_status_refresh() -> Duration {
    Duration::from_secs(10)
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
    #[serde(default = "default_ttl", with = "seawall_common::duration::serde_text")]
    pub lease_ttl: Duration,
    /// CA that signed the members' certificates (needed for `https://`).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate, for members run with `--client-cert-auth`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (owner-only).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// etcd user, when etcd authentication is enabled.
    #[serde(default)]
    pub user: Option<String>,
    /// File holding that user's password (owner-only).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Allows `http://` endpoints: the fleet's state and its fencing then
    /// travel in clear text, for a test setup or a sealed network only.
    #[serde(default)]
    pub allow_plaintext: bool,
}

impl EtcdConfig {
    /// What is wrong with how etcd is reached, one line per problem.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.endpoints.is_empty() {
            problems.push("[etcd] endpoints is empty: list the members' client URLs".into());
        }
        let plain: Vec<&String> = self
            .endpoints
            .iter()
            .filter(|e| !e.starts_with("https://"))
            .collect();
        for e in &plain {
            if !e.starts_with("http://") {
                problems.push(format!(
                    "[etcd] endpoint {e:?} has no scheme: write https://HOST:PORT"
                ));
            }
        }
        if !plain.is_empty() && plain.len() < self.endpoints.len() {
            problems.push(
                "[etcd] endpoints mix https:// and http://: use https:// for every member".into(),
            );
        } else if !plain.is_empty() && !self.allow_plaintext {
            problems.push(format!(
                "[etcd] endpoint {} is plain text: anyone on the path could read and forge the fleet's state and its fencing; use https:// with [etcd] ca (and cert/key when etcd requires client certificates), or set allow_plaintext = true for a test setup",
                plain[0]
            ));
        }
        if plain.is_empty() && self.ca.is_none() && !self.endpoints.is_empty() {
            problems.push(
                "[etcd] endpoints are https:// but no ca is set: give the CA that signed the members' certificates".into(),
            );
        }
        if self.cert.is_some() != self.key.is_some() {
            problems.push("[etcd] cert and key go together: give both or neither".into());
        }
        if self.user.is_some() != self.password_file.is_some() {
            problems.push("[etcd] user and password_file go together: give both or neither".into());
        }
        if !plain.is_empty() && (self.ca.is_some() || self.cert.is_some()) {
            problems.push(
                "[etcd] ca/cert/key are set but the endpoints are http://: write them as https://"
                    .into(),
            );
        }
        problems
    }
}

/// The embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// The state file.
    pub state: PathBuf,
}

/// What a schedule starts: the contract's job kinds, written in lowercase
/// ("backup", "retention", "verify").
pub use seawall_proto::v1::JobKind;

/// Serde for [`JobKind`] by its contract name.
pub mod job_kind_name {
    use super::JobKind;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the kind's name.
    pub fn serialize<S: Serializer>(kind: &JobKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(seawall_proto::kinds::name(*kind))
    }

    /// Reads a kind's name, naming the valid ones when it is none of them.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<JobKind, D::Error> {
        let text = String::deserialize(d)?;
        seawall_proto::kinds::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "kind {text:?} is not one of: {}",
                seawall_proto::kinds::names().join(", ")
            ))
        })
    }
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
    #[serde(default = "default_kind", with = "job_kind_name")]
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
    #[serde(default, with = "seawall_common::duration::serde_text")]
    pub jitter: Duration,
    /// Attempts after the first failure.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay; doubled for each further attempt.
    #[serde(
        default = "default_backoff",
        with = "seawall_common::duration::serde_text"
    )]
    pub retry_backoff: Duration,
    /// Run retention for the source after each successful backup.
    #[serde(default)]
    pub retention_after: bool,
}

fn default_max_connections() -> usize {
    4096
}

fn default_max_anonymous_connections() -> usize {
    64
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
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

/// Refuses a duration outside `[min, max]`, naming the key and the bounds.
fn within(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!(
            "{key} = {} is out of range: it must be between {} and {}",
            humantime::format_duration(value),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(())
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

    /// Checks what serde cannot: names, bounds, cron expressions, time
    /// zones. Every problem is reported at once, not the first alone.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut problems: Vec<String> = Vec::new();
        let mut note = |r: Result<(), String>| {
            if let Err(e) = r {
                problems.push(e);
            }
        };
        note(seawall_common::tls::check_label("id", &self.id).map_err(|e| e.to_string()));
        let day = Duration::from_secs(86_400);
        note(within(
            "history_keep",
            self.history_keep,
            Duration::from_secs(1),
            36_500 * day,
        ));
        note(within(
            "job_timeout",
            self.job_timeout,
            Duration::from_secs(1),
            30 * day,
        ));
        note(within(
            "heartbeat",
            self.heartbeat,
            Duration::from_secs(1),
            Duration::from_secs(300),
        ));
        if let Some(etcd) = &self.etcd {
            for p in etcd.problems() {
                note(Err(p));
            }
            note(within(
                "lease_ttl",
                etcd.lease_ttl,
                Duration::from_secs(2),
                Duration::from_secs(600),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.schedules {
            let of = |e: String| format!("schedule {:?}: {e}", s.name);
            note(
                seawall_common::tls::check_label("schedule name", &s.name)
                    .map_err(|e| e.to_string()),
            );
            note(
                seawall_common::tls::check_label("region", &s.region)
                    .map_err(|e| of(e.to_string())),
            );
            if !names.insert(&s.name) {
                note(Err(format!(
                    "schedule {:?} is defined twice: names must be unique",
                    s.name
                )));
            }
            note(within("jitter", s.jitter, Duration::ZERO, day).map_err(of));
            note(within("retry_backoff", s.retry_backoff, Duration::ZERO, day).map_err(of));
            note(
                crate::model::cron::parse_cron(&s.cron)
                    .map(|_| ())
                    .map_err(|e| of(e.to_string())),
            );
            note(
                crate::model::cron::parse_tz(&s.timezone)
                    .map(|_| ())
                    .map_err(|e| of(e.to_string())),
            );
            if s.kind != JobKind::Backup && s.level.is_some() {
                note(Err(of("level goes with kind = \"backup\" only".into())));
            }
        }
        for p in crate::model::topology::problems(&self.regions, &self.services, &self.replication)
        {
            note(Err(p));
        }
        for p in crate::model::scenarios::problems(&self.regions, &self.services, &self.scenarios) {
            note(Err(p));
        }
        for s in &self.services {
            if let Some(auto) = &s.auto_failover {
                if let Some(p) =
                    crate::model::self_fence::problem(auto.self_fence_after, self.heartbeat)
                {
                    note(Err(format!(
                        "[[services]] {:?}: [services.auto_failover] {p}",
                        s.name
                    )));
                }
            }
        }
        match problems.len() {
            0 => Ok(()),
            1 => anyhow::bail!("{}", problems[0]),
            n => anyhow::bail!("{n} problems:\n  - {}", problems.join("\n  - ")),
        }
    }

    /// The address agents and operators dial.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_coordinator_toml_reads_and_checks() {
        // docs/fleet.md shows every key; it must stay a valid file.
        let doc = include_str!("../../../docs/fleet.md");
        let from = doc.find("## 2. Coordinator").expect("section");
        let block = doc[from..]
            .split("```toml")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("toml block");
        let config: CoordinatorConfig = toml::from_str(block).expect("the documented file parses");
        config
            .check()
            .expect("the documented file passes the checks");
        assert_eq!(config.services.len(), 1);
        assert!(config.services[0].dns.is_some());
        assert_eq!(config.regions.len(), 3);
        assert_eq!(config.scenarios.len(), 3);
    }

    #[test]
    fn the_documented_three_region_aws_topology_reads_and_checks() {
        // docs/fleet.md, section 7: the runbook's world on RDS, ElastiCache
        // and alias records.
        let doc = include_str!("../../../docs/fleet.md");
        let from = doc
            .find("## 7. The runbook's three regions")
            .expect("section");
        let block = doc[from..]
            .split("```toml")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("toml block");
        let config: CoordinatorConfig = toml::from_str(block).expect("the documented file parses");
        config
            .check()
            .expect("the documented file passes the checks");
        assert_eq!(config.regions.len(), 3);
        assert_eq!(config.services.len(), 2);
        let kinds: Vec<_> = config.scenarios.iter().map(|s| s.drill.name()).collect();
        assert_eq!(kinds, ["rds-pitr", "failover", "restore"]);
        assert!(config
            .schedules
            .iter()
            .any(|s| s.kind == seawall_proto::v1::JobKind::SnapshotCopy));
    }

    fn parse(extra: &str) -> anyhow::Result<CoordinatorConfig> {
        let text = format!(
            "id = \"c1\"\nlisten = \"127.0.0.1:7443\"\n{extra}\n[tls]\nca = \"ca.pem\"\ncert = \"c1.pem\"\nkey = \"c1.key\"\n"
        );
        let config: CoordinatorConfig = toml::from_str(&text)?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn etcd_in_plain_text_or_half_configured_tls_is_refused() {
        // The [tls] table follows, so [etcd] must come last in the text.
        let etcd = |body: &str| {
            let text = format!(
                "id = \"c1\"\nlisten = \"127.0.0.1:7443\"\n[tls]\nca = \"ca.pem\"\ncert = \"c1.pem\"\nkey = \"c1.key\"\n[etcd]\n{body}\n"
            );
            let config: CoordinatorConfig = toml::from_str(&text).expect("parses");
            config
                .check()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let err = etcd("endpoints = [\"http://e:2379\"]");
        assert!(
            err.contains("plain text") && err.contains("allow_plaintext"),
            "{err}"
        );
        assert_eq!(
            etcd("endpoints = [\"http://e:2379\"]\nallow_plaintext = true"),
            ""
        );
        let err = etcd("endpoints = [\"https://e:2379\"]");
        assert!(err.contains("no ca"), "{err}");
        let err = etcd("endpoints = [\"https://e:2379\"]\nca = \"ca.pem\"\ncert = \"c.pem\"");
        assert!(err.contains("cert and key go together"), "{err}");
        let err = etcd("endpoints = [\"https://e:2379\", \"http://f:2379\"]\nca = \"ca.pem\"");
        assert!(err.contains("mix"), "{err}");
        let err = etcd("endpoints = [\"e:2379\"]\nallow_plaintext = true");
        assert!(err.contains("no scheme"), "{err}");
        assert_eq!(
            etcd("endpoints = [\"https://e:2379\"]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\""),
            ""
        );
    }

    #[test]
    fn defaults_are_within_their_bounds() {
        let c = parse("").unwrap();
        assert_eq!(c.history_keep, Duration::from_secs(30 * 86_400));
        assert_eq!(c.job_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn durations_out_of_range_are_refused_by_key() {
        for (extra, key) in [
            ("job_timeout = \"100000d\"", "job_timeout"),
            ("history_keep = \"0s\"", "history_keep"),
            ("heartbeat = \"1h\"", "heartbeat"),
        ] {
            let err = parse(extra).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("out of range"), "{err}");
        }
        let schedule = "[[schedules]]\nname = \"s\"\nregion = \"eu\"\nsource = \"db\"\ncron = \"0 2 * * *\"\njitter = \"2d\"\n";
        // Top-level keys must come before the tables: put the schedule last.
        let text = format!(
            "id = \"c1\"\nlisten = \"127.0.0.1:7443\"\n[tls]\nca = \"ca.pem\"\ncert = \"c1.pem\"\nkey = \"c1.key\"\n{schedule}"
        );
        let config: CoordinatorConfig = toml::from_str(&text).unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains("schedule \"s\"") && err.contains("jitter"),
            "{err}"
        );
    }
}
