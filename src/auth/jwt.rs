//! Service-account token (JWT) verification for offline authorization.
//!
//! Offline, a service-account token is trusted only if its signature
//! verifies (RS256 or ES256, via ring) against the cluster's keys fetched
//! online from `/openid/v1/jwks` (see the `jwks` module) and it has not
//! expired. Its credential is then its `sub`, so a rotated token of the same
//! service account still reads what an earlier one cached. Online the
//! upstream has just authenticated the caller, so [`unverified_subject`] is
//! enough to record who read an entry.

use std::fmt;
use std::sync::{Arc, RwLock};

use ring::signature;

use crate::json;

/// Longest token examined.
pub const MAX_TOKEN: usize = 16 * 1024;
/// Largest JWKS document accepted.
pub const MAX_JWKS: usize = 64 * 1024;
/// Clock skew tolerated for `nbf`.
const LEEWAY: u64 = 60;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    Malformed(&'static str),
    /// `alg` is not RS256 or ES256.
    UnsupportedAlg(String),
    /// No key with this `kid` (or of this algorithm).
    UnknownKey,
    /// No key verified the signature.
    BadSignature,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// A required claim is missing.
    MissingClaim(&'static str),
    /// The JWKS document is unusable.
    BadJwks(String),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(f, "malformed token: {why}"),
            JwtError::UnsupportedAlg(alg) => write!(f, "unsupported algorithm {alg:?}"),
            JwtError::UnknownKey => write!(f, "signed by an unknown key"),
            JwtError::BadSignature => write!(f, "signature does not verify"),
            JwtError::Expired => write!(f, "token expired"),
            JwtError::NotYetValid => write!(f, "token not valid yet"),
            JwtError::MissingClaim(c) => write!(f, "token lacks the {c} claim"),
            JwtError::BadJwks(why) => write!(f, "bad JWKS: {why}"),
        }
    }
}

impl std::error::Error for JwtError {}

/// The claims we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Subject, e.g. `system:serviceaccount:edge:default`.
    pub sub: String,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Issuer, if present.
    pub iss: Option<String>,
}

/// One public key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Rsa {
        kid: Option<String>,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        kid: Option<String>,
        point: Vec<u8>,
    },
}

impl Key {
    fn kid(&self) -> Option<&str> {
        match self {
            Key::Rsa { kid, .. } | Key::Ec { kid, .. } => kid.as_deref(),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Rsa { .. } => "RS256",
            Key::Ec { .. } => "ES256",
        }
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Key::Rsa { n, e, .. } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            Key::Ec { point, .. } => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
        }
    }
}

/// The members of one JWK we use.
#[derive(Default)]
struct JwkDoc {
    kty: String,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl JwkDoc {
    /// Reads the string members of one key object (others are ignored).
    fn scan(doc: &[u8], key: std::ops::Range<usize>) -> JwkDoc {
        let mut jwk = JwkDoc::default();
        let _ = json::for_each_member(&doc[..key.end], key.start, |b, m| {
            let value = json::string_value(&b[m.value.clone()]);
            match &b[m.key.clone()] {
                b"kty" => jwk.kty = value.unwrap_or_default(),
                b"kid" => jwk.kid = value,
                b"n" => jwk.n = value,
                b"e" => jwk.e = value,
                b"crv" => jwk.crv = value,
                b"x" => jwk.x = value,
                b"y" => jwk.y = value,
                _ => {}
            }
            true
        });
        jwk
    }
}

/// The cluster's service-account signing keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Jwks {
    keys: Vec<Key>,
}

impl Jwks {
    /// Parses a JWKS document; keys of other types are skipped.
    pub fn parse(doc: &[u8]) -> Result<Jwks, JwtError> {
        if doc.len() > MAX_JWKS {
            return Err(JwtError::BadJwks("document too large".into()));
        }
        // The document is small and bounded; the byte scanner reads it
        // without building a tree (and keeps miniserde out of the binary).
        let not_jwks = || JwtError::BadJwks("not a JWKS document".into());
        let array = json::member(doc, 0, "keys").ok_or_else(not_jwks)?;
        if doc.get(array.start) != Some(&b'[') {
            return Err(not_jwks());
        }
        let mut keys = Vec::new();
        let mut at = array.start + 1;
        loop {
            at = json::skip_ws(doc, at);
            match doc.get(at) {
                Some(b']') => break,
                Some(b',') => at += 1,
                Some(b'{') => {
                    let key = json::value_range(doc, at).map_err(|_| not_jwks())?;
                    at = key.end;
                    keys.extend(key_from_doc(JwkDoc::scan(doc, key)));
                }
                _ => return Err(not_jwks()),
            }
        }
        if keys.is_empty() {
            return Err(JwtError::BadJwks("no RSA or P-256 keys".into()));
        }
        Ok(Jwks { keys })
    }

    /// Whether a key for this token is known (by `kid`, or any key when the
    /// token names none).
    pub fn knows_key_of(&self, token: &str) -> bool {
        match header_field(token, "kid") {
            Some(kid) => self.keys.iter().any(|k| k.kid() == Some(kid.as_str())),
            None => !self.keys.is_empty(),
        }
    }

    /// Verifies the token's signature and time claims.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, JwtError> {
        let parts = split(token)?;
        let header = b64url(parts[0]).ok_or(JwtError::Malformed("header is not base64url"))?;
        let alg =
            json::string_at(&header, &["alg"]).ok_or(JwtError::Malformed("header has no alg"))?;
        if alg != "RS256" && alg != "ES256" {
            return Err(JwtError::UnsupportedAlg(alg));
        }
        let kid = json::string_at(&header, &["kid"]);
        let sig = b64url(parts[2]).ok_or(JwtError::Malformed("signature is not base64url"))?;
        let message = &token.as_bytes()[..parts[0].len() + 1 + parts[1].len()];
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.alg() == alg && (kid.is_none() || k.kid() == kid.as_deref()))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::UnknownKey);
        }
        if !candidates.any(|k| k.verify(message, &sig)) {
            return Err(JwtError::BadSignature);
        }
        let payload = b64url(parts[1]).ok_or(JwtError::Malformed("payload is not base64url"))?;
        claims(&payload, now_unix)
    }
}

fn key_from_doc(doc: JwkDoc) -> Option<Key> {
    match doc.kty.as_str() {
        "RSA" => Some(Key::Rsa {
            kid: doc.kid,
            n: b64url(doc.n.as_deref()?)?,
            e: b64url(doc.e.as_deref()?)?,
        }),
        "EC" if doc.crv.as_deref() == Some("P-256") => {
            let (x, y) = (b64url(doc.x.as_deref()?)?, b64url(doc.y.as_deref()?)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Some(Key::Ec {
                kid: doc.kid,
                point,
            })
        }
        _ => None,
    }
}

fn claims(payload: &[u8], now: u64) -> Result<Claims, JwtError> {
    let number = |name: &str| json::path(payload, 0, &[name]).and_then(|r| seconds(&payload[r]));
    let sub = json::string_at(payload, &["sub"]).ok_or(JwtError::MissingClaim("sub"))?;
    let exp = number("exp").ok_or(JwtError::MissingClaim("exp"))?;
    if exp <= now {
        return Err(JwtError::Expired);
    }
    if number("nbf").is_some_and(|nbf| nbf > now + LEEWAY) {
        return Err(JwtError::NotYetValid);
    }
    Ok(Claims {
        sub,
        exp,
        iss: json::string_at(payload, &["iss"]),
    })
}

/// A NumericDate (RFC 7519) as whole seconds: digits, optionally a
/// fraction (dropped: an expiry then comes a fraction early). No float
/// parsing: it would cost 17 KB of the ARM binaries for this alone.
fn seconds(text: &[u8]) -> Option<u64> {
    let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, &b""[..]),
    };
    if whole.is_empty()
        || !whole.iter().all(u8::is_ascii_digit)
        || !fraction.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    whole.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn split(token: &str) -> Result<[&str; 3], JwtError> {
    if token.len() > MAX_TOKEN {
        return Err(JwtError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three parts"));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JwtError::Malformed("empty part"));
    }
    Ok([h, p, s])
}

fn header_field(token: &str, name: &str) -> Option<String> {
    let parts = split(token).ok()?;
    json::string_at(&b64url(parts[0])?, &[name])
}

/// Whether a bearer token is shaped like a JWT (three base64url parts whose
/// header names an `alg`), as opposed to an opaque token.
pub fn looks_like_jwt(token: &str) -> bool {
    header_field(token, "alg").is_some()
}

/// The `sub` claim without checking the signature (only for tokens the
/// upstream just accepted).
pub fn unverified_subject(token: &str) -> Option<String> {
    let parts = split(token).ok()?;
    json::string_at(&b64url(parts[1])?, &["sub"])
}

/// Decodes unpadded base64url; `None` on padding or foreign characters.
pub fn b64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // 1 leftover char (6 bits) can never be valid base64.
    (bits < 6).then_some(out)
}

/// Encodes unpadded base64url (tests and the test double use it).
pub fn b64url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The current keys, shared and swappable.
#[derive(Debug, Default)]
pub struct KeySet {
    current: RwLock<Option<Arc<Jwks>>>,
}

impl KeySet {
    /// The keys, if any were loaded.
    pub fn get(&self) -> Option<Arc<Jwks>> {
        self.current.read().ok().and_then(|k| k.clone())
    }

    /// Replaces the keys.
    pub fn set(&self, jwks: Jwks) {
        if let Ok(mut k) = self.current.write() {
            *k = Some(Arc::new(jwks));
        }
    }
}

#[cfg(test)]
mod tests;
