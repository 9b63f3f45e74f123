//! TLS material: PEM loading, the serving config, upstream client configs per
//! identity, and reload on change.
//!
//! All configs are built once per (re)load into a `Snapshot`; readers take
//! an `Arc` of the current one, so a reload never disturbs connections that
//! already have their config (linkerd's creds store does the same). Files
//! are polled by (mtime, size, inode) through symlinks, because kubelet
//! rotates `kubelet-client-current.pem` by swapping a symlink.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::Config;
use crate::pem::{load_certs, load_key, PemError};

impl From<PemError> for TlsError {
    fn from(e: PemError) -> Self {
        TlsError::Pem(e)
    }
}

/// Why TLS material could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be loaded.
    Pem(PemError),
    /// rustls refused the material (e.g. key does not match certificate).
    Rustls(&'static str, rustls::Error),
    /// The client CA bundle could not build a verifier.
    Verifier(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem(e) => write!(f, "{e}"),
            TlsError::Rustls(what, e) => write!(f, "{what}: {e}"),
            TlsError::Verifier(e) => write!(f, "--client-ca-file: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every config built from one read of the files.
struct Snapshot {
    server: Arc<ServerConfig>,
    anonymous: Arc<ClientConfig>,
    /// Identity CN -> client config presenting that identity.
    identities: HashMap<String, Arc<ClientConfig>>,
}

/// (mtime, size, inode) of a file, through symlinks.
type Stamp = (i64, u64, u64);

/// The TLS material and its reload state.
pub struct TlsMaterial {
    config: Config,
    current: RwLock<Arc<Snapshot>>,
    stamps: Mutex<Vec<Option<Stamp>>>,
    generation: AtomicU64,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Loads everything the config names.
    pub fn load(config: &Config) -> Result<TlsMaterial, TlsError> {
        let snapshot = build(config)?;
        Ok(TlsMaterial {
            stamps: Mutex::new(stamps(config)),
            config: config.clone(),
            current: RwLock::new(Arc::new(snapshot)),
            generation: AtomicU64::new(1),
        })
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The serving config for a new connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.snapshot().server.clone()
    }

    /// The client config for a caller whose verified cert has CN
    /// `client_cn`: the identity with that CN if there is one (returned as
    /// `Some(cn)`), else a config that presents no certificate.
    pub fn client_config(&self, client_cn: Option<&str>) -> (Option<String>, Arc<ClientConfig>) {
        let snap = self.snapshot();
        match client_cn.and_then(|cn| snap.identities.get(cn).map(|c| (cn, c))) {
            Some((cn, config)) => (Some(cn.to_owned()), config.clone()),
            None => (None, snap.anonymous.clone()),
        }
    }

    /// Bumps on every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Re-reads the files if any changed; `Ok(true)` when new material is in
    /// use. On error the old material stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.config);
        {
            let Ok(old) = self.stamps.lock() else {
                return Ok(false);
            };
            if *old == now {
                return Ok(false);
            }
        }
        let result = build(&self.config);
        // Remember what we looked at either way, so a bad file is reported
        // once, not every poll; a later fix changes the stamp again.
        if let Ok(mut old) = self.stamps.lock() {
            *old = now;
        }
        let snapshot = result?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(snapshot);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }
}

/// Polls the files every `every` and reloads on change, forever.
pub async fn watch(material: Arc<TlsMaterial>, every: Duration) {
    loop {
        smol::Timer::after(every).await;
        match material.reload_if_changed() {
            Ok(true) => {
                log::warn!("certificates changed on disk: new connections use the new ones")
            }
            Ok(false) => {}
            Err(e) => {
                log::warn!("certificates changed but cannot be used, keeping the old ones: {e}")
            }
        }
    }
}

fn watched_files(config: &Config) -> Vec<&Path> {
    let mut files: Vec<&Path> = vec![&config.tls_cert_file, &config.tls_private_key_file];
    files.extend(config.ca_file.as_deref());
    files.extend(config.client_ca_file.as_deref());
    for id in &config.identities {
        files.push(&id.cert);
        files.push(&id.key);
    }
    files
}

fn stamps(config: &Config) -> Vec<Option<Stamp>> {
    watched_files(config)
        .into_iter()
        .map(|p| {
            std::fs::metadata(p).ok().map(|m| {
                (
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    m.size(),
                    m.ino(),
                )
            })
        })
        .collect()
}

fn build(config: &Config) -> Result<Snapshot, TlsError> {
    let server = Arc::new(server_config(config)?);
    let roots = upstream_roots(config)?;
    let anonymous = Arc::new(client_builder(config, &roots)?.with_no_client_auth());
    let mut identities = HashMap::new();
    for id in &config.identities {
        let chain = load_certs(&id.cert)?;
        let key = load_key(&id.key)?;
        let Some(cn) = chain.first().and_then(|c| common_name(c.as_ref())) else {
            return Err(TlsError::Pem(PemError::Missing(
                id.cert.clone(),
                "certificate with a subject CN",
            )));
        };
        let mut cfg = client_builder(config, &roots)?
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Rustls("--identity", e))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        identities.insert(cn, Arc::new(cfg));
    }
    let mut anonymous = Arc::unwrap_or_clone(anonymous);
    anonymous.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Snapshot {
        server,
        anonymous: Arc::new(anonymous),
        identities,
    })
}

fn server_config(config: &Config) -> Result<ServerConfig, TlsError> {
    let chain = load_certs(&config.tls_cert_file)?;
    let key = load_key(&config.tls_private_key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls("TLS versions", e))?;
    let builder = match &config.client_ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Rustls("--client-ca-file", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls("--tls-cert-file/--tls-private-key-file", e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn upstream_roots(config: &Config) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &config.ca_file {
        for cert in load_certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::Rustls("--ca-file", e))?;
        }
    }
    Ok(Arc::new(roots))
}

fn client_builder(
    config: &Config,
    roots: &Arc<RootCertStore>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls("TLS versions", e))?;
    if config.insecure_skip_tls_verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider()))));
    }
    Ok(builder.with_root_certificates(roots.clone()))
}

/// `--insecure-skip-tls-verify`: accepts any server certificate (signatures
/// are still checked so the handshake is well-formed).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The subject CN of a DER certificate, if it has one.
///
/// A bounded DER walk: Certificate -> tbsCertificate -> (skip version,
/// serial, signature, issuer, validity) -> subject -> RDNs -> the first
/// AttributeTypeAndValue with OID 2.5.4.3.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (cert_body, _) = der_seq(cert)?;
    let (tbs, _) = der_seq(cert_body)?;
    let mut rest = tbs;
    let (tag, _, after) = der_tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] version
    }
    for _ in 0..4 {
        // serial, signature algorithm, issuer, validity
        let (_, _, after) = der_tlv(rest)?;
        rest = after;
    }
    let (subject, _) = der_seq(rest)?;
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (tag, set, after) = der_tlv(rdns)?;
        rdns = after;
        if tag != 0x31 {
            return None;
        }
        let mut atvs = set;
        while !atvs.is_empty() {
            let (tag, atv, after) = der_tlv(atvs)?;
            atvs = after;
            if tag != 0x30 {
                return None;
            }
            let (oid_tag, oid, value) = der_tlv(atv)?;
            if oid_tag == 0x06 && oid == [0x55, 0x04, 0x03] {
                let (_, text, _) = der_tlv(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// A SEQUENCE's contents and what follows it.
fn der_seq(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, body, rest) = der_tlv(input)?;
    (tag == 0x30).then_some((body, rest))
}

/// One DER TLV: (tag, contents, rest). Single-byte tags, definite lengths.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walk_refuses_garbage() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x30",
            b"\x30\x05\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x80",
            &[0x30; 64],
        ];
        for input in cases {
            assert_eq!(common_name(input), None, "{input:?}");
        }
    }

    #[test]
    fn der_tlv_lengths() {
        assert_eq!(der_tlv(b"\x04\x02ab!"), Some((4, &b"ab"[..], &b"!"[..])));
        assert_eq!(der_tlv(b"\x04\x81\x02ab"), Some((4, &b"ab"[..], &b""[..])));
        assert_eq!(der_tlv(b"\x04\x03ab"), None);
    }
}
