//! Tables of (list, events, expected) and a randomized comparison against a
//! naive model of the same rules.

use super::*;

fn ev(kind: EventType, ns: Option<&str>, name: &str, rv: &str, object: &str) -> OwnedEvent {
    OwnedEvent {
        kind,
        namespace: ns.map(str::to_owned),
        name: name.to_owned(),
        resource_version: Some(rv.to_owned()),
        object: object.as_bytes().to_vec(),
    }
}

fn pod(name: &str, rv: u64, extra: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}","namespace":"edge","resourceVersion":"{rv}"}},"spec":{{"x":"{extra}"}}}}"#
    )
}

fn apply(list: &str, events: &[OwnedEvent]) -> Result<String, PatchError> {
    let mut out = Vec::new();
    apply_events(&mut list.as_bytes(), &mut out, events, &mut |_, _| {})?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn table() {
    let a1 = pod("a", 1, "1");
    let b2 = pod("b", 2, "2");
    let a3 = pod("a", 3, "3");
    let c4 = pod("c", 4, "4");
    let list = format!(
        r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"2"}},"items":[{a1},{b2}]}}"#
    );
    let cases: Vec<(String, Vec<OwnedEvent>, String)> = vec![
        (
            list.clone(),
            vec![ev(EventType::Modified, Some("edge"), "a", "3", &a3)],
            format!(
                r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"3"}},"items":[{a3},{b2}]}}"#
            ),
        ),
        (
            list.clone(),
            vec![ev(EventType::Deleted, Some("edge"), "a", "3", &a1)],
            format!(
                r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"3"}},"items":[{b2}]}}"#
            ),
        ),
        (
            list.clone(),
            vec![ev(EventType::Added, Some("edge"), "c", "4", &c4)],
            format!(
                r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"4"}},"items":[{a1},{b2},{c4}]}}"#
            ),
        ),
        (
            list.clone(),
            vec![ev(EventType::Bookmark, None, "", "9", "{}")],
            format!(
                r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"9"}},"items":[{a1},{b2}]}}"#
            ),
        ),
        (
            list.clone(),
            vec![ev(EventType::Deleted, Some("edge"), "zzz", "5", "{}")],
            format!(
                r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"5"}},"items":[{a1},{b2}]}}"#
            ),
        ),
        // Items before metadata, whitespace, null items, missing rv.
        (
            format!("{{ \"items\" : [ {a1} ] ,\n \"metadata\" : {{ }} }}"),
            vec![ev(EventType::Added, Some("edge"), "c", "4", &c4)],
            format!(r#"{{"items":[{a1},{c4}],"metadata":{{"resourceVersion":"4"}}}}"#),
        ),
        (
            r#"{"kind":"PodList","metadata":{"resourceVersion":"1"},"items":null}"#.to_owned(),
            vec![ev(EventType::Added, Some("edge"), "c", "4", &c4)],
            format!(r#"{{"kind":"PodList","metadata":{{"resourceVersion":"4"}},"items":[{c4}]}}"#),
        ),
        // Add then delete in one batch: gone; delete then add: present.
        (
            list.clone(),
            vec![
                ev(EventType::Added, Some("edge"), "c", "4", &c4),
                ev(EventType::Deleted, Some("edge"), "c", "5", &c4),
            ],
            format!(
                r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"5"}},"items":[{a1},{b2}]}}"#
            ),
        ),
    ];
    for (list, events, want) in cases {
        assert_eq!(apply(&list, &events).unwrap(), want, "list {list}");
    }
}

#[test]
fn tables_and_garbage_are_refused() {
    let table = r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":[],"rows":[]}"#;
    assert!(matches!(apply(table, &[]), Err(PatchError::NotAList)));
    let list = format!(
        r#"{{"kind":"PodList","metadata":{{"resourceVersion":"2"}},"items":[{}]}}"#,
        pod("a", 1, "x")
    );
    for cut in 0..list.len() {
        assert!(apply(&list[..cut], &[]).is_err(), "cut at {cut}");
    }
    assert!(apply("[1,2]", &[]).is_err());
}

/// De-chunks a raw chunked body (test-only).
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Ok(httparse::Status::Complete((used, size))) = httparse::parse_chunk_size(rest) {
        if size == 0 {
            break;
        }
        let size = size as usize;
        out.extend_from_slice(&rest[used..used + size]);
        rest = &rest[used + size + 2..];
    }
    out
}

#[test]
fn fixture_watch_applies_to_fixture_list() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/");
    let (Ok(list), Ok(raw)) = (
        std::fs::read(format!("{dir}list-pods-ns.body")),
        std::fs::read(format!("{dir}watch-pods.raw")),
    ) else {
        return;
    };
    let mut events = Vec::new();
    for line in dechunk(&raw)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let e = crate::k8s::watch::WatchEvent::parse(line).unwrap();
        events.push(e.to_owned_event(line));
    }
    let mut out = Vec::new();
    let mut names = Vec::new();
    let outcome = apply_events(&mut list.as_slice(), &mut out, &events, &mut |_, n| {
        names.push(n.to_owned())
    })
    .unwrap();
    // The output is valid JSON (miniserde parses it) with the newest rv.
    let parsed: Result<miniserde::json::Value, _> =
        miniserde::json::from_str(std::str::from_utf8(&out).unwrap());
    assert!(parsed.is_ok());
    let last_rv = events
        .iter()
        .rev()
        .find_map(|e| e.resource_version.clone())
        .unwrap();
    assert_eq!(crate::json::resource_version(&out), Some(last_rv));
    assert_eq!(outcome.items as usize, names.len());
    assert!(names.contains(&"web-1".to_owned()));
}

#[test]
fn merges_fixture_pages() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/");
    let (Ok(p1), Ok(p2)) = (
        std::fs::read(format!("{dir}list-pods-page1.body")),
        std::fs::read(format!("{dir}list-pods-page2.body")),
    ) else {
        return;
    };
    let mut out = Vec::new();
    let outcome = merge_pages(&mut [&mut p1.as_slice(), &mut p2.as_slice()], &mut out).unwrap();
    assert_eq!(outcome.items, 3);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(!text.contains("\"continue\"") && !text.contains("remainingItemCount"));
    let mut names = Vec::new();
    apply_events(
        &mut out.as_slice(),
        &mut std::io::sink(),
        &[],
        &mut |_, n| names.push(n.to_owned()),
    )
    .unwrap();
    assert_eq!(names, ["web-1", "web-2", "web-3"]);
}

/// xorshift64: deterministic randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_events_match_a_naive_model() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut model: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("p{i}"), pod(&format!("p{i}"), i, "seed")))
        .collect();
    let render = |items: &[(String, String)], rv: u64| {
        let body: Vec<&str> = items.iter().map(|(_, b)| b.as_str()).collect();
        format!(
            r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
            body.join(",")
        )
    };
    let mut cached = render(&model, 2000).into_bytes();
    let mut rv = 2000;
    let mut largest = model.iter().map(|(_, b)| b.len()).max().unwrap();
    // 5,000 events, applied in batches as the coalescer would.
    for _batch in 0..50 {
        let mut events = Vec::new();
        for _ in 0..100 {
            rv += 1;
            let name = format!("p{}", rng.next() % 2600);
            let pos = model.iter().position(|(n, _)| *n == name);
            match (rng.next() % 3, pos) {
                (0, Some(i)) => {
                    model.remove(i);
                    events.push(ev(
                        EventType::Deleted,
                        Some("edge"),
                        &name,
                        &rv.to_string(),
                        "{}",
                    ));
                }
                (_, Some(i)) => {
                    let body = pod(&name, rv, &"m".repeat((rng.next() % 300) as usize));
                    largest = largest.max(body.len());
                    model[i].1 = body.clone();
                    events.push(ev(
                        EventType::Modified,
                        Some("edge"),
                        &name,
                        &rv.to_string(),
                        &body,
                    ));
                }
                (_, None) => {
                    let body = pod(&name, rv, "new");
                    model.push((name.clone(), body.clone()));
                    events.push(ev(
                        EventType::Added,
                        Some("edge"),
                        &name,
                        &rv.to_string(),
                        &body,
                    ));
                }
            }
        }
        let mut out = Vec::new();
        let outcome =
            apply_events(&mut cached.as_slice(), &mut out, &events, &mut |_, _| {}).unwrap();
        assert!(
            outcome.peak_buffer <= largest + 2 * READ_SIZE,
            "peak {}",
            outcome.peak_buffer
        );
        cached = out;
    }
    // Same envelope and the same items byte for byte; order may differ
    // where an item was deleted and re-added within one batch.
    let mut got: Vec<Vec<u8>> = Vec::new();
    apply_events(&mut cached.as_slice(), &mut io::sink(), &[], &mut |_, _| {}).unwrap();
    let items = crate::json::member(&cached, 0, "items").unwrap();
    let mut rest = items.start + 1;
    while let Ok(r) = crate::json::value_range(&cached, rest) {
        got.push(cached[r.clone()].to_vec());
        rest = crate::json::skip_ws(&cached, r.end) + 1;
    }
    let mut want: Vec<Vec<u8>> = model.iter().map(|(_, b)| b.clone().into_bytes()).collect();
    got.sort();
    want.sort();
    assert!(
        got == want,
        "items differ: {} vs {} items",
        got.len(),
        want.len()
    );
    assert_eq!(crate::json::resource_version(&cached), Some(rv.to_string()));
}

#[test]
fn a_slow_reader_gives_the_same_answer() {
    struct OneByte<'a>(&'a [u8]);
    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }
    let list = format!(
        r#"{{"kind":"PodList","metadata":{{"resourceVersion":"2"}},"items":[{},{}]}}"#,
        pod("a", 1, "x"),
        pod("b", 2, "y")
    );
    let events = [ev(
        EventType::Modified,
        Some("edge"),
        "b",
        "3",
        &pod("b", 3, "z"),
    )];
    let mut out = Vec::new();
    apply_events(
        &mut OneByte(list.as_bytes()),
        &mut out,
        &events,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        apply(&list, &events).unwrap()
    );
}
