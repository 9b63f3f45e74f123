//! The static ARM binaries, run where they will run (under qemu-user),
//! against the kube-apiserver double: `--version`, a real proxied GET over
//! TLS, the upstream cut, and the same GET answered from the cache.
//!
//! Needs `cross/build.sh` first, so it is ignored by plain `cargo test`;
//! `tests/all.sh` builds the binaries and runs it with `--ignored`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::client::Client;
use support::daemon::Daemon;
use support::double::{Double, Opts};
use support::pki::Pki;

const KUBELET: (&str, &str) = ("User-Agent", "kubelet/v1.36.2 (linux/arm64) kubernetes/abc");

fn run_target(target: &str, qemu: &str) {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/dist/lite-apiserver-{target}"));
    assert!(
        bin.is_file(),
        "{} is missing: run cross/build.sh",
        bin.display()
    );
    let version = Command::new(qemu)
        .arg(&bin)
        .arg("--version")
        .output()
        .expect("qemu runs");
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("lite-apiserver "),
        "{version:?}"
    );

    let dir = support::temp_dir(&format!("qemu-{target}"));
    let pki = Pki::generate(&dir.join("pki"));
    let mut double = Double::start(&pki, Opts::default());
    let mut args = vec![
        "--server".to_owned(),
        double.url(),
        "--health-interval".into(),
        "1".into(),
    ];
    args.extend(pki.proxy_flags());
    let proxy = Daemon::start_with(
        PathBuf::from(qemu),
        vec![bin.display().to_string()],
        &dir.join("cache"),
        &args,
    );
    let node = Client::new(proxy.addr, &pki.ca.pem, Some(&pki.node));
    let path = "/api/v1/namespaces/edge/configmaps/app-config";
    let online = node.get(path, &[KUBELET]);
    assert_eq!(online.status, 200, "{}", proxy.log_text());
    assert_eq!(
        double
            .requests()
            .iter()
            .rfind(|r| r.target == path)
            .and_then(|r| r.cn.clone())
            .as_deref(),
        Some("system:node:edge-1")
    );
    let entry = proxy
        .cache_dir
        .join("kubelet/api/v1/namespaces/edge/configmaps/app-config@.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !entry.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    double.stop();
    let offline = node.get(path, &[KUBELET]);
    assert_eq!(
        (offline.status, offline.body),
        (200, online.body),
        "{}",
        proxy.log_text()
    );
}

#[test]
#[ignore = "needs cross/build.sh; run by tests/all.sh"]
fn aarch64_binary_under_qemu() {
    run_target("aarch64-unknown-linux-musl", "qemu-aarch64-static");
}

#[test]
#[ignore = "needs cross/build.sh; run by tests/all.sh"]
fn armv7_binary_under_qemu() {
    run_target("armv7-unknown-linux-musleabihf", "qemu-arm-static");
}
