//! Who is calling: the agent (which cache directory) and the credential (who may
//! read an entry offline).
//!
//! The two are deliberately different newtypes. The [`Agent`] comes from the
//! User-Agent header, which any local process can fake, so it only *picks a
//! directory*. The [`Credential`] comes from a verified client certificate or a
//! bearer token, and is the only thing that *grants access* to an entry offline.

use std::fmt;

/// The cache directory of a client: its User-Agent up to the first `/`,
/// lower-cased, limited to `[a-z0-9._-]` with everything else escaped as `%XX`.
///
/// The result is always a single, non-empty path component that is neither `.`
/// nor `..` (a leading `.` is escaped), so no agent can leave its directory.
///
/// ```
/// use lite_apiserver::auth::identity::Agent;
/// assert_eq!(Agent::from_user_agent(Some("kubelet/v1.36.2 (linux/arm64)")).as_str(), "kubelet");
/// assert_eq!(Agent::from_user_agent(Some("../../etc")).as_str(), "%2e.");
/// assert_eq!(Agent::from_user_agent(None).as_str(), "unknown");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Agent(String);

impl Agent {
    /// Longest agent name kept; longer names are cut (before escaping).
    const MAX_LEN: usize = 64;

    /// Derives the agent from a User-Agent header value (`None` when absent).
    pub fn from_user_agent(user_agent: Option<&str>) -> Agent {
        let product = user_agent.unwrap_or("").split('/').next().unwrap_or("");
        let product = product.trim();
        if product.is_empty() {
            return Agent("unknown".to_owned());
        }
        let mut name = String::with_capacity(product.len());
        for (i, c) in product.chars().take(Self::MAX_LEN).enumerate() {
            let c = c.to_ascii_lowercase();
            let plain = c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
            if plain || (c == '.' && i > 0) {
                name.push(c);
            } else {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    name.push_str(&format!("%{b:02x}"));
                }
            }
        }
        Agent(name)
    }

    /// The directory name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this agent's answers are cached under `--cache-agents`.
    pub fn is_cached(&self, cache_agents: &[String]) -> bool {
        cache_agents.iter().any(|a| a == "*" || a == &self.0)
    }
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What authorizes an offline read of a cache entry.
///
/// Stored in entry headers in its [`Display`](fmt::Display) form (`cn:…`,
/// `sa:…`, `tok:…`), which [`Credential::parse`] reads back. Bearer tokens are
/// only ever kept as their SHA-256, never in clear.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// The CN of a client certificate verified against `--client-ca-file`.
    ClientCert(String),
    /// The `sub` of a service-account JWT whose signature verified against the
    /// cluster's JWKS and which had not expired.
    ServiceAccount(String),
    /// SHA-256 of any other bearer token.
    TokenHash([u8; 32]),
}

impl Credential {
    /// The credential of an opaque bearer token: its SHA-256.
    pub fn from_token(token: &str) -> Credential {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        Credential::TokenHash(hash)
    }

    /// Parses the header form written by `Display`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Credential> {
        let (kind, value) = s.split_once(':')?;
        if value.is_empty() || value.contains(['\n', '\r']) {
            return None;
        }
        match kind {
            "cn" => Some(Credential::ClientCert(value.to_owned())),
            "sa" => Some(Credential::ServiceAccount(value.to_owned())),
            "tok" => parse_hex32(value).map(Credential::TokenHash),
            _ => None,
        }
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ClientCert(cn) => write!(f, "cn:{cn}"),
            Credential::ServiceAccount(sub) => write!(f, "sa:{sub}"),
            Credential::TokenHash(hash) => {
                f.write_str("tok:")?;
                hash.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer_token(authorization: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Everything known about the caller of one request.
///
/// The bearer token is kept in memory for the request only: it is never
/// logged and never written; entries record [`Credential`]s.
#[derive(Clone)]
pub struct Caller {
    /// The cache directory this caller's answers go to.
    pub agent: Agent,
    /// CN of the client certificate verified against `--client-ca-file`.
    pub cn: Option<String>,
    /// The bearer token of the `Authorization` header.
    pub token: Option<String>,
    /// Whether `--cache-agents` covers this agent.
    pub cached: bool,
    /// The TCP socket under the caller's TLS stream (to notice a client
    /// leaving a relayed watch).
    pub socket: Option<smol::net::TcpStream>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("agent", &self.agent)
            .field("cn", &self.cn)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Caller {
    /// Identifies the caller of `head` on a connection whose verified
    /// client certificate (if any) has CN `peer_cn`.
    pub fn new(
        head: &crate::http::RequestHead,
        peer_cn: Option<&str>,
        cache_agents: &[String],
    ) -> Caller {
        let agent = Agent::from_user_agent(head.headers.get_str("user-agent"));
        let cached = agent.is_cached(cache_agents);
        Caller {
            agent,
            cn: peer_cn.map(str::to_owned),
            token: head
                .headers
                .get("authorization")
                .and_then(bearer_token)
                .map(str::to_owned),
            cached,
            socket: None,
        }
    }

    /// The same caller, with the socket of its connection.
    pub fn with_socket(mut self, socket: Option<smol::net::TcpStream>) -> Caller {
        self.socket = socket;
        self
    }

    /// The credential to record on an entry when the upstream answered this
    /// caller with a 2xx. The upstream has just authenticated the caller, so
    /// a service-account JWT's subject is taken from its claims without
    /// checking the signature again.
    pub fn online_credential(&self) -> Option<Credential> {
        if let Some(cn) = &self.cn {
            return Some(Credential::ClientCert(cn.clone()));
        }
        let token = self.token.as_deref()?;
        if crate::auth::jwt::looks_like_jwt(token) {
            return crate::auth::jwt::unverified_subject(token).map(Credential::ServiceAccount);
        }
        Some(Credential::from_token(token))
    }

    /// The credential that may read entries offline, or why there is none:
    /// a service-account JWT must verify against the cluster's keys and not
    /// be expired (it never falls back to its hash).
    pub fn offline_credential(
        &self,
        keys: Option<&crate::auth::jwt::Jwks>,
        now_unix: u64,
    ) -> Result<Credential, String> {
        if let Some(cn) = &self.cn {
            return Ok(Credential::ClientCert(cn.clone()));
        }
        let Some(token) = self.token.as_deref() else {
            return Err("the request carries no client certificate and no bearer token".to_owned());
        };
        if !crate::auth::jwt::looks_like_jwt(token) {
            return Ok(Credential::from_token(token));
        }
        let keys = keys.ok_or("no service-account keys are cached to verify the token")?;
        keys.verify(token, now_unix)
            .map(|claims| Credential::ServiceAccount(claims.sub))
            .map_err(|e| format!("service-account token rejected: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_single_safe_components() {
        let cases: &[(Option<&str>, &str)] = &[
            (
                Some("kubelet/v1.36.2 (linux/arm64) kubernetes/abc"),
                "kubelet",
            ),
            (Some("kube-proxy/v1.36"), "kube-proxy"),
            (Some("Flanneld/0.25"), "flanneld"),
            (Some("kubectl1.36.2/v1.36.2"), "kubectl1.36.2"),
            (Some("../../etc"), "%2e."),
            (Some(".."), "%2e."),
            (Some("."), "%2e"),
            (Some("a b\\c"), "a%20b%5cc"),
            (Some(""), "unknown"),
            (Some("/x"), "unknown"),
            (None, "unknown"),
            (Some("Python-urllib"), "python-urllib"),
            (Some("ü"), "%c3%bc"),
        ];
        for (input, want) in cases {
            let agent = Agent::from_user_agent(*input);
            assert_eq!(agent.as_str(), *want, "input {input:?}");
            assert!(!agent.as_str().contains('/'));
            assert!(agent.as_str() != "." && agent.as_str() != "..");
        }
    }

    #[test]
    fn cache_agents_filter() {
        let list = vec!["kubelet".to_owned(), "coredns".to_owned()];
        assert!(Agent::from_user_agent(Some("kubelet/1")).is_cached(&list));
        assert!(!Agent::from_user_agent(Some("kubectl/1")).is_cached(&list));
        assert!(Agent::from_user_agent(Some("x")).is_cached(&["*".to_owned()]));
    }

    #[test]
    fn credentials_round_trip() {
        let creds = [
            Credential::ClientCert("system:node:edge-1".into()),
            Credential::ServiceAccount("system:serviceaccount:edge:default".into()),
            Credential::from_token("secret-token"),
        ];
        for c in creds {
            let text = c.to_string();
            assert!(!text.contains("secret-token"));
            assert_eq!(Credential::parse(&text), Some(c));
        }
        assert_eq!(Credential::parse("tok:zz"), None);
        assert_eq!(Credential::parse("cn:"), None);
        assert_eq!(Credential::parse("xx:y"), None);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
    }
}
