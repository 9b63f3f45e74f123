//! The cluster's service-account signing keys: fetched online from
//! `/openid/v1/jwks`, persisted next to the cache so that a reboot while
//! offline still verifies tokens, and used by [`crate::jwt`].
//!
//! In a real cluster `/openid/v1/jwks` is readable by service accounts
//! (`system:service-account-issuer-discovery`), not by anonymous callers, so
//! the keys are fetched with the token of a service-account caller whose key
//! id we do not know yet: the caller's own credential, for its own benefit.
//! The periodic refresh tries without credentials, which works where
//! anonymous discovery is allowed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::http::{pump, BodyDecoder, ResponseHead, Sink};
use crate::jwt::{Jwks, KeySet};
use crate::server::{unix_now, State};

/// Where the keys are kept, relative to the cache dir (a name no agent
/// directory can have: agents never start with `.`).
const PERSISTED: &str = ".jwks.json";
/// Largest JWKS document accepted.
const MAX_JWKS: usize = 64 * 1024;
/// Fetches triggered by unknown key ids happen at most this often.
const MIN_FETCH_GAP: u64 = 30;

static LAST_FETCH: AtomicU64 = AtomicU64::new(0);

fn persisted_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(PERSISTED)
}

/// Loads keys saved by an earlier run (reboot while offline).
pub fn load_persisted(keys: &KeySet, cache_dir: &Path) {
    let Ok(bytes) = std::fs::read(persisted_path(cache_dir)) else {
        return;
    };
    match Jwks::parse(&bytes) {
        Ok(jwks) => keys.set(jwks),
        Err(e) => log::warn!("ignoring saved service-account keys: {e}"),
    }
}

/// Refreshes the keys every `every` while online.
pub async fn refresh_loop(state: &State, every: Duration) {
    loop {
        state.health.wait_online().await;
        if let Err(e) = fetch(state, None).await {
            log::debug!("service-account keys not refreshed anonymously: {e}");
        }
        smol::Timer::after(every).await;
    }
}

/// Called for online requests carrying a service-account JWT: fetches the
/// keys with that token when its key id is unknown (rate-limited).
pub async fn learn_from(state: &State, token: &str) {
    let known = state
        .keys
        .get()
        .is_some_and(|jwks| jwks.knows_key_of(token));
    if known || !state.health.is_online() {
        return;
    }
    let now = unix_now();
    let last = LAST_FETCH.load(Ordering::Acquire);
    if now.saturating_sub(last) < MIN_FETCH_GAP
        || LAST_FETCH
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    if let Err(e) = fetch(state, Some(token)).await {
        log::warn!("could not fetch service-account keys: {e}");
    }
}

/// `GET /openid/v1/jwks` on the current server, over a connection that
/// presents no client certificate.
async fn fetch(state: &State, token: Option<&str>) -> Result<(), String> {
    let server = state.health.current();
    let mut lease = state
        .upstream
        .checkout(server, None)
        .await
        .map_err(|e| e.to_string())?;
    let target = state.upstream.server(server);
    let mut head = format!(
        "GET {}/openid/v1/jwks HTTP/1.1\r\nHost: {}\r\nAccept: application/jwk-set+json, application/json\r\nUser-Agent: lite-apiserver/{}\r\n",
        target.path_prefix,
        target.authority,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    let conn = &mut lease.conn;
    conn.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    conn.flush().await.map_err(|e| e.to_string())?;
    let res = conn
        .read_head(ResponseHead::parse)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed before answering")?;
    let mut body = Bounded(Vec::new());
    let mut dec = BodyDecoder::new(res.framing("GET").map_err(|e| e.to_string())?);
    pump(&mut dec, conn, &mut body)
        .await
        .map_err(|e| e.to_string())?;
    if res.status != 200 {
        return Err(format!("/openid/v1/jwks answered {}", res.status));
    }
    let jwks = Jwks::parse(&body.0).map_err(|e| e.to_string())?;
    persist(&state.config.cache_dir, &body.0);
    state.keys.set(jwks);
    if res.keep_alive() {
        state.upstream.checkin(lease);
    }
    log::info!("service-account keys refreshed");
    Ok(())
}

/// Writes the document crash-safely (temp file, fsync, rename).
fn persist(cache_dir: &Path, bytes: &[u8]) {
    let path = persisted_path(cache_dir);
    let tmp = cache_dir.join(".jwks.json.tmp");
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        log::warn!("could not save service-account keys: {e}");
    }
}

/// A sink keeping at most [`MAX_JWKS`] bytes.
struct Bounded(Vec<u8>);

impl Sink for Bounded {
    async fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.0.len() + bytes.len() > MAX_JWKS {
            return Err(std::io::Error::other("JWKS document too large"));
        }
        self.0.extend_from_slice(bytes);
        Ok(())
    }
    async fn idle(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
