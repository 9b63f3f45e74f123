//! `packaging/kubernetes/serving-cert.sh`: the key and CSR it makes for the
//! names InClusterConfig pods dial, and its CertificateSigningRequest round
//! trip against the double, with the test acting as kube-controller-manager's
//! `kubernetes.io/kubelet-serving` signer (openssl with the test cluster CA).

mod support;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::double::{Double, Opts};
use support::kubectl::{Auth, Kubectl};
use support::pki::{Ca, Pki};

const CERTS: &str = "/apis/certificates.k8s.io/v1";
const CSRS: &str = "certificatesigningrequests";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/serving-cert.sh")
}

/// The script as a child, stdout/stderr to files in `dir` (so a full pipe
/// never blocks it), HOME in `dir` so kubectl's cache stays there.
fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(script())
        .args(args)
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("script.out")).unwrap())
        .stderr(File::create(dir.join("script.err")).unwrap())
        .spawn()
        .expect("serving-cert.sh runs")
}

/// Waits for the child with a deadline; returns its status and stderr.
fn finish(dir: &Path, mut child: Child, within: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(dir.join("script.err")).unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(dir.join("script.err")).unwrap();
            panic!("serving-cert.sh still running after {within:?}; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the script to completion (30 s at most).
fn run(dir: &Path, args: &[&str]) -> (ExitStatus, String) {
    finish(dir, spawn(dir, args), Duration::from_secs(30))
}

/// Runs openssl; requires success; returns stdout.
fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn openssl_text(args: &[&str]) -> String {
    String::from_utf8(openssl(args, b"")).unwrap()
}

/// The SANs in `openssl ... -noout -text` output, as openssl prints them.
fn sans(text: &str) -> Vec<String> {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "X509v3 Subject Alternative Name:" {
            let next = lines.next().unwrap_or_default();
            return next.trim().split(", ").map(str::to_owned).collect();
        }
    }
    panic!("no subjectAltName in:\n{text}")
}

fn public_key(args: &[&str]) -> Vec<u8> {
    openssl(args, b"")
}

fn default_sans(service_ip: &str, domain: &str) -> Vec<String> {
    [
        "IP Address:169.254.2.1".to_owned(),
        format!("IP Address:{service_ip}"),
        "IP Address:127.0.0.1".to_owned(),
        "DNS:kubernetes".to_owned(),
        "DNS:kubernetes.default".to_owned(),
        "DNS:kubernetes.default.svc".to_owned(),
        format!("DNS:kubernetes.default.svc.{domain}"),
    ]
    .to_vec()
}

#[test]
fn csr_without_kubeconfig_carries_the_names_pods_dial() {
    let dir = support::temp_dir("serving-cert-csr");
    let out = dir.join("out");
    let out_s = out.display().to_string();
    let (status, err) = run(&dir, &["--out-dir", &out_s, "--node-name", "edge-1"]);
    assert!(status.success(), "serving-cert.sh failed: {err}");
    let key = out.join("serving.key");
    let csr = out.join("serving.csr");
    let key_s = key.display().to_string();
    let csr_s = csr.display().to_string();
    assert!(!out.join("serving.crt").exists(), "no certificate offline");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is private");

    let text = openssl_text(&["req", "-in", &csr_s, "-noout", "-text"]);
    assert!(
        text.contains("Subject: O = system:nodes, CN = system:node:edge-1"),
        "subject the kubelet-serving signer requires:\n{text}"
    );
    assert_eq!(sans(&text), default_sans("10.96.0.1", "cluster.local"));
    assert!(
        text.contains("NIST CURVE: P-256"),
        "EC P-256 by default:\n{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(
        !text.contains("Key Encipherment"),
        "EC keys only sign:\n{text}"
    );
    openssl(&["req", "-in", &csr_s, "-noout", "-verify"], b"");
    assert_eq!(
        public_key(&["req", "-in", &csr_s, "-noout", "-pubkey"]),
        public_key(&["pkey", "-in", &key_s, "-pubout"]),
        "the CSR is for the written key"
    );
}

#[test]
fn rsa_custom_names_and_key_reuse() {
    let dir = support::temp_dir("serving-cert-rsa");
    let dir_s = dir.display().to_string();
    let args = [
        "--out-dir",
        &dir_s,
        "--rsa",
        "--node-name",
        "gw-7",
        "--incluster-ip",
        "169.254.20.1",
        "--service-ip",
        "10.43.0.1",
        "--service-ip",
        "fd00:10:43::1",
        "--cluster-domain",
        "edge.internal",
        "--ip",
        "127.0.0.1",
        "--dns",
        "lite.edge.internal",
    ];
    let (status, err) = run(&dir, &args);
    assert!(status.success(), "serving-cert.sh failed: {err}");
    let csr_s = dir.join("serving.csr").display().to_string();
    let text = openssl_text(&["req", "-in", &csr_s, "-noout", "-text"]);
    assert!(text.contains("Public-Key: (2048 bit)"), "RSA 2048:\n{text}");
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );
    assert!(text.contains("CN = system:node:gw-7"), "{text}");
    assert_eq!(
        sans(&text),
        [
            "IP Address:169.254.20.1",
            "IP Address:10.43.0.1",
            "IP Address:FD00:10:43:0:0:0:0:1",
            "IP Address:127.0.0.1",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.edge.internal",
            "DNS:lite.edge.internal",
        ],
        "each name once, in order"
    );

    // A second run keeps the key (a renewal must not break the running cert).
    let key = dir.join("serving.key");
    let before = std::fs::read(&key).unwrap();
    let (status, err) = run(&dir, &args);
    assert!(status.success(), "second run failed: {err}");
    assert!(err.contains("keeping the existing key"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before, "key kept");
    let mut fresh = args.to_vec();
    fresh.push("--new-key");
    let (status, err) = run(&dir, &fresh);
    assert!(status.success(), "--new-key run failed: {err}");
    assert_ne!(
        std::fs::read(&key).unwrap(),
        before,
        "--new-key replaces it"
    );
}

#[test]
fn bad_flags_fail_with_one_clear_line_and_write_nothing() {
    let dir = support::temp_dir("serving-cert-flags");
    let out = dir.join("out");
    let out_s = out.display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--incluster-ip", "300.1.2.3"],
            "--incluster-ip: '300.1.2.3' is not an IP address",
        ),
        (
            &["--service-ip", "kubernetes"],
            "--service-ip: 'kubernetes' is not an IP address",
        ),
        (
            &["--dns", "Bad_Name"],
            "--dns: 'Bad_Name' is not a lowercase DNS name",
        ),
        (&["--approve"], "--approve needs --kubeconfig"),
        (
            &["--timeout", "soon"],
            "--timeout: 'soon' is not a positive number",
        ),
        (
            &["--expiration-seconds", "60"],
            "--expiration-seconds: '60' must be a number >= 600",
        ),
        (
            &["--kubeconfig", "/nonexistent/kubeconfig"],
            "--kubeconfig: cannot read",
        ),
        (&["--node-name"], "--node-name needs a value"),
        (&["--bogus"], "unknown option '--bogus'"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--out-dir", &out_s];
        all.extend_from_slice(args);
        let (status, err) = run(&dir, &all);
        assert!(!status.success(), "{args:?} must fail");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got:\n{err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err:?}"
        );
        assert!(!out.join("serving.key").exists(), "{args:?} wrote a key");
    }
    let help = Command::new(script()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--kubeconfig",
        "--approve",
        "--rsa",
        "--service-ip",
        "--timeout",
    ] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
}

/// A double holding what a cluster has for this: the `kubernetes` Service
/// and `kube-root-ca.crt` (the CA pods trust, here `root`), and a
/// kubeconfig for an admin.
struct Cluster {
    pki: Pki,
    double: Double,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Cluster {
    fn new(name: &str, pods_trust_rogue: bool) -> Cluster {
        let dir = support::temp_dir(name);
        let pki = Pki::generate(&dir.join("pki"));
        let double = Double::start(&pki, Opts::default());
        double.apply(
            "/api/v1",
            "services",
            "default",
            "kubernetes",
            json!({"spec": {"clusterIP": "10.43.0.1", "clusterIPs": ["10.43.0.1"], "type": "ClusterIP",
                   "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
        );
        let root = if pods_trust_rogue {
            &pki.rogue_ca
        } else {
            &pki.ca
        };
        double.apply(
            "/api/v1",
            "configmaps",
            "default",
            "kube-root-ca.crt",
            json!({"data": {"ca.crt": std::fs::read_to_string(&root.pem).unwrap()}}),
        );
        let admin = pki
            .ca
            .client(&pki.dir, "kubernetes-admin", Some("system:masters"));
        let kubeconfig = dir.join("admin.conf");
        Kubectl::new(&double.url(), &pki.ca.pem, Auth::Cert(admin), &dir)
            .write_kubeconfig(&kubeconfig);
        Cluster {
            pki,
            double,
            kubeconfig,
            dir,
        }
    }

    fn csr(&self, name: &str) -> Option<Value> {
        self.double.get(CERTS, CSRS, "", name)
    }

    /// Waits (bounded) until the CSR `name` exists and `ready` holds for
    /// it, failing at once if the script exits first.
    fn wait_for(
        &self,
        script: &mut Child,
        name: &str,
        what: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(csr) = self.csr(name).filter(|c| ready(c)) {
                return csr;
            }
            let stderr =
                || std::fs::read_to_string(self.dir.join("script.err")).unwrap_or_default();
            if let Some(status) = script.try_wait().unwrap() {
                panic!(
                    "serving-cert.sh exited ({status}) before {name} {what}:\n{}",
                    stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "CertificateSigningRequest {name} not {what} within 30 s; it is {:?}; stderr so far:\n{}",
                self.csr(name),
                stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What kube-controller-manager's csrsigning controller does: sign the
    /// request with `ca` and put the PEM in status.certificate.
    fn sign(&self, mut csr: Value, ca: &Ca) {
        let name = csr["metadata"]["name"].as_str().unwrap().to_owned();
        let request = csr["spec"]["request"].as_str().unwrap();
        let pem = openssl(&["base64", "-d", "-A"], request.as_bytes());
        let csr_file = self.dir.join("signer.csr");
        std::fs::write(&csr_file, pem).unwrap();
        let ca_key = self.dir.join("signer-ca.key");
        std::fs::write(&ca_key, ca.key_pem()).unwrap();
        let cert = openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr_file.display().to_string(),
                "-CA",
                &ca.pem.display().to_string(),
                "-CAkey",
                &ca_key.display().to_string(),
                "-set_serial",
                "4242",
                "-days",
                "2",
                "-copy_extensions",
                "copyall",
            ],
            b"",
        );
        let b64 = String::from_utf8(openssl(&["base64", "-A"], &cert)).unwrap();
        csr["status"]["certificate"] = json!(b64.trim());
        self.double.apply(CERTS, CSRS, "", &name, csr);
    }

    fn args<'a>(&'a self, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--out-dir",
            out,
            "--node-name",
            "edge-1",
        ];
        args.extend_from_slice(extra);
        args
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn approved(csr: &Value) -> bool {
    csr["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Approved" && c["status"] == "True")
    })
}

#[test]
fn kubeconfig_submits_approves_and_writes_the_cluster_signed_cert() {
    let c = Cluster::new("serving-cert-signed", false);
    let out = c.dir.join("out");
    let out_s = out.display().to_string();
    let name = "lite-apiserver-serving-edge-1";
    let mut child = spawn(
        &c.dir,
        &c.args(
            &out_s,
            &[
                "--approve",
                "--timeout",
                "60",
                "--expiration-seconds",
                "86400",
            ],
        ),
    );

    // The signer's side: the request arrives, approved by the script.
    let csr = c.wait_for(&mut child, name, "approved", approved);
    assert_eq!(csr["spec"]["signerName"], "kubernetes.io/kubelet-serving");
    assert_eq!(
        csr["spec"]["usages"],
        json!(["digital signature", "server auth"])
    );
    assert_eq!(csr["spec"]["expirationSeconds"], 86400);
    assert!(csr["status"].get("certificate").is_none());
    c.sign(csr, &c.pki.ca);

    let (status, err) = finish(&c.dir, child, Duration::from_secs(60));
    assert!(status.success(), "serving-cert.sh failed: {err}");
    assert!(
        err.contains("kubernetes Service ClusterIP: 10.43.0.1"),
        "{err}"
    );
    assert!(
        err.contains("verified against default/kube-root-ca.crt"),
        "{err}"
    );
    let cert = out.join("serving.crt").display().to_string();
    let key = out.join("serving.key").display().to_string();
    let verify = openssl_text(&[
        "verify",
        "-CAfile",
        &c.pki.ca.pem.display().to_string(),
        &cert,
    ]);
    assert!(verify.trim().ends_with(": OK"), "{verify}");
    let text = openssl_text(&["x509", "-in", &cert, "-noout", "-text"]);
    assert_eq!(
        sans(&text),
        default_sans("10.43.0.1", "cluster.local"),
        "the ClusterIP read from default/kubernetes, not the 10.96.0.1 default"
    );
    assert_eq!(
        public_key(&["x509", "-in", &cert, "-noout", "-pubkey"]),
        public_key(&["pkey", "-in", &key, "-pubout"]),
        "the certificate is for the written key"
    );

    // Renewal with a new key: the running pair stays until the new
    // certificate is there, then both are replaced.
    let old_key = std::fs::read(&key).unwrap();
    let old_cert = std::fs::read(&cert).unwrap();
    let mut child = spawn(
        &c.dir,
        &c.args(
            &out_s,
            &[
                "--approve",
                "--timeout",
                "60",
                "--new-key",
                "--csr-name",
                "renewal",
            ],
        ),
    );
    let csr = c.wait_for(&mut child, "renewal", "approved", approved);
    assert_eq!(
        std::fs::read(&key).unwrap(),
        old_key,
        "old key kept while waiting"
    );
    c.sign(csr, &c.pki.ca);
    let (status, err) = finish(&c.dir, child, Duration::from_secs(60));
    assert!(status.success(), "renewal failed: {err}");
    assert_ne!(std::fs::read(&key).unwrap(), old_key, "new key in place");
    assert_ne!(std::fs::read(&cert).unwrap(), old_cert, "new cert in place");
    assert!(!out.join("serving.key.new").exists());
    assert_eq!(
        public_key(&["x509", "-in", &cert, "-noout", "-pubkey"]),
        public_key(&["pkey", "-in", &key, "-pubout"]),
        "the renewed certificate is for the new key"
    );

    let approvals: Vec<_> = c
        .double
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.target.contains(&format!("/{CSRS}/{name}/approval")))
        .map(|r| (r.method.clone(), header(&r.headers, "content-type")))
        .collect();
    assert_eq!(
        approvals,
        [(
            "PATCH".to_owned(),
            Some("application/strategic-merge-patch+json".to_owned())
        )],
        "approved once, through the approval subresource"
    );
}

#[test]
fn a_denied_request_fails_with_its_reason() {
    let c = Cluster::new("serving-cert-denied", false);
    let out = c.dir.join("out");
    let out_s = out.display().to_string();
    let name = "lite-apiserver-serving-edge-1";
    let mut child = spawn(&c.dir, &c.args(&out_s, &["--timeout", "60"]));
    let mut csr = c.wait_for(&mut child, name, "created", |_| true);
    assert!(!approved(&csr), "no --approve: left for an admin");
    csr["status"]["conditions"] = json!([{"type": "Denied", "status": "True", "reason": "WrongNode",
        "message": "not a node of this cluster", "lastUpdateTime": "2026-11-23T07:50:37Z"}]);
    c.double.apply(CERTS, CSRS, "", name, csr);
    let (status, err) = finish(&c.dir, child, Duration::from_secs(60));
    assert!(!status.success(), "a denied request must fail");
    assert!(
        err.contains("was denied: Denied WrongNode: not a node of this cluster"),
        "{err}"
    );
    assert!(!out.join("serving.crt").exists());

    // The same name again: the cluster says AlreadyExists, the script says what to do.
    let (status, err) = run(&c.dir, &c.args(&out_s, &["--timeout", "5"]));
    assert!(!status.success());
    assert!(err.contains(&format!("kubectl delete csr {name}")), "{err}");
}

#[test]
fn an_unapproved_request_times_out() {
    let c = Cluster::new("serving-cert-timeout", false);
    let out = c.dir.join("out");
    let out_s = out.display().to_string();
    let started = Instant::now();
    let (status, err) = run(
        &c.dir,
        &c.args(&out_s, &["--timeout", "2", "--csr-name", "slow-one"]),
    );
    assert!(!status.success());
    assert!(
        err.contains("timed out after 2s waiting for slow-one"),
        "{err}"
    );
    assert!(
        err.contains("kubectl certificate approve slow-one"),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited the timeout"
    );
    assert!(c.csr("slow-one").is_some(), "the request was submitted");
    assert!(!out.join("serving.crt").exists());
}

#[test]
fn a_cert_pods_would_not_trust_is_refused() {
    // kube-root-ca.crt (pods' ca.crt) is another CA than the signer's.
    let c = Cluster::new("serving-cert-untrusted", true);
    let out = c.dir.join("out");
    let out_s = out.display().to_string();
    let name = "lite-apiserver-serving-edge-1";
    let mut child = spawn(&c.dir, &c.args(&out_s, &["--approve", "--timeout", "60"]));
    let csr = c.wait_for(&mut child, name, "approved", approved);
    c.sign(csr, &c.pki.ca);
    let (status, err) = finish(&c.dir, child, Duration::from_secs(60));
    assert!(!status.success(), "must refuse: {err}");
    assert!(
        err.contains("does not verify against default/kube-root-ca.crt"),
        "{err}"
    );
    assert!(!out.join("serving.crt").exists(), "nothing written");
}
