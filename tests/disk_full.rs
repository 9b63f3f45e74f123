//! A full or read-only cache disk (issue 10, item 5): the cache dir is a
//! 256 KiB tmpfs made by the test (skipped with a message where mounting is
//! not allowed), then filled up (ENOSPC) or remounted read-only (EROFS).
//! Online proxying still answers every GET, LIST and WATCH exactly as the
//! upstream does; the failure is logged once per kind and counted in
//! `lite_apiserver_cache_write_failures_total`; and the list entry whose
//! watch events could not be applied keeps a consistent pair: its header's
//! resource-version is its body's `metadata.resourceVersion`, and its items
//! are the upstream's items at that resourceVersion, never a version that
//! claims events it lacks (also after the disk has room again).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::client::{Client, Stream};
use support::daemon::Daemon;
use support::double::{Double, Opts};
use support::entries::{self, EntryFile};
use support::pki::Pki;
use support::silence::{wait_until, BOUND, FAST, KUBELET};

const PODS: &str = "/api/v1/namespaces/edge/pods";
const METRIC: &str = "lite_apiserver_cache_write_failures_total";

/// A tmpfs mounted by the test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(path.to_owned()))
    }

    /// Remounts read-only; retries while a file is still open for writing.
    fn remount_read_only(&self) {
        let deadline = Instant::now() + BOUND;
        loop {
            let out = Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&self.0)
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "remount read-only: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system says ENOSPC.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![b'x'; 4096];
    loop {
        match f.write_all(&block).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => return,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// A double (with a 100-pod, ~350 KB list in `bulk`: more than the whole
/// tmpfs) and lite-apiserver caching into `cache`.
struct World {
    double: Double,
    proxy: Daemon,
    node: Client,
    _pki: Pki,
}

fn start(dir: &Path, cache: &Path) -> World {
    let pki = Pki::generate(&dir.join("pki"));
    let double = Double::start(&pki, Opts::default());
    double.seed_pods("bulk", "edge-1", 100, 3_000);
    let mut args: Vec<String> = vec!["--server".into(), double.url()];
    args.extend(pki.proxy_flags());
    args.extend(["--cache-agents", "*"].map(String::from));
    args.extend(FAST.map(String::from));
    let proxy = Daemon::start(cache, &args);
    let node = Client::new(proxy.addr, &pki.ca.pem, Some(&pki.node));
    World {
        double,
        proxy,
        node,
        _pki: pki,
    }
}

/// The content of the edge pod list at each resourceVersion the test made.
type Snapshots = BTreeMap<u64, BTreeSet<(String, String)>>;

fn snapshot(w: &World, snaps: &mut Snapshots) -> u64 {
    let rv = w.double.current_rv();
    snaps.insert(
        rv,
        entries::item_versions(&w.double.list_json("/api/v1", "pods", "edge")),
    );
    rv
}

/// Reads the watch until an event at `rv` went by.
fn until_event(watch: &mut Stream, rv: u64, log: &dyn Fn() -> String) {
    let needle = format!("\"resourceVersion\":\"{rv}\"");
    let deadline = Instant::now() + BOUND;
    loop {
        let line = watch
            .next_line(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("watch, waiting for rv {rv}: {e}\n{}", log()))
            .unwrap_or_else(|| panic!("watch ended before rv {rv}\n{}", log()));
        if line.contains(&needle) && !line.contains("BOOKMARK") {
            return;
        }
    }
}

/// Reads the watch until `n` BOOKMARKs went by: the double sends one a
/// second, so this spans at least `n - 1` seconds of the proxy's 1 s
/// coalescing of list rewrites (the store has no other sign that it tried a
/// batch). `each` runs after every line.
fn pass_bookmarks(watch: &mut Stream, n: usize, log: &dyn Fn() -> String, mut each: impl FnMut()) {
    let mut seen = 0;
    let deadline = Instant::now() + BOUND;
    while seen < n {
        let line = watch
            .next_line(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("watch, waiting for bookmarks: {e}\n{}", log()))
            .unwrap_or_else(|| panic!("watch ended while waiting for bookmarks\n{}", log()));
        if line.contains("\"type\":\"BOOKMARK\"") {
            seen += 1;
        }
        each();
    }
}

/// Every GET and LIST the node makes is answered as the upstream answers.
fn everything_answers_correctly(w: &World) {
    let objects = [
        ("/api/v1", "pods", "edge", "web-1"),
        ("/api/v1", "pods", "edge", "web-3"),
        ("/api/v1", "pods", "bulk", "bulk-000042"),
        ("/api/v1", "configmaps", "edge", "app-config"),
        ("/api/v1", "secrets", "edge", "app-secret"),
        ("/api/v1", "nodes", "", "edge-1"),
        ("/api/v1", "namespaces", "", "edge"),
    ];
    for (prefix, resource, ns, name) in objects {
        let path = match ns {
            "" => format!("{prefix}/{resource}/{name}"),
            ns => format!("{prefix}/namespaces/{ns}/{resource}/{name}"),
        };
        let r = w.node.get(&path, &[KUBELET]);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        assert_eq!(
            r.json(),
            w.double.get(prefix, resource, ns, name).unwrap(),
            "GET {path}"
        );
    }
    // kubectl lists edge pods: a fresh LIST by kubelet would replace
    // kubelet's list entry whole and hide what its lost events did.
    let kubectl = ("User-Agent", "kubectl/v1.36.2 (linux/amd64) kubernetes/abc");
    for (ns, count, agent) in [("edge", None, kubectl), ("bulk", Some(100), KUBELET)] {
        let path = format!("/api/v1/namespaces/{ns}/pods");
        let r = w.node.get(&path, &[agent]);
        assert_eq!(r.status, 200, "LIST {path}: {}", r.text());
        let want = entries::item_versions(&w.double.list_json("/api/v1", "pods", ns));
        assert_eq!(entries::item_versions(&r.json()), want, "LIST {path}");
        if let Some(n) = count {
            assert_eq!(r.json()["items"].as_array().unwrap().len(), n);
        }
    }
}

/// Log lines that report a failure of this kind.
fn failure_lines(log: &str, words: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|l| words.iter().any(|w| l.contains(w)))
        .map(str::to_owned)
        .collect()
}

/// The entry's pair is consistent: header rv = body rv, and the items are
/// the upstream's at that rv.
fn consistent(entry: &Path, snaps: &Snapshots) -> Result<(), String> {
    let e = EntryFile::read(entry)?;
    let problems = e.problems();
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let rv: u64 = e
        .resource_version()
        .and_then(|r| r.parse().ok())
        .ok_or("entry has no numeric resource-version")?;
    let got = entries::item_versions(&e.json()?);
    let (at, want) = snaps
        .range(..=rv)
        .next_back()
        .ok_or(format!("entry rv {rv} is older than the first LIST"))?;
    if &got == want {
        Ok(())
    } else {
        Err(format!(
            "entry says rv {rv} (upstream content as of rv {at}) but its items differ: missing {:?}, extra {:?}",
            want.difference(&got).collect::<Vec<_>>(),
            got.difference(want).collect::<Vec<_>>()
        ))
    }
}

/// The whole scenario; `break_disk` makes writes fail, `mend_disk` gives
/// room back (None: stays broken); `words` identify this kind's log line.
fn disk_failure_never_breaks_online_proxying(
    name: &str,
    break_disk: impl FnOnce(&Tmpfs),
    mend_disk: Option<&dyn Fn(&Tmpfs)>,
    words: &[&str],
) {
    let dir = support::temp_dir(name);
    let cache = dir.join("cache");
    let tmpfs = match Tmpfs::mount(&cache, "256k") {
        Ok(t) => t,
        Err(why) => {
            println!("SKIPPED {name}: cannot mount a tmpfs here ({why})");
            eprintln!("SKIPPED {name}: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let w = start(&dir, &cache);
    let log = || w.proxy.log_text();
    let entry = entries::plain(&cache, "kubelet/api/v1/namespaces/edge/pods");

    // With room: the pod list is cached and a relayed watch feeds it.
    let mut snaps = Snapshots::new();
    let list = w.node.get(PODS, &[KUBELET]);
    assert_eq!(list.status, 200);
    let rv0 = list.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    snaps.insert(rv0.parse().unwrap(), entries::item_versions(&list.json()));
    let mut watch = w
        .node
        .open("GET", &format!("{PODS}?allowWatchBookmarks=true&resourceVersion={rv0}&timeoutSeconds=600&watch=true"), &[KUBELET], b"")
        .unwrap();
    assert_eq!(watch.status, 200);
    wait_until("the pod list entry", BOUND, || entry.exists(), log);
    let failures_before = w.proxy.metric(METRIC);

    break_disk(&tmpfs);

    // Events the cache cannot store: each still reaches the client.
    let mut pod = support::world::pod("edge", "web-1", "edge-1", 0);
    pod["metadata"]["labels"]["tier"] = json!("changed");
    w.double.apply("/api/v1", "pods", "edge", "web-1", pod);
    until_event(&mut watch, snapshot(&w, &mut snaps), &log);
    w.double.apply(
        "/api/v1",
        "pods",
        "edge",
        "web-5",
        support::world::pod("edge", "web-5", "edge-1", 0),
    );
    until_event(&mut watch, snapshot(&w, &mut snaps), &log);
    w.double.delete("/api/v1", "pods", "edge", "web-2");
    until_event(&mut watch, snapshot(&w, &mut snaps), &log);

    // Every online answer is still exactly the upstream's.
    everything_answers_correctly(&w);
    // The proxy has tried (and failed) to apply those events.
    pass_bookmarks(&mut watch, 3, &log, || {});

    wait_until(
        &format!("{METRIC} to count the failed writes"),
        BOUND,
        || w.proxy.metric(METRIC) > failures_before,
        || format!("/metrics:\n{}\n{}", w.proxy.admin_get("/metrics"), log()),
    );
    consistent(&entry, &snaps)
        .unwrap_or_else(|e| panic!("while the disk is broken: {e}\n{}", log()));

    if let Some(mend) = mend_disk {
        // Room again: the next event must not publish a list claiming the
        // events it lost.
        mend(&tmpfs);
        w.double.apply(
            "/api/v1",
            "pods",
            "edge",
            "web-6",
            support::world::pod("edge", "web-6", "edge-1", 0),
        );
        let last = snapshot(&w, &mut snaps);
        until_event(&mut watch, last, &log);
        // Either the entry catches up to `last` consistently, or it stays at
        // a consistent older version; watch it for a few coalescing periods.
        let check = || {
            consistent(&entry, &snaps)
                .unwrap_or_else(|e| panic!("after the disk had room again: {e}\n{}", log()))
        };
        pass_bookmarks(&mut watch, 3, &log, check);
        check();
        everything_answers_correctly(&w);
    }

    let lines = failure_lines(&log(), words);
    assert_eq!(
        lines.len(),
        1,
        "the failure is logged once for its kind ({words:?}), got:\n{}",
        lines.join("\n")
    );
    println!("{METRIC} = {}", w.proxy.metric(METRIC));
    drop(watch);
    drop(w);
    drop(tmpfs);
}

#[test]
fn a_full_disk_never_breaks_online_proxying() {
    let mend = |t: &Tmpfs| std::fs::remove_file(t.0.join("filler")).unwrap();
    disk_failure_never_breaks_online_proxying(
        "disk-full",
        |t| fill(&t.0.join("filler")),
        Some(&mend),
        &["No space left on device", "os error 28", "ENOSPC"],
    );
}

#[test]
fn a_read_only_disk_never_breaks_online_proxying() {
    disk_failure_never_breaks_online_proxying(
        "disk-ro",
        Tmpfs::remount_read_only,
        None,
        &["Read-only file system", "os error 30", "EROFS"],
    );
}
