//! Bad flags or files: one line on stderr naming the flag, exit code 2,
//! nothing written.

mod support;

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(support::daemon::binary())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let dir = support::temp_dir("flags");
    let pki = support::pki::Pki::generate(&dir);
    let cache = dir.join("never-created");
    let cache_flag = cache.display().to_string();
    let ca = pki.ca.pem.display().to_string();
    let cert = pki.proxy.cert.display().to_string();
    let key = pki.proxy.key.display().to_string();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a pem").unwrap();
    let garbage = garbage.display().to_string();
    let base = [
        "--cache-dir",
        &cache_flag,
        "--tls-cert-file",
        &cert,
        "--tls-private-key-file",
        &key,
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--bogus"], "--bogus"),
        (vec!["--server", "http://10.0.0.1"], "--server"),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                "/nonexistent/ca.pem",
            ],
            "--ca-file",
        ),
        (
            vec!["--server", "https://10.0.0.1:6443", "--ca-file", &garbage],
            "--ca-file",
        ),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                &ca,
                "--listen",
                "localhost",
            ],
            "--listen",
        ),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                &ca,
                "--cache-ttl",
                "soon",
            ],
            "--cache-ttl",
        ),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                &ca,
                "--identity",
                "only-one-file",
            ],
            "--identity",
        ),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                &ca,
                "--proxy",
                "socks5://x",
            ],
            "--proxy",
        ),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                &ca,
                "--health-interval",
                "x",
            ],
            "--health-interval",
        ),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                &ca,
                "--upstream-idle-timeout",
                "0",
            ],
            "--upstream-idle-timeout",
        ),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                &ca,
                "--dial-rate",
                "-1",
            ],
            "--dial-rate",
        ),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                &ca,
                "--resume-spread",
                "later",
            ],
            "--resume-spread",
        ),
        (
            vec![
                "--server",
                "https://10.0.0.1:6443",
                "--ca-file",
                &ca,
                "--workers",
                "0",
            ],
            "--workers",
        ),
    ];
    for (args, flag) in cases {
        let mut all: Vec<&str> = base.to_vec();
        all.extend(args.iter());
        let (code, _, stderr) = run(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!cache.exists(), "{args:?} wrote the cache dir");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("lite-apiserver "));
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--cache-agents") && out.contains("--identity"));
}
