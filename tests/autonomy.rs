//! The seed scenario with the real kubectl: online answers equal the
//! upstream's; with the upstream cut the same commands work from the cache,
//! writes get 503, watches stay open; after a restart while offline reads
//! still work; when the upstream returns, the proxy converges.

mod support;

use std::time::{Duration, Instant};

use support::setup::Setup;

fn names(list: &serde_json::Value) -> Vec<String> {
    let mut n: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn kubectl_reads_survive_an_outage_and_a_reboot() {
    let mut s = Setup::new("autonomy");
    let k = s.kubectl();

    // Online: the same answers as the upstream, through the node identity.
    let via = k.json(&["get", "pods", "-n", "edge"]);
    let direct = s.kubectl_direct().json(&["get", "pods", "-n", "edge"]);
    assert_eq!(names(&via), names(&direct));
    assert_eq!(names(&via), ["web-1", "web-2", "web-3"]);
    let cm = k.json(&["get", "cm", "app-config", "-n", "edge"]);
    assert_eq!(
        cm,
        s.kubectl_direct()
            .json(&["get", "cm", "app-config", "-n", "edge"])
    );
    let table_online = k.ok(&["get", "pods", "-n", "edge"]);
    assert!(s
        .double
        .requests()
        .iter()
        .any(|r| r.cn.as_deref() == Some("system:node:edge-1") && r.target.contains("/pods")));

    // Cut the link.
    s.double.stop();
    let started = Instant::now();
    let offline = k.json(&["get", "pods", "-n", "edge"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "offline answer took {:?}",
        started.elapsed()
    );
    assert_eq!(names(&offline), names(&via));
    assert_eq!(k.json(&["get", "cm", "app-config", "-n", "edge"]), cm);
    assert_eq!(
        k.ok(&["get", "pods", "-n", "edge"]),
        table_online,
        "kubectl's table view from the cache"
    );
    let write = k.run(&["delete", "cm", "app-config", "-n", "edge"]);
    assert!(!write.status.success());
    let err = String::from_utf8_lossy(&write.stderr);
    assert!(
        err.contains("unreachable") || err.contains("503") || err.contains("ServiceUnavailable"),
        "{err}"
    );
    let missing = k.run(&["get", "cm", "never-read", "-n", "edge"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NotFound")
            || String::from_utf8_lossy(&missing.stderr).contains("not found")
    );

    // Reboot while offline: the cache alone answers.
    s.proxy.restart();
    assert_eq!(names(&k.json(&["get", "pods", "-n", "edge"])), names(&via));
    assert_eq!(k.json(&["get", "cm", "app-config", "-n", "edge"]), cm);

    // The cloud returns; a delete there shows through the proxy.
    s.double.restart();
    s.wait_online(true);
    assert!(s.double.delete("/api/v1", "pods", "edge", "web-3"));
    let after = k.json(&["get", "pods", "-n", "edge"]);
    assert_eq!(names(&after), ["web-1", "web-2"]);
    // ...and the cache converged: offline again, the deleted pod stays gone.
    s.double.stop();
    assert_eq!(
        names(&k.json(&["get", "pods", "-n", "edge"])),
        ["web-1", "web-2"]
    );
}
