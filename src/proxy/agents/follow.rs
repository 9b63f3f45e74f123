//! Following the `cache_agents` ConfigMap: LIST, then WATCH from the list's
//! resourceVersion, upstream, as the node.
//!
//! Both requests carry `fieldSelector=metadata.name=NAME`: the Node
//! authorizer does not let nodes read ConfigMaps in general, and an RBAC
//! rule with `resourceNames` (packaging/kubernetes/rbac.yaml) covers a list
//! or a watch only when it names the object that way. They present the
//! `--identity` whose CN is `system:node:...`, the identity the Role binds
//! (group `system:nodes`).
//!
//! Each ADDED or MODIFIED event installs the object's value, DELETED (or an
//! empty list) installs none: only `--cache-agents` remain. A malformed
//! value is logged once and ignored. Every change is logged in one info
//! line, counted in `/metrics` and saved ([`super::saved`]). The watch ends
//! after [`WATCH_SECONDS`], on a 410 or when its server is declared down;
//! then the loop lists again (after waiting for the cloud while it is
//! offline and a random part of `--resume-spread` after that, and backing
//! off after errors).

use std::path::{Path, PathBuf};
use std::time::Duration;

use smol::future::FutureExt;
use smol::Timer;

use super::{from_object, saved, show, CacheAgents, KEY};
use crate::config::{Config, IdentityFiles};
use crate::http::{pump, BodyDecoder, ResponseHead, Sink};
use crate::k8s::watch::{EventSplitter, EventType, WatchEvent};
use crate::upstream::{UpConn, Upstream};

/// `timeoutSeconds` of each watch.
pub const WATCH_SECONDS: u64 = 300;
/// A watch the server does not end by itself is ended this much later.
const WATCH_GRACE: Duration = Duration::from_secs(30);
/// The answer head of a watch must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between a watch that ended well and the next list.
const PAUSE: Duration = Duration::from_secs(1);
/// First and longest wait after an error.
const MIN_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Largest list answer read (a ConfigMap holds at most 1 MiB).
const MAX_LIST: usize = 2 * 1024 * 1024;

/// Why one list-and-watch round failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FollowError {
    /// The cloud could not be reached or the connection broke.
    Upstream(String),
    /// The apiserver answered this status.
    Status(u16),
    /// The answer was not a ConfigMap list or watch stream.
    Answer(String),
}

impl std::fmt::Display for FollowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FollowError::Upstream(e) => write!(f, "{e}"),
            FollowError::Status(s @ (401 | 403)) => write!(
                f,
                "answered {s}: let nodes read it (kubectl apply -f packaging/kubernetes/rbac.yaml)"
            ),
            FollowError::Status(s) => write!(f, "answered {s}"),
            FollowError::Answer(why) => write!(f, "unexpected answer: {why}"),
        }
    }
}

impl std::error::Error for FollowError {}

/// The CN of the `--identity` whose certificate names a node
/// (`system:node:...`), if there is one.
pub fn node_identity(identities: &[IdentityFiles]) -> Option<String> {
    identities.iter().find_map(|id| {
        let chain = crate::pem::load_certs(&id.cert).ok()?;
        let cn = crate::tls::common_name(chain.first()?.as_ref())?;
        cn.starts_with("system:node:").then_some(cn)
    })
}

/// Installs the value saved by an earlier run (before anything is served).
pub fn restore(agents: &CacheAgents, config: &Config) {
    let Some((ns, name)) = &config.cache_agents_configmap else {
        return;
    };
    let configmap = format!("{ns}/{name}");
    if let Some(saved) = saved::read(&config.cache_dir, &configmap) {
        if agents.restore(saved.clone()) {
            log::info!(
                "cache agents: {} (ConfigMap {configmap} adds {} as last read)",
                show(&agents.current()),
                show(&saved)
            );
        }
    }
}

/// Follows the ConfigMap of `--cache-agents-configmap` forever (or waits
/// forever when there is none to follow).
pub async fn follow(upstream: &Upstream, agents: &CacheAgents, config: &Config) {
    let Some((ns, name)) = config.cache_agents_configmap.clone() else {
        return std::future::pending().await;
    };
    let Some(identity) = node_identity(&config.identities) else {
        log::warn!(
            "cache agents: ConfigMap {ns}/{name} is not followed: no --identity has a system:node: CN (only --cache-agents apply)"
        );
        return std::future::pending().await;
    };
    let mut follower = Follower {
        upstream,
        agents,
        collection: format!(
            "/api/v1/namespaces/{ns}/configmaps?fieldSelector=metadata.name%3D{name}"
        ),
        configmap: format!("{ns}/{name}"),
        name,
        identity,
        dir: config.cache_dir.clone(),
        rejected: None,
        failed: None,
        spread: config.resume_spread,
    };
    follower.run().await
}

/// One follower's state.
struct Follower<'a> {
    upstream: &'a Upstream,
    agents: &'a CacheAgents,
    /// The collection path with the field selector.
    collection: String,
    /// `NS/NAME`, for logs and the saved file.
    configmap: String,
    name: String,
    /// CN of the node identity.
    identity: String,
    /// The cache directory.
    dir: PathBuf,
    /// The last malformed value ignored (logged once).
    rejected: Option<String>,
    /// The last error (logged once; repeats at debug).
    failed: Option<String>,
    /// `--resume-spread`: after an outage the list waits a random part of
    /// it, so a healed fleet does not list in the same second.
    spread: Duration,
}

impl Follower<'_> {
    async fn run(&mut self) -> ! {
        let mut backoff = MIN_BACKOFF;
        loop {
            if !self.upstream.health.is_online() {
                self.upstream.health.wait_online().await;
                Timer::after(crate::clock::random_within(self.spread)).await;
                backoff = MIN_BACKOFF;
            }
            match self.round().await {
                Ok(()) => {
                    backoff = MIN_BACKOFF;
                    self.failed = None;
                    Timer::after(PAUSE).await;
                }
                Err(e) => {
                    self.report(&e);
                    Timer::after(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Logs a failure: the first of its kind at warn, repeats at debug;
    /// transport failures at debug (the health state logs those).
    fn report(&mut self, e: &FollowError) {
        let text = e.to_string();
        let transport = matches!(e, FollowError::Upstream(_));
        if transport || self.failed.as_deref() == Some(text.as_str()) {
            log::debug!("cache agents: ConfigMap {}: {text}", self.configmap);
        } else {
            log::warn!(
                "cache agents: cannot read ConfigMap {} as {}: {text}; keeping {}",
                self.configmap,
                self.identity,
                show(&self.agents.current())
            );
            self.failed = Some(text);
        }
    }

    /// One LIST, then one WATCH until it ends.
    async fn round(&mut self) -> Result<(), FollowError> {
        let rv = self.list().await?;
        self.watch(&rv).await
    }

    /// Lists the ConfigMap, installs its value; returns the list's
    /// resourceVersion.
    async fn list(&mut self) -> Result<String, FollowError> {
        let (status, body) = self
            .upstream
            .get(&self.collection, Some(&self.identity), None, MAX_LIST)
            .await
            .map_err(FollowError::Upstream)?;
        if status != 200 {
            return Err(FollowError::Status(status));
        }
        let rv = crate::json::resource_version(&body)
            .ok_or_else(|| FollowError::Answer("a list without resourceVersion".into()))?;
        match named_item(&body, &self.name)? {
            Some(item) => self.install(Some(&body[item])).await,
            None => self.install(None).await,
        }
        Ok(rv)
    }

    /// Watches from `rv` until the stream ends or its server goes down.
    async fn watch(&mut self, rv: &str) -> Result<(), FollowError> {
        let upstream = self.upstream;
        let mut lease = upstream
            .connect(Some(&self.identity), false)
            .await
            .map_err(|e| FollowError::Upstream(e.to_string()))?;
        let server = upstream.server(lease.server);
        let head = format!(
            "GET {}{}&watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: lite-apiserver/{}\r\n\r\n",
            server.path_prefix,
            self.collection,
            server.authority,
            env!("CARGO_PKG_VERSION")
        );
        let (index, epoch) = (lease.server, lease.epoch);
        self.stream(&mut lease.conn, head.as_bytes())
            .or(async {
                upstream.health.wait_down(index, epoch).await;
                Err(FollowError::Upstream("the server went down".into()))
            })
            .or(async {
                crate::timeout::sleep(Duration::from_secs(WATCH_SECONDS) + WATCH_GRACE).await;
                Ok(())
            })
            .await
    }

    /// Sends the watch request and applies its events until the stream
    /// ends (`Ok`: ended, or expired with 410; list again).
    async fn stream(&mut self, conn: &mut UpConn, head: &[u8]) -> Result<(), FollowError> {
        let broke = |e: std::io::Error| FollowError::Upstream(format!("watch: {e}"));
        conn.write_all(head).await.map_err(broke)?;
        conn.flush().await.map_err(broke)?;
        let answer = conn
            .read_head(ResponseHead::parse)
            .or(async {
                crate::timeout::sleep(HEAD_TIMEOUT).await;
                Err(crate::http::HttpError::Timeout)
            })
            .await
            .map_err(|e| FollowError::Upstream(format!("watch: {e}")))?
            .ok_or_else(|| FollowError::Upstream("watch: closed before answering".into()))?;
        if answer.status != 200 {
            return Err(FollowError::Status(answer.status));
        }
        let framing = answer
            .framing("GET")
            .map_err(|e| FollowError::Answer(e.to_string()))?;
        let mut events = Events {
            follower: self,
            splitter: EventSplitter::new(),
            outcome: None,
        };
        let pumped = pump(&mut BodyDecoder::new(framing), conn, &mut events).await;
        match (events.outcome.take(), pumped) {
            (Some(outcome), _) => outcome,
            (None, Ok(_)) => Ok(()),
            (None, Err(e)) => Err(FollowError::Upstream(format!("watch: {e}"))),
        }
    }

    /// Installs the value of `object` (`None`: the ConfigMap does not
    /// exist): logs, counts and saves a change; logs a malformed value once.
    async fn install(&mut self, object: Option<&[u8]>) {
        let parsed = object.map_or(Ok(Vec::new()), from_object);
        let agents = match parsed {
            Ok(agents) => agents,
            Err(why) => {
                let text = why.to_string();
                if self.rejected.as_deref() != Some(text.as_str()) {
                    self.agents.rejected();
                    log::warn!(
                        "cache agents: ignored the {KEY} value of ConfigMap {}: {text}; still {}",
                        self.configmap,
                        show(&self.agents.current())
                    );
                    self.rejected = Some(text);
                }
                return;
            }
        };
        self.rejected = None;
        if !self.agents.apply(agents.clone()) {
            return;
        }
        log::info!(
            "cache agents: {} (ConfigMap {} adds {})",
            show(&self.agents.current()),
            self.configmap,
            show(&agents)
        );
        save(&self.dir, &self.configmap, agents).await;
    }
}

/// Saves the value on the I/O pool; a failure is logged and nothing else.
async fn save(dir: &Path, configmap: &str, agents: Vec<String>) {
    let (dir, configmap) = (dir.to_owned(), configmap.to_owned());
    let written = crate::iopool::run(move || saved::write(&dir, &configmap, &agents)).await;
    if let Err(e) = written.unwrap_or_else(|| Err(std::io::Error::other("I/O pool stopped"))) {
        log::warn!("cache agents: could not save the ConfigMap's value (an offline restart uses the previous one): {e}");
    }
}

/// The watch body as a sink: cuts events and applies them.
struct Events<'f, 'a> {
    follower: &'f mut Follower<'a>,
    splitter: EventSplitter,
    /// Set to end the stream early (an ERROR event).
    outcome: Option<Result<(), FollowError>>,
}

impl Events<'_, '_> {
    /// Applies one event line; `Some` ends the watch.
    async fn event(&mut self, line: &[u8]) -> Option<Result<(), FollowError>> {
        let event = match WatchEvent::parse(line) {
            Ok(event) => event,
            Err(e) => return Some(Err(FollowError::Answer(e.to_string()))),
        };
        let object = line.get(event.object.clone()).unwrap_or_default();
        match event.kind {
            EventType::Added | EventType::Modified if event.name == self.follower.name => {
                self.follower.install(Some(object)).await;
            }
            EventType::Deleted if event.name == self.follower.name => {
                self.follower.install(None).await;
            }
            EventType::Error if is_expired(object) => return Some(Ok(())),
            EventType::Error => {
                let why = crate::json::string_at(object, &["message"]).unwrap_or_default();
                return Some(Err(FollowError::Answer(format!("watch error: {why}"))));
            }
            _ => {}
        }
        None
    }
}

impl Sink for Events<'_, '_> {
    async fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for line in self.splitter.push(bytes) {
            if let Some(outcome) = self.event(&line).await {
                self.outcome = Some(outcome);
                return Err(std::io::Error::other("watch ended"));
            }
        }
        Ok(())
    }

    async fn idle(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether an ERROR event's Status is 410 (the resourceVersion is too old:
/// list again).
fn is_expired(status: &[u8]) -> bool {
    crate::json::path(status, 0, &["code"]).is_some_and(|code| &status[code] == b"410")
}

/// The range of the item named `name` in a list answer, if any.
fn named_item(list: &[u8], name: &str) -> Result<Option<std::ops::Range<usize>>, FollowError> {
    let bad = |why: &str| FollowError::Answer(format!("a list whose items are {why}"));
    let Some(items) = crate::json::member(list, 0, "items") else {
        return Err(bad("missing"));
    };
    if &list[items.clone()] == b"null" {
        return Ok(None);
    }
    if list.get(items.start) != Some(&b'[') {
        return Err(bad("not an array"));
    }
    let mut i = items.start + 1;
    loop {
        i = crate::json::skip_ws(list, i);
        if list.get(i) == Some(&b']') {
            return Ok(None);
        }
        let item = crate::json::value_range(list, i).map_err(|e| bad(&e.to_string()))?;
        let named = crate::json::object_identity(&list[item.clone()]);
        if named.is_some_and(|(_, n, _)| n == name) {
            return Ok(Some(item));
        }
        i = crate::json::skip_ws(list, item.end);
        match list.get(i) {
            Some(b',') => i += 1,
            Some(b']') => return Ok(None),
            _ => return Err(bad("cut short")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_by_name() {
        let cm = r#"{"metadata":{"name":"lite-apiserver"},"data":{"cache_agents":"foo"}}"#;
        let other = r#"{"metadata":{"name":"other"}}"#;
        let cases: &[(String, Option<&str>)] = &[
            (format!(r#"{{"items":[{cm}]}}"#), Some(cm)),
            (format!(r#"{{"items": [ {other} , {cm} ]}}"#), Some(cm)),
            (format!(r#"{{"items":[{other}]}}"#), None),
            (r#"{"items":[]}"#.into(), None),
            (r#"{"items":null}"#.into(), None),
        ];
        for (list, want) in cases {
            let got = named_item(list.as_bytes(), "lite-apiserver").unwrap();
            assert_eq!(got.map(|r| &list[r]), *want, "{list}");
        }
        for bad in [
            r#"{"kind":"Status"}"#,
            r#"{"items":{}}"#,
            r#"{"items":[{} {}]}"#,
        ] {
            assert!(named_item(bad.as_bytes(), "x").is_err(), "{bad}");
        }
    }
}
