//! The other region's server a failback connects to (to rebuild from it,
//! or to read where its timeline began). The coordinator names it; the
//! agent connects only to one its own agent.toml lists in `rebuild_from`,
//! with the credentials `rebuild_dsn` gives (else the source's dsn), and
//! sends a password only over TLS that verifies the server
//! (`sslmode=verify-full`) or to this host itself.

use super::server::Server;
use crate::engine::postgres::conn;
use seawall_common::{Error, ErrorKind, Result};

/// How to reach the new primary.
#[derive(Debug)]
pub struct Peer {
    /// Its host (a name, an address or a socket directory).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// libpq connection settings without the password.
    pub conninfo: String,
    /// The password, kept apart (for `PGPASSWORD`).
    pub password: Option<String>,
}

/// `address` (host:port, as the coordinator named it) when `server`'s
/// `rebuild_from` lists it, with what to log in with; else why not.
pub fn peer(server: &Server, source: &str, address: &str) -> Result<Peer> {
    let (host, port) = crate::stores::host_port(address)?;
    let same = |listed: &String| {
        crate::stores::host_port(listed)
            .is_ok_and(|(h, p)| p == port && h.eq_ignore_ascii_case(&host))
    };
    if !server.control.rebuild_from.iter().any(same) {
        let listed = if server.control.rebuild_from.is_empty() {
            "lists none".to_string()
        } else {
            format!("lists {}", server.control.rebuild_from.join(", "))
        };
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the coordinator named {address} as the new primary to rebuild {source} from, but the source's rebuild_from in agent.toml {listed}: add the other region's server (host:port, as the topology's address names it) there"
            ),
        ));
    }
    let dsn = server.control.rebuild_dsn.as_deref().unwrap_or(&server.dsn);
    let (conninfo, password) = conn::elsewhere(dsn, &host, port)?;
    if password.is_some() && !conn::verifies_server(dsn) && !on_this_host(&host) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "rebuilding {source} from {address} would send a password without verifying the server: add sslmode=verify-full and sslrootcert to the source's rebuild_dsn in agent.toml (a replication role's login)"
            ),
        ));
    }
    Ok(Peer {
        host,
        port,
        conninfo,
        password,
    })
}

/// A socket directory or a loopback address: the password does not leave
/// the machine.
fn on_this_host(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::postgres::server::ServerControl;

    fn server(dsn: &str, from: &[&str], rebuild_dsn: Option<&str>) -> Server {
        Server {
            dsn: dsn.into(),
            control: ServerControl {
                rebuild_from: from.iter().map(|s| s.to_string()).collect(),
                rebuild_dsn: rebuild_dsn.map(str::to_string),
                ..Default::default()
            },
            tools: Default::default(),
            memory: std::path::PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn only_a_listed_server_is_reached_and_a_password_only_over_verified_tls() {
        let s = server(
            "host=/run/postgresql user=postgres password=superpw",
            &["pg-east.internal:5432", "10.0.0.7:5433"],
            None,
        );
        // Not listed: refused, naming the fix.
        for named in [
            "evil.example:5432",
            "pg-east.internal:5433",
            "10.0.0.8:5432",
        ] {
            let e = peer(&s, "db", named).unwrap_err().to_string();
            assert!(e.contains("rebuild_from"), "{e}");
        }
        // Listed, but the superuser's password would go out unverified.
        let e = peer(&s, "db", "PG-EAST.internal:5432")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=verify-full"), "{e}");
        assert!(!e.contains("superpw"), "{e}");
        // A replication role over verified TLS.
        let s = server(
            "host=/run/postgresql user=postgres password=superpw",
            &["pg-east.internal:5432"],
            Some("user=replicator password=replpw sslmode=verify-full sslrootcert=/etc/ca.pem"),
        );
        let p = peer(&s, "db", "pg-east.internal:5432").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("pg-east.internal", 5432));
        assert!(p.conninfo.contains("user='replicator'"), "{}", p.conninfo);
        assert!(
            p.conninfo.contains("sslmode='verify-full'"),
            "{}",
            p.conninfo
        );
        assert_eq!(p.password.as_deref(), Some("replpw"));
        // No password (trust, a certificate login, .pgpass absent) and
        // this host itself: no TLS needed.
        let s = server("host=/tmp user=postgres", &["127.0.0.1:5432"], None);
        assert!(peer(&s, "db", "127.0.0.1:5432").unwrap().password.is_none());
        let s = server(
            "host=/tmp user=postgres password=pw",
            &["127.0.0.1:5432"],
            None,
        );
        assert_eq!(
            peer(&s, "db", "127.0.0.1:5432")
                .unwrap()
                .password
                .as_deref(),
            Some("pw")
        );
        // Nothing listed: every rebuild is refused.
        let s = server("host=/tmp user=postgres", &[], None);
        let e = peer(&s, "db", "127.0.0.1:5432").unwrap_err().to_string();
        assert!(e.contains("lists none"), "{e}");
    }
}
