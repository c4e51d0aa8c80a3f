//! Which keys an application-state snapshot captures, and the TTL rules
//! applied when they are restored: patterns from `--keys` flags and from a
//! keys file such as
//!
//! ```toml
//! [[keys]]
//! pattern = "session:*"
//! restore_ttl = "30m"   # restored sessions expire 30 min after the restore at the latest
//!
//! [[keys]]
//! pattern = "agent:*"
//! ```

use super::pattern::matches;
use seawall_common::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// One pattern and its optional TTL rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRule {
    /// Redis glob pattern (as SCAN MATCH takes it).
    pub pattern: String,
    /// On restore, a matching key expires this long after the restore, or
    /// at its own expiry if that comes sooner.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "ttl_text")]
    pub restore_ttl: Option<Duration>,
}

mod ttl_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            seawall_common::duration::parse(&t)
                .map_err(|e| serde::de::Error::custom(format!("restore_ttl: {e}")))
        })
        .transpose()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyRule>,
}

/// The patterns of one capture, in order; the first match decides a key's rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySelection {
    /// Rules in the order given.
    pub rules: Vec<KeyRule>,
}

impl KeySelection {
    /// Patterns from the flags, then the rules of the keys file.
    pub fn from_args(patterns: &[String], file: Option<&Path>) -> Result<KeySelection> {
        let mut rules: Vec<KeyRule> = patterns
            .iter()
            .map(|p| KeyRule {
                pattern: p.clone(),
                restore_ttl: None,
            })
            .collect();
        if let Some(path) = file {
            rules.extend(Self::read_file(path)?.rules);
        }
        if let Some(empty) = rules.iter().find(|r| r.pattern.is_empty()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("an empty key pattern ({empty:?}): write \"*\" to capture every key"),
            ));
        }
        Ok(KeySelection { rules })
    }

    /// Reads a keys file.
    pub fn read_file(path: &Path) -> Result<KeySelection> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("cannot read the keys file {}: {e}", path.display()),
            )
        })?;
        let file: KeysFile = toml::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the keys file {} is not valid: {e}; it holds [[keys]] tables with pattern = \"...\" and an optional restore_ttl = \"30m\"",
                    path.display()
                ),
            )
        })?;
        if file.keys.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the keys file {} names no pattern: add [[keys]] tables with pattern = \"...\"",
                    path.display()
                ),
            ));
        }
        Ok(KeySelection { rules: file.keys })
    }

    /// Whether any pattern was given.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The TTL rule of the first pattern `key` matches.
    pub fn restore_ttl(&self, key: &[u8]) -> Option<Duration> {
        self.rules
            .iter()
            .find(|r| matches(r.pattern.as_bytes(), key))
            .and_then(|r| r.restore_ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rules_and_names_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(
            &path,
            "[[keys]]\npattern = \"session:*\"\nrestore_ttl = \"30m\"\n[[keys]]\npattern = \"*\"\n",
        )
        .unwrap();
        let s = KeySelection::from_args(&["agent:*".into()], Some(&path)).unwrap();
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.restore_ttl(b"session:1"), Some(Duration::from_secs(1800)));
        assert_eq!(s.restore_ttl(b"agent:1"), None);
        assert_eq!(s.restore_ttl(b"other"), None);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"30m\""), "{json}");
        assert_eq!(serde_json::from_str::<KeySelection>(&json).unwrap(), s);

        std::fs::write(
            &path,
            "[[keys]]\npattern = \"s:*\"\nrestore_ttl = \"soon\"\n",
        )
        .unwrap();
        let err = KeySelection::from_args(&[], Some(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains("restore_ttl") && err.contains("30m"), "{err}");
        std::fs::write(&path, "[[keys]]\npatern = \"s:*\"\n").unwrap();
        assert!(KeySelection::from_args(&[], Some(&path)).is_err());
        assert!(KeySelection::from_args(&["".into()], None).is_err());
    }
}
