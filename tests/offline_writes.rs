//! An offline write fails at once and says why: no `Retry-After` (client-go
//! would retry it ten times and then report its rate limiter instead of
//! the outage). How fast is measured by the bench; this test checks the
//! exit status and the message kubectl prints.

mod support;

use support::setup::Setup;

#[test]
fn offline_kubectl_create_fails_with_the_reason() {
    let mut s = Setup::new("offline-writes");
    let k = s.kubectl();
    // Online once, so kubectl's discovery is cached (by kubectl and by us).
    k.ok(&["get", "configmaps", "-n", "edge"]);
    let manifest = s.dir.join("cm.json");
    std::fs::write(
        &manifest,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"offline-new","namespace":"edge"},"data":{"a":"b"}}"#,
    )
    .unwrap();

    s.double.stop();
    s.wait_online(false);
    let out = k.run(&[
        "create",
        "-f",
        manifest.to_str().unwrap(),
        "--request-timeout=10s",
        // client-side validation would first download /openapi/v3, which
        // this double does not serve: the write itself is under test
        "--validate=false",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "created offline?\n{stderr}");
    assert!(
        stderr.contains("unreachable") && stderr.contains("offline"),
        "kubectl should print the outage as the reason:\n{stderr}"
    );
    assert!(
        !stderr.contains("rate limiter"),
        "client-go retried the write until its timeout:\n{stderr}"
    );
}
