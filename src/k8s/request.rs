//! What a request is, in Kubernetes terms: its verb and what it addresses.
//!
//! The routing (online or offline), the cache (what may be stored) and the
//! offline answers (404 vs 503, heartbeat, TokenRequest) all start from this
//! classification, so it lives in one place.

use std::borrow::Cow;

/// The Kubernetes verb of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET of one object (or a sub-resource of one).
    Get,
    /// GET of a collection.
    List,
    /// A watch (`?watch=true` or the `/watch/` path form).
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE (one object or a collection).
    Delete,
    /// An Upgrade request: exec, attach, port-forward.
    Connect,
    /// GET outside the resource tree: discovery (`/api`, `/apis`,
    /// `/version`, `/openapi/...`), health, JWKS.
    Discovery,
    /// Anything else (HEAD, OPTIONS, ...).
    Other,
}

impl Verb {
    /// Lower-case name, as used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::Connect => "connect",
            Verb::Discovery => "discovery",
            Verb::Other => "other",
        }
    }

    /// Whether the verb only reads.
    pub fn is_read(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch | Verb::Discovery)
    }
}

/// The resource path of a request, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resource {
    /// `/api/v1` or `/apis/GROUP/VERSION`.
    pub prefix: String,
    /// Namespace, for namespaced paths.
    pub namespace: Option<String>,
    /// Resource plural, e.g. `pods`.
    pub resource: String,
    /// Object name, if one object is addressed.
    pub name: Option<String>,
    /// Sub-resource, e.g. `status`, `log`, `token`.
    pub subresource: Option<String>,
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The verb.
    pub verb: Verb,
    /// The resource, for paths under `/api/v1` and `/apis/G/V`.
    pub resource: Option<Resource>,
    /// The query as the apiserver reads it.
    pub query: Query,
    /// Whether the apiserver is certain to read the request the same way:
    /// no empty, `.` or `..` path segment, no encoded `/`, no bad escape,
    /// no query pair it would drop, no repeated query key. Uncertain
    /// requests are forwarded, never cached.
    pub certain: bool,
}

/// Sub-resources whose answers are streams or side effects, never cached.
const UNCACHEABLE_SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward", "proxy"];
/// Sub-resources of a namespace itself (`/api/v1/namespaces/NS/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Classified {
    /// Classifies a request by method, path and query, the way the
    /// apiserver's request-info resolver does: the path percent-decoded
    /// once, the legacy `/watch/` and `/proxy/` verbs, `watch` only on a
    /// collection GET, booleans as apimachinery parses them.
    pub fn new(method: &str, path: &str, query: Option<&str>, upgrade: bool) -> Classified {
        let query = Query::parse(query);
        let (segments, path_certain) = decode_path(path);
        let parsed = parse_resource(&segments);
        let verb = match (&parsed, method) {
            _ if upgrade => Verb::Connect,
            (Some((_, Special::Proxy)), _) => Verb::Connect,
            (Some((_, Special::Watch)), "GET") => Verb::Watch,
            (Some((r, _)), "GET") if r.name.is_none() && query.flag("watch") => Verb::Watch,
            (Some((r, _)), "GET") if r.name.is_none() => Verb::List,
            (Some(_), "GET") => Verb::Get,
            (None, "GET") => Verb::Discovery,
            (_, "POST") => Verb::Create,
            (_, "PUT") => Verb::Update,
            (_, "PATCH") => Verb::Patch,
            (_, "DELETE") => Verb::Delete,
            _ => Verb::Other,
        };
        let certain = path_certain && query.certain();
        Classified {
            verb,
            resource: parsed.map(|(r, _)| r),
            query,
            certain,
        }
    }

    /// Whether a 2xx JSON answer to this request may be stored.
    pub fn is_cacheable(&self) -> bool {
        self.certain
            && match self.verb {
                Verb::Get | Verb::List | Verb::Discovery => self
                    .resource
                    .as_ref()
                    .and_then(|r| r.subresource.as_deref())
                    .is_none_or(|s| !UNCACHEABLE_SUBRESOURCES.contains(&s)),
                _ => false,
            }
    }

    /// Whether this is a TokenRequest (`POST .../serviceaccounts/NAME/token`).
    pub fn is_token_request(&self) -> bool {
        self.certain
            && self.verb == Verb::Create
            && self.resource.as_ref().is_some_and(|r| {
                r.prefix == "/api/v1"
                    && r.resource == "serviceaccounts"
                    && r.name.is_some()
                    && r.subresource.as_deref() == Some("token")
            })
    }

    /// The node name if this is a PUT of a node Lease
    /// (`coordination.k8s.io/v1` `kube-node-lease/NODE`).
    pub fn node_lease(&self) -> Option<&str> {
        let r = self.resource.as_ref()?;
        (self.certain
            && self.verb == Verb::Update
            && r.prefix == "/apis/coordination.k8s.io/v1"
            && r.resource == "leases"
            && r.namespace.as_deref() == Some("kube-node-lease")
            && r.subresource.is_none())
        .then_some(r.name.as_deref())
        .flatten()
    }
}

/// A query string read as Go's `url.ParseQuery` reads it for the
/// apiserver: pairs split on `&`, keys and values unescaped (`+` is a
/// space), a pair with `;` or a bad escape dropped, the first value of a
/// key the one that counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    dropped: bool,
}

impl Query {
    /// Parses the raw query (without `?`).
    pub fn parse(raw: Option<&str>) -> Query {
        let mut query = Query::default();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (unescape(key, true), unescape(value, true)) {
                (Some(k), Some(v)) if !pair.contains(';') => query.pairs.push((k, v)),
                _ => query.dropped = true,
            }
        }
        query
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `key` as text, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A boolean parameter as apimachinery reads it: absent, `0` or
    /// `false` (any case) is false; anything else, empty included, is true.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v != b"0" && !v.eq_ignore_ascii_case(b"false"))
    }

    /// Every (key, value) pair in order, unescaped.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// No pair was dropped and no key repeats: the apiserver cannot read
    /// it differently from us.
    fn certain(&self) -> bool {
        !self.dropped
            && self
                .pairs
                .iter()
                .enumerate()
                .all(|(i, (k, _))| self.pairs[..i].iter().all(|(other, _)| other != k))
    }
}

/// Whether boolean query parameter `key` is true (see [`Query::flag`]).
pub fn query_flag(query: Option<&str>, key: &str) -> bool {
    Query::parse(query).flag(key)
}

/// The first raw (still percent-encoded) value of `key` in the query,
/// for callers that do their own decoding; classification uses [`Query`].
pub fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Decodes `%XX` escapes once (and `+` as a space when `plus_is_space`,
/// as in query components); `None` for a `%` not followed by two hex digits.
pub fn unescape(text: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let high = (hex[0] as char).to_digit(16)?;
                let low = (hex[1] as char).to_digit(16)?;
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The path's segments, each percent-decoded once, and whether they are
/// beyond doubt: no bad escape, no encoded `/`, no empty, `.` or `..`
/// segment (routers and the apiserver's resolver could differ on those).
fn decode_path(path: &str) -> (Vec<Cow<'_, str>>, bool) {
    let mut certain = true;
    let raw = path.strip_prefix('/').unwrap_or(path);
    if raw.is_empty() {
        return (Vec::new(), true);
    }
    let segments = raw
        .split('/')
        .map(|raw| {
            if !raw.is_empty() && raw != "." && raw != ".." && !raw.contains('%') {
                return Cow::Borrowed(raw);
            }
            let decoded = unescape(raw, false).unwrap_or_else(|| {
                certain = false;
                raw.as_bytes().to_vec()
            });
            let text = String::from_utf8_lossy(&decoded).into_owned();
            if text.is_empty() || text == "." || text == ".." || text.contains('/') {
                certain = false;
            }
            Cow::Owned(text)
        })
        .collect();
    (segments, certain)
}

/// A verb given by the path (`/api/v1/watch/...`, `/api/v1/proxy/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    Watch,
    Proxy,
}

/// Splits a path under `/api/v1` or `/apis/G/V` as the apiserver's
/// request-info resolver does.
fn parse_resource(segs: &[Cow<'_, str>]) -> Option<(Resource, Special)> {
    let segs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (special, rest) = match rest {
        ["watch", rest @ ..] if !rest.is_empty() => (Special::Watch, rest),
        ["proxy", rest @ ..] if !rest.is_empty() => (Special::Proxy, rest),
        _ => (Special::None, rest),
    };
    let mut r = Resource {
        prefix,
        ..Resource::default()
    };
    let parts = match rest {
        [] => return None,
        // `namespaces/NS/RESOURCE...`, except the namespace's own
        // sub-resources (`namespaces/NS/status`).
        ["namespaces", ns, third, more @ ..] if !NAMESPACE_SUBRESOURCES.contains(third) => {
            r.namespace = Some((*ns).to_owned());
            let mut parts = vec![*third];
            parts.extend_from_slice(more);
            parts
        }
        ["namespaces", ns, ..] => {
            r.namespace = Some((*ns).to_owned());
            rest.to_vec()
        }
        _ => rest.to_vec(),
    };
    r.resource = parts[0].to_owned();
    r.name = parts.get(1).map(|n| (*n).to_owned());
    if special != Special::Proxy {
        r.subresource = parts.get(2).map(|s| (*s).to_owned());
    }
    if r.resource == "namespaces" {
        r.namespace = None;
    }
    Some((r, special))
}

#[cfg(test)]
mod tests;
