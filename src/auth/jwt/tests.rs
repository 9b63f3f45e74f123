//! Tables of tokens signed with test keys.

use super::*;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};

const RSA_DER: &[u8] = include_bytes!("../../../tests/data/test-only-sa-rsa-key.der");
const NOW: u64 = 1_795_521_600;

struct Keys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    other_ec: EcdsaKeyPair,
}

fn keys() -> Keys {
    let rng = SystemRandom::new();
    let ec_pkcs8 = |rng: &SystemRandom| {
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng).unwrap()
    };
    let ec = |p: &[u8], rng: &SystemRandom| {
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, p, rng).unwrap()
    };
    let a = ec_pkcs8(&rng);
    let b = ec_pkcs8(&rng);
    Keys {
        rsa: RsaKeyPair::from_der(RSA_DER).unwrap(),
        ec: ec(a.as_ref(), &rng),
        other_ec: ec(b.as_ref(), &rng),
    }
}

fn jwks(k: &Keys) -> String {
    let parts: ring::rsa::PublicKeyComponents<Vec<u8>> = k.rsa.public().into();
    let (n, e) = (b64url_encode(&parts.n), b64url_encode(&parts.e));
    let point = k.ec.public_key().as_ref();
    let (x, y) = (b64url_encode(&point[1..33]), b64url_encode(&point[33..65]));
    format!(
        r#"{{"keys":[{{"use":"sig","kty":"RSA","kid":"rsa1","alg":"RS256","n":"{n}","e":"{e}"}},{{"use":"sig","kty":"EC","kid":"ec1","crv":"P-256","alg":"ES256","x":"{x}","y":"{y}"}},{{"kty":"OKP","crv":"Ed25519","x":"AA"}}]}}"#
    )
}

fn sign(header: &str, payload: &str, signer: &dyn Fn(&[u8]) -> Vec<u8>) -> String {
    let msg = format!(
        "{}.{}",
        b64url_encode(header.as_bytes()),
        b64url_encode(payload.as_bytes())
    );
    let sig = signer(msg.as_bytes());
    format!("{msg}.{}", b64url_encode(&sig))
}

fn rs256(k: &RsaKeyPair) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |m| {
        let mut sig = vec![0; k.public().modulus_len()];
        k.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            m,
            &mut sig,
        )
        .unwrap();
        sig
    }
}

fn es256(k: &EcdsaKeyPair) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |m| k.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()
}

fn payload(sub: &str, iat: u64, exp: u64) -> String {
    format!(
        r#"{{"aud":["https://kubernetes.default.svc"],"exp":{exp},"iat":{iat},"nbf":{iat},"iss":"https://kubernetes.default.svc","sub":"{sub}"}}"#
    )
}

#[test]
fn verification_table() {
    let k = keys();
    let set = Jwks::parse(jwks(&k).as_bytes()).unwrap();
    let sub = "system:serviceaccount:edge:default";
    let good_rs = sign(
        r#"{"alg":"RS256","kid":"rsa1"}"#,
        &payload(sub, NOW - 10, NOW + 3600),
        &rs256(&k.rsa),
    );
    let rotated = sign(
        r#"{"alg":"RS256","kid":"rsa1"}"#,
        &payload(sub, NOW, NOW + 7200),
        &rs256(&k.rsa),
    );
    let good_es = sign(
        r#"{"alg":"ES256","kid":"ec1"}"#,
        &payload(sub, NOW, NOW + 60),
        &es256(&k.ec),
    );
    let no_kid = sign(
        r#"{"alg":"ES256"}"#,
        &payload(sub, NOW, NOW + 60),
        &es256(&k.ec),
    );
    let expired = sign(
        r#"{"alg":"RS256","kid":"rsa1"}"#,
        &payload(sub, NOW - 7200, NOW - 1),
        &rs256(&k.rsa),
    );
    let future = sign(
        r#"{"alg":"RS256","kid":"rsa1"}"#,
        &payload(sub, NOW + 3600, NOW + 7200),
        &rs256(&k.rsa),
    );
    let unknown_kid = sign(
        r#"{"alg":"ES256","kid":"nope"}"#,
        &payload(sub, NOW, NOW + 60),
        &es256(&k.ec),
    );
    let other_key = sign(
        r#"{"alg":"ES256","kid":"ec1"}"#,
        &payload(sub, NOW, NOW + 60),
        &es256(&k.other_ec),
    );
    let wrong_alg = sign(
        r#"{"alg":"ES256","kid":"rsa1"}"#,
        &payload(sub, NOW, NOW + 60),
        &es256(&k.ec),
    );
    let none = format!(
        "{}.{}.c2ln",
        b64url_encode(br#"{"alg":"none"}"#),
        b64url_encode(payload(sub, NOW, NOW + 60).as_bytes())
    );
    let hs = format!(
        "{}.{}.c2ln",
        b64url_encode(br#"{"alg":"HS256"}"#),
        b64url_encode(payload(sub, NOW, NOW + 60).as_bytes())
    );
    let mut tampered = good_rs.clone();
    let parts: Vec<&str> = good_rs.split('.').collect();
    tampered = tampered.replace(
        parts[1],
        &b64url_encode(
            payload("system:serviceaccount:kube-system:admin", NOW, NOW + 3600).as_bytes(),
        ),
    );
    let no_sub = sign(
        r#"{"alg":"RS256","kid":"rsa1"}"#,
        &format!(r#"{{"exp":{}}}"#, NOW + 60),
        &rs256(&k.rsa),
    );
    let cases: Vec<(&str, Result<&str, JwtError>)> = vec![
        (&good_rs, Ok(sub)),
        (&rotated, Ok(sub)),
        (&good_es, Ok(sub)),
        (&no_kid, Ok(sub)),
        (&expired, Err(JwtError::Expired)),
        (&future, Err(JwtError::NotYetValid)),
        (&unknown_kid, Err(JwtError::UnknownKey)),
        (&other_key, Err(JwtError::BadSignature)),
        (&wrong_alg, Err(JwtError::UnknownKey)),
        (&none, Err(JwtError::UnsupportedAlg("none".into()))),
        (&hs, Err(JwtError::UnsupportedAlg("HS256".into()))),
        (&tampered, Err(JwtError::BadSignature)),
        (&no_sub, Err(JwtError::MissingClaim("sub"))),
        ("a.b", Err(JwtError::Malformed("not three parts"))),
        ("a.b.c.d", Err(JwtError::Malformed("not three parts"))),
        (
            "!!.b.c",
            Err(JwtError::Malformed("header is not base64url")),
        ),
    ];
    for (token, want) in cases {
        let got = set.verify(token, NOW).map(|c| c.sub);
        assert_eq!(got.as_deref().map_err(Clone::clone), want, "{token}");
    }
    assert!(looks_like_jwt(&good_rs));
    assert!(!looks_like_jwt("opaque-static-token"));
    assert_eq!(unverified_subject(&good_es).as_deref(), Some(sub));
    assert!(set.knows_key_of(&good_es));
    assert!(!set.knows_key_of(&unknown_kid));
}

#[test]
fn base64url_table() {
    let cases: &[(&str, Option<&[u8]>)] = &[
        ("", Some(b"")),
        ("YQ", Some(b"a")),
        ("YWI", Some(b"ab")),
        ("YWJj", Some(b"abc")),
        ("_-8", Some(&[0xff, 0xef])),
        ("YQ==", None),
        ("Y", None),
        ("a+b/", None),
    ];
    for (text, want) in cases {
        assert_eq!(b64url(text).as_deref(), *want, "{text}");
    }
    for len in 0..20u8 {
        let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
        assert_eq!(b64url(&b64url_encode(&bytes)), Some(bytes));
    }
}

#[test]
fn fixture_jwks_and_token() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/");
    let (Ok(jwks), Ok(answer)) = (
        std::fs::read(format!("{dir}openid-jwks.body")),
        std::fs::read(format!("{dir}token-request.body")),
    ) else {
        return;
    };
    let set = Jwks::parse(&jwks).unwrap();
    let token = json::string_at(&answer, &["status", "token"]).unwrap();
    assert!(looks_like_jwt(&token));
    assert!(set.knows_key_of(&token));
    let sub = unverified_subject(&token).unwrap();
    assert!(sub.starts_with("system:serviceaccount:"));
    // Signed by the fixture cluster's key: it verifies before it expires.
    let iat = json::path(
        &b64url(token.split('.').nth(1).unwrap()).unwrap(),
        0,
        &["iat"],
    )
    .is_some();
    assert!(iat);
    let exp_text = json::string_at(&answer, &["status", "expirationTimestamp"]).unwrap();
    let exp = crate::clock::parse_rfc3339(&exp_text).unwrap();
    assert_eq!(set.verify(&token, exp - 60).map(|c| c.sub), Ok(sub));
    assert_eq!(set.verify(&token, exp + 1), Err(JwtError::Expired));
}

#[test]
fn garbage_jwks_is_refused() {
    for doc in [
        &b"{}"[..],
        b"[]",
        b"{\"keys\":[]}",
        b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}",
        b"\xff",
    ] {
        assert!(Jwks::parse(doc).is_err());
    }
}

#[test]
fn numeric_dates_are_whole_seconds() {
    let cases: &[(&[u8], Option<u64>)] = &[
        (b"1795521600", Some(1_795_521_600)),
        (b"1795521600.75", Some(1_795_521_600)),
        (b"0", Some(0)),
        (b"-5", None),
        (b"1e9", None),
        (b".5", None),
        (b"", None),
        (b"99999999999999999999999", None),
    ];
    for (text, want) in cases {
        assert_eq!(
            super::seconds(text),
            *want,
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
}
