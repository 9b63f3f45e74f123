//! TokenRequest answers kept for offline use.
//!
//! Online, the answer to `POST .../serviceaccounts/NAME/token` is stored like
//! any cached entry (per agent, bound to the caller's credential). Offline,
//! the same request gets that answer back while the token in it has not
//! expired. A token is never signed locally: without a cached, unexpired
//! answer the request gets 503.

use crate::cache::Entry;

/// Largest TokenRequest answer read back (they are about 2 KB).
const MAX_ANSWER: u64 = 64 * 1024;

/// The body of a cached TokenRequest answer, if its token is still valid.
pub async fn unexpired(entry: Entry) -> Option<Vec<u8>> {
    let body = entry.read_all(MAX_ANSWER).await?;
    let expiry = crate::json::string_at(&body, &["status", "expirationTimestamp"])?;
    let expires = crate::clock::parse_rfc3339(&expiry)?;
    (expires > crate::clock::unix_now()).then_some(body)
}
