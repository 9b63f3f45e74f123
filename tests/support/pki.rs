//! Test PKI: a cluster CA, serving certs for the double and for
//! lite-apiserver, client certs, and an unrelated CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// A CA that can issue certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// PEM file of the CA certificate.
    pub pem: PathBuf,
}

/// A certificate/key pair on disk.
#[derive(Clone, Debug)]
pub struct Pair {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Pair {
    /// `CERT,KEY` for `--identity`.
    pub fn identity_flag(&self) -> String {
        format!("{},{}", self.cert.display(), self.key.display())
    }
}

impl Ca {
    /// A new self-signed CA written to `dir/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name}-ca"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca { cert, key, pem }
    }

    /// The CA's private key as PEM (for tests that sign with openssl,
    /// e.g. acting as kube-controller-manager's CSR signer).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A serving certificate for 127.0.0.1/localhost (+ extra DNS names).
    pub fn server(&self, dir: &Path, name: &str, dns: &[&str]) -> Pair {
        let mut sans = vec!["localhost".to_owned()];
        sans.extend(dns.iter().map(|s| s.to_string()));
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        self.issue(dir, name, params)
    }

    /// [`Ca::server`] plus IP address SANs (e.g. an address inside a test's
    /// network namespace).
    pub fn server_with_ips(
        &self,
        dir: &Path,
        name: &str,
        dns: &[&str],
        ips: &[std::net::IpAddr],
    ) -> Pair {
        let mut sans = vec!["localhost".to_owned()];
        sans.extend(dns.iter().map(|s| s.to_string()));
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        self.issue(dir, name, params)
    }

    /// A client certificate with CN `cn` and organization `org`.
    pub fn client(&self, dir: &Path, cn: &str, org: Option<&str>) -> Pair {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        if let Some(o) = org {
            dn.push(DnType::OrganizationName, o);
        }
        params.distinguished_name = dn;
        let file = cn.replace([':', '/'], "_");
        self.issue(dir, &file, params)
    }

    fn issue(&self, dir: &Path, file: &str, mut params: CertificateParams) -> Pair {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pair = Pair {
            cert: dir.join(format!("{file}-{n}.crt")),
            key: dir.join(format!("{file}-{n}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Everything a test needs.
pub struct Pki {
    /// The cluster CA (signs the double's cert, lite-apiserver's serving cert, clients).
    pub ca: Ca,
    /// The double's serving pair.
    pub upstream: Pair,
    /// lite-apiserver's serving pair.
    pub proxy: Pair,
    /// The node's client cert (CN system:node:edge-1, O system:nodes).
    pub node: Pair,
    /// kube-proxy's client cert.
    pub kube_proxy: Pair,
    /// A CA nobody trusts, and a client cert it issued.
    pub rogue_ca: Ca,
    /// A client cert from the rogue CA with the node's CN.
    pub rogue_node: Pair,
    /// The directory.
    pub dir: PathBuf,
}

impl Pki {
    /// Generates all of it into `dir`.
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = Ca::new(dir, "cluster");
        let rogue_ca = Ca::new(dir, "rogue");
        Pki {
            upstream: ca.server(
                dir,
                "kube-apiserver",
                &["kubernetes", "kubernetes.default.svc"],
            ),
            proxy: ca.server(dir, "lite-apiserver", &["kubernetes.default.svc"]),
            node: ca.client(dir, "system:node:edge-1", Some("system:nodes")),
            kube_proxy: ca.client(dir, "system:kube-proxy", None),
            rogue_node: rogue_ca.client(dir, "system:node:edge-1", Some("system:nodes")),
            ca,
            rogue_ca,
            dir: dir.to_owned(),
        }
    }
}

impl Pki {
    /// The flags that make lite-apiserver trust this PKI: upstream CA,
    /// serving pair and client CA.
    pub fn trust_flags(&self) -> Vec<String> {
        [
            "--ca-file",
            &self.ca.pem.display().to_string(),
            "--tls-cert-file",
            &self.proxy.cert.display().to_string(),
            "--tls-private-key-file",
            &self.proxy.key.display().to_string(),
            "--client-ca-file",
            &self.ca.pem.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// [`Pki::trust_flags`] plus the node identity.
    pub fn proxy_flags(&self) -> Vec<String> {
        let mut flags = self.trust_flags();
        flags.extend(["--identity".to_owned(), self.node.identity_flag()]);
        flags
    }
}

impl Pki {
    /// Re-issues the double's serving pair with `ips` as extra IP SANs, so
    /// lite-apiserver can verify a double listening on, say, the host end of
    /// a namespace's veth link. Call before `Double::start_on`.
    pub fn reissue_upstream_with_ips(&mut self, ips: &[std::net::IpAddr]) {
        self.upstream = self.ca.server_with_ips(
            &self.dir,
            "kube-apiserver",
            &["kubernetes", "kubernetes.default.svc"],
            ips,
        );
    }
}

impl Pki {
    /// Re-issues lite-apiserver's serving pair with `ips` as extra IP SANs
    /// (e.g. the `--incluster-address` IP pods dial, 169.254.2.1) and the
    /// names pods may use for the `kubernetes` Service. Call before the
    /// daemon starts.
    pub fn reissue_proxy_with_ips(&mut self, ips: &[std::net::IpAddr]) {
        self.proxy = self.ca.server_with_ips(
            &self.dir,
            "lite-apiserver",
            &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ips,
        );
    }
}
