//! The two-region world every failover scenario runs in, and what the
//! scenarios ask of it.

use super::route53::*;
use crate::fixtures::{S3Kind, S3Server};
use crate::fleet_fixture::*;
use crate::pg_fixture::PgCluster;
use crate::redis::RedisServer;
use crate::replication::Standby;
use crate::topology::{Scenario, Service, Topology};
use std::process::Command;

/// Two regions' servers, agents, coordinator and Route 53.
pub(super) struct World {
    pub(super) _tmp: tempfile::TempDir,
    pub(super) pki: Pki,
    pub(super) addr: String,
    pub(super) primary: PgCluster,
    pub(super) standby: Standby,
    pub(super) master: RedisServer,
    pub(super) replica: RedisServer,
    pub(super) route53: S3Server,
    pub(super) zone_id: String,
    pub(super) replicas: Vec<Replica>,
    pub(super) etcd: Option<crate::etcd_fixture::EtcdCluster>,
    pub(super) w1: Daemon,
    pub(super) e1: Daemon,
    /// The relays the east's standbys replicate through (PostgreSQL,
    /// Redis), when the world has them: the link between the regions,
    /// cut while the west's clients go on writing.
    pub(super) links: Vec<crate::link_cut::LinkCut>,
    /// RDS worlds: makes the east's server follow what moto was asked.
    pub(super) _follower: Option<super::rds::Follower>,
    /// The west region's own network namespace, when it has one (dropped
    /// last: its processes are gone by then).
    pub(super) netns: Option<crate::netns_fixture::Netns>,
}

/// Stops (SIGSTOP) every process of a region's servers and agent, and
/// continues them when dropped, also when the test fails.
pub(super) struct Frozen(Vec<i32>);

impl Frozen {
    pub(super) fn pids_of_postgres(data: &std::path::Path) -> Vec<i32> {
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
        let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let ppid: i32 = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if ppid == postmaster {
                pids.push(pid);
            }
        }
        pids
    }

    pub(super) fn freeze(pids: Vec<i32>) -> Frozen {
        for p in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGSTOP,
            );
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

impl World {
    /// Kills every process of the west's PostgreSQL with SIGKILL, as an
    /// out-of-memory kill of the server would.
    pub(super) fn kill_primary_postgres(&self) {
        for pid in Frozen::pids_of_postgres(&self.primary.data) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    pub(super) fn start() -> World {
        World::start_with(|s| s)
    }

    /// With what `extra` sets on the service.
    pub(super) fn start_with(extra: fn(Service) -> Service) -> World {
        World::build(extra, Shape::default())
    }

    /// [`World::start_with`], with neither wal_log_hints nor checksums:
    /// a diverged old primary cannot be rewound, only replaced.
    pub(super) fn start_unrewindable(extra: fn(Service) -> Service) -> World {
        World::build(
            extra,
            Shape {
                unrewindable: true,
                ..Shape::default()
            },
        )
    }

    /// Three coordinator replicas on a 3-member etcd (lease TTL 4 s)
    /// instead of one dev replica.
    pub(super) fn start_ha() -> World {
        World::start_ha_with(|s| s)
    }

    /// [`World::start_ha`], with what `extra` sets on the service.
    pub(super) fn start_ha_with(extra: fn(Service) -> Service) -> World {
        World::build(
            extra,
            Shape {
                ha: true,
                ..Shape::default()
            },
        )
    }

    /// PRIMARY/SECONDARY failover records with a health check on the
    /// PRIMARY, instead of a plain record; the old primary PostgreSQL
    /// fenced by stopping it.
    /// [`World::start`] with the service's plain record an alias to the
    /// west's load balancer (moto keeps it; no load balancer exists).
    pub(super) fn start_with_alias_record() -> World {
        World::build(
            |s| s,
            Shape {
                alias_record: true,
                ..Shape::default()
            },
        )
    }

    /// Each region's PostgreSQL an RDS instance in moto (`rds-postgres`
    /// sources; the application logs in as `shop_app`), the record an alias.
    pub(super) fn start_rds() -> World {
        World::start_rds_with(|s| s)
    }

    /// [`World::start_rds`] with the west (its PostgreSQL and agent) in a
    /// network namespace of its own, whose hosts file gives the drills'
    /// point-in-time copies their endpoint names.
    pub(super) fn start_rds_partitionable() -> World {
        World::build(
            |s| s,
            Shape {
                rds: true,
                partitionable: true,
                ..Shape::default()
            },
        )
    }

    /// [`World::start_rds`] with `schedules` on the coordinator.
    pub(super) fn start_rds_scheduled(schedules: &'static str) -> World {
        World::build(
            |s| s,
            Shape {
                rds: true,
                schedules,
                ..Shape::default()
            },
        )
    }

    /// The Redis stores ElastiCache replication groups in moto, the east's
    /// a secondary of a Global Datastore, in a service of their own
    /// (`sessions`).
    pub(super) fn start_elasticache() -> World {
        World::build(
            |s| s,
            Shape {
                elasticache: true,
                redis_apart: true,
                ..Shape::default()
            },
        )
    }

    /// The PostgreSQL stores Aurora clusters in moto, the east's a
    /// secondary of the global cluster.
    pub(super) fn start_aurora() -> World {
        World::build(
            |s| s,
            Shape {
                aurora: true,
                ..Shape::default()
            },
        )
    }

    /// [`World::start_rds`], with what `extra` sets on the service.
    pub(super) fn start_rds_with(extra: fn(Service) -> Service) -> World {
        World::build(
            extra,
            Shape {
                rds: true,
                alias_record: true,
                ..Shape::default()
            },
        )
    }

    pub(super) fn start_with_failover_records() -> World {
        World::build(
            |s| s.set("fence", "stop"),
            Shape {
                failover_records: true,
                ..Shape::default()
            },
        )
    }

    /// The west region (its PostgreSQL, Redis and agent) in a network
    /// namespace of its own, which the test can cut off and heal; the
    /// coordinator listens on the host end of its link.
    pub(super) fn start_partitionable(extra: fn(Service) -> Service) -> World {
        World::build(
            extra,
            Shape {
                partitionable: true,
                ..Shape::default()
            },
        )
    }

    /// The Redis stores in a service of their own (`sessions`, no record,
    /// no automatic failover) beside `shop`'s PostgreSQL and record.
    pub(super) fn start_with_redis_apart(extra: fn(Service) -> Service) -> World {
        World::build(
            extra,
            Shape {
                redis_apart: true,
                ..Shape::default()
            },
        )
    }

    /// The east's standbys replicate through relays that
    /// [`World::cut_links`] cuts; clients and agents reach the west's
    /// servers directly.
    pub(super) fn start_relayed(extra: fn(Service) -> Service) -> World {
        World::build(
            extra,
            Shape {
                relayed: true,
                ..Shape::default()
            },
        )
    }

    /// Cuts the replication link between the regions (only that).
    pub(super) fn cut_links(&self) {
        for link in &self.links {
            link.cut();
        }
    }

    pub(super) fn build(extra: fn(Service) -> Service, shape: Shape) -> World {
        let Shape {
            ha,
            failover_records,
            alias_record,
            unrewindable,
            partitionable,
            redis_apart,
            relayed,
            rds,
            schedules,
            elasticache,
            aurora,
        } = shape;
        let rewindable = !unrewindable;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let netns = partitionable.then(crate::netns_fixture::Netns::create);
        let prefix = netns.as_ref().map(|n| n.prefix()).unwrap_or_default();
        // Where the west's servers listen, and the coordinator.
        let (west_ip, host_ip) = match &netns {
            Some(n) => (n.ns_ip.clone(), n.host_ip.clone()),
            None => ("127.0.0.1".to_string(), "127.0.0.1".to_string()),
        };
        // Also on TCP: the automatic failover's reach probe dials it, and
        // a failback's rebuilt standby streams from it.
        let primary = PgCluster::start_in(
            &dir.join("pg-west"),
            &format!(
                "listen_addresses = '{west_ip}'\nwal_keep_size = '256MB'\nwal_log_hints = {}",
                if rewindable { "on" } else { "off" }
            ),
            prefix.clone(),
        );
        if netns.is_some() {
            let hba = primary.data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).unwrap();
            text.push_str(
                "host all all 10.250.0.0/16 trust\nhost replication all 10.250.0.0/16 trust\n",
            );
            std::fs::write(&hba, text).unwrap();
            primary.sql("postgres", "SELECT pg_reload_conf()");
        }
        if rds {
            primary.sql("postgres", super::rds::APP_ROLE_SQL);
        }
        let mut links = Vec::new();
        let pg_link = relayed.then(|| crate::link_cut::LinkCut::new(primary.port));
        let (pg_via, pg_via_port) = match &pg_link {
            Some(l) => ("127.0.0.1".to_string(), l.port),
            None => (west_ip.clone(), primary.port),
        };
        links.extend(pg_link);
        let standby = Standby::start_from(
            &dir.join("pg-east"),
            &format!("host={pg_via} port={pg_via_port} user=postgres dbname=postgres"),
            &host_ip,
        );
        let master = RedisServer::start_in(
            &dir.join("redis-west"),
            crate::fixtures::free_port(),
            &prefix,
            &west_ip,
            // Reached from the east over the link, without a password.
            &["--protected-mode", "no"],
        );
        let redis_link = relayed.then(|| crate::link_cut::LinkCut::new(master.port));
        let (redis_via, master_port) = match &redis_link {
            Some(l) => ("127.0.0.1".to_string(), l.port.to_string()),
            None => (west_ip.clone(), master.port.to_string()),
        };
        links.extend(redis_link);
        let replica = RedisServer::start_in(
            &dir.join("redis-east"),
            crate::fixtures::free_port(),
            &[],
            &host_ip,
            &[
                "--replicaof",
                &redis_via,
                &master_port,
                "--protected-mode",
                "no",
            ],
        );
        // Where an agent in the namespace reaches it too.
        let route53_server = S3Server::start_at(S3Kind::Moto, &host_ip);
        let zone_id = rt().block_on(async {
            let c = route53(&route53_server.endpoint).await;
            let zone = c
                .create_hosted_zone()
                .name(ZONE)
                .caller_reference(format!("seawall-{}", std::process::id()))
                .send()
                .await
                .unwrap();
            zone.hosted_zone()
                .unwrap()
                .id()
                .trim_start_matches("/hostedzone/")
                .to_string()
        });
        let style = if failover_records {
            create_failover_records(&route53_server.endpoint, &zone_id);
            "failover"
        } else if alias_record {
            super::alias::set_alias(&route53_server.endpoint, &zone_id, "west");
            "plain"
        } else {
            set_record(&route53_server.endpoint, &zone_id, WEST);
            "plain"
        };
        if rds {
            super::rds::create_instances(&route53_server.endpoint, primary.port);
        }
        if elasticache {
            super::elasticache::create_groups(&route53_server.endpoint);
        }
        if aurora {
            super::aurora::create_clusters(&route53_server.endpoint);
        }
        let secret = dir.join("route53.secret");
        std::fs::write(&secret, "testing").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let store = |region: &str, kind: &str, agent: &str, source: &str, address: String| {
            (
                region.to_string(),
                kind.to_string(),
                agent.to_string(),
                source.to_string(),
                address,
            )
        };
        let stores = [
            store(
                "west",
                "postgres",
                "w1",
                "db",
                format!("{west_ip}:{}", primary.port),
            ),
            store(
                "east",
                "postgres",
                "e1",
                "db",
                format!("{host_ip}:{}", standby.port),
            ),
            store(
                "west",
                "redis",
                "w1",
                "cache",
                format!("{west_ip}:{}", master.port),
            ),
            store(
                "east",
                "redis",
                "e1",
                "cache",
                format!("{host_ip}:{}", replica.port),
            ),
        ];
        // The post-check's SQL checks, which the agents list as theirs.
        let checks = dir.join("shop-checks.toml");
        std::fs::write(
            &checks,
            "database = \"postgres\"\n\n[[zero_rows]]\nname = \"the promoted server answers a query\"\nsql = \"SELECT 1 WHERE false\"\n",
        )
        .unwrap();
        let mut service = Service::new("shop")
            // A rebuild waits for RDS (moto answers at once): a harness
            // that failed to follow must not hold a test for an hour.
            .set("rebuild_timeout", if rds { "60s" } else { "1h" })
            .set("check_file", checks.display().to_string())
            .set("rpo", "30s")
            .set("canary", true)
            .set("catch_up_timeout", "20s")
            .table(
                "dns",
                &[
                    ("style", style.into()),
                    ("zone_id", zone_id.as_str().into()),
                    ("name", RECORD.into()),
                    ("type", if alias_record { "A" } else { "CNAME" }.into()),
                    ("ttl", 30.into()),
                    ("endpoint", route53_server.endpoint.as_str().into()),
                    ("access_key_id", "testing".into()),
                    (
                        "secret_access_key_file",
                        secret.display().to_string().into(),
                    ),
                    (
                        "values",
                        toml::Value::Table(toml::Table::from_iter(["west", "east"].map(
                            |region| {
                                let value = if alias_record {
                                    super::alias::alias_table(region)
                                } else if region == "west" {
                                    WEST.into()
                                } else {
                                    EAST.into()
                                };
                                (region.to_string(), value)
                            },
                        ))),
                    ),
                ],
            );
        let mut sessions = Service::new("sessions")
            .set("rpo", "30s")
            .set("canary", true);
        for (region, kind, agent, source, address) in &stores {
            if redis_apart && kind == "redis" {
                sessions =
                    sessions.store_with(region, kind, agent, source, &[("address", address)]);
            } else {
                service = service.store_with(region, kind, agent, source, &[("address", address)]);
            }
        }
        let mut topology = Topology::new()
            .replication("interval", "1s")
            .region("west", "primary")
            .region("east", "standby")
            .service(extra(service));
        if redis_apart {
            topology = topology.service(sessions);
        }
        if rds {
            // The runbook's rows on its own architecture: a database
            // failure restored from RDS's backups, a region failure drilled
            // as a switchover and back.
            topology = topology
                .scenario(Scenario::new("database failure", "shop", "rds-pitr"))
                .scenario(Scenario::new("region failure", "shop", "failover"));
        }
        let topology = format!("{schedules}\n{}", topology.build());
        let pki = Pki::new(&dir.join("pki"));
        let (etcd, replicas) = if ha {
            let etcd = crate::etcd_fixture::EtcdCluster::start(&dir.join("etcd"), 3);
            let store = format!(
                "{}{topology}",
                etcd.coordinator_section("/failover", Some("4s"))
            );
            let replicas = ["c1", "c2", "c3"]
                .iter()
                .map(|id| start_replica(&pki, &dir, id, &store, "", false))
                .collect::<Vec<_>>();
            (Some(etcd), replicas)
        } else {
            let store = format!(
                "[dev]\nstate = \"{}\"\n{topology}",
                dir.join("state.redb").display()
            );
            (
                None,
                vec![start_replica_at(
                    &pki, &dir, "c1", &store, "", true, &host_ip,
                )],
            )
        };
        let addr = replicas[0].address();
        let all: Vec<String> = replicas.iter().map(Replica::address).collect();
        // Each region's PostgreSQL may be rebuilt from the other's only.
        let sources = |dsn: &str, host: &str, port: u16, peer: String, db: (&str, &str)| {
            let (instance, aws_region) = db;
            let db = if aurora {
                format!(
                    "kind = \"aurora-postgres\"\ndsn = \"{dsn}\"\ncluster = \"{instance}\"\nglobal_cluster = \"{}\"\naws_region = \"{aws_region}\"\nendpoint = \"{}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"{}\"\n",
                    super::aurora::GLOBAL,
                    route53_server.endpoint,
                    secret.display(),
                )
            } else if rds {
                format!(
                    "kind = \"rds-postgres\"\ndsn = \"{dsn}\"\ninstance = \"{instance}\"\naws_region = \"{aws_region}\"\napp_roles = [\"{}\"]\nendpoint = \"{}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"{}\"\nsnapshot_copy_region = \"{}\"\nsnapshot_copies_kept = 2\n",
                    super::rds::APP_ROLE,
                    route53_server.endpoint,
                    secret.display(),
                    super::rds::COLD_REGION,
                )
            } else {
                format!("kind = \"postgres\"\ndsn = \"{dsn}\"\nrebuild_from = [\"{peer}\"]\n")
            };
            let cache = if elasticache {
                let group = if aws_region == super::rds::WEST_DB.1 {
                    super::elasticache::WEST_GROUP
                } else {
                    super::elasticache::EAST_GROUP
                };
                format!(
                    "kind = \"elasticache-redis\"\nreplication_group = \"{}\"\naws_region = \"{}\"\nendpoint = \"{}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"{}\"\n",
                    group.0,
                    group.1,
                    route53_server.endpoint,
                    secret.display()
                )
            } else {
                "kind = \"redis\"\n".to_string()
            };
            format!("check_files = [\"{}\"]\n\n[[sources]]\nname = \"db\"\n{db}\n[[sources]]\nname = \"cache\"\n{cache}url = \"redis://{host}:{port}\"\n", checks.display())
        };
        let w1 = start_agent_in(
            &pki,
            &dir,
            "w1",
            "west",
            &all,
            &sources(
                &primary.dsn("postgres"),
                &west_ip,
                master.port,
                format!("{host_ip}:{}", standby.port),
                super::rds::WEST_DB,
            ),
            None,
            prefix,
        );
        let e1 = start_agent_with(
            &pki,
            &dir,
            "e1",
            "east",
            &all,
            &sources(
                &standby.dsn,
                &host_ip,
                replica.port,
                format!("{west_ip}:{}", primary.port),
                super::rds::EAST_DB,
            ),
        );
        let follower = rds.then(|| {
            super::rds::Follower::start(
                &route53_server.endpoint,
                vec![
                    super::rds::Site {
                        instance: super::rds::WEST_DB.0,
                        aws_region: super::rds::WEST_DB.1,
                        dsn: primary.dsn("postgres"),
                        root: primary.root.clone(),
                        port: primary.port,
                        listen: west_ip.clone(),
                    },
                    super::rds::Site {
                        instance: super::rds::EAST_DB.0,
                        aws_region: super::rds::EAST_DB.1,
                        dsn: standby.dsn.clone(),
                        root: standby.root.clone(),
                        port: standby.port,
                        listen: host_ip.clone(),
                    },
                ],
                // The west's agent runs in the namespace: its drills' copies
                // answer on the host end, under their endpoint names.
                netns.as_ref().map(|n| super::rds::ScratchPlace {
                    dir: dir.join("pitr"),
                    ip: host_ip.clone(),
                    hosts: n.hosts(),
                    withheld: Default::default(),
                }),
            )
        });
        let w = World {
            _follower: follower,
            _tmp: tmp,
            pki,
            addr,
            primary,
            standby,
            master,
            replica,
            route53: route53_server,
            zone_id,
            replicas,
            etcd,
            w1,
            e1,
            links,
            netns,
        };
        let seen = std::cell::RefCell::new(String::new());
        let shown = Shown(&seen);
        eventually(60, "shop's replication to be ok", || {
            let out = op(&w.pki, &w.addr, &["replication", "--service", "shop"]);
            *seen.borrow_mut() = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success().then_some(())
        });
        drop(shown);
        w
    }

    /// Waits until the west's stores are fenced: its PostgreSQL refuses a
    /// write as read-only, its Redis follows the east's and refuses writes.
    pub(super) fn old_primary_is_fenced(&self, secs: u64) {
        eventually(secs, "the old PostgreSQL primary to refuse writes", || {
            let out = Command::new(crate::pg_fixture::pg_bin().join("psql"))
                .args(["-X", "-A", "-t", "-d", &self.primary.dsn("postgres")])
                .args(["-c", "CREATE TABLE fenced_probe (n int)"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stderr)
                .contains("read-only")
                .then_some(())
        });
        eventually(30, "the old Redis master to follow the new one", || {
            let info = self.master.try_cli(&["INFO", "replication"])?;
            (info.contains("role:slave")
                && info.contains(&format!("master_port:{}", self.replica.port)))
            .then_some(())
        });
        let refused = self.master.try_cli(&["SET", "stray", "2"]);
        assert!(
            refused.as_deref().is_none_or(|r| r.contains("READONLY")),
            "{refused:?}"
        );
    }

    /// The west's PostgreSQL refuses `BEGIN READ WRITE` and a `PGOPTIONS`
    /// override; its Redis stays read-only after `CLIENT UNPAUSE`.
    pub(super) fn old_primary_refuses_every_write(&self) {
        for (options, sql) in [
            (
                None,
                "BEGIN READ WRITE; INSERT INTO stray VALUES (3); COMMIT",
            ),
            (
                Some("-c default_transaction_read_only=off"),
                "INSERT INTO stray VALUES (4)",
            ),
        ] {
            let (ok, said) =
                crate::pg_fixture::psql_tried(&self.primary.dsn("postgres"), options, sql);
            assert!(
                !ok && (said.contains("read-only") || said.contains("during recovery")),
                "{sql} (PGOPTIONS {options:?}) on the old primary: {said}"
            );
        }
        let _ = self.master.try_cli(&["CLIENT", "UNPAUSE"]);
        let said = self.master.try_cli(&["SET", "stray", "5"]);
        assert!(
            said.as_deref().is_none_or(|r| r.contains("READONLY")),
            "{said:?}"
        );
        assert_ne!(self.master.try_cli(&["GET", "stray"]).as_deref(), Some("5"));
    }

    /// The snapshot a rebuild step's `detail` names after `after`.
    pub(super) fn snapshot_named(detail: &str, after: &str) -> String {
        detail
            .split(after)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no diverged snapshot named: {detail}"))
            .to_string()
    }

    /// Restores the west's `diverged` snapshot `id` and starts it on a
    /// free port: `sql` answers `expected` there.
    /// The west's repository holds a `cache.diverged` snapshot (the old
    /// Redis master's dataset, kept before REPLICAOF) that restores with
    /// `key` in it.
    pub(super) fn diverged_redis_holds(&self, key: &str) {
        let dir = self._tmp.path();
        let seawall = |args: &[&str]| self.west_repository(args);
        let listed: serde_json::Value =
            serde_json::from_str(&seawall(&["snapshots", "--tag", "diverged", "--json"])).unwrap();
        let id = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "source=cache.diverged"))
            })
            .and_then(|s| s["id"].as_str())
            .unwrap_or_else(|| panic!("no cache.diverged snapshot: {listed:#}"))
            .to_string();
        let target = dir.join("diverged-redis");
        seawall(&["restore", &id, "--redis-datadir", target.to_str().unwrap()]);
        let mut found = false;
        for entry in crate::fixtures::files_under(&target) {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            found |= bytes.windows(key.len()).any(|w| w == key.as_bytes());
        }
        assert!(found, "{key} is not in the restored diverged dataset");
    }

    /// `seawall ARGS` on the west agent's repository; its output.
    pub(super) fn west_repository(&self, args: &[&str]) -> String {
        let dir = self._tmp.path();
        let out = Command::new(crate::fixtures::bin())
            .arg("-r")
            .arg(dir.join("repo-w1"))
            .arg("--password-file")
            .arg(dir.join("w1.password"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub(super) fn diverged_copy_holds(&self, id: &str, sql: &str, expected: &str) {
        let dir = self._tmp.path();
        let seawall = |args: &[&str]| self.west_repository(args);
        let listed = seawall(&["snapshots", "--tag", "diverged", "--json"]);
        assert!(listed.contains(&id[..8]), "{listed}");
        let target = dir.join("diverged-restore");
        seawall(&["restore", id, "--to", target.to_str().unwrap()]);
        let data = crate::fixtures::restored(&target, &self.primary.data);
        assert!(
            data.join("PG_VERSION").exists(),
            "no data directory in the copy"
        );
        // A server of its own: the copy's own port and socket replaced.
        crate::pg_fixture::pg_dir(&target);
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&target)
            .status()
            .unwrap();
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        let port = crate::fixtures::free_port();
        let started = crate::pg_fixture::as_pg(&crate::pg_fixture::pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(target.join("copy.log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -c listen_addresses='' -c unix_socket_directories='{}'",
                target.display()
            ))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "the diverged copy does not start: {}",
            std::fs::read_to_string(target.join("copy.log")).unwrap_or_default()
        );
        let got = crate::pg_fixture::psql_at(&target, port, sql);
        crate::pg_fixture::stop_datadir(&data);
        assert_eq!(got, expected, "{sql} in the diverged copy");
    }

    /// Waits for the automatic failover to end; it must have succeeded.
    pub(super) fn automatic_failover(&self) -> serde_json::Value {
        let finished = || {
            let out = op(&self.pki, &self.addr, &["failover", "list"]);
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let f = list.as_array()?.first()?.clone();
            (f["state"] != "running").then_some(f)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let f = loop {
            if let Some(f) = finished() {
                break f;
            }
            // A declared region whose failover is refused says why in the
            // audit log only: show it.
            assert!(
                std::time::Instant::now() < deadline,
                "no automatic failover finished within 60 s; the replication report:\n{}\nthe audit log:\n{}",
                String::from_utf8_lossy(
                    &op(&self.pki, &self.addr, &["replication", "--service", "shop"]).stdout
                ),
                String::from_utf8_lossy(
                    &op(&self.pki, &self.addr, &["audit", "--limit", "8"]).stdout
                )
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        assert_eq!(f["state"], "succeeded", "{f:#}");
        assert_eq!(f["automatic"], true, "{f:#}");
        f
    }

    /// The newest load row (at most `acked`) the east has.
    pub(super) fn rows_present(&self, acked: u64) -> u64 {
        self.standby
            .sql(&format!(
                "SELECT coalesce(max(n), 0) FROM load WHERE n <= {acked}"
            ))
            .parse()
            .unwrap()
    }

    /// Runs `seawall failover ARGS`; a `run --wait` that returned once the
    /// service was served again is followed to its end with
    /// `failover status ID --watch`.
    pub(super) fn failover(&self, args: &[&str]) -> (bool, serde_json::Value, String) {
        let (ok, json, err) = self.failover_served(args);
        if !(ok && args.contains(&"--wait") && json["state"] == "running") {
            return (ok, json, err);
        }
        let id = json["id"].as_str().expect("a failover id").to_string();
        self.failover_served(&["status", &id, "--watch"])
    }

    /// Runs `seawall failover ARGS` (a `run --wait` returns when the
    /// post-check passed).
    pub(super) fn failover_served(&self, args: &[&str]) -> (bool, serde_json::Value, String) {
        let out = op(&self.pki, &self.addr, &[&["failover"], args].concat());
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.success(),
            json,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

/// Checks an automatic failover's reported figures against what was
/// measured: the RPO never below the load generator's loss, and above it
/// by no more than the old primary's self-fence bound and margin (3 s: it
/// could have taken writes that long) plus the canary interval (the
/// replication checks' 1 s); the RTO never below the time from the fault
/// (`fault_ms`, unix ms) to the end of the post-check (when clients were
/// served again: the old primary's follow steps come after, and a busy
/// machine makes them slow), and not above it by more than 1.5 s; returns
/// both.
pub(super) fn reported_figures_match(
    f: &serde_json::Value,
    lost_ms: i64,
    fault_ms: i64,
) -> (i64, i64) {
    let rpo = f["rpo_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("an RPO bound: {f:#}"));
    assert!(
        rpo >= lost_ms && rpo <= lost_ms + 4000,
        "reported RPO {rpo} ms, measured loss {lost_ms} ms: {}",
        f["rpo_basis"]
    );
    let rto = f["rto_ms"].as_i64().expect("an RTO");
    let served = step(f, "post-check")
        .and_then(|s| s["ended_unix_ms"].as_i64())
        .unwrap_or_else(|| panic!("a finished post-check: {f:#}"))
        - fault_ms;
    assert!(
        rto + 50 >= served && rto <= served + 1500,
        "reported RTO {rto} ms, {served} ms from the fault to the post-check's end"
    );
    (rpo, rto)
}

/// How a [`World`] differs from the plain one.
#[derive(Default, Clone, Copy)]
pub(super) struct Shape {
    /// Three coordinator replicas on etcd instead of one dev replica.
    pub(super) ha: bool,
    /// Route 53 failover records instead of a plain one.
    pub(super) failover_records: bool,
    /// The plain record an alias to each region's load balancer.
    pub(super) alias_record: bool,
    /// Neither wal_log_hints nor checksums on the west's PostgreSQL.
    pub(super) unrewindable: bool,
    /// The west in a network namespace of its own.
    pub(super) partitionable: bool,
    /// The Redis stores in a service of their own.
    pub(super) redis_apart: bool,
    /// The east's standbys replicate through cuttable relays.
    pub(super) relayed: bool,
    /// The PostgreSQL stores RDS instances (moto's control plane).
    pub(super) rds: bool,
    /// `[[schedules]]` for the coordinator.
    pub(super) schedules: &'static str,
    /// The Redis stores ElastiCache replication groups (moto's control
    /// plane), in a service of their own.
    pub(super) elasticache: bool,
    /// The PostgreSQL stores Aurora clusters of a global cluster (moto's
    /// control plane).
    pub(super) aurora: bool,
}

/// Prints what it holds when a test fails while it lives.
pub(super) struct Shown<'a>(pub(super) &'a std::cell::RefCell<String>);

impl Drop for Shown<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("last seen: {}", self.0.borrow());
        }
    }
}

impl Drop for World {
    /// A failed test shows the ends of the daemons' logs.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let daemons = self.replicas.iter().map(|r| &r.daemon);
        for d in daemons.chain([&self.w1, &self.e1]) {
            let text = d.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- {} (last 40 lines)\n{}",
                d.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// The step called `name` of a failover's JSON.
pub(super) fn step<'a>(f: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    f["steps"].as_array()?.iter().find(|s| s["name"] == name)
}

impl World {
    /// Stops moto (Route 53 no longer answers) until the guard is dropped.
    pub(super) fn freeze_route53(&self) -> Frozen {
        Frozen::freeze(vec![self.route53.pid()])
    }

    /// Failover `f` once the old primary's rejoin wrote its PostgreSQL
    /// figure (or why there is none) into the record.
    pub(super) fn measured_at_rejoin(&self, f: &serde_json::Value) -> serde_json::Value {
        let id = f["id"].as_str().expect("a failover id").to_string();
        eventually(30, "the rejoin's words in the record", || {
            let f = self.failover_at(&self.addr, &id)?;
            f["rpo_measured"]
                .as_str()
                .is_some_and(|m| m.contains("postgres:"))
                .then_some(f)
        })
    }

    /// Failover `id` as the replica at `addr` reports it.
    pub(super) fn failover_at(&self, addr: &str, id: &str) -> Option<serde_json::Value> {
        let out = op(&self.pki, addr, &["failover", "status", id]);
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Starts a failover to the east with Route 53 stopped and waits until
    /// it stands at the DNS step; the failover's id and the guard that
    /// resumes Route 53.
    pub(super) fn failover_stuck_at_dns(&self, addr: &str) -> (String, Frozen) {
        let route53 = self.freeze_route53();
        let (ok, f, err) = self.failover(&["run", "shop", "--to", "east"]);
        assert!(ok, "{err}");
        let id = f["id"].as_str().unwrap().to_string();
        eventually(60, "the failover to wait at the DNS step", || {
            let f = self.failover_at(addr, &id)?;
            (step(&f, "dns")?["state"] == "running").then_some(())
        });
        (id, route53)
    }
}
