//! The first check on every call, run on the request's headers before its
//! body is read or decoded: a caller with no certificate and no token, or
//! with a revoked certificate, is refused UNAUTHENTICATED at the cost of a
//! header parse. The services then check what the identity may do.

use crate::fleet::auth::{Denied, OperatorAuth};
use crate::fleet::revocation::Revocations;
use seawall_common::tls::certinfo::fingerprint;
use std::sync::Arc;
use tonic::{Request, Status};

/// Who may get as far as a service.
#[derive(Clone)]
pub struct Gate {
    revoked: Arc<Revocations>,
    /// Token checks for the operator API; `None` where only certificates count.
    token: Option<OperatorAuth>,
}

impl Gate {
    /// Certificates only (the agent stream).
    pub fn certificates(revoked: Arc<Revocations>) -> Gate {
        Gate {
            revoked,
            token: None,
        }
    }

    /// Certificates, or the operator token (the operator API).
    pub fn operators(revoked: Arc<Revocations>, auth: OperatorAuth) -> Gate {
        Gate {
            revoked,
            token: Some(auth),
        }
    }
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(leaf) = req.peer_certs().and_then(|c| c.first().cloned()) {
            let fp = fingerprint(&leaf);
            if self.revoked.is_revoked(&fp) {
                metrics::counter!(crate::transport::metrics::CALLS_REFUSED_TOTAL, "why" => "revoked").increment(1);
                return Err(Denied::Revoked(format!(
                    "certificate {fp} is revoked: use a newly issued one (seawall certs)"
                ))
                .into());
            }
            return Ok(req);
        }
        if let Some(auth) = &self.token {
            if auth.has_token() {
                // A wrong token is refused here too, before the body.
                return auth.check(&req).map(|_| req).map_err(Status::from);
            }
        }
        metrics::counter!(crate::transport::metrics::CALLS_REFUSED_TOTAL, "why" => "anonymous")
            .increment(1);
        Err(Denied::NoCredentials(
            "no credentials: connect with a Seawall certificate (seawall certs), or give the operator token to the operator API".into(),
        )
        .into())
    }
}
