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
    assert_eq!(query_value(Some("x"), "x"), Some(""));
    assert_eq!(
        Query::parse(Some("c=a%3D%3D+b")).get_str("c"),
        Some("a== b")
    );
    let q = Query::parse(Some("a=1;b=2&%zz=1&ok=%41&first=1&first=2"));
    assert_eq!(q.get("a"), None, "a pair with ';' is dropped, as Go does");
    assert_eq!(q.get_str("ok"), Some("A"));
    assert_eq!(q.get_str("first"), Some("1"));
    assert!(!q.certain());
    assert!(Query::parse(Some("a=1&b=2")).certain());
}

/// Booleans as apimachinery's `Convert_Slice_string_To_bool` reads them.
#[test]
fn boolean_parameters() {
    let cases: &[(&str, bool)] = &[
        ("", false),
        ("watch=0", false),
        ("watch=false", false),
        ("watch=FALSE", false),
        ("watch=False", false),
        ("watch=fals%65", false),
        ("watch=false&watch=true", false),
        ("watch=1", true),
        ("watch=true", true),
        ("watch=True", true),
        ("watch=yes", true),
        ("watch=", true),
        ("watch", true),
        ("watch=+", true),
        ("watch=00", true),
        ("%77atch=1", true),
        ("Watch=1", false),
    ];
    for (query, want) in cases {
        assert_eq!(Query::parse(Some(query)).flag("watch"), *want, "{query:?}");
    }
}

/// The verb the apiserver's request-info resolver gives each form, and
/// whether we may cache its answer.
#[test]
fn classification_equals_the_apiservers() {
    let cases: &[(&str, &str, Verb, bool)] = &[
        (
            "GET",
            "/api/v1/namespaces/edge/pods?watch=yes",
            Verb::Watch,
            false,
        ),
        (
            "GET",
            "/api/v1/namespaces/edge/pods?watch=",
            Verb::Watch,
            false,
        ),
        (
            "GET",
            "/api/v1/namespaces/edge/pods?watch",
            Verb::Watch,
            false,
        ),
        (
            "GET",
            "/api/v1/namespaces/edge/pods?watch=True",
            Verb::Watch,
            false,
        ),
        (
            "GET",
            "/api/v1/namespaces/edge/pods?%77atch=1",
            Verb::Watch,
            false,
        ),
        (
            "GET",
            "/api/v1/namespaces/edge/pods?watch=0",
            Verb::List,
            true,
        ),
        (
            "GET",
            "/api/v1/namespaces/edge/pods?watch=false",
            Verb::List,
            true,
        ),
        (
            "GET",
            "/api/v1/%77atch/namespaces/edge/pods",
            Verb::Watch,
            false,
        ),
        ("GET", "/api/v1/watch/pods", Verb::Watch, false),
        (
            "GET",
            "/api/v1/watch/namespaces/edge/pods/web-1",
            Verb::Watch,
            false,
        ),
        ("GET", "/apis/apps/v1/watch/deployments", Verb::Watch, false),
        // watch on a named object is a plain get for the apiserver
        (
            "GET",
            "/api/v1/namespaces/edge/pods/web-1?watch=true",
            Verb::Get,
            true,
        ),
        (
            "GET",
            "/api/v1/namespaces/%65dge/pods/web-1",
            Verb::Get,
            true,
        ),
        (
            "GET",
            "/api/v1/namespaces/edge/pods/web-1/status",
            Verb::Get,
            true,
        ),
        ("GET", "/api/v1/namespaces/edge/status", Verb::Get, true),
        ("GET", "/api/v1/namespaces/edge", Verb::Get, true),
        (
            "GET",
            "/api/v1/proxy/namespaces/edge/pods/web-1",
            Verb::Connect,
            false,
        ),
        (
            "GET",
            "/api/v1/namespaces/edge/pods/web-1/proxy/x",
            Verb::Get,
            false,
        ),
        // uncertain: forwarded, never cached
        ("GET", "/api/v1/namespaces/edge%2Fx/pods", Verb::List, false),
        ("GET", "/api/v1//pods", Verb::Get, false),
        ("GET", "/api/v1/pods/", Verb::Get, false),
        ("GET", "/api/v1/namespaces/./pods", Verb::List, false),
        ("GET", "/api/v1/namespaces/%zz/pods", Verb::List, false),
        ("GET", "/api/v1/pods?a=1;b=2", Verb::List, false),
        (
            "GET",
            "/api/v1/pods?fieldSelector=a&fieldSelector=b",
            Verb::List,
            false,
        ),
        ("GET", "/api/v1/pods?labelSelector=%zz", Verb::List, false),
    ];
    for (method, target, verb, cacheable) in cases {
        let (path, query) = target
            .split_once('?')
            .map_or((*target, None), |(p, q)| (p, Some(q)));
        let c = Classified::new(method, path, query, false);
        assert_eq!(c.verb, *verb, "{method} {target}");
        assert_eq!(c.is_cacheable(), *cacheable, "{method} {target}");
    }
    let ns_status = Classified::new("GET", "/api/v1/namespaces/edge/status", None, false);
    let r = ns_status.resource.unwrap();
    assert_eq!(
        (
            r.resource.as_str(),
            r.name.as_deref(),
            r.subresource.as_deref()
        ),
        ("namespaces", Some("edge"), Some("status"))
    );
}
