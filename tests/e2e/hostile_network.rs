//! A coordinator under a hostile network: idle sockets that never start a
//! handshake, anonymous clients declaring huge messages, authenticated ones
//! declaring messages over the limit. The replica must keep serving its
//! agents and operators, refuse each caller from what it has sent so far,
//! and not grow its memory with what the callers declare.

use crate::fleet_fixture::{eventually, op, op_json, start_agent, start_replica, Pki};
use bytes::Bytes;
use http_body::Frame;
use std::convert::Infallible;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::codegen::Service;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const IDLE_SOCKETS: usize = 1500;
const HUGE_STREAMS: usize = 50;
const DECLARED: u32 = 60 * 1024 * 1024;

async fn channel(pki: &Pki, addr: &str, holder: Option<&str>) -> Channel {
    let read = |f: &str| std::fs::read(pki.dir.join(f)).expect("pki file");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("127.0.0.1");
    if let Some(h) = holder {
        tls = tls.identity(Identity::from_pem(
            read(&format!("{h}.pem")),
            read(&format!("{h}.key")),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect")
}

/// Starts a call whose body is only a gRPC length prefix declaring
/// [`DECLARED`] bytes, then nothing, ever; returns the grpc-status the
/// server answers with (without the client sending any more).
async fn declare_huge(mut channel: Channel, path: &str) -> i32 {
    let mut prefix = vec![0u8];
    prefix.extend(DECLARED.to_be_bytes());
    let frames = tokio_stream::iter(vec![Ok::<_, Infallible>(Frame::data(Bytes::from(prefix)))])
        .chain(tokio_stream::pending());
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("request");
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("ready");
    let response = tokio::time::timeout(Duration::from_secs(10), channel.call(request))
        .await
        .expect("the server answers without the declared body")
        .expect("response");
    if let Some(code) = response.headers().get("grpc-status") {
        return code.to_str().expect("ascii").parse().expect("code");
    }
    let collected = tokio::time::timeout(
        Duration::from_secs(10),
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .expect("the server ends the call without the declared body")
    .expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    trailers
        .get("grpc-status")
        .expect("grpc-status")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("code")
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn idle_sockets_and_anonymous_huge_messages_do_not_stop_the_coordinator() {
    // The test holds 1,500 sockets itself.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let store = format!(
        "handshake_timeout = \"3s\"\n[dev]\nstate = \"{}\"\n",
        dir.join("state.redb").display()
    );
    let c = start_replica(&pki, dir, "c1", &store, "", true);
    let addr = c.address();
    let before = peak_rss_kib(c.daemon.pid());

    // Sockets that connect and never send a ClientHello.
    let idle: Vec<TcpStream> = (0..IDLE_SOCKETS)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", c.port))
                .unwrap_or_else(|e| panic!("idle socket {i}: {e}"))
        })
        .collect();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // Anonymous TLS clients declaring 60 MiB: refused from the headers.
        let mut calls = Vec::new();
        for i in 0..HUGE_STREAMS {
            let ch = channel(&pki, &addr, None).await;
            let path = if i % 2 == 0 {
                "/seawall.v1.OperatorService/Status"
            } else {
                "/seawall.v1.AgentService/Session"
            };
            calls.push(tokio::spawn(declare_huge(ch, path)));
        }
        for call in calls {
            assert_eq!(
                call.await.expect("task"),
                tonic::Code::Unauthenticated as i32
            );
        }
        // An operator declaring more than a message may be: refused from
        // the length prefix, the body never sent.
        let ops = channel(&pki, &addr, Some("ops")).await;
        let code = declare_huge(ops, "/seawall.v1.OperatorService/ListJobs").await;
        assert_eq!(code, tonic::Code::OutOfRange as i32);
    });

    // With all of that open, the operator API answers in time...
    let started = Instant::now();
    let status = op_json(&pki, &addr, &["status"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "status took {:?}",
        started.elapsed()
    );
    assert_eq!(status["is_leader"], true, "{status}");
    // ...and an agent connects.
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data");
    let _agent = start_agent(
        &pki,
        dir,
        "eu-1",
        "eu-west-1",
        std::slice::from_ref(&addr),
        &data,
    );
    eventually(20, "the agent to connect", || {
        let agents = op_json(&pki, &addr, &["agents"]);
        (agents.as_array().map(Vec::len) == Some(1)).then_some(())
    });

    // The idle sockets were closed at the handshake deadline.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    match first.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("an idle socket should be closed by the server, got {other:?}"),
    }
    let peak = peak_rss_kib(c.daemon.pid());
    eprintln!("coordinator peak memory: {before} KiB before the flood, {peak} KiB after");
    assert!(
        peak < 200 * 1024,
        "coordinator peak memory {peak} KiB (was {before} KiB before the flood)"
    );
    drop(idle);
    // Still serving, and it said why it refused the callers.
    assert!(op(&pki, &addr, &["status"]).status.success());
    let metrics = crate::fleet::http_get(c.metrics_port, "/metrics");
    assert!(
        metrics.contains("seawall_tls_handshakes_failed_total{why=\"timeout\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("seawall_calls_refused_total{why=\"anonymous\"}"),
        "{metrics}"
    );
    assert!(!c.daemon.log_text().contains("panicked"));
}

/// A TLS client without a certificate that finishes its handshake and
/// then says nothing, ever (or None when the server closed it first).
async fn silent_tls(
    pki: &Pki,
    port: u16,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .ok()
}

#[test]
fn silent_tls_clients_and_raw_sockets_lock_no_operator_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let page = crate::fixtures::free_port();
    let store = format!(
        "max_connections = 20\nmax_anonymous_connections = 4\n[dev]\nstate = \"{}\"\n",
        dir.join("state.redb").display()
    );
    let rest = format!("[status_page]\nlisten = \"127.0.0.1:{page}\"\n");
    let c = start_replica(&pki, dir, "c1", &store, &rest, true);
    let addr = c.address();

    // 200 TLS clients without a certificate finish their handshakes and
    // then send nothing.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let silent: Vec<_> = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..200 {
            held.push(silent_tls(&pki, c.port).await);
        }
        held
    });
    // 64 raw sockets on the status page that never start a handshake.
    let raw: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(("127.0.0.1", page)).expect("raw socket"))
        .collect();

    // The operators still get in at once.
    let started = Instant::now();
    let status = op_json(&pki, &addr, &["status"]);
    let took = started.elapsed();
    assert_eq!(status["is_leader"], true, "{status}");
    assert!(took < Duration::from_secs(2), "status took {took:?}");
    let started = Instant::now();
    let got = crate::pages::https_get(&pki.dir, page, "/", Some("ops"), "");
    let page_took = started.elapsed();
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(
        page_took < Duration::from_secs(2),
        "the status page took {page_took:?}"
    );
    eprintln!(
        "with 200 silent TLS clients and 64 raw sockets: status in {took:?}, the status page in {page_took:?}; {} of the TLS clients still held",
        silent.iter().filter(|s| s.is_some()).count()
    );
    // Over the anonymous cap they were closed after their handshake; the
    // rest when they owed the HTTP/2 preface too long.
    let metrics = crate::fleet::http_get(c.metrics_port, "/metrics");
    assert!(
        metrics.contains("seawall_tls_handshakes_failed_total{why=\"anonymous_cap\"}"),
        "{metrics}"
    );
    eventually(30, "the silent clients within the cap to be closed", || {
        crate::fleet::http_get(c.metrics_port, "/metrics")
            .contains("seawall_tls_handshakes_failed_total{why=\"silent\"}")
            .then_some(())
    });
    drop(silent);
    drop(raw);
    assert!(!c.daemon.log_text().contains("panicked"));
}
