//! The kube-apiserver double answers like a real one (so tests that use it
//! through lite-apiserver mean something).

mod support;

use std::time::Duration;

use support::client::Client;
use support::double::{Double, Opts};
use support::kubectl::{Auth, Kubectl};
use support::pki::Pki;

#[test]
fn double_answers_like_an_apiserver() {
    let dir = support::temp_dir("double-smoke");
    let pki = Pki::generate(&dir);
    let mut double = Double::start(&pki, Opts::default());
    let node = Client::new(double.addr(), &pki.ca.pem, Some(&pki.node));
    let anon = Client::new(double.addr(), &pki.ca.pem, None);

    assert_eq!(anon.get("/readyz", &[]).text(), "ok");
    assert_eq!(anon.get("/api/v1/namespaces/edge/pods", &[]).status, 401);
    let list = node.get("/api/v1/namespaces/edge/pods", &[]);
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let missing = node.get("/api/v1/namespaces/edge/pods/nope", &[]);
    assert_eq!(
        (missing.status, missing.json()["reason"].as_str()),
        (404, Some("NotFound"))
    );

    // Paging.
    let p1 = node.get("/api/v1/namespaces/edge/pods?limit=2", &[]).json();
    let token = p1["metadata"]["continue"].as_str().unwrap().to_owned();
    assert_eq!(p1["metadata"]["remainingItemCount"], 1);
    let p2 = node
        .get(
            &format!("/api/v1/namespaces/edge/pods?limit=2&continue={token}"),
            &[],
        )
        .json();
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);

    // Watch: a change arrives as one event.
    let rv = double.current_rv();
    let mut w = node
        .open("GET", &format!("/api/v1/namespaces/edge/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=5"), &[], b"")
        .unwrap();
    double.apply(
        "/api/v1",
        "configmaps",
        "edge",
        "new-cm",
        serde_json::json!({"data": {"a": "b"}}),
    );
    let line = w.next_line(Duration::from_secs(5)).unwrap().unwrap();
    assert!(line.starts_with(r#"{"type":"ADDED","object":{"#), "{line}");

    // A token signed by the double authenticates; kubectl works directly.
    let token = double.sa_token("edge", "default", 600, true);
    let sa = Client::new(double.addr(), &pki.ca.pem, None);
    assert_eq!(
        sa.get(
            "/api/v1/namespaces/edge/configmaps",
            &[("Authorization", &format!("Bearer {token}"))]
        )
        .status,
        200
    );
    let k = Kubectl::new(
        &double.url(),
        &pki.ca.pem,
        Auth::Cert(pki.node.clone()),
        &dir,
    );
    let out = k.ok(&["get", "pods", "-n", "edge"]);
    assert!(out.contains("web-1") && out.contains("Pending"), "{out}");
    // (kubectl's typed `create configmap` sends protobuf, which the double
    // does not speak; manifests go as JSON.)
    let manifest = dir.join("cm.json");
    std::fs::write(&manifest, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"edge"},"data":{"a":"b"}}"#).unwrap();
    k.ok(&[
        "create",
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ]);
    assert!(double.get("/api/v1", "configmaps", "edge", "x").is_some());
    k.ok(&["delete", "configmap", "x", "-n", "edge"]);

    // Stop cuts connections; restart serves again on the same port.
    double.stop();
    assert!(anon.try_request("GET", "/readyz", &[], b"").is_err());
    double.restart();
    assert_eq!(anon.get("/readyz", &[]).text(), "ok");
}
