//! The fleet's topology in `coordinator.toml`: regions with their role, and
//! the protected services with their stores per region and objectives. The
//! replication checks read it, and so will failover. A topology that does
//! not add up (a standby without a primary, two primaries, a store in a
//! region that holds only backups) is refused with the fix named.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What a region is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionRole {
    /// Serves the service: its stores are the primaries.
    Primary,
    /// A hot standby: stores replicate from the primary region's.
    Standby,
    /// Holds backups only (mirrored repositories), no live stores.
    Cold,
}

/// One region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Its name, as agents' certificates write it.
    pub name: String,
    /// What it is for.
    pub role: RegionRole,
}

/// The kinds of live store whose replication is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A PostgreSQL server (streaming replication).
    Postgres,
    /// A Redis server (master and replica).
    Redis,
}

impl StoreKind {
    /// Every kind, in the order failover steps take them.
    pub const ALL: [StoreKind; 2] = [StoreKind::Postgres, StoreKind::Redis];

    /// Its name in reports and metrics.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgres",
            StoreKind::Redis => "redis",
        }
    }

    /// The kind named `name` (as [`StoreKind::name`] writes it).
    pub fn from_name(name: &str) -> Option<StoreKind> {
        StoreKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One store of a service in one region, reached by one agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The region it lives in; its role makes the store a primary or a standby.
    pub region: String,
    /// What it is.
    pub kind: StoreKind,
    /// The agent of that region that reaches it.
    pub agent: String,
    /// That agent's source (its DSN or URL stays in the agent's configuration).
    pub source: String,
    /// host:port other regions reach it at. Redis: after a failover the
    /// old master is made a replica of the new one at this address (without
    /// it, the old master's writes stay paused instead).
    #[serde(default)]
    pub address: Option<String>,
}

/// A protected service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Its name.
    pub name: String,
    /// Most data it may lose (default 5 min: the runbook's database-failure row).
    #[serde(default = "default_rpo", with = "seawall_common::duration::serde_text")]
    pub rpo: Duration,
    /// Longest it may be down (default 15 min: the same row).
    #[serde(default = "default_rto", with = "seawall_common::duration::serde_text")]
    pub rto: Duration,
    /// Write a canary marker into each primary store every check and read it
    /// in the other regions (creates the `seawall` schema in PostgreSQL).
    #[serde(default)]
    pub canary: bool,
    /// Its stores.
    #[serde(default)]
    pub stores: Vec<StoreConfig>,
    /// The repositories its backups are in, one per region.
    #[serde(default)]
    pub repositories: Vec<RepositoryAt>,
    /// Its sources as the repositories name them (their snapshots'
    /// `source=` tag); default: the sources of its primary-region stores.
    #[serde(default)]
    pub backups: Vec<String>,
    /// A failover goes ahead without `--allow-data-loss` only while the
    /// standby trails by at most this many bytes (WAL or Redis stream).
    #[serde(default = "default_max_lag_bytes")]
    pub max_lag_bytes: u64,
    /// ... and at most this long (default: the RPO).
    #[serde(
        default,
        deserialize_with = "seawall_common::duration::serde_text::option::deserialize"
    )]
    pub max_lag: Option<Duration>,
    /// Go on with a failover when the old primary region cannot be reached
    /// to be fenced (its stores may still take writes there: only for a
    /// region known to be down).
    #[serde(default)]
    pub failover_unfenced: bool,
    /// How the old primary PostgreSQL is fenced: "standby" (the default:
    /// stopped, then started again as a standby at the demotion) or "stop"
    /// (left down until failback). Both write standby.signal first.
    #[serde(default)]
    pub fence: FenceMode,
    /// How long a switchover waits for the standby to replay the old
    /// primary's last write.
    #[serde(
        default = "default_catch_up",
        with = "seawall_common::duration::serde_text"
    )]
    pub catch_up_timeout: Duration,
    /// How long failback may take to rebuild a store as a standby (a base
    /// backup copies the whole cluster).
    #[serde(
        default = "default_rebuild_timeout",
        with = "seawall_common::duration::serde_text"
    )]
    pub rebuild_timeout: Duration,
    /// A check file (as `seawall check postgres --checks` takes it) run on
    /// the promoted PostgreSQL, on its agent's host.
    #[serde(default)]
    pub check_file: Option<String>,
    /// The DNS record clients find the service by.
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    /// Fail over without an operator when the primary region is down.
    #[serde(default)]
    pub auto_failover: Option<AutoFailover>,
}

/// Automatic failover: the primary region is declared down only when its
/// agents are silent AND another region's agent cannot reach its stores,
/// for `after` checks in a row, while this coordinator holds its etcd
/// quorum. One signal alone never triggers it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoFailover {
    /// The region to fail over to (default: the one standby region with
    /// stores of every kind).
    #[serde(default)]
    pub to: Option<String>,
    /// Time between two checks.
    #[serde(
        default = "default_auto_interval",
        with = "seawall_common::duration::serde_text"
    )]
    pub interval: Duration,
    /// Checks in a row with both signals before the region is declared down.
    #[serde(default = "default_auto_after")]
    pub after: u32,
    /// Also fail over when one store of the primary region stops
    /// answering while its agent still reports (a dead database beside a
    /// live agent): its own agent and the target region's agent must both
    /// get no answer at its address, `after` checks in a row. The whole
    /// service moves (its stores and its record): a store that must move
    /// alone belongs in a service of its own.
    #[serde(default = "default_on_store_failure")]
    pub on_store_failure: bool,
    /// How long the primary region's agents go without a lease renewal
    /// before they fence its stores themselves (model/self_fence.rs).
    #[serde(
        default = "crate::model::self_fence::default_after",
        with = "seawall_common::duration::serde_text"
    )]
    pub self_fence_after: Duration,
}

fn default_auto_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_auto_after() -> u32 {
    3
}
fn default_on_store_failure() -> bool {
    true
}

/// A record's value in one region.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsValue {
    /// An address or a name ("10.0.1.5", "db-west.example.com").
    Plain(String),
    /// A Route 53 alias to an AWS resource: `{ alias = "dualstack.lb-west...
    /// .elb.amazonaws.com.", zone_id = "Z1H1FL5HABSF5" }`.
    Alias(AliasTarget),
}

/// A Route 53 alias target: a load balancer's (or another AWS resource's)
/// DNS name and the hosted zone id AWS gives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    /// The target's DNS name.
    pub alias: String,
    /// The target's hosted zone id (the load balancer's, not the record's).
    pub zone_id: String,
    /// Whether Route 53 answers the record only while the target is healthy.
    #[serde(default)]
    pub evaluate_target_health: bool,
}

impl<'de> Deserialize<'de> for DnsValue {
    /// A string, or a table read as an alias: its own errors (a missing
    /// `zone_id`, a misspelt key) are reported as they are, not as "matched
    /// no form".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = DnsValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a value (\"10.0.1.5\") or an alias ({ alias = \"...\", zone_id = \"...\" })",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DnsValue, E> {
                Ok(DnsValue::Plain(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<DnsValue, A::Error> {
                AliasTarget::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(DnsValue::Alias)
            }
        }
        d.deserialize_any(Either)
    }
}

impl DnsValue {
    /// Whether two values name the same thing, as Route 53 compares names
    /// (case and the final dot do not count).
    pub fn same(&self, other: &DnsValue) -> bool {
        let name = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
        match (self, other) {
            (DnsValue::Plain(a), DnsValue::Plain(b)) => a == b,
            (DnsValue::Alias(a), DnsValue::Alias(b)) => {
                name(&a.alias) == name(&b.alias) && a.zone_id == b.zone_id
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for DnsValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsValue::Plain(v) => write!(f, "{v}"),
            DnsValue::Alias(a) => write!(f, "alias {} (zone {})", a.alias, a.zone_id),
        }
    }
}

/// A Route 53 record whose value Seawall owns: one value per region, and a
/// failover points the record at the new primary region's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The hosted zone.
    pub zone_id: String,
    /// "plain": a record whose value Seawall owns; "failover": PRIMARY and
    /// SECONDARY failover records with a health check on the PRIMARY,
    /// which Seawall inverts to make Route 53 answer the SECONDARY.
    #[serde(default = "default_style")]
    pub style: String,
    /// The record's name ("db.shop.example.com.").
    pub name: String,
    /// Its type: A, AAAA or CNAME.
    #[serde(default = "default_record_type", rename = "type")]
    pub record_type: String,
    /// Its TTL in seconds (clients keep the old answer this long).
    #[serde(default = "default_ttl")]
    pub ttl: i64,
    /// The record's value when each region is the primary: a plain value,
    /// or an alias to that region's load balancer.
    pub values: BTreeMap<String, DnsValue>,
    /// Route 53 endpoint (a VPC endpoint or a test server; default AWS's).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The AWS region the client signs for.
    #[serde(default = "default_aws_region")]
    pub aws_region: String,
    /// Access key id (else the standard AWS chain: environment, profile,
    /// instance role).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// File holding the secret access key (owner-only).
    #[serde(default)]
    pub secret_access_key_file: Option<std::path::PathBuf>,
}

fn default_max_lag_bytes() -> u64 {
    16 * 1024 * 1024
}
/// How an old primary PostgreSQL is fenced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FenceMode {
    /// Stopped with standby.signal in place, started again as a standby.
    #[default]
    Standby,
    /// Stopped with standby.signal in place, left down until failback.
    Stop,
    /// The fence before it was durable, which a client undoes; refused.
    ReadOnly,
}

fn default_rebuild_timeout() -> Duration {
    Duration::from_secs(3600)
}

fn default_catch_up() -> Duration {
    Duration::from_secs(30)
}
fn default_style() -> String {
    "plain".into()
}
fn default_record_type() -> String {
    "CNAME".into()
}
fn default_ttl() -> i64 {
    60
}
fn default_aws_region() -> String {
    "us-east-1".into()
}

impl ServiceConfig {
    /// The sources whose backups are compared across regions.
    pub fn backup_sources(&self, regions: &[RegionConfig]) -> Vec<String> {
        if !self.backups.is_empty() {
            return self.backups.clone();
        }
        let mut out: Vec<String> = self
            .stores
            .iter()
            .filter(|s| store_role(regions, s) == Some(RegionRole::Primary))
            .map(|s| s.source.clone())
            .collect();
        out.dedup();
        out
    }
}

/// A region's repository, read by one of its agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryAt {
    /// The region.
    pub region: String,
    /// The agent whose `[repository]` it is.
    pub agent: String,
    /// That agent's `[[mirrors]]` entry that copies the primary region's
    /// repository (named so the check can say what has not arrived).
    #[serde(default)]
    pub mirror: Option<String>,
}

/// How the replication checks run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Time between two rounds of checks.
    #[serde(
        default = "default_interval",
        with = "seawall_common::duration::serde_text"
    )]
    pub interval: Duration,
    /// Time between two reads of the repositories (listing a bucket costs
    /// requests: less often than the stores).
    #[serde(
        default = "default_repository_interval",
        with = "seawall_common::duration::serde_text"
    )]
    pub repository_interval: Duration,
    /// How long a store has to answer (default: 80% of the interval).
    #[serde(
        default,
        deserialize_with = "seawall_common::duration::serde_text::option::deserialize"
    )]
    pub deadline: Option<Duration>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            interval: default_interval(),
            repository_interval: default_repository_interval(),
            deadline: None,
        }
    }
}

impl ReplicationConfig {
    /// The deadline each store has.
    pub fn deadline(&self) -> Duration {
        self.deadline
            .unwrap_or(self.interval.mul_f64(0.8))
            .max(Duration::from_millis(100))
    }
}

fn default_rpo() -> Duration {
    Duration::from_secs(300)
}
fn default_rto() -> Duration {
    Duration::from_secs(900)
}
fn default_repository_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}

/// What is wrong with a topology, one line per problem.
pub fn problems(
    regions: &[RegionConfig],
    services: &[ServiceConfig],
    replication: &ReplicationConfig,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut roles: BTreeMap<&str, RegionRole> = BTreeMap::new();
    for r in regions {
        if roles.insert(&r.name, r.role).is_some() {
            out.push(format!("[[regions]] {:?} is listed twice", r.name));
        }
        if let Err(e) = seawall_common::tls::check_label("region", &r.name) {
            out.push(format!("[[regions]] {:?}: {e}", r.name));
        }
    }
    let primaries: Vec<&str> = regions
        .iter()
        .filter(|r| r.role == RegionRole::Primary)
        .map(|r| r.name.as_str())
        .collect();
    if primaries.len() > 1 {
        out.push(format!(
            "[[regions]] {} are all primary: one region serves at a time; make the others standby or cold",
            primaries.join(", ")
        ));
    }
    if !services.is_empty() && primaries.is_empty() {
        out.push(
            "[[services]] are configured but no [[regions]] entry has role = \"primary\"".into(),
        );
    }
    if replication.interval < Duration::from_millis(500) {
        out.push("[replication] interval is under 500ms: checks would load the stores for nothing; use 5s".into());
    }
    if replication.deadline() > replication.interval {
        out.push("[replication] deadline is longer than the interval: rounds would overlap".into());
    }
    let mut names = BTreeSet::new();
    for s in services {
        let at = format!("[[services]] {:?}", s.name);
        if !names.insert(&s.name) {
            out.push(format!("{at} is listed twice"));
        }
        // The name goes into store keys, metric labels, status page links
        // and terminals: a label, like the regions' and agents' names.
        if let Err(e) = seawall_common::tls::check_label("service name", &s.name) {
            out.push(format!("{at}: {e}"));
        }
        if s.rpo.is_zero() || s.rto.is_zero() {
            out.push(format!("{at}: rpo and rto must be above zero"));
        }
        if s.fence == FenceMode::ReadOnly {
            out.push(format!(
                "{at}: fence = \"read-only\" is not a fence: a client undoes it with BEGIN READ WRITE or PGOPTIONS; use \"standby\" (the default: stopped and started as a standby) or \"stop\""
            ));
        }
        let mut seen = BTreeSet::new();
        for st in &s.stores {
            if !seen.insert((&st.region, &st.agent, &st.source)) {
                out.push(format!(
                    "{at}: store {}/{}/{} is listed twice",
                    st.region, st.agent, st.source
                ));
            }
            match roles.get(st.region.as_str()) {
                None => out.push(format!(
                    "{at}: store {} names region {:?}, which no [[regions]] entry declares",
                    st.source, st.region
                )),
                Some(RegionRole::Cold) => out.push(format!(
                    "{at}: store {} is in region {:?}, which is cold (backups only): a live {} there would have no role; make the region standby or remove the store",
                    st.source,
                    st.region,
                    st.kind.name()
                )),
                Some(_) => {}
            }
        }
        for kind in StoreKind::ALL {
            let in_role = |role: RegionRole| -> Vec<&StoreConfig> {
                s.stores
                    .iter()
                    .filter(|st| st.kind == kind && roles.get(st.region.as_str()) == Some(&role))
                    .collect()
            };
            let primary = in_role(RegionRole::Primary);
            let standby = in_role(RegionRole::Standby);
            if primary.len() > 1 {
                out.push(format!(
                    "{at}: two {} primaries ({}): a service has one writable {} in its primary region",
                    kind.name(),
                    primary
                        .iter()
                        .map(|p| format!("{}/{}", p.agent, p.source))
                        .collect::<Vec<_>>()
                        .join(", "),
                    kind.name()
                ));
            }
            if primary.is_empty() {
                if let Some(sb) = standby.first() {
                    out.push(format!(
                        "{at}: the {} standby {} in {} has no primary: add the primary region's {} store",
                        kind.name(),
                        sb.source,
                        sb.region,
                        kind.name()
                    ));
                }
            }
        }
        let mut repo_regions = BTreeSet::new();
        for r in &s.repositories {
            if !repo_regions.insert(&r.region) {
                out.push(format!(
                    "{at}: two repositories in region {:?}: a region has one repository",
                    r.region
                ));
            }
            match roles.get(r.region.as_str()) {
                None => out.push(format!(
                    "{at}: repository of agent {} names region {:?}, which no [[regions]] entry declares",
                    r.agent, r.region
                )),
                Some(RegionRole::Primary) if r.mirror.is_some() => out.push(format!(
                    "{at}: the primary region's repository ({}) is what the others mirror: remove its mirror",
                    r.region
                )),
                Some(_) => {}
            }
        }
        if !s.repositories.is_empty()
            && !s
                .repositories
                .iter()
                .any(|r| roles.get(r.region.as_str()) == Some(&RegionRole::Primary))
        {
            out.push(format!(
                "{at}: no repository in the primary region: the others are compared with it, so add it"
            ));
        }
        if let Some(dns) = &s.dns {
            if !["plain", "failover"].contains(&dns.style.as_str()) {
                out.push(format!(
                    "{at}: [services.dns] style {:?}: use plain or failover",
                    dns.style
                ));
            }
            if !["A", "AAAA", "CNAME"].contains(&dns.record_type.as_str()) {
                out.push(format!(
                    "{at}: [services.dns] type {:?}: use A, AAAA or CNAME",
                    dns.record_type
                ));
            }
            if !(1..=300).contains(&dns.ttl) {
                out.push(format!("{at}: [services.dns] ttl {} s: clients keep the old answer that long after a failover; use 60 or less", dns.ttl));
            }
            for region in s.stores.iter().map(|st| &st.region) {
                if !dns.values.contains_key(region) {
                    out.push(format!("{at}: [services.dns.values] has no value for region {region:?}: a failover there could not move the record"));
                }
            }
            if dns.access_key_id.is_some() != dns.secret_access_key_file.is_some() {
                out.push(format!("{at}: [services.dns] access_key_id and secret_access_key_file go together: give both, or neither for the standard AWS chain"));
            }
            if dns.values.values().any(|v| matches!(v, DnsValue::Alias(_)))
                && !["A", "AAAA"].contains(&dns.record_type.as_str())
            {
                out.push(format!("{at}: [services.dns.values] holds an alias, which Route 53 keeps as an A or AAAA record: set type = \"A\" (or \"AAAA\")"));
            }
            for region in dns.values.keys() {
                if !roles.contains_key(region.as_str()) {
                    out.push(format!("{at}: [services.dns.values] names region {region:?}, which no [[regions]] entry declares"));
                }
            }
        }
        if let Some(auto) = &s.auto_failover {
            if auto.after == 0 {
                out.push(format!(
                    "{at}: [services.auto_failover] after = 0 would fail over on no evidence; use 3"
                ));
            }
            if auto.interval < Duration::from_millis(200) {
                out.push(format!(
                    "{at}: [services.auto_failover] interval under 200ms; use 1s"
                ));
            }
            for st in &s.stores {
                if st.address.is_none() {
                    out.push(format!("{at}: auto_failover needs address on every store (another region's agent checks it answers before a region is declared down); {}/{} has none", st.region, st.source));
                }
            }
            if let Some(to) = &auto.to {
                if !s.stores.iter().any(|st| &st.region == to) {
                    out.push(format!(
                        "{at}: [services.auto_failover] to = {to:?} has no stores of the service"
                    ));
                }
            }
        }
        if s.canary
            && !s.stores.is_empty()
            && s.stores
                .iter()
                .all(|st| roles.get(st.region.as_str()) != Some(&RegionRole::Primary))
        {
            out.push(format!(
                "{at}: canary = true needs a store in the primary region to write to"
            ));
        }
    }
    out
}

/// A store's role, from its region's.
pub fn store_role(regions: &[RegionConfig], store: &StoreConfig) -> Option<RegionRole> {
    regions
        .iter()
        .find(|r| r.name == store.region)
        .map(|r| r.role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str, role: RegionRole) -> RegionConfig {
        RegionConfig {
            name: name.into(),
            role,
        }
    }

    fn store(region: &str, kind: StoreKind, source: &str) -> StoreConfig {
        StoreConfig {
            region: region.into(),
            kind,
            agent: format!("{region}-agent"),
            source: source.into(),
            address: None,
        }
    }

    fn service(stores: Vec<StoreConfig>) -> ServiceConfig {
        ServiceConfig {
            name: "shop".into(),
            rpo: default_rpo(),
            rto: default_rto(),
            canary: true,
            stores,
            repositories: Vec::new(),
            backups: Vec::new(),
            max_lag_bytes: 16 << 20,
            max_lag: None,
            failover_unfenced: false,
            fence: FenceMode::Standby,
            catch_up_timeout: std::time::Duration::from_secs(30),
            rebuild_timeout: std::time::Duration::from_secs(3600),
            check_file: None,
            dns: None,
            auto_failover: None,
        }
    }

    #[test]
    fn dns_values_read_as_plain_values_or_aliases_and_a_bad_alias_is_named() {
        #[derive(serde::Deserialize, Debug)]
        struct Values {
            values: BTreeMap<String, DnsValue>,
        }
        let read = |text: &str| toml::from_str::<Values>(text).map(|v| v.values);
        let v = read(
            "[values]\nwest = \"db-west.example.com\"\neast = { alias = \"LB-East.elb.amazonaws.com\", zone_id = \"Z1H1FL5HABSF5\", evaluate_target_health = true }\n",
        )
        .unwrap();
        assert_eq!(v["west"], DnsValue::Plain("db-west.example.com".into()));
        let east = DnsValue::Alias(AliasTarget {
            alias: "lb-east.elb.amazonaws.com.".into(),
            zone_id: "Z1H1FL5HABSF5".into(),
            evaluate_target_health: false,
        });
        assert!(v["east"].same(&east), "{:?}", v["east"]);
        assert!(!v["east"].same(&v["west"]));
        let e = read("[values]\neast = { alias = \"lb.elb.amazonaws.com\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zone_id"), "{e}");
        let e = read("[values]\neast = { alias = \"lb\", zone_id = \"Z\", evaluate = true }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("evaluate"), "{e}");
    }

    #[test]
    fn a_topology_that_does_not_add_up_is_refused_with_the_fix() {
        let regions = vec![
            region("west", RegionRole::Primary),
            region("east", RegionRole::Standby),
            region("eu", RegionRole::Cold),
        ];
        let r = ReplicationConfig::default();
        let good = service(vec![
            store("west", StoreKind::Postgres, "db"),
            store("east", StoreKind::Postgres, "db"),
            store("west", StoreKind::Redis, "cache"),
            store("east", StoreKind::Redis, "cache"),
        ]);
        assert!(problems(&regions, std::slice::from_ref(&good), &r).is_empty());
        let advisory = ServiceConfig {
            fence: FenceMode::ReadOnly,
            ..good
        };
        assert!(problems(&regions, &[advisory], &r)
            .join("\n")
            .contains("is not a fence: a client undoes it"));

        for bad in ["shop/../x", "Shop", "a b", "\u{1b}[2Jshop", ""] {
            let named = ServiceConfig {
                name: bad.into(),
                ..service(vec![
                    store("west", StoreKind::Postgres, "db"),
                    store("east", StoreKind::Postgres, "db"),
                ])
            };
            let p = problems(&regions, &[named], &r).join("\n");
            assert!(p.contains("service name"), "{bad:?}: {p}");
        }

        let orphan = service(vec![store("east", StoreKind::Redis, "cache")]);
        let p = problems(&regions, &[orphan], &r).join("\n");
        assert!(p.contains("has no primary"), "{p}");
        assert!(
            p.contains("canary = true needs a store in the primary region"),
            "{p}"
        );

        let two = service(vec![
            store("west", StoreKind::Postgres, "a"),
            store("west", StoreKind::Postgres, "b"),
        ]);
        assert!(problems(&regions, &[two], &r)
            .join("\n")
            .contains("two postgres primaries"));

        let cold = service(vec![
            store("west", StoreKind::Postgres, "a"),
            store("eu", StoreKind::Postgres, "a"),
        ]);
        assert!(problems(&regions, &[cold], &r)
            .join("\n")
            .contains("cold (backups only)"));

        let unknown = service(vec![store("mars", StoreKind::Postgres, "a")]);
        assert!(problems(&regions, &[unknown], &r)
            .join("\n")
            .contains("no [[regions]] entry declares"));

        let mut dns_wrong = service(vec![
            store("west", StoreKind::Postgres, "a"),
            store("east", StoreKind::Postgres, "a"),
        ]);
        dns_wrong.dns = Some(DnsConfig {
            zone_id: "Z1".into(),
            style: "plain".into(),
            name: "db.example.com.".into(),
            record_type: "MX".into(),
            ttl: 3600,
            values: [
                ("west".to_string(), DnsValue::Plain("w".into())),
                (
                    "north".to_string(),
                    DnsValue::Alias(AliasTarget {
                        alias: "lb-east.elb.amazonaws.com.".into(),
                        zone_id: "Z2".into(),
                        evaluate_target_health: true,
                    }),
                ),
            ]
            .into_iter()
            .collect(),
            endpoint: None,
            aws_region: "us-east-1".into(),
            access_key_id: Some("AKIA".into()),
            secret_access_key_file: None,
        });
        dns_wrong.auto_failover = Some(AutoFailover {
            to: None,
            interval: Duration::from_secs(1),
            after: 0,
            self_fence_after: Duration::from_secs(2),
            on_store_failure: true,
        });
        let p = problems(&regions, &[dns_wrong], &r).join("\n");
        for expected in [
            "use A, AAAA or CNAME",
            "ttl 3600 s",
            "no value for region \"east\"",
            "holds an alias, which Route 53 keeps as an A or AAAA record",
            "go together",
            "after = 0",
            "auto_failover needs address on every store",
        ] {
            assert!(p.contains(expected), "{expected}: {p}");
        }

        let mut repos = service(vec![store("west", StoreKind::Postgres, "a")]);
        repos.repositories = vec![
            RepositoryAt {
                region: "east".into(),
                agent: "e".into(),
                mirror: Some("m".into()),
            },
            RepositoryAt {
                region: "east".into(),
                agent: "e2".into(),
                mirror: None,
            },
        ];
        let p = problems(&regions, &[repos], &r).join("\n");
        assert!(p.contains("two repositories in region"), "{p}");
        assert!(p.contains("no repository in the primary region"), "{p}");

        let both = vec![
            region("west", RegionRole::Primary),
            region("east", RegionRole::Primary),
        ];
        assert!(problems(&both, &[], &r)
            .join("\n")
            .contains("are all primary"));
    }
}
