//! The cluster's service-account signing keys: fetched online from
//! `/openid/v1/jwks`, persisted next to the cache so that a reboot while
//! offline still verifies tokens, and used by [`crate::auth::jwt`].
//!
//! In a real cluster `/openid/v1/jwks` is readable by service accounts
//! (`system:service-account-issuer-discovery`), not by anonymous callers, so
//! the keys are fetched with the token of a service-account caller whose key
//! id we do not know yet: the caller's own credential, for its own benefit.
//! The periodic refresh tries without credentials, which works where
//! anonymous discovery is allowed.
//!
//! This module does not know how to reach the cloud: the upstream layer
//! implements [`KeyFetch`] for it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::jwt::{Jwks, KeySet};
use crate::clock::unix_now;

/// Where the keys are kept, relative to the cache dir (a name no agent
/// directory can have: agents never start with `.`).
const PERSISTED: &str = ".jwks.json";
/// Largest JWKS document accepted.
pub const MAX_JWKS: usize = 64 * 1024;
/// Fetches triggered by unknown key ids happen at most this often.
const MIN_FETCH_GAP: u64 = 30;

/// How the keys reach us: the upstream layer's side of the seam.
pub trait KeyFetch {
    /// The body of a 200 answer to `GET /openid/v1/jwks` (at most
    /// [`MAX_JWKS`] bytes), asked anonymously or with `token`.
    fn fetch_jwks(&self, token: Option<&str>) -> impl Future<Output = Result<Vec<u8>, String>>;
    /// Whether the cloud is reachable now.
    fn is_online(&self) -> bool;
    /// Completes when the cloud is reachable.
    fn wait_online(&self) -> impl Future<Output = ()>;
}

/// The keys, where they are kept, and when they were last fetched.
#[derive(Debug)]
pub struct ServiceAccountKeys {
    keys: KeySet,
    file: PathBuf,
    last_fetch: AtomicU64,
}

impl ServiceAccountKeys {
    /// The keys persisted in `cache_dir`, if any (read at start, before
    /// anything is served).
    pub fn load(cache_dir: &Path) -> ServiceAccountKeys {
        let file = cache_dir.join(PERSISTED);
        let keys = KeySet::default();
        if let Ok(bytes) = std::fs::read(&file) {
            match Jwks::parse(&bytes) {
                Ok(jwks) => keys.set(jwks),
                Err(e) => log::warn!("ignoring saved service-account keys: {e}"),
            }
        }
        ServiceAccountKeys {
            keys,
            file,
            last_fetch: AtomicU64::new(0),
        }
    }

    /// The current keys, if any.
    pub fn get(&self) -> Option<Arc<Jwks>> {
        self.keys.get()
    }

    /// Refreshes the keys anonymously every `every` while online, forever.
    pub async fn refresh_loop(&self, fetch: &impl KeyFetch, every: Duration) {
        loop {
            fetch.wait_online().await;
            if let Err(e) = self.fetch(fetch, None).await {
                log::debug!("service-account keys not refreshed anonymously: {e}");
            }
            smol::Timer::after(every).await;
        }
    }

    /// Called after a service-account caller was answered 2xx online: if
    /// its token is signed by a key we do not know, fetch the keys with that
    /// token (at most every `MIN_FETCH_GAP` seconds).
    pub async fn learn_from(&self, fetch: &impl KeyFetch, token: &str) {
        let known = self.keys.get().is_some_and(|jwks| jwks.knows_key_of(token));
        if known || !fetch.is_online() {
            return;
        }
        let now = unix_now();
        let last = self.last_fetch.load(Ordering::Acquire);
        if now.saturating_sub(last) < MIN_FETCH_GAP
            || self
                .last_fetch
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.fetch(fetch, Some(token)).await {
            log::warn!("could not fetch service-account keys: {e}");
        }
    }

    async fn fetch(&self, fetch: &impl KeyFetch, token: Option<&str>) -> Result<(), String> {
        let body = fetch.fetch_jwks(token).await?;
        let jwks = Jwks::parse(&body).map_err(|e| e.to_string())?;
        let file = self.file.clone();
        let saved = crate::iopool::run(move || persist(&file, &body)).await;
        if let Err(e) = saved.unwrap_or_else(|| Err(std::io::Error::other("I/O pool stopped"))) {
            log::warn!("could not save service-account keys: {e}");
        }
        self.keys.set(jwks);
        log::info!("service-account keys refreshed");
        Ok(())
    }
}

/// Writes the document crash-safely (temp file, fsync, rename, fsync dir).
fn persist(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::durable::replace(path, &path.with_extension("json.tmp"), bytes)
}
