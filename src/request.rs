//! What a request is, in Kubernetes terms: its verb and what it addresses.
//!
//! The routing (online or offline), the cache (what may be stored) and the
//! offline answers (404 vs 503, heartbeat, TokenRequest) all start from this
//! classification, so it lives in one place.

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
}

/// Sub-resources whose answers are streams or side effects, never cached.
const UNCACHEABLE_SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward", "proxy"];

impl Classified {
    /// Classifies a request by method, path and query.
    pub fn new(method: &str, path: &str, query: Option<&str>, upgrade: bool) -> Classified {
        let (resource, watch_path) = parse_resource(path);
        let watch = watch_path || query_flag(query, "watch");
        let verb = match method {
            _ if upgrade => Verb::Connect,
            "GET" if watch => Verb::Watch,
            "GET" => match &resource {
                Some(r) if r.name.is_some() => Verb::Get,
                Some(_) => Verb::List,
                None => Verb::Discovery,
            },
            "POST" => Verb::Create,
            "PUT" => Verb::Update,
            "PATCH" => Verb::Patch,
            "DELETE" => Verb::Delete,
            _ => Verb::Other,
        };
        Classified { verb, resource }
    }

    /// Whether a 2xx JSON answer to this request may be stored.
    pub fn is_cacheable(&self) -> bool {
        match self.verb {
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
        self.verb == Verb::Create
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
        (self.verb == Verb::Update
            && r.prefix == "/apis/coordination.k8s.io/v1"
            && r.resource == "leases"
            && r.namespace.as_deref() == Some("kube-node-lease")
            && r.subresource.is_none())
        .then_some(r.name.as_deref())
        .flatten()
    }
}

/// Whether `key=true` (or `1`) is in the query.
pub fn query_flag(query: Option<&str>, key: &str) -> bool {
    query_value(query, key).is_some_and(|v| v == "true" || v == "1")
}

/// The first raw (still percent-encoded) value of `key` in the query.
pub fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Splits a path under `/api/v1` or `/apis/G/V`; also says whether it used
/// the deprecated `/watch/` form.
fn parse_resource(path: &str) -> (Option<Resource>, bool) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return (None, false),
    };
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let mut r = Resource {
        prefix,
        ..Resource::default()
    };
    let rest = match rest {
        // `namespaces/NS/RESOURCE...`; `namespaces/NS` alone is the namespace object.
        ["namespaces", ns, res, more @ ..] => {
            r.namespace = Some((*ns).to_owned());
            r.resource = (*res).to_owned();
            more
        }
        [res, more @ ..] => {
            r.resource = (*res).to_owned();
            more
        }
        [] => return (None, watch),
    };
    match rest {
        [] => {}
        [name] => r.name = Some((*name).to_owned()),
        [name, sub, ..] => {
            r.name = Some((*name).to_owned());
            r.subresource = Some((*sub).to_owned());
        }
    }
    (Some(r), watch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(&str, &str, Verb, bool)] = &[
            ("GET", "/api/v1/namespaces/edge/pods", Verb::List, true),
            (
                "GET",
                "/api/v1/namespaces/edge/pods?watch=true&resourceVersion=5",
                Verb::Watch,
                false,
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/edge/pods",
                Verb::Watch,
                false,
            ),
            ("GET", "/api/v1/namespaces/edge/pods/web-1", Verb::Get, true),
            (
                "GET",
                "/api/v1/namespaces/edge/pods/web-1/log",
                Verb::Get,
                false,
            ),
            (
                "GET",
                "/api/v1/namespaces/edge/pods/web-1/status",
                Verb::Get,
                true,
            ),
            ("GET", "/api/v1/namespaces/edge", Verb::Get, true),
            ("GET", "/api/v1/namespaces", Verb::List, true),
            (
                "GET",
                "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1",
                Verb::List,
                true,
            ),
            ("GET", "/api/v1/nodes/edge-1", Verb::Get, true),
            (
                "GET",
                "/apis/edge.example.com/v1/namespaces/edge/widgets",
                Verb::List,
                true,
            ),
            ("GET", "/api", Verb::Discovery, true),
            ("GET", "/api/v1", Verb::Discovery, true),
            ("GET", "/apis", Verb::Discovery, true),
            ("GET", "/version", Verb::Discovery, true),
            ("GET", "/openapi/v3", Verb::Discovery, true),
            (
                "POST",
                "/api/v1/namespaces/edge/configmaps",
                Verb::Create,
                false,
            ),
            (
                "PUT",
                "/api/v1/namespaces/edge/configmaps/x",
                Verb::Update,
                false,
            ),
            (
                "PATCH",
                "/api/v1/namespaces/edge/configmaps/x",
                Verb::Patch,
                false,
            ),
            (
                "DELETE",
                "/api/v1/namespaces/edge/configmaps/x",
                Verb::Delete,
                false,
            ),
            ("HEAD", "/api", Verb::Other, false),
        ];
        for (method, target, verb, cacheable) in cases {
            let (path, query) = target
                .split_once('?')
                .map_or((*target, None), |(p, q)| (p, Some(q)));
            let c = Classified::new(method, path, query, false);
            assert_eq!(c.verb, *verb, "{method} {target}");
            assert_eq!(c.is_cacheable(), *cacheable, "{method} {target}");
        }
        let exec = Classified::new(
            "POST",
            "/api/v1/namespaces/edge/pods/web-1/exec",
            None,
            true,
        );
        assert_eq!(exec.verb, Verb::Connect);
    }

    #[test]
    fn token_requests_and_leases() {
        let t = Classified::new(
            "POST",
            "/api/v1/namespaces/edge/serviceaccounts/default/token",
            None,
            false,
        );
        assert!(t.is_token_request());
        let l = Classified::new(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1",
            None,
            false,
        );
        assert_eq!(l.node_lease(), Some("edge-1"));
        let other = Classified::new(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/x",
            None,
            false,
        );
        assert_eq!(other.node_lease(), None);
    }

    #[test]
    fn query_values() {
        assert_eq!(query_value(Some("a=1&watch=true"), "watch"), Some("true"));
        assert!(query_flag(Some("watch=1"), "watch"));
        assert!(!query_flag(Some("watch=false"), "watch"));
        assert!(!query_flag(None, "watch"));
        assert_eq!(query_value(Some("x"), "x"), Some(""));
    }
}
