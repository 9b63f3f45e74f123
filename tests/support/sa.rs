//! Service-account JWTs the double signs (RS256 with the test-only RSA key
//! in tests/data, ES256 with a fresh P-256 key) and the JWKS it publishes.

use lite_apiserver::auth::jwt::{b64url_encode, Jwks};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};

const RSA_DER: &[u8] = include_bytes!("../data/test-only-sa-rsa-key.der");

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-11-24T12:00:00Z` for Unix seconds.
pub fn rfc3339(t: u64) -> String {
    let days = t / 86_400;
    let secs = t % 86_400;
    // Civil date from days since epoch (H. Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub struct Signer {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    unknown: EcdsaKeyPair,
    jwks: String,
    parsed: Jwks,
}

fn ec_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap()
}

impl Signer {
    pub fn new() -> Signer {
        let rsa = RsaKeyPair::from_der(RSA_DER).unwrap();
        let ec = ec_key();
        let parts: ring::rsa::PublicKeyComponents<Vec<u8>> = rsa.public().into();
        let point = ec.public_key().as_ref();
        let jwks = format!(
            r#"{{"keys":[{{"use":"sig","kty":"RSA","kid":"rsa-1","alg":"RS256","n":"{}","e":"{}"}},{{"use":"sig","kty":"EC","kid":"ec-1","crv":"P-256","alg":"ES256","x":"{}","y":"{}"}}]}}"#,
            b64url_encode(&parts.n),
            b64url_encode(&parts.e),
            b64url_encode(&point[1..33]),
            b64url_encode(&point[33..65])
        );
        let parsed = Jwks::parse(jwks.as_bytes()).unwrap();
        Signer {
            rsa,
            ec,
            unknown: ec_key(),
            jwks,
            parsed,
        }
    }

    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    fn payload(ns: &str, name: &str, ttl: i64) -> String {
        let now = unix_now() as i64;
        format!(
            r#"{{"aud":["https://kubernetes.default.svc.cluster.local"],"exp":{},"iat":{now},"iss":"https://kubernetes.default.svc.cluster.local","jti":"{}","kubernetes.io":{{"namespace":"{ns}","serviceaccount":{{"name":"{name}","uid":"00000000-0000-4000-8000-00000000aaaa"}}}},"nbf":{now},"sub":"system:serviceaccount:{ns}:{name}"}}"#,
            now + ttl,
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    }

    fn sign(header: &str, payload: &str, f: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let msg = format!(
            "{}.{}",
            b64url_encode(header.as_bytes()),
            b64url_encode(payload.as_bytes())
        );
        let sig = f(msg.as_bytes());
        format!("{msg}.{}", b64url_encode(&sig))
    }

    /// A token for `system:serviceaccount:NS:NAME` valid for `ttl` seconds
    /// (negative: already expired).
    pub fn token(&self, ns: &str, name: &str, ttl: i64, es256: bool) -> String {
        let payload = Self::payload(ns, name, ttl);
        if es256 {
            Self::sign(r#"{"alg":"ES256","kid":"ec-1"}"#, &payload, |m| {
                self.ec
                    .sign(&SystemRandom::new(), m)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            })
        } else {
            Self::sign(r#"{"alg":"RS256","kid":"rsa-1"}"#, &payload, |m| {
                let mut sig = vec![0; self.rsa.public().modulus_len()];
                self.rsa
                    .sign(
                        &signature::RSA_PKCS1_SHA256,
                        &SystemRandom::new(),
                        m,
                        &mut sig,
                    )
                    .unwrap();
                sig
            })
        }
    }

    /// Signed with a key nobody publishes (same kid as the real EC key).
    pub fn token_unknown_key(&self, ns: &str, name: &str) -> String {
        let payload = Self::payload(ns, name, 3600);
        Self::sign(r#"{"alg":"ES256","kid":"ec-1"}"#, &payload, |m| {
            self.unknown
                .sign(&SystemRandom::new(), m)
                .unwrap()
                .as_ref()
                .to_vec()
        })
    }

    /// The subject of a token this double signed and that is still valid.
    pub fn verify(&self, token: &str) -> Option<String> {
        self.parsed.verify(token, unix_now()).ok().map(|c| c.sub)
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
