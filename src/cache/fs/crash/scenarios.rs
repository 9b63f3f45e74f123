//! The scenarios of the crash-consistency check: each drives a store
//! through its public API and returns what replaying it found.

use super::*;

// The scenarios. Each returns its outcome, so the sabotage tests can run
// the same ones against a broken writer.

pub(super) async fn new_entry_in_new_directories(sabotage: Option<Sabotage>) -> Outcome {
    let mut c = Case::new("new-entry", sabotage);
    c.start().await;
    let k = key("/api/v1/namespaces/edge/configmaps/a");
    let body = obj("a", 1, 100);
    c.put(&k, &body, AnswerKind::Object);
    c.becomes(&k, Some(&body));
    c.finish().await
}

pub(super) async fn replace_small(sabotage: Option<Sabotage>) -> Outcome {
    let mut c = Case::new("replace-small", sabotage);
    let k = key("/api/v1/namespaces/edge/configmaps/a");
    let (v1, v2) = (obj("a", 1, 100), obj("a", 2, 120));
    c.put(&k, &v1, AnswerKind::Object);
    c.has(&k, &v1);
    c.start().await;
    c.put(&k, &v2, AnswerKind::Object);
    c.becomes(&k, Some(&v2));
    c.finish().await
}

pub(super) async fn replace_large(sabotage: Option<Sabotage>) -> Outcome {
    let mut c = Case::new("replace-large", sabotage);
    // Same reader: collected in memory, then streamed once it outgrows
    // the limit. New reader: streamed to a temp file from the start.
    let same = key("/api/v1/namespaces/edge/configmaps/big-same");
    let new_reader = key("/api/v1/namespaces/edge/configmaps/big-new");
    let v1 = obj("big", 1, 200_000);
    c.put(&same, &v1, AnswerKind::Object);
    c.put(&new_reader, &v1, AnswerKind::Object);
    c.has(&same, &v1);
    c.has(&new_reader, &v1);
    c.start().await;
    let v2 = obj("big", 2, 210_000);
    c.put(&same, &v2, AnswerKind::Object);
    let other = Credential::ClientCert("someone-else".into());
    c.put_as(&new_reader, &v2, AnswerKind::Object, &other);
    c.becomes(&same, Some(&v2));
    c.becomes(&new_reader, Some(&v2));
    c.finish().await
}

pub(super) async fn unchanged_answer(sabotage: Option<Sabotage>) -> Outcome {
    let mut c = Case::new("unchanged", sabotage);
    let k = key("/api/v1/namespaces/edge/configmaps/a");
    let v1 = obj("a", 1, 100);
    c.put(&k, &v1, AnswerKind::Object);
    c.has(&k, &v1);
    c.start().await;
    c.put(&k, &v1, AnswerKind::Object);
    c.finish().await
}

pub(super) async fn list_patched_by_events(sabotage: Option<Sabotage>) -> Outcome {
    let mut c = Case::new("events", sabotage);
    let list = key("/api/v1/namespaces/edge/pods");
    let (a1, b2) = (obj("a", 1, 50), obj("b", 2, 50));
    let old = pod_list(2, &[a1.clone(), b2.clone()]);
    c.put(&list, &old, WHOLE);
    let (obj_a, obj_b) = (
        list.item(Some("edge"), "a").unwrap(),
        list.item(Some("edge"), "b").unwrap(),
    );
    c.put(&obj_a, &a1, AnswerKind::Object);
    c.put(&obj_b, &b2, AnswerKind::Object);
    c.has(&list, &old);
    c.has(&obj_a, &a1);
    c.has(&obj_b, &b2);
    c.start().await;
    let a3 = obj("a", 3, 60);
    c.store.push_events(
        &list,
        vec![
            event(EventType::Modified, "a", 3, &a3),
            event(EventType::Deleted, "b", 4, &b2),
        ],
    );
    c.becomes(&list, Some(&pod_list(4, std::slice::from_ref(&a3))));
    c.becomes(&obj_a, Some(&a3));
    c.becomes(&obj_b, None);
    c.finish().await
}

pub(super) async fn paged_list_assembled(sabotage: Option<Sabotage>) -> Outcome {
    let mut c = Case::new("pages", sabotage);
    let list = key("/api/v1/namespaces/edge/pods");
    let old = pod_list(5, &[obj("p0", 5, 10)]);
    c.put(&list, &old, WHOLE);
    c.has(&list, &old);
    c.start().await;
    let page1 = format!(
        r#"{{"kind":"PodList","metadata":{{"resourceVersion":"7","continue":"c1"}},"items":[{}]}}"#,
        obj("p1", 6, 3000)
    );
    let page2 = pod_list(7, &[obj("p2", 7, 3000)]);
    c.put(&list, &page1, WHOLE);
    let next = AnswerKind::List {
        continued: Some("c1".into()),
    };
    c.put(&list, &page2, next);
    c.passes(&list.page(None), &page1);
    c.passes(&list.page(Some("c1")), &page2);
    let mut merged = Vec::new();
    let (mut r1, mut r2) = (page1.as_bytes(), page2.as_bytes());
    let mut sources: [&mut dyn std::io::Read; 2] = [&mut r1, &mut r2];
    crate::cache::patch::merge_pages(&mut sources, &mut merged).unwrap();
    let merged = String::from_utf8(merged).unwrap();
    assert!(merged.contains("\"p1\"") && merged.contains("\"p2\"") && !merged.contains("c1"));
    c.becomes(&list, Some(&merged));
    c.finish().await
}

pub(super) async fn converge_removes_objects(sabotage: Option<Sabotage>) -> Outcome {
    let mut c = Case::new("converge", sabotage);
    let list = key("/api/v1/namespaces/edge/pods");
    let items: Vec<String> = ["a", "b", "gone"].map(|n| obj(n, 3, 20)).to_vec();
    let old = pod_list(3, &items);
    c.put(&list, &old, WHOLE);
    c.has(&list, &old);
    for (name, body) in ["a", "b", "gone"].iter().zip(&items) {
        let k = list.item(Some("edge"), name).unwrap();
        c.put(&k, body, AnswerKind::Object);
        c.has(&k, body);
    }
    c.start().await;
    let new = pod_list(9, &items[..2]);
    c.put(&list, &new, WHOLE);
    c.becomes(&list, Some(&new));
    c.becomes(&list.item(Some("edge"), "gone").unwrap(), None);
    c.finish().await
}

pub(super) async fn gc_removes_expired(sabotage: Option<Sabotage>) -> Outcome {
    let mut c = Case::new("gc", sabotage);
    let old = key("/api/v1/namespaces/old/configmaps/x");
    let young = key("/api/v1/namespaces/edge/configmaps/y");
    let (x, y) = (obj("x", 1, 10), obj("y", 2, 10));
    c.put(&old, &x, AnswerKind::Object);
    c.put(&young, &y, AnswerKind::Object);
    c.has(&old, &x);
    c.has(&young, &y);
    c.store.flush().await;
    let now = SystemTime::now();
    let path = c.dir.join(old.rel_path());
    let age = |p: &Path, secs: u64| {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(now - Duration::from_secs(secs)).unwrap();
    };
    // A temp file a crash left an hour ago and more: GC removes it too.
    let stale = path.with_file_name(".tmp-1-1");
    std::fs::write(&stale, b"half").unwrap();
    c.start().await;
    // Aged after start(): its reads of the setup refresh the read time.
    age(&path, 10 * 86_400);
    age(&stale, 7200);
    let stats = c.store.gc(Duration::from_secs(7 * 86_400)).await;
    assert_eq!((stats.removed, stats.kept), (1, 1), "{stats:?}");
    c.becomes(&old, None);
    c.finish().await
}

pub(super) async fn aborted_tee(sabotage: Option<Sabotage>) -> Outcome {
    let mut c = Case::new("aborted", sabotage);
    let k = key("/api/v1/namespaces/edge/configmaps/a");
    let v1 = obj("a", 1, 100);
    c.put(&k, &v1, AnswerKind::Object);
    c.has(&k, &v1);
    c.start().await;
    let fresh = key("/api/v1/namespaces/fresh/configmaps/n");
    for (target, size) in [(&k, 100_000), (&k, 30_000), (&fresh, 100_000)] {
        let mut tee = c.store.tee(TeeSpec {
            key: target.clone(),
            status: 200,
            content_type: "application/json".into(),
            credential: Some(c.cred.clone()),
            kind: AnswerKind::Object,
        });
        let body = obj("a", 2, size);
        tee.write(&body.as_bytes()[..body.len() - 10]);
        drop(tee);
    }
    c.finish().await
}
