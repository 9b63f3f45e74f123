use super::*;
use std::path::Path;

fn key(agent: &str, target: &str, accept: Option<&str>) -> Result<String, KeyError> {
    let (path, query) = target
        .split_once('?')
        .map_or((target, None), |(p, q)| (p, Some(q)));
    let k = CacheKey::new(&Agent::from_user_agent(Some(agent)), path, query, accept)?;
    Ok(k.rel_path().display().to_string())
}

#[test]
fn layout_table() {
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let cases: &[(&str, Option<&str>, &str)] = &[
        (
            "/api/v1/namespaces/edge/pods/web-1",
            None,
            "kubelet/api/v1/namespaces/edge/pods/web-1@.json",
        ),
        (
            "/api/v1/namespaces/edge/pods/web-1/status",
            None,
            "kubelet/api/v1/namespaces/edge/pods/web-1/status@.json",
        ),
        (
            "/api/v1/namespaces/edge/pods",
            None,
            "kubelet/api/v1/namespaces/edge/pods@.json",
        ),
        (
            "/api/v1/namespaces/edge/pods?limit=500&resourceVersion=0",
            None,
            "kubelet/api/v1/namespaces/edge/pods@.json",
        ),
        (
            "/api/v1/namespaces/edge/pods?watch=true&resourceVersion=5",
            None,
            "kubelet/api/v1/namespaces/edge/pods@.json",
        ),
        (
            "/api/v1/watch/namespaces/edge/pods",
            None,
            "kubelet/api/v1/namespaces/edge/pods@.json",
        ),
        (
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=500",
            None,
            "kubelet/api/v1/pods@fieldSelector=spec.nodeName%3Dedge-1.json",
        ),
        (
            "/api/v1/pods?labelSelector=b%3D2&fieldSelector=a%3D1",
            None,
            "kubelet/api/v1/pods@fieldSelector=a%3D1,labelSelector=b%3D2.json",
        ),
        (
            "/api/v1/namespaces/edge/pods",
            Some(table),
            "kubelet/api/v1/namespaces/edge/pods@as=Table,g=meta.k8s.io,v=v1.json",
        ),
        (
            "/api/v1/namespaces/edge/pods",
            Some("application/json"),
            "kubelet/api/v1/namespaces/edge/pods@.json",
        ),
        ("/api", None, "kubelet/api@.json"),
        ("/", None, "kubelet/@.json"),
        (
            "/api/v1/namespaces/edge/configmaps/a%40b",
            None,
            "kubelet/api/v1/namespaces/edge/configmaps/a%40b@.json",
        ),
        (
            "/api/v1/namespaces/edge/configmaps/a%2Fb",
            None,
            "kubelet/api/v1/namespaces/edge/configmaps/a%2Fb@.json",
        ),
    ];
    for (target, accept, want) in cases {
        assert_eq!(
            key("kubelet/v1.36", target, *accept).as_deref(),
            Ok(*want),
            "{target}"
        );
    }
}

#[test]
fn no_escape_from_the_agent_directory() {
    for target in [
        "/api/../../etc",
        "/api/%2e%2e/x",
        "/api/%2E%2E",
        "/a/./b",
        "/a/%00/b",
    ] {
        assert!(key("kubelet", target, None).is_err(), "{target}");
    }
    let k = key("../../etc", "/api/v1/x", None).unwrap();
    assert!(k.starts_with("%2e./api"), "{k}");
    assert!(!Path::new(&k)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir)));
}

#[test]
fn tables_are_recognised() {
    let agent = Agent::from_user_agent(Some("kubectl"));
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    assert!(CacheKey::new(&agent, "/api/v1/pods", None, Some(accept))
        .unwrap()
        .is_table());
    assert!(
        !CacheKey::new(&agent, "/api/v1/pods", None, Some("application/json"))
            .unwrap()
            .is_table()
    );
    let partial = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io";
    assert!(!CacheKey::new(&agent, "/api/v1/pods", None, Some(partial))
        .unwrap()
        .is_table());
}

#[test]
fn long_variants_are_hashed() {
    let long = format!("/api/v1/pods?labelSelector={}", "a".repeat(400));
    let k = key("kubelet", &long, None).unwrap();
    assert!(k.ends_with(".json") && k.contains("@h-"), "{k}");
    assert!(k.len() < 100);
}

#[test]
fn items_of_lists() {
    let agent = Agent::from_user_agent(Some("kubelet"));
    let list = CacheKey::new(&agent, "/api/v1/namespaces/edge/pods", None, None).unwrap();
    let item = list.item(Some("edge"), "web-1").unwrap();
    assert_eq!(
        item.rel_path(),
        PathBuf::from("kubelet/api/v1/namespaces/edge/pods/web-1@.json")
    );
    assert!(list.item(Some("other"), "web-1").is_none());
    let all = CacheKey::new(
        &agent,
        "/api/v1/pods",
        Some("fieldSelector=spec.nodeName%3Dedge-1"),
        None,
    )
    .unwrap();
    assert_eq!(
        all.item(Some("edge"), "web-1").unwrap().rel_path(),
        PathBuf::from("kubelet/api/v1/namespaces/edge/pods/web-1@.json")
    );
    let nodes = CacheKey::new(&agent, "/api/v1/nodes", None, None).unwrap();
    assert_eq!(
        nodes.item(None, "edge-1").unwrap().rel_path(),
        PathBuf::from("kubelet/api/v1/nodes/edge-1@.json")
    );
    assert_eq!(
        list.items_dir(),
        Some(PathBuf::from("kubelet/api/v1/namespaces/edge/pods"))
    );
    let crd = CacheKey::new(
        &agent,
        "/apis/edge.example.com/v1/namespaces/edge/widgets",
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        crd.item(Some("edge"), "w1").unwrap().rel_path(),
        PathBuf::from("kubelet/apis/edge.example.com/v1/namespaces/edge/widgets/w1@.json")
    );
}

#[test]
fn plain_bytes_and_fast_paths() {
    for b in 0..=255u8 {
        let want = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        assert_eq!(is_plain(b), want, "{b}");
    }
    // An escaped `watch` segment is the watch form too; `xwatch` is not.
    assert_eq!(
        key("kubelet", "/api/v1/%77atch/namespaces/edge/pods", None).as_deref(),
        Ok("kubelet/api/v1/namespaces/edge/pods@.json")
    );
    assert_eq!(
        key("kubelet", "/api/v1/xwatch/pods", None).as_deref(),
        Ok("kubelet/api/v1/xwatch/pods@.json")
    );
    // The one-copy path and the general rules agree at their edges.
    let deep = "/a".repeat(MAX_SEGMENTS);
    assert!(key("kubelet", &deep, None).is_ok());
    assert_eq!(
        key("kubelet", &format!("{deep}/b"), None),
        Err(KeyError::TooDeep)
    );
    for bad in ["/api/./pods", "/api/../pods", "/api/v1/.."] {
        assert!(
            matches!(key("kubelet", bad, None), Err(KeyError::BadSegment(_))),
            "{bad}"
        );
    }
    assert_eq!(
        key("kubelet", "/api/.../.x/x./-_", None).as_deref(),
        Ok("kubelet/api/.../.x/x./-_@.json")
    );
    assert_eq!(
        key("kubelet", "/api/v1/a b", None).as_deref(),
        Ok("kubelet/api/v1/a%20b@.json")
    );
    assert_eq!(
        key("kubelet", "//api//v1/pods/", Some("application/json")).as_deref(),
        Ok("kubelet/api/v1/pods@.json")
    );
    assert_eq!(
        key(
            "kubelet",
            "/api/v1/pods?",
            Some("application/json;as=Table")
        )
        .as_deref(),
        Ok("kubelet/api/v1/pods@as=Table.json")
    );
}
