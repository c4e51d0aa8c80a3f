//! The pages a person reads, rendered by headless Chromium: what the DOM
//! shows, a screenshot, and that the page fetches nothing.

use crate::browser_fixture::render;
use crate::topology::{strings, Scenario, Service, Topology};
use seawall_proto::v1::{Drill, FailoverStep};

fn journal() -> Drill {
    let step = |name: &str, state: &str, from: i64, to: i64| FailoverStep {
        name: name.into(),
        state: state.into(),
        started_unix_ms: 1_796_000_000_000 + from,
        ended_unix_ms: 1_796_000_000_000 + to,
        detail: format!("{name}: as the journal says"),
        evidence: [("snapshot".to_string(), "3fa9c1d2".to_string())].into(),
        attempts: 1,
    };
    Drill {
        id: "shop-complete-outage-1796000000000".into(),
        scenario: "complete outage".into(),
        service: "shop".into(),
        kind: "restore".into(),
        region: "eu-west-1".into(),
        rto_objective_ms: 60_000,
        rpo_objective_ms: 3_600_000,
        steps: vec![
            step("restore db", "done", 0, 48_000),
            step("check db", "done", 48_000, 66_000),
            step("restore cache", "done", 0, 9_000),
            step("teardown", "done", 66_000, 67_500),
        ],
        state: "finished".into(),
        verdict: "missed".into(),
        reasons: vec!["RTO 1m 7s is over the objective of 1m".into()],
        rto_ms: Some(67_500),
        rpo_ms: Some(1_200_000),
        started_unix_ms: 1_796_000_000_000,
        finished_unix_ms: 1_796_000_067_500,
        requested_by: "schedule nightly".into(),
        ..Default::default()
    }
}

#[test]
fn the_drill_report_renders_its_verdict_objectives_and_phases_and_fetches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, seawall_coordinator::drills::report::html(&journal())).unwrap();
    let png = dir.path().join("report.png");
    let seen = render(&page, Some(&png));

    assert!(
        seen.dom
            .contains("<span id=\"verdict\" class=\"verdict missed\">MISSED</span>"),
        "{}",
        seen.dom
    );
    for (objective, row) in [
        (
            "RTO",
            "<td>RTO</td><td>1m</td><td>1m 7s</td><td class=\"miss\">missed</td>",
        ),
        (
            "RPO",
            "<td>RPO</td><td>1h</td><td>20m</td><td class=\"ok\">met</td>",
        ),
    ] {
        assert!(
            seen.dom
                .contains(&format!("data-objective=\"{objective}\">{row}")),
            "{objective} row missing from:\n{}",
            seen.dom
        );
    }
    for phase in ["restore db", "check db", "restore cache", "teardown"] {
        assert!(
            seen.dom
                .contains(&format!("data-step=\"{phase}\" data-state=\"done\"")),
            "phase {phase} missing from the timeline"
        );
    }
    // SEAWALL_KEEP_SCREENSHOT=FILE keeps the picture, to look at it.
    if let Ok(keep) = std::env::var("SEAWALL_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    let shot = std::fs::read(&png).unwrap();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
        "no screenshot ({} bytes)",
        shot.len()
    );
    assert_eq!(seen.page_requests, Vec::<String>::new());

    // The check can fail: a page with one picture from elsewhere is seen
    // asking for it.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<!doctype html><p>x</p><img src=\"http://seawall-control.invalid/x.png\">",
    )
    .unwrap();
    let seen = render(&control, None);
    assert!(
        seen.page_requests
            .iter()
            .any(|r| r.contains("seawall-control.invalid")),
        "{:?}",
        seen.page_requests
    );
}

/// What an HTTPS GET got: status, headers (lowercase names) and body.
pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

/// GET `path` from the status page on `port`, trusting the test CA, with
/// a client certificate (`holder`'s files in the PKI directory) and extra
/// header lines when given.
pub(crate) fn https_get(
    pki: &std::path::Path,
    port: u16,
    path: &str,
    holder: Option<&str>,
    extra: &str,
) -> Got {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match holder {
        Some(h) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(pki.join(format!("{h}.pem")))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(pki.join(format!("{h}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{extra}\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        Got {
            status,
            headers,
            body: body.to_string(),
        }
    })
}

#[test]
fn the_status_page_shows_the_fleet_and_its_drills_to_operators_only() {
    use crate::fleet_fixture::{
        backup_now, eventually, op, op_json, start_agent, start_replica, Pki,
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let token = "status-page-token-4f1c";
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let port = crate::fixtures::free_port();
    let data = dir.join("data");
    crate::fixtures::make_tree(&data, 20, 256 * 1024, 3);
    let store = format!(
        "operator_token_file = \"{}\"\n[dev]\nstate = \"{}\"\n",
        token_file.display(),
        dir.join("state.redb").display()
    );
    let rest = format!(
        "[status_page]\nlisten = \"127.0.0.1:{port}\"\nrefresh = \"5s\"\n{}",
        Topology::new()
            .region("west", "primary")
            .region("east", "cold")
            .service(
                Service::new("docs")
                    .set("rpo", "1h")
                    .set("backups", strings(&["files"]))
                    .repository("west", "a1", None)
            )
            .scenario(Scenario::new("complete outage", "docs", "restore").set("region", "west"))
            .build()
    );
    let c = start_replica(&pki, dir, "c1", &store, &rest, true);
    let addr = c.address();
    let _a1 = start_agent(&pki, dir, "a1", "west", std::slice::from_ref(&addr), &data);
    eventually(30, "agent a1 to connect", || {
        (op_json(&pki, &addr, &["agents"]).as_array()?.len() == 1).then_some(())
    });
    backup_now(&pki, &addr, "west", "files");
    let out = op(&pki, &addr, &["drill", "run", "complete outage", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drill: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(drill["verdict"], "met");
    let id = drill["id"].as_str().unwrap();

    // Nobody gets in without an operator's certificate or the token.
    let pkidir = &pki.dir;
    let anonymous = https_get(pkidir, port, "/", None, "");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert!(
        anonymous.body.contains("no operator credentials"),
        "{}",
        anonymous.body
    );
    assert!(!anonymous.body.contains("data-service"));
    let wrong = https_get(pkidir, port, "/", None, "Authorization: Bearer nope\r\n");
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("the operator token is wrong"),
        "{}",
        wrong.body
    );
    let agent = https_get(pkidir, port, "/", Some("a1"), "");
    assert_eq!(agent.status, 403, "{}", agent.body);
    let report_anonymous = https_get(pkidir, port, &format!("/drills/{id}"), None, "");
    assert_eq!(report_anonymous.status, 401);
    // An operator's certificate, or the token, does.
    let operator = https_get(pkidir, port, "/", Some("ops"), "");
    assert_eq!(operator.status, 200, "{}", operator.body);
    assert!(operator.body.contains("data-service=\"docs\""));
    let csp = operator
        .headers
        .iter()
        .find(|(k, _)| k == "content-security-policy")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let by_token = https_get(pkidir, port, "/?token=status-page-token-4f1c", None, "");
    assert_eq!(by_token.status, 303);
    let cookie = by_token
        .headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Secure"),
        "{cookie}"
    );
    let header = |got: &Got, name: &str| {
        got.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(&by_token, "location").as_deref(), Some("/"));
    // The redirect never leaves the page's own addresses, and a caller let
    // in by its certificate cannot plant a cookie through the query.
    let away = https_get(
        pkidir,
        port,
        "//evil.example/x?token=status-page-token-4f1c",
        None,
        "",
    );
    assert_eq!(away.status, 303);
    assert_eq!(header(&away, "location").as_deref(), Some("/"));
    let planted = https_get(pkidir, port, "/?token=planted", Some("ops"), "");
    assert_eq!(planted.status, 303);
    assert_eq!(header(&planted, "set-cookie"), None);

    // In a browser: the token once, then the page from its cookie.
    let shot = dir.join("status.png");
    let direct = format!("127.0.0.1:{port}");
    let seen = crate::browser_fixture::render_url(
        &format!("https://127.0.0.1:{port}/?token={token}"),
        Some(&shot),
        Some(&direct),
    );
    let dom = &seen.dom;
    assert!(dom.contains("<h1>Seawall status</h1>"), "{dom}");
    assert!(dom.contains("data-region=\"west\""), "{dom}");
    assert!(dom.contains("data-region=\"east\""), "{dom}");
    assert!(
        dom.contains("<tr data-agent=\"a1\"><td>a1</td><td>files</td>"),
        "{dom}"
    );
    assert!(dom.contains("<span class=\"ok\">connected</span>"), "{dom}");
    assert!(
        dom.contains("<tr data-backup=\"west/files\"><td><code>files</code></td><td>west</td><td class=\"ok\">"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            "<tr data-drill=\"complete outage\"><td>docs</td><td><a href=\"/drills/{id}\">complete outage</a></td><td><span class=\"pill met\">MET</span></td>"
        )),
        "{dom}"
    );
    assert!(
        dom.contains("<p id=\"failover\">None running.</p>"),
        "{dom}"
    );
    assert!(
        dom.contains("http-equiv=\"refresh\" content=\"5\""),
        "{dom}"
    );
    assert!(
        seen.page_requests.is_empty(),
        "the status page made requests: {:?}",
        seen.page_requests
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    if let Some(keep) = std::env::var_os("SEAWALL_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    // The coordinator serves the drill's report page too.
    let report = crate::browser_fixture::render_url(
        &format!("https://127.0.0.1:{port}/drills/{id}?token={token}"),
        None,
        Some(&direct),
    );
    assert!(
        report
            .dom
            .contains("<span id=\"verdict\" class=\"verdict met\">MET</span>"),
        "{}",
        report.dom
    );
    assert!(report
        .dom
        .contains("data-step=\"files: restore\" data-state=\"done\""));
    assert!(
        report.page_requests.is_empty(),
        "{:?}",
        report.page_requests
    );
}
