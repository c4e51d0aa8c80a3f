//! Connecting to PostgreSQL and reading the facts a backup records. DSNs
//! are never logged or stored: they may hold a password.

use super::tls;
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

impl ServerFacts {
    /// The facts every PostgreSQL snapshot starts with: its mode and the
    /// server it was taken from.
    pub fn snapshot_facts(
        &self,
        mode: &str,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        let mut f = std::collections::BTreeMap::new();
        f.insert("mode".into(), mode.into());
        f.insert("server_version".into(), self.version.clone().into());
        f.insert("server_version_num".into(), self.version_num.into());
        f.insert(
            "system_identifier".into(),
            self.system_identifier.clone().into(),
        );
        f
    }
}

/// Parses a DSN (key=value or URL) to check it before any program sees it.
/// libpq's TLS parameters, which tokio-postgres does not know, are read
/// separately ([`tls::settings`]).
pub fn parse(dsn: &str) -> Result<Config> {
    parse_with_tls(dsn).map(|(cfg, _)| cfg)
}

/// [`parse`], and the TLS parameters taken out of the DSN.
fn parse_with_tls(dsn: &str) -> Result<(Config, Vec<(String, String)>)> {
    let (rest, params) = take_params(dsn, tls::KEYS);
    let cfg = rest.parse::<Config>().map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("--dsn is not a valid PostgreSQL connection string ({e}); write it as 'host=H port=P user=U dbname=D' or postgresql://U@H:P/D"),
        )
    })?;
    Ok((cfg, params))
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

/// Quotes a value for a key=value connection string.
pub fn conninfo_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A connection string for the server at `host`:`port` with `dsn`'s user,
/// database and TLS settings (a physical replica has the same roles as its
/// primary), without its password, and the password apart: the one `dsn`
/// names, else what the environment gives for the other server.
pub fn elsewhere(dsn: &str, host: &str, port: u16) -> Result<(String, Option<String>)> {
    let (mut cfg, tls) = parse_with_tls(dsn)?;
    let mut parts = vec![
        format!("host={}", conninfo_quote(host)),
        format!("port={port}"),
    ];
    if let Some(user) = cfg.get_user() {
        parts.push(format!("user={}", conninfo_quote(user)));
    }
    if let Some(db) = cfg.get_dbname() {
        parts.push(format!("dbname={}", conninfo_quote(db)));
    }
    for (k, v) in &tls {
        parts.push(format!("{k}={}", conninfo_quote(v)));
    }
    let password = match cfg.get_password() {
        Some(p) => Some(String::from_utf8_lossy(p).into_owned()),
        None => {
            cfg.host(host).port(port);
            password_from_environment(&cfg)
        }
    };
    Ok((parts.join(" "), password))
}

/// Whether a connection with `dsn` verifies the server's certificate and
/// name (`sslmode=verify-full`): the only TLS mode a password may be sent
/// over to a server the agent did not start.
pub fn verifies_server(dsn: &str) -> bool {
    let (_, modes) = take_params(dsn, &["sslmode"]);
    modes.last().is_some_and(|(_, m)| m == "verify-full")
}

/// The DSN without its password, and the password: programs get the first
/// on their command line and the second in `PGPASSWORD`, so no password is
/// ever readable in `/proc/<pid>/cmdline`.
pub fn split_password(dsn: &str) -> (String, Option<String>) {
    let (bare, taken) = take_params(dsn, &["password"]);
    (bare, taken.into_iter().next().map(|(_, v)| v))
}

/// The DSN without the parameters named in `keys`, and those parameters'
/// values (decoded), in the order found. Both DSN forms are read: a URL's
/// password from its user info or its query, anything else from its query;
/// key=value pairs bare or single-quoted with backslash escapes.
pub fn take_params(dsn: &str, keys: &[&str]) -> (String, Vec<(String, String)>) {
    let trimmed = dsn.trim();
    let mut taken = Vec::new();
    for scheme in ["postgresql://", "postgres://"] {
        let Some(rest) = trimmed.strip_prefix(scheme) else {
            continue;
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (mut authority, tail) = rest.split_at(authority_end);
        let mut user_kept = String::new();
        if keys.contains(&"password") {
            if let Some((userinfo, hosts)) = authority.rsplit_once('@') {
                if let Some((user, password)) = userinfo.split_once(':') {
                    taken.push(("password".to_string(), percent::decode(password)));
                    user_kept = format!("{user}@");
                    authority = hosts;
                }
            }
        }
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };
        let mut kept_query = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent::decode(k);
            if keys.contains(&key.as_str()) {
                taken.push((key, percent::decode(v)));
            } else {
                kept_query.push(pair);
            }
        }
        let query = if kept_query.is_empty() {
            String::new()
        } else {
            format!("?{}", kept_query.join("&"))
        };
        return (
            format!("{scheme}{user_kept}{authority}{path}{query}"),
            taken,
        );
    }
    let mut kept = Vec::new();
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
        if keys.contains(&key.as_str()) {
            taken.push((key, value));
        } else if !raw.is_empty() {
            kept.push(raw);
        }
    }
    (kept.join(" "), taken)
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

/// Connects, with TLS as the DSN's (or the environment's) `sslmode` says,
/// as libpq would; the connection runs on its own task until the client is
/// dropped.
pub async fn connect(dsn: &str) -> Result<Client> {
    let (mut cfg, params) = parse_with_tls(dsn)?;
    if cfg.get_password().is_none() {
        // Where libpq (and so pg_dump) finds it: PGPASSWORD, then the
        // password file.
        if let Some(p) = password_from_environment(&cfg) {
            cfg.password(p);
        }
    }
    let settings = tls::settings(&params)?;
    let unreachable = |e: tokio_postgres::Error| {
        let hint = match settings.mode {
            tls::Mode::VerifyCa | tls::Mode::VerifyFull => {
                "; check --dsn, that the server runs, and that sslrootcert signed its certificate"
            }
            tls::Mode::Require => "; check --dsn, that the server runs and that it has ssl = on",
            _ => "; check --dsn and that the server is running",
        };
        // tokio-postgres puts the useful part ("password missing") in
        // the source.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        let (kind, hint) = if text.contains("password missing") {
            (
                ErrorKind::Denied,
                "; the server wants a password: give it in PGPASSWORD, a password file (PGPASSFILE or ~/.pgpass, mode 0600) or the DSN",
            )
        } else {
            (ErrorKind::Unreachable, hint)
        };
        Error::new(
            kind,
            format!(
                "cannot connect to PostgreSQL at {} (sslmode={}): {text}{hint}",
                describe(dsn).unwrap_or_default(),
                settings.mode.name()
            ),
        )
    };
    let client = match settings.connector()? {
        None => {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = cfg.connect(NoTls).await.map_err(unreachable)?;
            spawn_connection(connection);
            client
        }
        Some(tls) => {
            cfg.ssl_mode(settings.mode.tokio_mode());
            let (client, connection) = cfg.connect(tls).await.map_err(unreachable)?;
            spawn_connection(connection);
            client
        }
    };
    Ok(client)
}

/// The password libpq would use for `cfg` when the DSN has none:
/// `PGPASSWORD`, else the matching line of `PGPASSFILE` (or `~/.pgpass`),
/// which libpq ignores, as this does, when others may read it.
fn password_from_environment(cfg: &Config) -> Option<String> {
    if let Some(p) = std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()) {
        return Some(p);
    }
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    if !path.exists() {
        return None;
    }
    let text = seawall_common::secret::read_secret_file(&path, "PGPASSFILE")
        .map_err(|e| tracing::warn!(error = %e, "password file ignored"))
        .ok()?;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches a socket directory's connections as "localhost".
        Some(Host::Unix(_)) | None => "localhost".to_string(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = cfg.get_user().unwrap_or_default().to_string();
    let dbname = cfg.get_dbname().unwrap_or(&user).to_string();
    pgpass_lookup(
        &String::from_utf8_lossy(&text),
        &[&host, &port, &dbname, &user],
    )
}

/// The password of the first `.pgpass` line matching `want` (host, port,
/// database, user): fields separated by `:`, `*` matching anything, `\`
/// escaping `:` and `\`.
fn pgpass_lookup(text: &str, want: &[&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = vec![String::new()];
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        fields.last_mut()?.push(n);
                    }
                }
                ':' if fields.len() < 5 => fields.push(String::new()),
                c => fields.last_mut()?.push(c),
            }
        }
        if fields.len() != 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(want)
            .all(|(f, w)| f == "*" || f == w)
        {
            return fields.pop();
        }
    }
    None
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
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

    #[test]
    fn pgpass_lines_match_as_libpq_reads_them() {
        let text = "# comment\ndb.example:5432:app:bob:first\n*:*:*:alice:p\\:w\\\\d\nlocalhost:5433:*:*:sock\n";
        let want = |h, p, d, u| pgpass_lookup(text, &[h, p, d, u]);
        assert_eq!(
            want("db.example", "5432", "app", "bob").as_deref(),
            Some("first")
        );
        assert_eq!(want("db.example", "5432", "other", "bob"), None);
        assert_eq!(want("x", "1", "y", "alice").as_deref(), Some("p:w\\d"));
        assert_eq!(
            want("localhost", "5433", "z", "carol").as_deref(),
            Some("sock")
        );
    }

    use super::*;

    #[test]
    fn another_server_is_reached_with_the_same_credentials_and_tls() {
        let (info, password) = elsewhere(
            "host=/run/pg port=5432 user=app dbname=shop password='s3 cr\\'et' sslmode=require",
            "10.0.0.2",
            5433,
        )
        .unwrap();
        assert_eq!(
            info,
            "host='10.0.0.2' port=5433 user='app' dbname='shop' sslmode='require'"
        );
        assert_eq!(password.as_deref(), Some("s3 cr'et"));
        let (info, _) = elsewhere("postgresql://bob@a:1/db", "b", 2).unwrap();
        assert_eq!(info, "host='b' port=2 user='bob' dbname='db'");
    }

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
