//! The coordinator's topology for a test, built instead of written by hand:
//! regions, services with their stores, repositories, DNS and automatic
//! failover, scenarios, and the replication checks' intervals. What a test
//! does not set keeps the coordinator's default.
//!
//! ```ignore
//! let toml = Topology::new()
//!     .replication("interval", "1s")
//!     .region("west", "primary")
//!     .region("east", "standby")
//!     .service(Service::new("shop").set("rpo", "30s").store("west", "postgres", "w1", "db"))
//!     .build();
//! ```

use toml::{Table, Value};

/// Regions, services and scenarios, as the coordinator reads them.
#[derive(Default)]
pub struct Topology {
    replication: Table,
    regions: Vec<Value>,
    services: Vec<Value>,
    scenarios: Vec<Value>,
}

/// One `[[services]]` entry.
pub struct Service {
    table: Table,
    stores: Vec<Value>,
    repositories: Vec<Value>,
}

/// One `[[scenarios]]` entry.
pub struct Scenario {
    table: Table,
}

impl Topology {
    /// No region, service or scenario yet.
    pub fn new() -> Topology {
        Topology::default()
    }

    /// Sets `[replication] key`.
    pub fn replication(mut self, key: &str, value: impl Into<Value>) -> Topology {
        self.replication.insert(key.into(), value.into());
        self
    }

    /// Adds a region with its role (primary, standby, cold).
    pub fn region(mut self, name: &str, role: &str) -> Topology {
        let mut t = Table::new();
        t.insert("name".into(), name.into());
        t.insert("role".into(), role.into());
        self.regions.push(Value::Table(t));
        self
    }

    /// Adds a service.
    pub fn service(mut self, s: Service) -> Topology {
        let mut t = s.table;
        if !s.stores.is_empty() {
            t.insert("stores".into(), Value::Array(s.stores));
        }
        if !s.repositories.is_empty() {
            t.insert("repositories".into(), Value::Array(s.repositories));
        }
        self.services.push(Value::Table(t));
        self
    }

    /// Adds a scenario.
    pub fn scenario(mut self, s: Scenario) -> Topology {
        self.scenarios.push(Value::Table(s.table));
        self
    }

    /// The TOML, to append to a coordinator's configuration.
    pub fn build(self) -> String {
        let mut root = Table::new();
        if !self.replication.is_empty() {
            root.insert("replication".into(), Value::Table(self.replication));
        }
        for (key, list) in [
            ("regions", self.regions),
            ("services", self.services),
            ("scenarios", self.scenarios),
        ] {
            if !list.is_empty() {
                root.insert(key.into(), Value::Array(list));
            }
        }
        format!("\n{}", toml::to_string(&root).unwrap())
    }
}

impl Service {
    /// A service with no stores yet.
    pub fn new(name: &str) -> Service {
        let mut table = Table::new();
        table.insert("name".into(), name.into());
        Service {
            table,
            stores: Vec::new(),
            repositories: Vec::new(),
        }
    }

    /// Sets one of the service's keys (rpo, canary, backups, fence, ...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Service {
        self.table.insert(key.into(), value.into());
        self
    }

    /// Adds a live store of `kind` in `region`, reached by `agent`'s `source`.
    pub fn store(self, region: &str, kind: &str, agent: &str, source: &str) -> Service {
        self.store_with(region, kind, agent, source, &[])
    }

    /// [`Service::store`] with more keys (`address`).
    pub fn store_with(
        mut self,
        region: &str,
        kind: &str,
        agent: &str,
        source: &str,
        more: &[(&str, &str)],
    ) -> Service {
        let mut t = Table::new();
        t.insert("region".into(), region.into());
        t.insert("kind".into(), kind.into());
        t.insert("agent".into(), agent.into());
        t.insert("source".into(), source.into());
        for (k, v) in more {
            t.insert((*k).into(), (*v).into());
        }
        self.stores.push(Value::Table(t));
        self
    }

    /// Adds the repository `agent` keeps in `region` (`mirror`: the
    /// `[[mirrors]]` entry that fills it from the primary's).
    pub fn repository(mut self, region: &str, agent: &str, mirror: Option<&str>) -> Service {
        let mut t = Table::new();
        t.insert("region".into(), region.into());
        t.insert("agent".into(), agent.into());
        if let Some(m) = mirror {
            t.insert("mirror".into(), m.into());
        }
        self.repositories.push(Value::Table(t));
        self
    }

    /// Sets a sub-table (`dns`, `dns.values`' parent, `auto_failover`).
    pub fn table(mut self, key: &str, entries: &[(&str, Value)]) -> Service {
        let mut t = Table::new();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        self.table.insert(key.into(), Value::Table(t));
        self
    }
}

impl Scenario {
    /// A scenario of `service` exercised by a `drill` (restore, failover).
    pub fn new(name: &str, service: &str, drill: &str) -> Scenario {
        let mut table = Table::new();
        table.insert("name".into(), name.into());
        table.insert("service".into(), service.into());
        table.insert("drill".into(), drill.into());
        Scenario { table }
    }

    /// Sets one of the scenario's keys (rto, rpo, region, cron, ...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Scenario {
        self.table.insert(key.into(), value.into());
        self
    }
}

/// A TOML array of strings.
pub fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

#[test]
fn a_built_topology_reads_back_as_written() {
    let text = Topology::new()
        .replication("interval", "1s")
        .region("west", "primary")
        .region("east", "standby")
        .service(
            Service::new("shop")
                .set("rpo", "30s")
                .set("canary", true)
                .set("backups", strings(&["db"]))
                .store_with(
                    "west",
                    "postgres",
                    "w1",
                    "db",
                    &[("address", "10.0.0.1:5432")],
                )
                .repository("east", "e1", Some("from-west"))
                .table(
                    "dns",
                    &[
                        ("name", "db.example.com.".into()),
                        ("ttl", 30.into()),
                        (
                            "values",
                            Value::Table(Table::from_iter([("west".to_string(), "a".into())])),
                        ),
                    ],
                ),
        )
        .scenario(Scenario::new("outage", "shop", "restore").set("rto", "10m"))
        .build();
    let v: Table = toml::from_str(&text).unwrap();
    assert_eq!(v["replication"]["interval"].as_str(), Some("1s"));
    assert_eq!(v["regions"][1]["role"].as_str(), Some("standby"));
    let shop = &v["services"][0];
    assert_eq!(shop["canary"].as_bool(), Some(true));
    assert_eq!(shop["stores"][0]["address"].as_str(), Some("10.0.0.1:5432"));
    assert_eq!(
        shop["repositories"][0]["mirror"].as_str(),
        Some("from-west")
    );
    assert_eq!(shop["dns"]["values"]["west"].as_str(), Some("a"));
    assert_eq!(shop["dns"]["ttl"].as_integer(), Some(30));
    assert_eq!(v["scenarios"][0]["drill"].as_str(), Some("restore"));
}
