//! `redis[s]://[user:password@]host:port[/db]` as Seawall reads it. The
//! password never reaches a log or a manifest.

use crate::engine::percent;
use seawall_common::{Error, ErrorKind, Result};

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user, if any.
    pub user: Option<String>,
    /// Password, if any (never logged).
    pub password: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A parsed Redis URL (its Debug form leaves the password out).
#[derive(Clone)]
pub struct RedisUrl {
    /// Where and as whom.
    pub target: Target,
    /// Database number, when the URL names one.
    pub db: Option<u32>,
    /// The URL as given, for the redis crate's own connections.
    pub raw: String,
    /// `rediss://`: connect over TLS.
    pub tls: bool,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUrl")
            .field("target", &self.target)
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The Redis password when the URL has none: the file named by
/// `SEAWALL_REDIS_PASSWORD_FILE` (owner-only), else `REDISCLI_AUTH`.
fn password_from_environment() -> Result<Option<String>> {
    if let Some(path) = std::env::var_os("SEAWALL_REDIS_PASSWORD_FILE").filter(|p| !p.is_empty()) {
        let bytes = seawall_common::secret::read_secret_file(
            std::path::Path::new(&path),
            "SEAWALL_REDIS_PASSWORD_FILE",
        )?;
        return Ok(Some(String::from_utf8_lossy(&bytes).trim_end().to_string()));
    }
    Ok(std::env::var("REDISCLI_AUTH")
        .ok()
        .filter(|p| !p.is_empty()))
}

impl RedisUrl {
    /// Parses a URL, or says how to write one.
    pub fn parse(url: &str) -> Result<RedisUrl> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("--url {why}: write it as redis[s]://[user:password@]host:port[/db]"),
            )
        };
        let (tls, rest) = match url.strip_prefix("rediss://") {
            Some(rest) => (true, rest),
            None => (
                false,
                url.strip_prefix("redis://")
                    .ok_or_else(|| bad("is not a redis:// or rediss:// URL"))?,
            ),
        };
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((h, d)) if !d.is_empty() => (
                h,
                Some(
                    d.parse::<u32>()
                        .map_err(|_| bad("has a database that is not a number"))?,
                ),
            ),
            Some((h, _)) => (h, None),
            None => (hostpart, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("has an invalid port"))?),
            None => (hostport, 6379),
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let (user, mut password) = match auth {
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| percent::decode(u)),
                    Some(percent::decode(p)),
                ),
                None => (None, Some(percent::decode(a))),
            },
            None => (None, None),
        };
        let mut raw = url.to_string();
        if password.is_none() {
            // Kept out of the URL, where it would show on command lines and
            // in process listings: from a file, or redis-cli's variable.
            password = password_from_environment()?;
            if let Some(p) = &password {
                let scheme = if tls { "rediss" } else { "redis" };
                let user = user.as_deref().map(percent::encode).unwrap_or_default();
                raw = format!("{scheme}://{user}:{}@{hostpart}", percent::encode(p));
            }
        }
        Ok(RedisUrl {
            target: Target {
                host: host.trim_matches(['[', ']']).to_string(),
                port,
                user,
                password,
            },
            db,
            raw,
            tls,
        })
    }

    /// `redis[s]://host:port`, without credentials: the identity in manifests.
    pub fn describe(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}:{}", self.target.host, self.target.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_passwords_and_databases() {
        let u = RedisUrl::parse("redis://backup:s%3Acret@cache.internal:6380/2").unwrap();
        assert_eq!(u.target.user.as_deref(), Some("backup"));
        assert_eq!(u.target.password.as_deref(), Some("s:cret"));
        assert_eq!(
            (u.target.host.as_str(), u.target.port, u.db),
            ("cache.internal", 6380, Some(2))
        );
        assert_eq!(u.describe(), "redis://cache.internal:6380");
        let p = RedisUrl::parse("redis://:only@h").unwrap();
        assert_eq!(
            (p.target.user, p.target.password.as_deref(), p.target.port),
            (None, Some("only"), 6379)
        );
        assert!(RedisUrl::parse("http://h").is_err());
        assert!(RedisUrl::parse("redis://h:notaport").is_err());
        let t = RedisUrl::parse("rediss://u:p@h:6390").unwrap();
        assert!(t.tls);
        assert_eq!(t.describe(), "rediss://h:6390");
        assert!(!u.tls);
    }
}
