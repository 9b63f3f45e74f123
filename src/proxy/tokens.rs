//! TokenRequest answers kept for offline use.
//!
//! Online, the answer to `POST .../serviceaccounts/NAME/token` is stored like
//! any cached entry (per agent, bound to the caller's credential). Offline,
//! the same request gets that answer back while the token in it has not
//! expired. A token is never signed locally: without a cached, unexpired
//! answer the request gets 503.

use crate::auth::identity::Caller;
use crate::http::RequestHead;
use crate::proxy::Context;

/// Largest TokenRequest answer read back (they are about 2 KB).
const MAX_ANSWER: u64 = 64 * 1024;

/// The cached TokenRequest answer for this caller and request, if its token
/// is still valid.
pub async fn cached_token(ctx: &Context, head: &RequestHead, caller: &Caller) -> Option<Vec<u8>> {
    let entry = crate::proxy::offline::lookup(ctx, head, caller)
        .await
        .ok()?;
    let body = entry.read_all(MAX_ANSWER).await?;
    let expiry = crate::json::string_at(&body, &["status", "expirationTimestamp"])?;
    let expires = crate::clock::parse_rfc3339(&expiry)?;
    (expires > crate::clock::unix_now()).then_some(body)
}
