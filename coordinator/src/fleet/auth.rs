//! Who is calling: the identity in the peer's client certificate (verified
//! against the Seawall CA by the TLS layer), or for operators a bearer
//! token from a file. Everything else is refused.

use seawall_common::tls::Identity;
use tonic::Request;

/// The identity of the certificate the peer presented, if any.
pub fn peer_identity<T>(req: &Request<T>) -> Option<Identity> {
    let certs = req.peer_certs()?;
    let first = certs.first()?;
    Identity::from_der(first).ok()
}

/// Checks operator calls.
#[derive(Clone, Default)]
pub struct OperatorAuth {
    token: Option<String>,
}

impl std::fmt::Debug for OperatorAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    // Constant time in the token's content.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl OperatorAuth {
    /// Accepts operator certificates, and `token` when given.
    pub fn new(token: Option<String>) -> Self {
        OperatorAuth { token }
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The caller's name, or why it is refused (the API answers
    /// UNAUTHENTICATED or PERMISSION_DENIED).
    pub fn check<T>(&self, req: &Request<T>) -> Result<String, Denied> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        self.who(peer_identity(req), token)
    }

    /// The operator a certificate's identity or a presented token stands
    /// for; the gRPC API and the status page both ask this.
    pub fn who(&self, identity: Option<Identity>, token: Option<&str>) -> Result<String, Denied> {
        match identity {
            Some(Identity::Operator { name }) => return Ok(format!("operator {name}")),
            Some(other) => {
                return Err(Denied::NotOperator(format!(
                    "{other} may not use the operator API: use an operator certificate (seawall certs operator)"
                )))
            }
            None => {}
        }
        if let (Some(expected), Some(given)) = (&self.token, token) {
            if same(expected.as_bytes(), given.trim().as_bytes()) {
                return Ok("operator (token)".into());
            }
            return Err(Denied::WrongToken("the operator token is wrong".into()));
        }
        Err(Denied::NoCredentials(
            "no operator credentials: present an operator certificate (seawall certs operator) or the operator token".into(),
        ))
    }
}

/// Why a caller is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Neither a certificate nor a token.
    NoCredentials(String),
    /// A token, but not the operator token.
    WrongToken(String),
    /// A certificate of another role (an agent's).
    NotOperator(String),
    /// A certificate that was revoked.
    Revoked(String),
}

impl Denied {
    /// The sentence to show.
    pub fn message(&self) -> &str {
        match self {
            Denied::NoCredentials(m)
            | Denied::WrongToken(m)
            | Denied::NotOperator(m)
            | Denied::Revoked(m) => m,
        }
    }
}
