//! The status page over HTTPS: the replica's own certificate (renewals
//! picked up as for gRPC), HTTP/1.1, and only operators let in, by their
//! client certificate (checked against the CA and the revocation list) or
//! the operator token. A browser gives the token once as `?token=` and is
//! sent back to the same page without it, holding it in a cookie that
//! scripts cannot read and that goes to this origin only. Every page is
//! self-contained, and the content security policy forbids it to fetch
//! anything.

use super::page;
use crate::drills::report::escape;
use crate::fleet::auth::Denied;
use crate::jobs::Coordinator;
use crate::transport::server_tls::ServerTls;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use seawall_common::tls::certinfo::fingerprint;
use seawall_common::tls::Identity;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once, past their handshake; more wait for a slot.
const MAX_CONNECTIONS: usize = 64;
/// Handshakes under way at once; a socket over it is closed at once. Kept
/// apart from the served slots, so sockets that never finish a handshake
/// (each held up to the handshake timeout) cannot lock the page out.
const MAX_HANDSHAKES: usize = 1024;
/// The cookie a browser keeps the token in.
const COOKIE: &str = "seawall_token";

/// Binds `[status_page] listen` and serves until the replica stops.
pub async fn start(coord: Arc<Coordinator>, tls: Arc<ServerTls>) -> anyhow::Result<()> {
    let Some(config) = coord.config.status_page.clone() else {
        return Ok(());
    };
    let listener = TcpListener::bind(&config.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "the status page cannot listen on {} ({e}): change [status_page] listen",
            config.listen
        )
    })?;
    tracing::info!(listen = %config.listen, "status page served over HTTPS");
    let refresh = config.refresh.as_secs().max(1);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = coord.root.cancelled() => break,
                a = listener.accept() => a,
            };
            let Ok((tcp, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(handshaking) = handshakes.clone().try_acquire_owned() else {
                continue;
            };
            let (coord, tls, slots) = (coord.clone(), tls.clone(), slots.clone());
            tokio::spawn(async move {
                connection(coord, tls, tcp, refresh, handshaking, slots).await;
            });
        }
    });
    Ok(())
}

/// One connection: the handshake within the replica's handshake timeout
/// (holding a handshake slot), then requests (holding a served slot) until
/// the browser closes it or the replica stops.
async fn connection(
    coord: Arc<Coordinator>,
    tls: Arc<ServerTls>,
    tcp: tokio::net::TcpStream,
    refresh: u64,
    handshaking: tokio::sync::OwnedSemaphorePermit,
    slots: Arc<Semaphore>,
) {
    let mut config = (*tls.config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let Ok(Ok(stream)) =
        tokio::time::timeout(coord.config.handshake_timeout, acceptor.accept(tcp)).await
    else {
        return;
    };
    drop(handshaking);
    let Ok(_slot) = slots.acquire_owned().await else {
        return;
    };
    let peer: Option<Vec<u8>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    let served = coord.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (coord, peer) = (served.clone(), peer.clone());
        async move { Ok::<_, Infallible>(respond(&coord, peer.as_deref(), refresh, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = coord.root.cancelled() => {}
    }
}

/// The token a request carries: `?token=`, the cookie, or a bearer header;
/// and whether it came in the query (to be moved into the cookie).
fn token_of(req: &Request<Incoming>) -> (Option<String>, bool) {
    if let Some(q) = req.uri().query() {
        if let Some(t) = q.split('&').find_map(|kv| kv.strip_prefix("token=")) {
            return (Some(seawall_common::percent::decode(t)), true);
        }
    }
    let headers = req.headers();
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return (Some(t.to_string()), false);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        });
    (cookie.map(|c| seawall_common::percent::decode(&c)), false)
}

fn page(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    r
}

fn refusal(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    page(
        status,
        format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Seawall: not signed in</title></head><body><h1 id=\"refused\">{}</h1><p>{}</p><p>Open this page with an operator certificate in the browser, or once as <code>/?token=TOKEN</code> with the operator token.</p></body></html>\n",
            status.as_u16(),
            escape(why)
        ),
    )
}

/// `path` when it is one of this page's own (`/`, `/drills/ID`), else `/`.
fn own_page(path: &str) -> &str {
    let drill = path.strip_prefix("/drills/").is_some_and(|id| {
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    });
    if path == "/" || drill {
        path
    } else {
        "/"
    }
}

/// Answers one request.
async fn respond(
    coord: &Coordinator,
    peer: Option<&[u8]>,
    refresh: u64,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "the status page is read with GET",
        );
    }
    let identity = match peer {
        Some(der) => {
            let fp = fingerprint(der);
            if coord.revoked.is_revoked(&fp) {
                return refusal(
                    StatusCode::UNAUTHORIZED,
                    &format!("certificate {fp} is revoked: use a newly issued one (seawall certs)"),
                );
            }
            Identity::from_der(der).ok()
        }
        None => None,
    };
    let (token, in_query) = token_of(&req);
    let who = match coord.operator_auth.who(identity, token.as_deref()) {
        Ok(who) => who,
        Err(d @ Denied::NotOperator(_)) => return refusal(StatusCode::FORBIDDEN, d.message()),
        Err(d) => return refusal(StatusCode::UNAUTHORIZED, d.message()),
    };
    let path = req.uri().path().to_string();
    if in_query {
        // The token leaves the address bar (and history) for a cookie, and
        // the browser goes back to the page it asked for: one of this
        // page's own, never another site (`//host/...`).
        let mut r = page(StatusCode::SEE_OTHER, String::new());
        if let Ok(v) = http::HeaderValue::from_str(own_page(&path)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        // Only the operator token itself goes into the cookie (a caller
        // let in by its certificate may have put anything in the query).
        let valid = coord.operator_auth.who(None, token.as_deref()).is_ok();
        let cookie = format!(
            "{COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict",
            token
                .filter(|_| valid)
                .unwrap_or_default()
                .replace(|c: char| c.is_ascii_control() || c == ';', "")
        );
        if valid {
            if let Ok(v) = http::HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
        return r;
    }
    tracing::debug!(%who, %path, "status page");
    if path == "/" {
        let snapshot = page::gather(coord).await;
        return page(StatusCode::OK, page::html(&snapshot, refresh));
    }
    if let Some(id) = path.strip_prefix("/drills/") {
        return match crate::drills::journal::load(coord, id).await {
            Ok(Some((d, _))) => page(StatusCode::OK, crate::drills::report::html(&d)),
            Ok(None) => refusal(StatusCode::NOT_FOUND, &format!("no drill {id}")),
            Err(e) => refusal(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    }
    refusal(
        StatusCode::NOT_FOUND,
        "the status page is at / and drill reports at /drills/ID",
    )
}
