//! The official Python client (as a pod with InClusterConfig would use it:
//! a service-account token) reads through lite-apiserver online, and the
//! same reads work offline with a rotated token of the same account.

mod support;

use std::process::Command;

use support::setup::Setup;

fn python_list(s: &Setup, token: &str) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/list_pods.py");
    let out = Command::new("python3")
        .args([
            script,
            &s.proxy.url(),
            &s.pki.ca.pem.display().to_string(),
            token,
            "edge",
        ])
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'kubernetes'"),
        "the Python `kubernetes` package is missing: pip install kubernetes (tests/all.sh does)"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

#[test]
fn python_client_with_a_service_account_token() {
    let mut s = Setup::new("python");
    let token = s.double.sa_token("edge", "default", 600, false);
    let (ok, online) = python_list(&s, &token);
    assert!(ok, "{online}");
    assert_eq!(online, r#"["web-1", "web-2", "web-3"]"#);
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.double.stop();
    let rotated = s.double.sa_token("edge", "default", 1200, true);
    let (ok, offline) = python_list(&s, &rotated);
    assert!(ok, "{offline}\n{}", s.proxy.log_text());
    assert_eq!(offline, online);
    let (ok, other) = python_list(&s, &s.double.sa_token("kube-system", "admin", 600, false));
    assert!(
        !ok && other.contains("403"),
        "another service account reads nothing: {other}"
    );
}
