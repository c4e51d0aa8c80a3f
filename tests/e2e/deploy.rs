//! The deployment files ship configurations that the daemons accept: the
//! Kubernetes manifests are valid YAML, and the agent and coordinator
//! configurations in their ConfigMaps pass `--check` with certificates
//! issued the way the csi-driver names them (after the pod).

use crate::fixtures::bin;
use crate::fleet_fixture::Pki;
use std::path::Path;
use std::process::{Command, Output};

/// The text of `data.<key>` of the ConfigMap in a manifest, read with PyYAML
/// (installed with moto by scripts/setup.sh).
fn config_map_data(manifest: &Path, key: &str) -> String {
    let script = "import sys, yaml\n\
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n\
assert all('kind' in d and 'apiVersion' in d for d in docs), 'a document without kind/apiVersion'\n\
print(next(d['data'][sys.argv[2]] for d in docs if d['kind'] == 'ConfigMap'), end='')\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(manifest)
        .arg(key)
        .output()
        .expect("python3 (scripts/setup.sh installs it with moto)");
    assert!(
        out.status.success(),
        "{}: {}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The config with its `/etc/seawall/tls` files pointed at `name`'s issued files.
fn with_certs(config: &str, pki: &Pki, name: &str) -> String {
    let d = pki.dir.display();
    config
        .replace("/etc/seawall/tls/ca.crt", &format!("{d}/ca.pem"))
        .replace("/etc/seawall/tls/tls.crt", &format!("{d}/{name}.pem"))
        .replace("/etc/seawall/tls/tls.key", &format!("{d}/{name}.key"))
}

fn seawall(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Runs `seawall ARGS`, which must succeed; its standard output.
fn checked(args: &[&str]) -> String {
    let out = seawall(args);
    assert!(
        out.status.success(),
        "seawall {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `seawall ARGS`, which must fail; its one error line.
fn refused(args: &[&str]) -> String {
    let out = seawall(args);
    assert!(!out.status.success(), "seawall {args:?} succeeded");
    crate::fixtures::one_error_line(&out)
}

#[test]
fn kubernetes_agent_config_passes_check_as_the_pod_named_in_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let pod = "seawall-agent-x7k2p";
    pki.certs(&["agent", "--name", pod, "--region", "eu-west-1"]);
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/agent-daemonset.yaml");
    // The repository: a local one with its password file, in place of the
    // manifest's bucket.
    let repo = tmp.path().join("repo");
    let pw = tmp.path().join("repository.password");
    std::fs::write(&pw, "k8s test password").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let init = seawall(&[
        "-q",
        "-r",
        repo.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "init",
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let text = with_certs(&config_map_data(&manifest, "agent.toml"), &pki, pod)
        .replace("s3://seawall-eu-west-1/fleet", repo.to_str().unwrap())
        .replace("/etc/seawall/repository/password", pw.to_str().unwrap())
        .replace("s3_region = \"eu-west-1\"\n", "");
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, &text).unwrap();
    let config = config.to_str().unwrap();

    let text = checked(&["agent", "--config", config, "--id", pod, "--check"]);
    assert!(
        text.contains(&format!("agent {pod} in region eu-west-1"))
            && text.contains("opens (0 snapshots)")
            && text.contains("node-data (files)"),
        "{text}"
    );
    // A wrong repository password shows at --check, not at the first backup.
    std::fs::write(&pw, "not the password").unwrap();
    let err = refused(&["agent", "--config", config, "--id", pod, "--check"]);
    assert!(
        err.contains("does not open") && err.contains("password"),
        "{err}"
    );
    // Another pod's name with this certificate is refused, naming both.
    let err = refused(&[
        "agent",
        "--config",
        config,
        "--id",
        "seawall-agent-other",
        "--check",
    ]);
    assert!(
        err.contains(pod) && err.contains("seawall-agent-other"),
        "{err}"
    );
}

#[test]
fn kubernetes_coordinator_config_passes_check_with_the_pod_name_and_address() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let pod = "seawall-coordinator-1";
    pki.certs(&["coordinator", "--name", pod, "--host", "localhost"]);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes/coordinator-statefulset.yaml");
    // The manifest's etcd members, replaced by one started here that, like
    // the manifest's, serves TLS and requires client certificates. Seawall's
    // CA signs its certificate; the pod's certificate is the client's.
    pki.certs(&["coordinator", "--name", "etcd", "--host", "127.0.0.1"]);
    let d = &pki.dir;
    let etcd = crate::etcd_fixture::EtcdCluster::start_tls(
        &tmp.path().join("etcd"),
        1,
        crate::etcd_fixture::EtcdTls {
            ca: d.join("ca.pem"),
            cert: d.join("etcd.pem"),
            key: d.join("etcd.key"),
            client_cert: d.join(format!("{pod}.pem")),
            client_key: d.join(format!("{pod}.key")),
        },
    );
    let manifest_endpoints = "\"https://etcd-0.etcd.seawall.svc:2379\", \"https://etcd-1.etcd.seawall.svc:2379\", \"https://etcd-2.etcd.seawall.svc:2379\"";
    let text = with_certs(&config_map_data(&manifest, "coordinator.toml"), &pki, pod);
    assert!(text.contains(manifest_endpoints), "{text}");
    let text = text
        .replace(manifest_endpoints, &format!("\"{}\"", etcd.endpoints()[0]))
        .replace(
            "/etc/seawall/etcd/ca.crt",
            &format!("{}/ca.pem", d.display()),
        )
        .replace(
            "/etc/seawall/etcd/tls.crt",
            &format!("{}/{pod}.pem", d.display()),
        )
        .replace(
            "/etc/seawall/etcd/tls.key",
            &format!("{}/{pod}.key", d.display()),
        );
    let config = tmp.path().join("coordinator.toml");
    std::fs::write(&config, &text).unwrap();
    let variant = |name: &str, text: String| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let check = |path: &Path| {
        refused(&[
            "coordinator",
            "--config",
            path.to_str().unwrap(),
            "--id",
            pod,
            "--check",
        ])
    };
    // Without the client certificate, etcd refuses the replica.
    let at = text.find("[etcd]").expect("[etcd] section");
    let etcd_part: Vec<&str> = text[at..]
        .lines()
        .filter(|l| !l.starts_with("cert = ") && !l.starts_with("key = "))
        .collect();
    let anonymous = variant(
        "anonymous.toml",
        format!("{}{}\n", &text[..at], etcd_part.join("\n")),
    );
    let err = check(&anonymous);
    assert!(
        err.contains("does not answer") && err.contains("client certificates"),
        "{err}"
    );
    // Plain text is refused unless allowed, naming the setting.
    let plain = variant(
        "plain.toml",
        text.replace("https://127.0.0.1", "http://127.0.0.1"),
    );
    let err = check(&plain);
    assert!(
        err.contains("plain text") && err.contains("allow_plaintext"),
        "{err}"
    );
    let address = format!("{pod}.seawall-coordinator.seawall.svc:7443");
    let text = checked(&[
        "coordinator",
        "--config",
        config.to_str().unwrap(),
        "--id",
        pod,
        "--advertise",
        &address,
        "--check",
    ]);
    assert!(
        text.contains(&format!("replica {pod} advertised as {address}"))
            && text.contains("1 schedule(s)")
            && text.contains(&format!(
                "etcd {} (reachable; no leader yet)",
                etcd.endpoints()[0]
            )),
        "{text}"
    );
    // An etcd that does not answer shows at --check.
    let dead = tmp.path().join("dead.toml");
    let dead_port = crate::fixtures::free_port();
    std::fs::write(
        &dead,
        std::fs::read_to_string(&config).unwrap().replace(
            &etcd.endpoints()[0],
            &format!("https://127.0.0.1:{dead_port}"),
        ),
    )
    .unwrap();
    let err = refused(&[
        "coordinator",
        "--config",
        dead.to_str().unwrap(),
        "--id",
        pod,
        "--check",
    ]);
    assert!(
        err.contains("does not answer") || err.contains("unavailable"),
        "{err}"
    );
    // Another replica's name with this certificate is refused.
    let err = refused(&[
        "coordinator",
        "--config",
        config.to_str().unwrap(),
        "--id",
        "seawall-coordinator-2",
        "--check",
    ]);
    assert!(
        err.contains(pod) && err.contains("seawall-coordinator-2"),
        "{err}"
    );
    // The same file without --dev's [dev] section cannot run as --dev.
    let err = refused(&[
        "coordinator",
        "--config",
        config.to_str().unwrap(),
        "--id",
        pod,
        "--dev",
        "--check",
    ]);
    assert!(err.contains("[dev]"), "{err}");
}

#[test]
fn the_issuer_policy_signs_what_the_manifests_ask_and_no_operator_identity() {
    // Each csi volume's request is matched against the CertificateRequestPolicy
    // objects the way approver-policy does (wildcards, usages a subset), with
    // ${POD_NAME} as the pods would be named; forged requests match none.
    let script = r#"
import sys, yaml, fnmatch
def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]
policies = [d for d in load(sys.argv[1]) if d['kind'] == 'CertificateRequestPolicy']
def allowed(req):
    for p in policies:
        a = p['spec']['allowed']
        ok = all(any(fnmatch.fnmatchcase(u, v) for v in a.get('uris', {}).get('values', [])) for u in req['uris'])
        ok = ok and all(any(fnmatch.fnmatchcase(d, v) for v in a.get('dnsNames', {}).get('values', [])) for d in req['dns'])
        ok = ok and fnmatch.fnmatchcase(req['cn'], a.get('commonName', {}).get('value', ''))
        ok = ok and set(req['usages']) <= set(a.get('usages', []))
        if ok:
            return p['metadata']['name']
    return None
requests = []
for path, pod in ((sys.argv[2], 'seawall-agent-x7k2p'), (sys.argv[3], 'seawall-coordinator-1')):
    for d in load(path):
        spec = d.get('spec', {}).get('template', {}).get('spec', {})
        for v in spec.get('volumes', []):
            csi = v.get('csi')
            if not csi or csi.get('driver') != 'csi.cert-manager.io':
                continue
            attrs = {k.split('/')[-1]: str(x).replace('${POD_NAME}', pod) for k, x in csi['volumeAttributes'].items()}
            split = lambda k: [x.strip() for x in attrs.get(k, '').split(',') if x.strip()]
            requests.append({'uris': split('uri-sans'), 'dns': split('dns-names'), 'cn': attrs.get('common-name', ''), 'usages': split('key-usages')})
assert len(requests) == 2, requests
for r in requests:
    assert allowed(r), ('a manifest asks for what no policy allows', r)
for forged in ('seawall://operator/admin', 'seawall://agent/us-east-1/x', 'seawall://coordinator/evil'):
    r = {'uris': [forged], 'dns': [], 'cn': 'seawall-coordinator-0', 'usages': ['digital signature']}
    assert not allowed(r), ('a forged identity is allowed', forged, allowed(r))
print('ok')
"#;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("certificate-policy.yaml"))
        .arg(dir.join("agent-daemonset.yaml"))
        .arg(dir.join("coordinator-statefulset.yaml"))
        .output()
        .expect("python3 (scripts/setup.sh installs it with moto)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shipped_alerting_rules_pass_promtool_and_name_metrics_seawall_exports() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let promtool = crate::fixtures::require("promtool");
    for args in [
        vec!["check", "rules", "seawall-rules.yml"],
        vec!["test", "rules", "seawall-rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every metric a rule names is one the code exports (a renamed metric
    // would leave an alert that can never fire).
    let rules = std::fs::read_to_string(dir.join("seawall-rules.yml")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = String::new();
    for sub in ["coordinator/src", "agent/src", "common/src"] {
        for file in crate::fixtures::files_under(&root.join(sub))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        {
            code.push_str(&std::fs::read_to_string(file).unwrap());
        }
    }
    let mut names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("seawall_"))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        assert!(
            code.contains(&format!("\"{name}\"")),
            "the rules use {name}, which no code exports"
        );
    }
}
