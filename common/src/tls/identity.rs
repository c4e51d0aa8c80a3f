//! Who a certificate says its holder is. Seawall certificates carry one URI
//! subject alternative name, `seawall://<role>/...`:
//!
//! - `seawall://coordinator/<name>`
//! - `seawall://agent/<region>/<name>`: the only region the agent may act in
//! - `seawall://operator/<name>`
//!
//! The CA vouches for the URI, so the coordinator reads an agent's region
//! from its certificate and never from what the agent says about itself.

use crate::{Error, ErrorKind, Result};
use std::fmt;

/// The holder of a Seawall certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A coordinator replica.
    Coordinator {
        /// Replica name.
        name: String,
    },
    /// A regional agent.
    Agent {
        /// The region it may act in.
        region: String,
        /// Agent name.
        name: String,
    },
    /// A person or tool using the operator API.
    Operator {
        /// Operator name.
        name: String,
    },
}

const SCHEME: &str = "seawall://";

/// Checks a name or region: lowercase letters, digits, `-`, `_`, `.`; 1 to 63 bytes.
pub fn check_label(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{what} {value:?} is not valid: use 1 to 63 lowercase letters, digits, '-', '_' or '.'"
            ),
        ))
    }
}

impl Identity {
    /// The URI written into the certificate.
    pub fn uri(&self) -> String {
        match self {
            Identity::Coordinator { name } => format!("{SCHEME}coordinator/{name}"),
            Identity::Agent { region, name } => format!("{SCHEME}agent/{region}/{name}"),
            Identity::Operator { name } => format!("{SCHEME}operator/{name}"),
        }
    }

    /// Reads an identity URI; None for anything that is not one.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(SCHEME)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let valid = |s: &str| check_label("", s).is_ok();
        match parts.as_slice() {
            ["coordinator", name] if valid(name) => Some(Identity::Coordinator {
                name: name.to_string(),
            }),
            ["agent", region, name] if valid(region) && valid(name) => Some(Identity::Agent {
                region: region.to_string(),
                name: name.to_string(),
            }),
            ["operator", name] if valid(name) => Some(Identity::Operator {
                name: name.to_string(),
            }),
            _ => None,
        }
    }

    /// The identity in a DER certificate, from its URI subject alternative name.
    pub fn from_der(der: &[u8]) -> Result<Identity> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
            Error::new(
                ErrorKind::Denied,
                format!("the peer certificate does not parse: {e}"),
            )
        })?;
        let san = cert.subject_alternative_name().ok().flatten();
        san.into_iter()
            .flat_map(|s| s.value.general_names.iter())
            .find_map(|n| match n {
                GeneralName::URI(uri) => Identity::from_uri(uri),
                _ => None,
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Denied,
                    "the peer certificate names no Seawall identity (seawall://...): issue it with `seawall certs`",
                )
            })
    }

    /// The role, as a word.
    pub fn role(&self) -> &'static str {
        match self {
            Identity::Coordinator { .. } => "coordinator",
            Identity::Agent { .. } => "agent",
            Identity::Operator { .. } => "operator",
        }
    }

    /// The holder's name.
    pub fn name(&self) -> &str {
        match self {
            Identity::Coordinator { name }
            | Identity::Agent { name, .. }
            | Identity::Operator { name } => name,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Agent { region, name } => write!(f, "agent {name} (region {region})"),
            other => write!(f, "{} {}", other.role(), other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_reject_strangers() {
        for id in [
            Identity::Coordinator { name: "c1".into() },
            Identity::Agent {
                region: "eu-west-1".into(),
                name: "db-1".into(),
            },
            Identity::Operator {
                name: "alice".into(),
            },
        ] {
            assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        }
        for bad in [
            "seawall://agent/eu",
            "seawall://agent/EU/x",
            "seawall://agent/eu/x/y",
            "seawall://root/x",
            "https://agent/eu/x",
            "seawall://operator/",
        ] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
        assert!(check_label("region", "eu west").is_err());
    }
}
