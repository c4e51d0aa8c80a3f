//! Connecting to PostgreSQL and reading the facts a backup records. DSNs
//! are never logged or stored: they may hold a password.

use crate::engine::percent;
use seawall_common::{Error, ErrorKind, Result};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

/// Facts about a server that go into a backup's manifest.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    /// `server_version`, such as "15.8 (Debian 15.8-0+deb12u1)".
    pub version: String,
    /// `server_version_num`, such as 150008.
    pub version_num: i64,
    /// The cluster's system identifier, which WAL segments carry too.
    pub system_identifier: String,
    /// Bytes per WAL segment.
    pub wal_segment_size: u64,
    /// Whether the server is a standby.
    pub in_recovery: bool,
}

/// Parses a DSN (key=value or URL) to check it before any program sees it.
pub fn parse(dsn: &str) -> Result<Config> {
    dsn.parse::<Config>().map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("--dsn is not a valid PostgreSQL connection string ({e}); write it as 'host=H port=P user=U dbname=D' or postgresql://U@H:P/D"),
        )
    })
}

/// Where a DSN points, without credentials: the identity stored in manifests.
pub fn describe(dsn: &str) -> Result<String> {
    let cfg = parse(dsn)?;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    Ok(format!("postgres://{host}:{port}"))
}

/// The same DSN naming another database.
pub fn with_database(dsn: &str, db: &str) -> String {
    let trimmed = dsn.trim();
    if let Some(scheme_end) = trimmed
        .strip_prefix("postgresql://")
        .map(|_| "postgresql://".len())
        .or_else(|| {
            trimmed
                .strip_prefix("postgres://")
                .map(|_| "postgres://".len())
        })
    {
        let rest = &trimmed[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
        return format!(
            "{}{authority}/{}{query}",
            &trimmed[..scheme_end],
            percent::encode(db)
        );
    }
    let quoted = db.replace('\\', "\\\\").replace('\'', "\\'");
    format!("{trimmed} dbname='{quoted}'")
}

/// The DSN without its password, and the password: programs get the first
/// on their command line and the second in `PGPASSWORD`, so no password is
/// ever readable in `/proc/<pid>/cmdline`.
pub fn split_password(dsn: &str) -> (String, Option<String>) {
    let trimmed = dsn.trim();
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = trimmed.strip_prefix(scheme) {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            if let Some((userinfo, hosts)) = authority.rsplit_once('@') {
                if let Some((user, password)) = userinfo.split_once(':') {
                    return (
                        format!("{scheme}{user}@{hosts}{tail}"),
                        Some(percent::decode(password)),
                    );
                }
            }
            return (trimmed.to_string(), None);
        }
    }
    // key=value: values are bare or single-quoted with backslash escapes.
    let mut kept = Vec::new();
    let mut password = None;
    let mut chars = trimmed.chars().peekable();
    while chars.peek().is_some() {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut raw = String::new();
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            raw.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            raw.push('=');
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'\'') {
                raw.push('\'');
                chars.next();
                while let Some(c) = chars.next() {
                    raw.push(c);
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                raw.push(n);
                                value.push(n);
                            }
                        }
                        '\'' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    raw.push(c);
                    value.push(c);
                    chars.next();
                }
            }
        }
        if key == "password" {
            password = Some(value);
        } else if !raw.is_empty() {
            kept.push(raw);
        }
    }
    (kept.join(" "), password)
}

/// Hands `dsn` to a PostgreSQL program as `--dbname`, its password (if
/// any) in the program's environment instead.
pub fn pass_dsn(cmd: &mut std::process::Command, dsn: &str) {
    let (bare, password) = split_password(dsn);
    cmd.arg(format!("--dbname={bare}"));
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
}

/// [`pass_dsn`] for a tokio command.
pub fn pass_dsn_async(cmd: &mut tokio::process::Command, dsn: &str) {
    pass_dsn(cmd.as_std_mut(), dsn);
}

/// Connects; the connection runs on its own task until the client is dropped.
pub async fn connect(dsn: &str) -> Result<Client> {
    let cfg = parse(dsn)?;
    let (client, connection) = cfg.connect(NoTls).await.map_err(|e| {
        Error::new(
            ErrorKind::Unreachable,
            format!("cannot connect to PostgreSQL at {}: {e}; check --dsn and that the server is running", describe(dsn).unwrap_or_default()),
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// A query error as a Seawall error.
pub fn query_error(what: &str, e: tokio_postgres::Error) -> Error {
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    Error::new(ErrorKind::Io, format!("{what}: {detail}"))
}

/// Reads version, system identifier and WAL segment size.
pub async fn server_facts(client: &Client) -> Result<ServerFacts> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'),
                    current_setting('server_version_num')::int8,
                    (SELECT system_identifier::text FROM pg_control_system()),
                    (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size'),
                    pg_is_in_recovery()",
            &[],
        )
        .await
        .map_err(|e| query_error("reading server facts", e))?;
    let seg: i64 = row.get(3);
    Ok(ServerFacts {
        version: row.get(0),
        version_num: row.get(1),
        system_identifier: row.get(2),
        wal_segment_size: u64::try_from(seg).unwrap_or(16 * 1024 * 1024),
        in_recovery: row.get(4),
    })
}

/// Databases that can be dumped: every one that accepts connections, not templates.
pub async fn databases(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        )
        .await
        .map_err(|e| query_error("listing databases", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_taken_out_of_every_dsn_form() {
        assert_eq!(
            split_password("host=db port=5432 password=s3cret user=app"),
            (
                "host=db port=5432 user=app".to_string(),
                Some("s3cret".to_string())
            )
        );
        assert_eq!(
            split_password("host=db password = 'a b\\'c' dbname=x"),
            ("host=db dbname=x".to_string(), Some("a b'c".to_string()))
        );
        assert_eq!(
            split_password("postgresql://app:p%40ss@db:5432/app?sslmode=require"),
            (
                "postgresql://app@db:5432/app?sslmode=require".to_string(),
                Some("p@ss".to_string())
            )
        );
        assert_eq!(
            split_password("postgres://app@db/app"),
            ("postgres://app@db/app".to_string(), None)
        );
        assert_eq!(
            split_password("host=/run/postgresql user=postgres"),
            ("host=/run/postgresql user=postgres".to_string(), None)
        );
    }

    #[test]
    fn with_database_rewrites_both_forms() {
        assert_eq!(
            with_database("host=/tmp port=5 user=u", "my db"),
            "host=/tmp port=5 user=u dbname='my db'"
        );
        assert_eq!(
            with_database("postgresql://u:p@h:5/old?sslmode=disable", "n ew"),
            "postgresql://u:p@h:5/n%20ew?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "d"), "postgres://h/d");
    }

    #[test]
    fn describe_drops_credentials() {
        let d = describe("postgresql://alice:secret@db.example:6432/app").unwrap();
        assert_eq!(d, "postgres://db.example:6432");
        assert!(!d.contains("secret"));
    }
}
