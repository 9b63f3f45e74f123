//! The file store through its API: streamed writes, modes, readers,
//! unchanged answers, aborted and torn entries, lists patched by events,
//! paged lists, the byte budget.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use super::*;
use crate::auth::identity::{Agent, Credential};
use crate::k8s::watch::EventType;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lite-store-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn key(path: &str) -> CacheKey {
    CacheKey::new(&Agent::from_user_agent(Some("kubelet")), path, None, None).unwrap()
}

fn spec(k: &CacheKey, cred: &Credential, kind: AnswerKind) -> TeeSpec {
    TeeSpec {
        key: k.clone(),
        status: 200,
        content_type: "application/json".into(),
        credential: Some(cred.clone()),
        kind,
    }
}

async fn put(store: &FileStore, k: &CacheKey, body: &[u8], cred: &Credential) {
    put_as(store, k, body, cred, AnswerKind::Object).await;
}

async fn put_as(store: &FileStore, k: &CacheKey, body: &[u8], cred: &Credential, kind: AnswerKind) {
    let mut tee = store.tee(spec(k, cred, kind));
    for piece in body.chunks(7000) {
        tee.write(piece);
    }
    tee.commit();
    store.flush().await;
}

async fn body_of(store: &FileStore, k: &CacheKey) -> Vec<u8> {
    let entry = store.read(k).await.expect("entry");
    entry.read_all(u64::MAX).await.expect("body")
}

fn event(kind: EventType, name: &str, rv: &str, object: &str) -> OwnedEvent {
    OwnedEvent {
        kind,
        namespace: Some("edge".into()),
        name: name.into(),
        resource_version: Some(rv.into()),
        object: object.as_bytes().to_vec(),
    }
}

#[test]
fn streamed_write_commit_read() {
    smol::block_on(async {
        let dir = temp("roundtrip");
        let store = FileStore::open(&dir).unwrap();
        let k = key("/api/v1/namespaces/edge/configmaps/a");
        let alice = Credential::ClientCert("alice".into());
        let big = format!(
            r#"{{"metadata":{{"resourceVersion":"5"}},"data":"{}"}}"#,
            "x".repeat(200_000)
        );
        put(&store, &k, big.as_bytes(), &alice).await;
        let e = store.read(&k).await.unwrap();
        assert_eq!(
            (e.meta.status, e.meta.resource_version.as_deref()),
            (200, Some("5"))
        );
        assert!(e.allows(&alice));
        assert_eq!(e.read_all(u64::MAX).await.unwrap(), big.as_bytes());
        let path = dir.join(k.rel_path());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let parent = fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        // A second reader is added; an unchanged answer is not rewritten.
        let small = br#"{"metadata":{"resourceVersion":"6"}}"#;
        let bob = Credential::ClientCert("bob".into());
        put(&store, &k, small, &bob).await;
        let inode = fs::metadata(&path).unwrap().ino();
        put(&store, &k, small, &bob).await;
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "not rewritten");
        assert_eq!(store.stats().unchanged(), 1);
        let e = store.read(&k).await.unwrap();
        assert!(e.allows(&alice) && e.allows(&bob));
        assert_eq!(body_of(&store, &k).await, small);
        assert_eq!(store.stats().entries(), 1);
        let _ = fs::remove_dir_all(&dir);
    });
}

#[test]
fn aborted_and_torn_entries_are_never_served() {
    smol::block_on(async {
        let dir = temp("torn");
        let store = FileStore::open(&dir).unwrap();
        let k = key("/api/v1/namespaces/edge/configmaps/b");
        let cred = Credential::ClientCert("c".into());
        // Larger than the held limit, so the body was already streaming.
        let mut tee = store.tee(spec(&k, &cred, AnswerKind::Object));
        tee.write(&vec![b'x'; 100_000]);
        drop(tee);
        store.flush().await;
        assert_eq!(store.read(&k).await.err(), Some(Miss::Absent));
        let mut leftovers = 0;
        walk(&dir, &mut |_, _| leftovers += 1);
        assert_eq!(leftovers, 0, "the aborted temp file is gone");
        put(&store, &k, br#"{"complete":true}"#, &cred).await;
        let path = dir.join(k.rel_path());
        let len = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert_eq!(store.read(&k).await.err(), Some(Miss::Torn));
        assert!(!path.exists(), "the torn entry was removed");
        assert_eq!(store.stats().entries(), 0);
        let _ = fs::remove_dir_all(&dir);
    });
}

#[test]
fn watch_events_patch_cached_lists_and_their_objects() {
    smol::block_on(async {
        let dir = temp("patch");
        let store = FileStore::open(&dir).unwrap();
        let list = key("/api/v1/namespaces/edge/pods");
        let cred = Credential::ClientCert("n".into());
        let a = r#"{"metadata":{"name":"a","namespace":"edge","resourceVersion":"1"}}"#;
        let b = r#"{"metadata":{"name":"b","namespace":"edge","resourceVersion":"2"}}"#;
        let body = format!(
            r#"{{"kind":"PodList","metadata":{{"resourceVersion":"2"}},"items":[{a},{b}]}}"#
        );
        let whole = AnswerKind::List { continued: None };
        put_as(&store, &list, body.as_bytes(), &cred, whole).await;
        let obj_b = list.item(Some("edge"), "b").unwrap();
        put(&store, &obj_b, b.as_bytes(), &cred).await;
        let a3 = r#"{"metadata":{"name":"a","namespace":"edge","resourceVersion":"3"},"x":1}"#;
        let stale = r#"{"metadata":{"name":"a","namespace":"edge","resourceVersion":"2"},"old":1}"#;
        store.push_events(
            &list,
            vec![
                event(EventType::Modified, "a", "2", stale),
                event(EventType::Modified, "a", "3", a3),
                event(EventType::Deleted, "b", "4", b),
            ],
        );
        let e = store.read(&list).await.unwrap();
        assert_eq!(e.meta.resource_version.as_deref(), Some("4"));
        assert!(e.allows(&cred));
        let text = String::from_utf8(e.read_all(u64::MAX).await.unwrap()).unwrap();
        assert_eq!(
            text,
            format!(r#"{{"kind":"PodList","metadata":{{"resourceVersion":"4"}},"items":[{a3}]}}"#)
        );
        assert_eq!(
            store.read(&obj_b).await.err(),
            Some(Miss::Absent),
            "the deleted object's entry is gone"
        );
        assert_eq!(store.stats().list_rewrites(), 1);
        // Events for a list that is not cached change nothing.
        let other = key("/api/v1/namespaces/other/pods");
        store.push_events(&other, vec![event(EventType::Added, "z", "9", a)]);
        store.flush().await;
        assert_eq!(store.read(&other).await.err(), Some(Miss::Absent));
        let _ = fs::remove_dir_all(&dir);
    });
}

#[test]
fn pages_become_one_list_and_objects_converge() {
    smol::block_on(async {
        let dir = temp("pages");
        let store = FileStore::open(&dir).unwrap();
        let list = key("/api/v1/namespaces/edge/pods");
        let cred = Credential::ClientCert("n".into());
        let item = |n: &str| format!(r#"{{"metadata":{{"name":"{n}","namespace":"edge"}}}}"#);
        let gone = list.item(Some("edge"), "gone").unwrap();
        put(&store, &gone, item("gone").as_bytes(), &cred).await;
        let page1 = format!(
            r#"{{"kind":"PodList","metadata":{{"resourceVersion":"7","continue":"c1"}},"items":[{}]}}"#,
            item("p1")
        );
        let page2 = format!(
            r#"{{"kind":"PodList","metadata":{{"resourceVersion":"7"}},"items":[{}]}}"#,
            item("p2")
        );
        put_as(
            &store,
            &list,
            page1.as_bytes(),
            &cred,
            AnswerKind::List { continued: None },
        )
        .await;
        assert_eq!(
            store.read(&list).await.err(),
            Some(Miss::Absent),
            "page 1 is not the list"
        );
        let next = AnswerKind::List {
            continued: Some("c1".into()),
        };
        put_as(&store, &list, page2.as_bytes(), &cred, next).await;
        let text = String::from_utf8(body_of(&store, &list).await).unwrap();
        assert!(text.contains("p1") && text.contains("p2"), "{text}");
        assert!(!text.contains("continue"), "{text}");
        assert_eq!(
            store.read(&gone).await.err(),
            Some(Miss::Absent),
            "converged"
        );
        assert_eq!(store.stats().entries(), 1, "pages removed");
        let _ = fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_tee_over_the_budget_gives_up_and_is_counted() {
    smol::block_on(async {
        let dir = temp("budget");
        let store = FileStore::open(&dir).unwrap();
        let k = key("/api/v1/namespaces/edge/configmaps/huge");
        let cred = Credential::ClientCert("c".into());
        // Take the whole budget first, as a stuck writer would hold it.
        assert!(store.shared.reserve(MAX_QUEUED));
        let mut tee = store.tee(spec(&k, &cred, AnswerKind::Object));
        tee.write(&vec![b'x'; 100_000]);
        assert!(!tee.is_live());
        tee.commit();
        store.shared.release(MAX_QUEUED);
        store.flush().await;
        assert_eq!(store.read(&k).await.err(), Some(Miss::Absent));
        assert_eq!(
            store
                .stats()
                .tee_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let _ = fs::remove_dir_all(&dir);
    });
}

#[test]
fn pages_a_restart_interrupted_are_removed_at_start() {
    smol::block_on(async {
        let dir = temp("orphans");
        let list = key("/api/v1/namespaces/edge/pods");
        let cred = Credential::ClientCert("n".into());
        let page1 =
            br#"{"kind":"PodList","metadata":{"resourceVersion":"7","continue":"c1"},"items":[]}"#;
        {
            let store = FileStore::open(&dir).unwrap();
            put_as(
                &store,
                &list,
                page1,
                &cred,
                AnswerKind::List { continued: None },
            )
            .await;
            store.close().await;
        }
        let page = dir.join(list.page(None).rel_path());
        assert!(page.exists(), "page 1 waits for page 2");
        let store = FileStore::open(&dir).unwrap();
        assert!(
            !page.exists(),
            "a restart forgot the chain: the page is removed"
        );
        assert_eq!(store.stats().entries(), 0);
        let _ = fs::remove_dir_all(&dir);
    });
}
