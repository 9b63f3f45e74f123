//! Client identities: per-client upstream credentials, certificate
//! rotation, offline reads bound to the caller's credential, CONNECT
//! proxies and server failover.

mod support;

use std::time::{Duration, Instant};

use support::client::Client;
use support::daemon::Daemon;
use support::double::{sha256_hex, Double, Opts};
use support::kubectl::{Auth, Kubectl};
use support::pki::Pki;
use support::setup::Setup;

const KUBELET: (&str, &str) = ("User-Agent", "kubelet/v1.36.2 (linux/arm64) kubernetes/abc");

fn opts() -> Opts {
    Opts {
        tokens: vec![
            ("static-token-a".into(), "alice".into()),
            ("static-token-b".into(), "bob".into()),
        ],
        ..Opts::default()
    }
}

fn cert_sha(pem_path: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(pem_path).unwrap();
    sha256_hex(der.as_ref())
}

#[test]
fn each_client_reaches_the_cloud_as_itself() {
    let s = Setup::with("id-clients", opts(), &[]);
    s.double.clear_requests();
    // kubectl with the node's cert: the upstream sees the node identity.
    s.kubectl().ok(&["get", "pods", "-n", "edge"]);
    let reqs = s.double.requests();
    let list = reqs
        .iter()
        .find(|r| r.target.contains("/namespaces/edge/pods"))
        .unwrap();
    assert_eq!(list.cn.as_deref(), Some("system:node:edge-1"));
    // kubectl with a token: the token goes through, no client cert.
    s.double.clear_requests();
    Kubectl::new(
        &s.proxy.url(),
        &s.pki.ca.pem,
        Auth::Token("static-token-a".into()),
        &s.dir,
    )
    .ok(&["get", "cm", "-n", "edge"]);
    let reqs = s.double.requests();
    let r = reqs
        .iter()
        .find(|r| r.target.contains("/configmaps"))
        .unwrap();
    assert_eq!(
        (
            r.cn.as_deref(),
            r.authorization.as_deref(),
            r.user.as_deref()
        ),
        (None, Some("Bearer static-token-a"), Some("alice"))
    );
    // kube-proxy's cert has no --identity: forwarded anonymously, and the
    // upstream refuses it (it brought no token).
    let kp = s.client(Some(&s.pki.kube_proxy)).get(
        "/api/v1/namespaces/edge/configmaps",
        &[("User-Agent", "kube-proxy/v1")],
    );
    assert_eq!(kp.status, 401);
    // A cert from another CA fails the handshake.
    let rogue = Client::new(s.proxy.addr, &s.pki.ca.pem, Some(&s.pki.rogue_node));
    assert!(rogue.try_request("GET", "/api", &[], b"").is_err());
}

#[test]
fn identity_rotation_by_symlink_swap_keeps_watches() {
    let dir = support::temp_dir("id-rotation");
    let pki = Pki::generate(&dir.join("pki"));
    let mut double = Double::start(&pki, opts());
    let _ = &mut double;
    let combined = |pair: &support::pki::Pair, name: &str| {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&pair.cert).unwrap()
            + &std::fs::read_to_string(&pair.key).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    };
    let first = combined(&pki.node, "kubelet-client-2026-01.pem");
    let second_pair = pki
        .ca
        .client(&dir, "system:node:edge-1", Some("system:nodes"));
    let second = combined(&second_pair, "kubelet-client-2026-02.pem");
    let current = dir.join("kubelet-client-current.pem");
    std::os::unix::fs::symlink(&first, &current).unwrap();
    let identity = format!("{},{}", current.display(), current.display());
    let proxy = Daemon::start(
        &dir.join("cache"),
        &[
            vec!["--server".to_owned(), double.url()],
            pki.trust_flags(),
            vec!["--identity".to_owned(), identity],
        ]
        .concat(),
    );
    let node = Client::new(proxy.addr, &pki.ca.pem, Some(&pki.node));
    assert_eq!(
        node.get("/api/v1/namespaces/edge/pods", &[KUBELET]).status,
        200
    );
    let first_sha = cert_sha(&pki.node.cert);
    assert_eq!(
        double.requests().last().unwrap().cert_sha.as_deref(),
        Some(first_sha.as_str())
    );
    let rv = double.current_rv();
    let mut watch = node
        .open(
            "GET",
            &format!("/api/v1/namespaces/edge/configmaps?watch=true&resourceVersion={rv}"),
            &[KUBELET],
            b"",
        )
        .unwrap();

    // kubelet's rotation: a new file, then the symlink swapped atomically.
    let tmp_link = dir.join("kubelet-client-current.pem.tmp");
    std::os::unix::fs::symlink(&second, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &current).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !proxy.log_text().contains("certificates changed on disk") {
        assert!(
            Instant::now() < deadline,
            "rotation not noticed:\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The open watch still runs...
    double.apply(
        "/api/v1",
        "configmaps",
        "edge",
        "after-rotation",
        serde_json::json!({"data": {}}),
    );
    let line = watch.next_line(Duration::from_secs(5)).unwrap().unwrap();
    assert!(line.contains("after-rotation"));
    // ...and new upstream connections present the new certificate.
    double.clear_requests();
    assert_eq!(
        node.get("/api/v1/namespaces/edge/secrets", &[KUBELET])
            .status,
        200
    );
    let second_sha = cert_sha(&second_pair.cert);
    assert_eq!(
        double.requests().last().unwrap().cert_sha.as_deref(),
        Some(second_sha.as_str())
    );
    // A broken file keeps the current certificate.
    std::fs::write(&second, "garbage").unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert!(proxy.log_text().contains("keeping the old ones"));
    assert_eq!(
        node.get("/api/v1/namespaces/edge/secrets", &[KUBELET])
            .status,
        200
    );
}

#[test]
fn offline_reads_are_bound_to_the_credential() {
    let mut s = Setup::with("id-offline", opts(), &[]);
    let node = s.client(Some(&s.pki.node));
    let anon = s.client(None);
    assert_eq!(
        node.get("/api/v1/namespaces/edge/secrets/app-secret", &[KUBELET])
            .status,
        200
    );
    let sa1 = s.double.sa_token("edge", "default", 600, false);
    let sa2 = s.double.sa_token("edge", "default", 1200, true);
    let expired = s.double.sa_token("edge", "default", -10, false);
    let unknown = s.double.sa_token_unknown_key("edge", "default");
    let bearer = |t: &str| format!("Bearer {t}");
    let app = ("User-Agent", "edge-app/1.0");
    let cm = "/api/v1/namespaces/edge/configmaps/app-config";
    assert_eq!(
        anon.get(cm, &[app, ("Authorization", &bearer(&sa1))])
            .status,
        200
    );
    assert_eq!(
        anon.get(
            cm,
            &[
                ("User-Agent", "static/1"),
                ("Authorization", "Bearer static-token-a")
            ]
        )
        .status,
        200
    );
    std::thread::sleep(Duration::from_millis(300));
    s.double.stop();

    let secret = "/api/v1/namespaces/edge/secrets/app-secret";
    assert_eq!(
        node.get(secret, &[KUBELET]).status,
        200,
        "kubelet's own cert reads its entry"
    );
    let kp = s.client(Some(&s.pki.kube_proxy)).get(secret, &[KUBELET]);
    assert_eq!(
        (kp.status, kp.json()["reason"].as_str()),
        (403, Some("Forbidden")),
        "another cert faking kubelet"
    );
    assert_eq!(
        anon.get(secret, &[KUBELET]).status,
        403,
        "no credential at all"
    );
    assert_eq!(
        anon.get(
            secret,
            &[KUBELET, ("Authorization", "Bearer static-token-a")]
        )
        .status,
        403
    );
    // Service accounts: a rotated token of the same account reads; expired
    // or foreign-signed tokens do not.
    assert_eq!(
        anon.get(cm, &[app, ("Authorization", &bearer(&sa2))])
            .status,
        200
    );
    assert_eq!(
        anon.get(cm, &[app, ("Authorization", &bearer(&expired))])
            .status,
        403
    );
    assert_eq!(
        anon.get(cm, &[app, ("Authorization", &bearer(&unknown))])
            .status,
        403
    );
    // Static tokens read only what they cached themselves.
    assert_eq!(
        anon.get(
            cm,
            &[
                ("User-Agent", "static/1"),
                ("Authorization", "Bearer static-token-a")
            ]
        )
        .status,
        200
    );
    assert_eq!(
        anon.get(
            cm,
            &[
                ("User-Agent", "static/1"),
                ("Authorization", "Bearer static-token-b")
            ]
        )
        .status,
        403
    );

    // No bearer token is ever written to disk.
    let mut files = Vec::new();
    walk(&s.proxy.cache_dir, &mut files);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for secret in ["static-token-a", sa1.as_str(), sa2.as_str()] {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{} holds a token",
                f.display()
            );
        }
    }
}

#[test]
fn connect_proxy_and_server_failover() {
    let dir = support::temp_dir("id-failover");
    let pki = Pki::generate(&dir.join("pki"));
    let mut first = Double::start(&pki, opts());
    let second = Double::start(&pki, opts());
    let tunnel = support::connect::ConnectProxy::start();
    first.stop();
    let proxy = Daemon::start(
        &dir.join("cache"),
        &[
            vec![
                "--server".to_owned(),
                first.url(),
                "--server".into(),
                second.url(),
            ],
            vec![
                "--proxy".to_owned(),
                format!("http://{}", tunnel.addr),
                "--health-interval".into(),
                "1".into(),
            ],
            pki.proxy_flags(),
        ]
        .concat(),
    );
    let node = Client::new(proxy.addr, &pki.ca.pem, Some(&pki.node));
    let r = node.get("/api/v1/namespaces/edge/pods", &[KUBELET]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        second.requests().iter().any(|q| q.target.contains("/pods")),
        "served by the second server"
    );
    assert!(tunnel
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == &format!("CONNECT 127.0.0.1:{} HTTP/1.1", second.addr().port())));
    // The first server comes back: traffic returns to it.
    first.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        first.clear_requests();
        let _ = node.get("/api/v1/namespaces/edge/configmaps", &[KUBELET]);
        if first
            .requests()
            .iter()
            .any(|q| q.target.contains("/configmaps"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never returned to the first server:\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}
