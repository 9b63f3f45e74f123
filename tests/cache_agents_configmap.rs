//! The `cache_agents` ConfigMap (`--cache-agents-configmap`, default
//! kube-system/lite-apiserver): its agents are cached besides
//! `--cache-agents`, a change upstream takes effect without a restart, a
//! malformed value changes nothing, and the last good value survives a
//! restart while the cloud is unreachable. lite-apiserver reads it as the
//! node, with `fieldSelector=metadata.name=...` (what an RBAC
//! `resourceNames` rule needs).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::Response;
use support::double::Opts;
use support::setup::Setup;

const CONFIGMAPS: &str = "/api/v1/namespaces/kube-system/configmaps";
const APP_CONFIG: &str = "/api/v1/namespaces/edge/configmaps/app-config";
const APP_SECRET: &str = "/api/v1/namespaces/edge/secrets/app-secret";
const UPDATES: &str = "lite_apiserver_cache_agents_updates_total";
const REJECTED: &str = "lite_apiserver_cache_agents_rejected_total";

/// lite-apiserver caching only kubelet by flag, following the default
/// ConfigMap.
fn setup(name: &str) -> Setup {
    Setup::with(name, Opts::default(), &["--cache-agents", "kubelet"])
}

/// Sets the ConfigMap's `cache_agents` upstream (creating it).
fn set_agents(s: &Setup, value: Value) {
    s.double.apply(
        "/api/v1",
        "configmaps",
        "kube-system",
        "lite-apiserver",
        json!({"data": {"cache_agents": value}}),
    );
}

/// Polls `check` until it holds, for at most 15 s.
fn wait(s: &Setup, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            s.proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_metric(s: &Setup, name: &str, at_least: f64) {
    wait(s, &format!("{name} >= {at_least}"), || {
        s.proxy.metric(name) >= at_least
    });
}

fn wait_log(s: &Setup, needle: &str) {
    wait(s, &format!("the log line {needle:?}"), || {
        s.proxy.log_text().contains(needle)
    });
}

/// A GET through lite-apiserver with the node's certificate, as `agent`.
fn get_as(s: &Setup, agent: &str, path: &str) -> Response {
    let user_agent = format!("{agent}/1.0 (linux/arm64)");
    s.client(Some(&s.pki.node))
        .get(path, &[("User-Agent", user_agent.as_str())])
}

/// The cache entry of `agent` for `path`.
fn entry(s: &Setup, agent: &str, path: &str) -> PathBuf {
    s.proxy
        .cache_dir
        .join(agent)
        .join(format!("{}@.json", path.trim_start_matches('/')))
}

/// GETs `path` online as `agent` and waits until its entry is on disk.
fn read_and_cache(s: &Setup, agent: &str, path: &str) -> Response {
    let online = get_as(s, agent, path);
    assert_eq!(online.status, 200, "{}", online.text());
    let file = entry(s, agent, path);
    wait(s, &format!("{}", file.display()), || file.exists());
    online
}

/// The requests the follower made (the only ones in kube-system).
fn follower_requests(s: &Setup) -> Vec<support::double::Recorded> {
    s.double
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with(CONFIGMAPS))
        .collect()
}

#[test]
fn configmap_agents_are_cached_and_changed_live() {
    let s = setup("cm-agents-live");
    wait(&s, "the follower's watch", || {
        follower_requests(&s)
            .iter()
            .any(|r| r.target.contains("watch=true"))
    });
    set_agents(&s, json!("foo"));
    wait_metric(&s, UPDATES, 1.0);
    wait_log(
        &s,
        "cache agents: [kubelet, foo] (ConfigMap kube-system/lite-apiserver adds [foo])",
    );
    let foo_config = read_and_cache(&s, "foo", APP_CONFIG);
    // bar is not cached yet: this answer is not kept.
    assert_eq!(get_as(&s, "bar", APP_CONFIG).status, 200);

    // Added upstream: bar is cached from the next request on, no restart.
    set_agents(&s, json!("foo, Bar"));
    wait_metric(&s, UPDATES, 2.0);
    wait_log(
        &s,
        "cache agents: [kubelet, foo, bar] (ConfigMap kube-system/lite-apiserver adds [foo, bar])",
    );
    let bar_secret = read_and_cache(&s, "bar", APP_SECRET);

    // Every read of the ConfigMap was the node's, naming the object.
    let reads = follower_requests(&s);
    assert!(
        reads.iter().any(|r| !r.target.contains("watch=")),
        "a LIST: {reads:?}"
    );
    assert!(
        reads.iter().any(|r| r.target.contains("watch=true")),
        "a WATCH"
    );
    for r in &reads {
        assert_eq!(r.method, "GET");
        assert_eq!(r.cn.as_deref(), Some("system:node:edge-1"), "{}", r.target);
        assert!(
            r.target.starts_with(&format!(
                "{CONFIGMAPS}?fieldSelector=metadata.name%3Dlite-apiserver"
            )),
            "{}",
            r.target
        );
    }
    assert_eq!(s.proxy.metric(REJECTED), 0.0);

    // Offline, both agents' reads are served from the cache.
    let mut s = s;
    s.double.stop();
    s.wait_online(false);
    let hit = get_as(&s, "foo", APP_CONFIG);
    assert_eq!((hit.status, hit.body), (200, foo_config.body));
    let hit = get_as(&s, "bar", APP_SECRET);
    assert_eq!((hit.status, hit.body), (200, bar_secret.body));
    let miss = get_as(&s, "bar", APP_CONFIG);
    assert_eq!(miss.status, 404, "read before bar was added: not cached");
}

#[test]
fn malformed_values_change_nothing() {
    let s = setup("cm-agents-malformed");
    set_agents(&s, json!("foo"));
    wait_metric(&s, UPDATES, 1.0);
    let saved = s.proxy.cache_dir.join(".cache-agents");
    wait(&s, "the saved value", || saved.exists());
    let saved_text = std::fs::read_to_string(&saved).unwrap();
    assert!(saved_text.contains("\ncache_agents foo\n"), "{saved_text}");

    // Space-separated, then not a string at all: both ignored.
    set_agents(&s, json!("foo bar"));
    wait_metric(&s, REJECTED, 1.0);
    wait_log(&s, "ignored the cache_agents value of ConfigMap kube-system/lite-apiserver: \"foo bar\" is not a User-Agent product name");
    set_agents(&s, json!(["bar"]));
    wait_metric(&s, REJECTED, 2.0);
    wait_log(
        &s,
        "the value of key cache_agents is not a string; still [kubelet, foo]",
    );
    assert_eq!(s.proxy.metric(UPDATES), 1.0, "nothing applied");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), saved_text);
    let foo_config = read_and_cache(&s, "foo", APP_CONFIG);
    assert_eq!(get_as(&s, "bar", APP_CONFIG).status, 200);

    // Deleted: only --cache-agents remain.
    s.double
        .delete("/api/v1", "configmaps", "kube-system", "lite-apiserver");
    wait_metric(&s, UPDATES, 2.0);
    wait_log(
        &s,
        "cache agents: [kubelet] (ConfigMap kube-system/lite-apiserver adds [])",
    );
    assert_eq!(get_as(&s, "foo", APP_SECRET).status, 200);

    let mut s = s;
    s.double.stop();
    s.wait_online(false);
    let hit = get_as(&s, "foo", APP_CONFIG);
    assert_eq!((hit.status, hit.body), (200, foo_config.body));
    assert_eq!(
        get_as(&s, "bar", APP_CONFIG).status,
        404,
        "bar was never cached"
    );
    assert_eq!(
        get_as(&s, "foo", APP_SECRET).status,
        404,
        "read after the delete"
    );
}

#[test]
fn configmap_agents_survive_an_offline_restart() {
    let mut s = setup("cm-agents-restart");
    set_agents(&s, json!("foo"));
    wait_metric(&s, UPDATES, 1.0);
    let saved = s.proxy.cache_dir.join(".cache-agents");
    wait(&s, "the saved value", || saved.exists());
    let foo_config = read_and_cache(&s, "foo", APP_CONFIG);

    // Reboot while the cloud is gone: the saved value is in use at start
    // (logged; offline answers themselves do not depend on the list).
    s.double.stop();
    s.wait_online(false);
    s.proxy.restart();
    wait_log(
        &s,
        "cache agents: [kubelet, foo] (ConfigMap kube-system/lite-apiserver adds [foo] as last read)",
    );
    let hit = get_as(&s, "foo", APP_CONFIG);
    assert_eq!((hit.status, hit.body), (200, foo_config.body));

    // The cloud returns but the ConfigMap's list is held: foo is cached on
    // the saved value alone.
    s.double.delay_matching(CONFIGMAPS, 30_000);
    s.double.restart();
    s.wait_online(true);
    read_and_cache(&s, "foo", APP_SECRET);
    assert_eq!(
        s.proxy.metric(UPDATES),
        0.0,
        "nothing read from the cluster since the restart"
    );
}
