use super::*;

const ADDR: &str = "169.254.2.1:10268";

fn addr() -> SocketAddr {
    ADDR.parse().unwrap()
}

/// The real apiserver's shape: kind, apiVersion, metadata, spec, status.
fn kubernetes(ns: &str, name: &str, ip: &str, port: u16) -> String {
    format!(
        r#"{{"kind":"Service","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"{ns}","uid":"6f1b","resourceVersion":"205","creationTimestamp":"2026-11-23T07:50:37Z","labels":{{"component":"apiserver","provider":"kubernetes"}}}},"spec":{{"ports":[{{"name":"https","protocol":"TCP","port":{port},"targetPort":6443}}],"clusterIP":"{ip}","clusterIPs":["{ip}"],"type":"ClusterIP","sessionAffinity":"None","ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack","internalTrafficPolicy":"Cluster"}},"status":{{"loadBalancer":{{}}}}}}"#
    )
}

fn rewritten() -> String {
    kubernetes("default", "kubernetes", "169.254.2.1", 10268)
}

fn original() -> String {
    kubernetes("default", "kubernetes", "10.96.0.1", 443)
}

fn other() -> String {
    kubernetes("edge", "web", "10.96.0.20", 443)
}

/// List items carry no kind/apiVersion.
fn item(obj: &str) -> String {
    obj.replacen(r#""kind":"Service","apiVersion":"v1","#, "", 1)
}

fn list(items: &[String]) -> String {
    format!(
        r#"{{"kind":"ServiceList","apiVersion":"v1","metadata":{{"resourceVersion":"226"}},"items":[{}]}}"#,
        items.join(",")
    )
}

fn event(kind: &str, obj: &str) -> String {
    format!("{{\"type\":\"{kind}\",\"object\":{obj}}}\n")
}

/// Runs `input` through a rewriter in pieces of the given sizes (cycled).
fn run_pieces(input: &[u8], sizes: &[usize]) -> (Vec<u8>, RewriteStats) {
    let mut rw = Rewriter::new(addr());
    let mut out = Vec::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at >= input.len() {
            break;
        }
        let end = (at + size.max(&1)).min(input.len());
        rw.push(&input[at..end], &mut out);
        at = end;
    }
    rw.finish(&mut out);
    (out, rw.stats())
}

fn run(input: &str) -> String {
    String::from_utf8(run_pieces(input.as_bytes(), &[usize::MAX]).0).unwrap()
}

/// The same output for every split into two pieces and for byte-by-byte
/// feeding.
fn assert_split_invariant(input: &str, want: &str) {
    let bytes = input.as_bytes();
    for cut in 0..=bytes.len() {
        let mut rw = Rewriter::new(addr());
        let mut out = Vec::new();
        rw.push(&bytes[..cut], &mut out);
        rw.push(&bytes[cut..], &mut out);
        rw.finish(&mut out);
        assert_eq!(String::from_utf8_lossy(&out), want, "cut at {cut}");
    }
    for sizes in [&[1][..], &[2, 3], &[7, 1, 13]] {
        let (out, _) = run_pieces(bytes, sizes);
        assert_eq!(String::from_utf8_lossy(&out), want, "pieces {sizes:?}");
    }
}

#[test]
fn the_single_object_is_rewritten() {
    assert_eq!(run(&original()), rewritten());
    assert_split_invariant(&original(), &rewritten());
}

#[test]
fn only_default_kubernetes_changes_in_a_list() {
    let input = list(&[item(&other()), item(&original()), item(&other())]);
    let want = list(&[item(&other()), item(&rewritten()), item(&other())]);
    assert_eq!(run(&input), want);
    assert_split_invariant(&input, &want);
}

#[test]
fn watch_events_are_rewritten_line_by_line() {
    let input = [
        event("ADDED", &other()),
        event("MODIFIED", &original()),
        r#"{"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1","metadata":{"resourceVersion":"300"}}}"#.to_owned() + "\n",
        event("DELETED", &original()),
    ]
    .concat();
    let want = [
        event("ADDED", &other()),
        event("MODIFIED", &rewritten()),
        r#"{"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1","metadata":{"resourceVersion":"300"}}}"#.to_owned() + "\n",
        event("DELETED", &rewritten()),
    ]
    .concat();
    assert_eq!(run(&input), want);
    assert_split_invariant(&input, &want);
}

#[test]
fn already_rewritten_input_is_unchanged() {
    for input in [
        rewritten(),
        list(&[item(&rewritten())]),
        event("ADDED", &rewritten()),
    ] {
        assert_eq!(run(&input), input);
    }
    let (out, stats) = run_pieces(rewritten().as_bytes(), &[5]);
    assert_eq!(out, rewritten().as_bytes());
    assert_eq!(stats.rewritten, 1);
}

#[test]
fn look_alikes_stay_byte_identical() {
    let cases = [
        // kubernetes in another namespace, and another Service in default.
        kubernetes("kube-system", "kubernetes", "10.96.0.1", 443),
        kubernetes("default", "kubernetes-dashboard", "10.96.0.7", 443),
        kubernetes("default", "kube", "10.96.0.8", 443),
        // Not a Service at all (an Endpoints object of the same name).
        original().replace(r#""kind":"Service""#, r#""kind":"Endpoints""#),
        // A Status (an error answer).
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","code":404}"#.to_owned(),
        // Name and namespace nested deeper than metadata.
        r#"{"kind":"Service","spec":{"metadata":{"name":"kubernetes","namespace":"default"},"clusterIP":"10.96.0.1"}}"#.to_owned(),
    ];
    for input in cases {
        assert_eq!(run(&input), input);
        let l = list(&[item(&input)]);
        assert_eq!(run(&l), l);
        let e = event("ADDED", &input);
        assert_eq!(run(&e), e);
    }
}

#[test]
fn field_order_does_not_matter() {
    // spec before metadata, metadata without kind, namespace before name.
    let input = r#"{"spec":{"clusterIP":"10.96.0.1","ports":[{"port":443,"name":"https"}]},"metadata":{"namespace":"default","name":"kubernetes"},"kind":"Service"}"#;
    let want = r#"{"spec":{"clusterIP":"169.254.2.1","ports":[{"port":10268,"name":"https"}]},"metadata":{"namespace":"default","name":"kubernetes"},"kind":"Service"}"#;
    assert_eq!(run(input), want);
    assert_split_invariant(input, want);
}

#[test]
fn the_three_fields_and_nothing_else() {
    let table: &[(&str, &str)] = &[
        // No clusterIPs (an old apiserver): only clusterIP and the port.
        (
            r#"{"clusterIP":"10.96.0.1","ports":[{"name":"https","port":443}]}"#,
            r#"{"clusterIP":"169.254.2.1","ports":[{"name":"https","port":10268}]}"#,
        ),
        // Dual stack: every element; clusterIPs only.
        (
            r#"{"clusterIPs":["10.96.0.1","fd00::1"]}"#,
            r#"{"clusterIPs":["169.254.2.1","169.254.2.1"]}"#,
        ),
        // Only the port named https; other ports and targetPort untouched.
        (
            r#"{"ports":[{"name":"metrics","port":443,"targetPort":443},{"name":"https","port":443,"targetPort":6443,"nodePort":30443}]}"#,
            r#"{"ports":[{"name":"metrics","port":443,"targetPort":443},{"name":"https","port":10268,"targetPort":6443,"nodePort":30443}]}"#,
        ),
        // An unnamed port is not https.
        (r#"{"ports":[{"port":443}]}"#, r#"{"ports":[{"port":443}]}"#),
        // Nothing to rewrite; odd values left alone.
        (r#"{"type":"ClusterIP"}"#, r#"{"type":"ClusterIP"}"#),
        (
            r#"{"clusterIP":null,"clusterIPs":[]}"#,
            r#"{"clusterIP":null,"clusterIPs":[]}"#,
        ),
        // Whitespace kept (pretty output).
        (
            "{\n  \"clusterIP\" : \"10.96.0.1\" ,\n  \"clusterIPs\": [ \"10.96.0.1\" ]\n}",
            "{\n  \"clusterIP\" : \"169.254.2.1\" ,\n  \"clusterIPs\": [ \"169.254.2.1\" ]\n}",
        ),
        // An escaped port name is still https.
        (
            r#"{"ports":[{"name":"\u0068ttps","port":443}]}"#,
            r#"{"ports":[{"name":"\u0068ttps","port":10268}]}"#,
        ),
    ];
    for (spec, want) in table {
        let obj = |s: &str| {
            format!(
                r#"{{"kind":"Service","metadata":{{"name":"kubernetes","namespace":"default"}},"spec":{s}}}"#
            )
        };
        assert_eq!(run(&obj(spec)), obj(want), "{spec}");
    }
}

#[test]
fn ipv6_addresses_are_plain_strings() {
    let mut rw = Rewriter::new("[fd00::10]:10268".parse().unwrap());
    let mut out = Vec::new();
    rw.push(original().as_bytes(), &mut out);
    rw.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#""clusterIP":"fd00::10","clusterIPs":["fd00::10"]"#),
        "{text}"
    );
    assert!(text.contains(r#""port":10268"#), "{text}");
}

#[test]
fn a_pretty_list_with_strings_that_look_like_structure() {
    let tricky = other().replace(
        r#""labels":{"#,
        r#""annotations":{"x":"}]{[\"items\":\\","metadata":"{\"name\":\"kubernetes\"}"},"labels":{"#,
    );
    let input = format!(
        "{{\n \"kind\": \"ServiceList\",\n \"items\": [\n  {},\n  {}\n ]\n}}\n",
        item(&tricky),
        item(&original())
    );
    let want = format!(
        "{{\n \"kind\": \"ServiceList\",\n \"items\": [\n  {},\n  {}\n ]\n}}\n",
        item(&tricky),
        item(&rewritten())
    );
    assert_split_invariant(&input, &want);
}

#[test]
fn objects_over_the_bound_pass_unchanged() {
    let pad = "x".repeat(MAX_OBJECT);
    // Over the bound after its metadata said default/kubernetes (counted,
    // logged), and over it before its metadata ended.
    let big_spec = original().replace(
        r#""status":{"loadBalancer":{}}"#,
        &format!(r#""status":{{"pad":"{pad}"}}"#),
    );
    let big_meta = original().replace(
        r#""labels":{"#,
        &format!(r#""annotations":{{"pad":"{pad}"}},"labels":{{"#),
    );
    for (big, oversize) in [(big_spec, 1), (big_meta, 0)] {
        let input = list(&[item(&big), item(&original())]);
        let want = list(&[item(&big), item(&rewritten())]);
        for sizes in [&[usize::MAX][..], &[4096], &[1000, 77]] {
            let (out, stats) = run_pieces(input.as_bytes(), sizes);
            assert!(out == want.as_bytes(), "pieces {sizes:?}");
            assert_eq!(stats.oversize, oversize);
            assert_eq!(stats.rewritten, 1);
            assert!(stats.peak_held <= MAX_OBJECT, "{stats:?}");
        }
    }
}

#[test]
fn memory_is_bounded_by_one_object_not_the_list() {
    let items: Vec<String> = (0..5_000)
        .map(|i| item(&kubernetes("edge", &format!("svc-{i}"), "10.96.1.1", 80)))
        .collect();
    let input = list(&items);
    let (out, stats) = run_pieces(input.as_bytes(), &[16 * 1024]);
    assert!(out == input.as_bytes());
    assert!(input.len() > 2_000_000);
    // Each item is held only until its metadata ends.
    assert!(stats.peak_held < 1024, "{stats:?}");
}

#[test]
fn what_is_not_json_passes_through() {
    let protobuf = b"k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12\xff\xfe";
    let (out, _) = run_pieces(protobuf, &[3]);
    assert_eq!(out, protobuf);
    // Garbage after a good object: the object is still rewritten.
    let input = original() + "}}]garbage {\"x\":";
    let want = rewritten() + "}}]garbage {\"x\":";
    assert_split_invariant(&input, &want);
    // A truncated matching object is never rewritten.
    let cut = &original()[..original().len() - 20];
    assert_split_invariant(cut, cut);
}

#[test]
fn which_requests_and_types() {
    let cases = [
        (
            "GET",
            "/api/v1/namespaces/default/services/kubernetes",
            None,
            true,
        ),
        (
            "GET",
            "/api/v1/services",
            Some("fieldSelector=spec.clusterIP%21%3DNone&limit=500"),
            true,
        ),
        (
            "GET",
            "/api/v1/services",
            Some("watch=true&resourceVersion=5"),
            true,
        ),
        ("GET", "/api/v1/namespaces/default/services", None, true),
        (
            "GET",
            "/api/v1/watch/namespaces/default/services/kubernetes",
            None,
            true,
        ),
        ("GET", "/api/v1/namespaces/edge/services", None, false),
        (
            "GET",
            "/api/v1/namespaces/default/services/web",
            None,
            false,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/services/kubernetes/status",
            None,
            false,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/endpoints/kubernetes",
            None,
            false,
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/services/kubernetes",
            None,
            false,
        ),
        ("GET", "/apis/example.com/v1/services", None, false),
    ];
    for (method, path, query, want) in cases {
        let class = Classified::new(method, path, query, false);
        assert_eq!(applies(&class, "kubelet"), want, "{method} {path}");
        assert!(!applies(&class, "kubectl"), "{method} {path}");
    }
    for (ct, want) in [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("Application/JSON", true),
        ("application/json;as=Table;v=v1;g=meta.k8s.io", false),
        (
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
            false,
        ),
        ("application/vnd.kubernetes.protobuf", false),
        ("application/vnd.kubernetes.protobuf;stream=watch", false),
        ("application/yaml", false),
    ] {
        assert_eq!(rewritable(ct), want, "{ct}");
    }
}
