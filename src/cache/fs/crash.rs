//! Crash consistency of the cache writer (issue 10, item 6).
//!
//! Each scenario drives a [`FileStore`] through its public API (`tee`,
//! `push_events`, `flush`, `gc`) on a [`RecordFs`]. Then, for every cut
//! point (after every logged operation) and every state a power cut there
//! could leave ([`Model::image`]: unsynced directory changes none, half or
//! all kept; unsynced file data lost, half written, truncated, holed or
//! all there), the state is built in a fresh directory and read back with
//! [`FileStore::read`]. Every entry must be the old or the new version the
//! test wrote (or a version it declared in between), never torn, never
//! gone when it existed before and after, and no entry may appear that the
//! test did not write. At the point where `flush` returned, the durable
//! state must already be the new one (nothing left unsynced).
//!
//! The `sabotage_*` tests make the recorder skip one kind of sync (as a
//! writer that forgot it would) and require the check to fail: proof the
//! check can fail.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::model::{DataCut, DirCut, Image, Model};
use super::record::{Log, Op, RecordFs, Sabotage};
use crate::auth::identity::{Agent, Credential};
use crate::cache::file::{is_entry_name, FileStore, Miss};
use crate::cache::key::CacheKey;
use crate::cache::{AnswerKind, TeeSpec};
use crate::k8s::watch::{EventType, OwnedEvent};

/// What the test wrote for one entry.
#[derive(Debug, Clone)]
struct Expect {
    key: CacheKey,
    /// The body before the scenario (None: no entry).
    before: Option<Vec<u8>>,
    /// The body after it (None: no entry).
    after: Option<Vec<u8>>,
    /// Versions it may show in between (pages).
    between: Vec<Vec<u8>>,
}

impl Expect {
    fn allows(&self, body: &[u8]) -> bool {
        self.before.as_deref() == Some(body)
            || self.after.as_deref() == Some(body)
            || self.between.iter().any(|b| b == body)
    }
}

/// One scenario: a store on a recorder, and what the test wrote.
struct Case {
    name: String,
    dir: PathBuf,
    store: FileStore,
    log: Arc<Log>,
    expect: BTreeMap<PathBuf, Expect>,
    model: Option<Model>,
    cred: Credential,
}

/// What replaying a scenario found.
#[derive(Debug)]
struct Outcome {
    name: String,
    ops: Vec<Op>,
    cuts: usize,
    images: usize,
    failures: Vec<String>,
}

impl Outcome {
    fn summary(&self) -> String {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.failures {
            *kinds.entry(f.split(':').next().unwrap_or("")).or_default() += 1;
        }
        format!(
            "crash {}: {} operations, {} cut points, {} distinct crash states checked, {} failures {kinds:?}",
            self.name,
            self.ops.len(),
            self.cuts,
            self.images,
            self.failures.len()
        )
    }

    fn assert_clean(&self) {
        eprintln!("{}", self.summary());
        assert!(
            self.failures.is_empty(),
            "{}:\n{}",
            self.summary(),
            self.failures
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// The sabotaged writer must be caught, with a failure of `kind`.
    fn assert_caught(&self, kind: &str) {
        eprintln!("{}", self.summary());
        let hits = self.failures.iter().filter(|f| f.starts_with(kind)).count();
        assert!(
            hits > 0,
            "{}: a sabotaged writer was not caught as {kind:?}; failures: {:?}",
            self.summary(),
            self.failures.iter().take(5).collect::<Vec<_>>()
        );
        eprintln!("  caught: {}", self.failures[0]);
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lite-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn key(path: &str) -> CacheKey {
    CacheKey::new(&Agent::from_user_agent(Some("kubelet")), path, None, None).unwrap()
}

/// An object body (`pad` bytes of data make it large).
fn obj(name: &str, rv: u64, pad: usize) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}","namespace":"edge","resourceVersion":"{rv}"}},"data":"{}"}}"#,
        "x".repeat(pad)
    )
}

/// A pod list body.
fn pod_list(rv: u64, items: &[String]) -> String {
    format!(
        r#"{{"kind":"PodList","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
        items.join(",")
    )
}

fn event(kind: EventType, name: &str, rv: u64, object: &str) -> OwnedEvent {
    OwnedEvent {
        kind,
        namespace: Some("edge".into()),
        name: name.into(),
        resource_version: Some(rv.to_string()),
        object: object.as_bytes().to_vec(),
    }
}

const WHOLE: AnswerKind = AnswerKind::List { continued: None };

impl Case {
    fn new(name: &str, sabotage: Option<Sabotage>) -> Case {
        let name = match sabotage {
            Some(s) => format!("{name}-{s:?}"),
            None => name.to_owned(),
        };
        let dir = temp(&name);
        let log = Log::new(sabotage);
        let store = FileStore::open_with(&dir, RecordFs::new(log.clone())).unwrap();
        Case {
            name,
            dir,
            store,
            log,
            expect: BTreeMap::new(),
            model: None,
            cred: Credential::ClientCert("system:node:edge-1".into()),
        }
    }

    /// Caches `body` as `key` through a tee (in pieces, as a relay would).
    fn put(&self, key: &CacheKey, body: &str, kind: AnswerKind) {
        self.put_as(key, body, kind, &self.cred);
    }

    fn put_as(&self, key: &CacheKey, body: &str, kind: AnswerKind, cred: &Credential) {
        let mut tee = self.store.tee(TeeSpec {
            key: key.clone(),
            status: 200,
            content_type: "application/json".into(),
            credential: Some(cred.clone()),
            kind,
        });
        for piece in body.as_bytes().chunks(7000) {
            tee.write(piece);
        }
        tee.commit();
    }

    fn slot(&mut self, key: &CacheKey) -> &mut Expect {
        self.expect.entry(key.rel_path()).or_insert_with(|| Expect {
            key: key.clone(),
            before: None,
            after: None,
            between: Vec::new(),
        })
    }

    /// `key` holds `body` before the scenario (and after, unless changed).
    fn has(&mut self, key: &CacheKey, body: &str) {
        let e = self.slot(key);
        e.before = Some(body.as_bytes().to_vec());
        e.after = e.before.clone();
    }

    /// After the scenario `key` holds `body` (None: no entry).
    fn becomes(&mut self, key: &CacheKey, body: Option<&str>) {
        self.slot(key).after = body.map(|b| b.as_bytes().to_vec());
    }

    /// `key` may hold `body` for a while during the scenario.
    fn passes(&mut self, key: &CacheKey, body: &str) {
        self.slot(key).between.push(body.as_bytes().to_vec());
    }

    /// The setup is on disk: snapshot it (taken as durable) and start
    /// recording.
    async fn start(&mut self) {
        self.store.flush().await;
        for e in self.expect.values() {
            let found = read_body(&self.store, &e.key).await;
            assert_eq!(found.ok(), e.before, "{}: setup of {}", self.name, e.key);
        }
        self.model = Some(Model::snapshot(&self.dir));
        self.log.clear();
    }

    /// Ends the scenario and checks every cut point.
    async fn finish(self) -> Outcome {
        self.store.flush().await;
        self.log.mark("flushed");
        self.store.close().await;
        self.log.wait_gone(Duration::from_secs(10));
        let ops = self.log.ops();
        let mut model = self.model.clone().expect("start() was called");
        let mut seen = HashSet::new();
        let mut failures = Vec::new();
        let scratch = self.dir.with_extension("image");
        for cut in 0..=ops.len() {
            if cut > 0 {
                model.apply(&ops[cut - 1]);
            }
            let at = match cut {
                0 => "before the first operation".to_owned(),
                _ => format!("after `{}`", ops[cut - 1].describe(&self.dir)),
            };
            let at = format!("cut {cut}/{} {at}", ops.len());
            for dirs in DirCut::ALL {
                for data in DataCut::ALL {
                    let image = model.image(dirs, data);
                    if !seen.insert(hash(&image)) {
                        continue; // same state, same verdict
                    }
                    let ctx = format!("{} {at} ({dirs:?} dirs, {data:?} data)", self.name);
                    failures.extend(self.check(&image, &scratch, &ctx, false).await);
                }
            }
            if cut > 0 && matches!(ops[cut - 1], Op::Mark("flushed")) {
                failures.extend(self.check_durable(&model, &scratch, &at).await);
            }
        }
        failures.extend(lint(&ops, &self.dir, &self.name));
        self.compare_model(&model);
        let _ = std::fs::remove_dir_all(&scratch);
        let _ = std::fs::remove_dir_all(&self.dir);
        Outcome {
            name: self.name,
            cuts: ops.len() + 1,
            ops,
            images: seen.len(),
            failures,
        }
    }

    /// When `flush` returned, nothing may be left unsynced: the strictest
    /// crash state equals the live one and holds every new version.
    async fn check_durable(&self, model: &Model, scratch: &Path, at: &str) -> Vec<String> {
        let strict = model.image(DirCut::None, DataCut::Lost);
        let live = model.image(DirCut::All, DataCut::Full);
        let mut out = Vec::new();
        if strict != live {
            let differ: Vec<String> = strict
                .keys()
                .chain(live.keys())
                .filter(|p| strict.get(*p) != live.get(*p))
                .map(|p| p.display().to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            out.push(format!(
                "not-durable: {} {at}: flush returned with unsynced changes to {differ:?}",
                self.name
            ));
        }
        let ctx = format!("{} {at} (durable state)", self.name);
        out.extend(self.check(&strict, scratch, &ctx, true).await);
        out
    }

    /// Builds `image` in `scratch` and reads every entry back.
    async fn check(&self, image: &Image, scratch: &Path, ctx: &str, exact: bool) -> Vec<String> {
        let mut out = Vec::new();
        build(image, scratch);
        for (path, bytes) in image {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if bytes.is_some() && is_entry_name(name) && !self.expect.contains_key(path) {
                out.push(format!(
                    "unexpected: {ctx}: entry {} was never written by the test",
                    path.display()
                ));
            }
        }
        let store = FileStore::open(scratch).unwrap();
        for e in self.expect.values() {
            if let Some(problem) = check_entry(&store, e, ctx, exact).await {
                out.push(problem);
            }
        }
        store.close().await;
        out
    }

    /// Self-check of the recorder: the model's live state has the files
    /// the real directory has, with the same bytes.
    fn compare_model(&self, model: &Model) {
        let live: BTreeMap<PathBuf, Vec<u8>> = model
            .image(DirCut::All, DataCut::Full)
            .into_iter()
            .filter_map(|(p, b)| Some((p, b?)))
            .collect();
        let mut real = BTreeMap::new();
        crate::cache::file::walk(&self.dir, &mut |path, _| {
            let rel = path.strip_prefix(&self.dir).unwrap().to_owned();
            real.insert(rel, std::fs::read(path).unwrap());
        });
        assert_eq!(
            live.keys().collect::<Vec<_>>(),
            real.keys().collect::<Vec<_>>(),
            "{}: the model's files differ from the real directory's",
            self.name
        );
        assert!(live == real, "{}: the model's bytes differ", self.name);
    }
}

/// What is wrong with one expected entry in a crash state, if anything.
async fn check_entry(store: &FileStore, e: &Expect, ctx: &str, exact: bool) -> Option<String> {
    let rel = e.key.rel_path();
    let rel = rel.display();
    match store.read(&e.key).await {
        Ok(entry) => {
            let rv = entry.meta.resource_version.clone();
            let Some(body) = entry.read_all(u64::MAX).await else {
                return Some(format!("unreadable: {ctx}: {rel}"));
            };
            let body_rv = crate::json::resource_version(&body);
            if exact && e.after.as_deref() != Some(&body[..]) {
                Some(format!(
                    "not-durable: {ctx}: {rel} is not its new version ({} bytes)",
                    body.len()
                ))
            } else if !e.allows(&body) {
                Some(format!(
                    "served-torn: {ctx}: {rel} served {} bytes that are no version the test wrote: {:?}",
                    body.len(),
                    String::from_utf8_lossy(&body[..body.len().min(120)])
                ))
            } else if rv != body_rv {
                Some(format!(
                    "served-torn: {ctx}: {rel} header resource-version {rv:?} but body {body_rv:?}"
                ))
            } else {
                None
            }
        }
        Err(Miss::Torn) => Some(format!(
            "torn: {ctx}: {rel} is torn (refused as a miss, but neither old nor new)"
        )),
        Err(Miss::Absent) if exact && e.after.is_some() => {
            Some(format!("not-durable: {ctx}: {rel} is missing after flush"))
        }
        Err(Miss::Absent) if e.before.is_some() && e.after.is_some() => Some(format!(
            "lost: {ctx}: {rel} is gone (both its old and its new version)"
        )),
        Err(Miss::Absent) => None,
    }
}

/// The protocol, checked on the log itself (this also flags a skipped
/// sync that no crash state shows, e.g. the unlink of a temp file that
/// never became durable): before `flush` returned, every unlink, rename and
/// mkdir was followed by a sync of its directory, and every file renamed
/// into place had been synced after its last write.
fn lint(ops: &[Op], root: &Path, name: &str) -> Vec<String> {
    let end = ops
        .iter()
        .position(|o| matches!(o, Op::Mark("flushed")))
        .unwrap_or(ops.len());
    let synced_later = |i: usize, dir: Option<&Path>| {
        ops[i + 1..end]
            .iter()
            .any(|o| matches!(o, Op::SyncDir(d) if Some(d.as_path()) == dir))
    };
    let mut out = Vec::new();
    for (i, op) in ops[..end].iter().enumerate() {
        let dir = match op {
            Op::Remove(p) | Op::Mkdir(p) | Op::Rename { to: p, .. } => p.parent(),
            _ => continue,
        };
        if !synced_later(i, dir) {
            out.push(format!(
                "protocol: {name}: `{}` (op {i}) is not followed by a sync of its directory",
                op.describe(root)
            ));
        }
        if let Op::Rename { from, .. } = op {
            let handle = ops[..i].iter().rev().find_map(|o| match o {
                Op::Create { path, file } if path == from => Some(*file),
                _ => None,
            });
            let last = |want: fn(&Op, u64) -> bool| {
                handle.and_then(|h| ops[..i].iter().rposition(|o| want(o, h)))
            };
            let write = last(|o, h| matches!(o, Op::Write { file, .. } if *file == h));
            let sync = last(|o, h| matches!(o, Op::Sync { file } if *file == h));
            if handle.is_none() || sync.is_none() || write > sync {
                out.push(format!(
                    "protocol: {name}: `{}` (op {i}) renames a file not synced after its last write",
                    op.describe(root)
                ));
            }
        }
    }
    out
}

async fn read_body(store: &FileStore, key: &CacheKey) -> Result<Vec<u8>, Miss> {
    let entry = store.read(key).await?;
    entry.read_all(u64::MAX).await.ok_or(Miss::Torn)
}

fn hash(image: &Image) -> u64 {
    let mut h = DefaultHasher::new();
    image.hash(&mut h);
    h.finish()
}

/// Writes `image` into a fresh `dir`.
fn build(image: &Image, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (path, bytes) in image {
        let at = dir.join(path);
        match bytes {
            None => std::fs::create_dir_all(&at).unwrap(),
            Some(b) => std::fs::write(&at, b).unwrap(),
        }
    }
}

mod scenarios;
use scenarios::*;

fn run(f: impl std::future::Future<Output = Outcome>) -> Outcome {
    smol::block_on(f)
}

#[test]
fn crash_new_entry_in_new_directories() {
    let out = run(new_entry_in_new_directories(None));
    out.assert_clean();
    let mkdirs = out.ops.iter().filter(|o| matches!(o, Op::Mkdir(_))).count();
    assert!(
        mkdirs >= 5,
        "the entry's directories were created: {mkdirs}"
    );
}

#[test]
fn crash_replace_small_entry() {
    run(replace_small(None)).assert_clean();
}

#[test]
fn crash_replace_large_streamed_entry() {
    run(replace_large(None)).assert_clean();
}

#[test]
fn crash_unchanged_answer_writes_nothing() {
    let out = run(unchanged_answer(None));
    out.assert_clean();
    let writes: Vec<&Op> = out.ops.iter().filter(|o| o.mutates()).collect();
    assert!(writes.is_empty(), "an unchanged answer wrote: {writes:?}");
}

#[test]
fn crash_list_patched_by_watch_events() {
    run(list_patched_by_events(None)).assert_clean();
}

#[test]
fn crash_paged_list_assembled() {
    let out = run(paged_list_assembled(None));
    out.assert_clean();
    let removed = out
        .ops
        .iter()
        .filter(|o| matches!(o, Op::Remove(_)))
        .count();
    assert!(removed >= 2, "the pages were removed");
}

#[test]
fn crash_converge_removes_object_entries() {
    run(converge_removes_objects(None)).assert_clean();
}

#[test]
fn crash_gc_removes_an_expired_entry() {
    run(gc_removes_expired(None)).assert_clean();
}

#[test]
fn crash_aborted_tee() {
    let out = run(aborted_tee(None));
    out.assert_clean();
    assert!(
        out.ops.iter().any(|o| matches!(o, Op::Remove(_))),
        "the aborted temp files were written and removed"
    );
}

#[test]
fn sabotage_no_file_sync_is_caught() {
    run(replace_small(Some(Sabotage::FileSync))).assert_caught("torn");
    run(replace_large(Some(Sabotage::FileSync))).assert_caught("torn");
}

#[test]
fn sabotage_no_dir_sync_after_rename_is_caught() {
    run(replace_small(Some(Sabotage::DirSyncAfterRename))).assert_caught("not-durable");
}

#[test]
fn sabotage_no_dir_sync_after_unlink_is_caught() {
    // (Not the events scenario: its object entries are updated in hash
    // order, so a later publish in the same directory may sync the unlink
    // anyway, and the skipped sync is then harmless.)
    run(paged_list_assembled(Some(Sabotage::DirSyncAfterRemove))).assert_caught("not-durable");
    run(converge_removes_objects(Some(Sabotage::DirSyncAfterRemove))).assert_caught("not-durable");
    run(gc_removes_expired(Some(Sabotage::DirSyncAfterRemove))).assert_caught("not-durable");
}

#[test]
fn sabotage_no_parent_sync_after_mkdir_is_caught() {
    run(new_entry_in_new_directories(Some(
        Sabotage::DirSyncAfterMkdir,
    )))
    .assert_caught("not-durable");
}
