//! kubelet's Lease renewals answered while offline, sent upstream the
//! moment the cloud is back.
//!
//! Offline, kubelet's renewal of its own node Lease is answered locally
//! (by the offline answers) so the node does not churn. Without more, the
//! cloud would see the first real renewal only at kubelet's next tick (up
//! to 10 s after the link returns) and the node would look dead that much
//! longer than without the proxy. So the newest renewal answered locally
//! is kept (per Lease path: newest wins) and, when the state flips back
//! to online, sent upstream at once: kubelet's own head and body, through
//! the identity its request would have used. Nothing is made up. A 409
//! (the Lease changed meanwhile) or any other failure is logged; kubelet's
//! next renewal then goes through as usual (a renewal forwarded online
//! forgets what is kept, so an older body never follows a newer one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::RequestHead;

use super::Context;

/// A kept renewal older than this is not sent: a Lease lasts 40 s by
/// default, an older renewTime says nothing the cloud can use.
const STALE_AFTER: Duration = Duration::from_secs(40);
/// Most Leases kept (a node renews one; a bound against a busy caller).
const MAX_KEPT: usize = 8;
/// Largest answer body read back (a Lease is about 1 KB).
const MAX_ANSWER: usize = 64 * 1024;

/// One renewal answered locally.
#[derive(Debug)]
struct Kept {
    head: RequestHead,
    body: Vec<u8>,
    /// CN of the caller's client certificate (picks the `--identity`).
    cn: Option<String>,
    at: Instant,
}

/// The newest locally answered renewal of each Lease path.
#[derive(Debug, Default)]
pub struct DelayedLeases {
    kept: Mutex<HashMap<String, Kept>>,
}

impl DelayedLeases {
    /// Keeps `head` + `body` (answered locally) to send when back online.
    pub fn record(&self, head: &RequestHead, body: &[u8], cn: Option<&str>) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        let path = head.path().to_owned();
        if kept.len() >= MAX_KEPT && !kept.contains_key(&path) {
            return;
        }
        let renewal = Kept {
            head: head.clone(),
            body: body.to_vec(),
            cn: cn.map(str::to_owned),
            at: Instant::now(),
        };
        kept.insert(path, renewal);
    }

    /// A renewal of `path` went upstream itself: nothing older may follow.
    pub fn forget(&self, path: &str) {
        if let Ok(mut kept) = self.kept.lock() {
            if !kept.is_empty() {
                kept.remove(path);
            }
        }
    }

    /// Everything kept that is still worth sending; the store is emptied.
    fn take_fresh(&self) -> Vec<Kept> {
        let Ok(mut kept) = self.kept.lock() else {
            return Vec::new();
        };
        kept.drain()
            .map(|(_, k)| k)
            .filter(|k| k.at.elapsed() < STALE_AFTER)
            .collect()
    }
}

/// After every outage, sends the kept renewals as soon as the state is
/// online again. Runs for the life of the process.
pub async fn replay_loop(ctx: &Context) {
    loop {
        ctx.upstream.health.wait_offline().await;
        ctx.upstream.health.wait_online().await;
        for renewal in ctx.leases.take_fresh() {
            send(ctx, renewal).await;
        }
    }
}

/// Sends one kept renewal and logs what the cloud said.
async fn send(ctx: &Context, renewal: Kept) {
    let path = renewal.head.path().to_owned();
    let waited = renewal.at.elapsed().as_millis();
    let sent = ctx
        .upstream
        .send_delayed(
            &renewal.head,
            &renewal.body,
            renewal.cn.as_deref(),
            MAX_ANSWER,
        )
        .await;
    match sent {
        Ok((status, _)) if (200..300).contains(&status) => {
            log::info!("delayed lease renewal {path} (answered locally {waited} ms ago) sent upstream: {status}");
        }
        Ok((status, body)) => log::warn!(
            "delayed lease renewal {path} refused upstream: {status} {}; kubelet's next renewal proceeds as usual",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
        Err(e) => log::warn!(
            "delayed lease renewal {path} not sent: {e}; kubelet's next renewal proceeds as usual"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewal(path: &str) -> RequestHead {
        let text = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n");
        match RequestHead::parse(text.as_bytes()) {
            Ok(crate::http::Parsed::Complete(head, _)) => head,
            other => panic!("test head did not parse: {other:?}"),
        }
    }

    #[test]
    fn newest_wins_and_forget_drops() {
        let leases = DelayedLeases::default();
        let a = renewal("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/a");
        leases.record(&a, b"{1}", Some("system:node:a"));
        leases.record(&a, b"{2}", Some("system:node:a"));
        let kept = leases.take_fresh();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].body, b"{2}");
        assert!(leases.take_fresh().is_empty(), "taken once");

        leases.record(&a, b"{3}", None);
        leases.forget(a.path());
        assert!(leases.take_fresh().is_empty());
    }

    #[test]
    fn bounded() {
        let leases = DelayedLeases::default();
        for i in 0..(MAX_KEPT + 5) {
            leases.record(&renewal(&format!("/l/{i}")), b"{}", None);
        }
        assert_eq!(leases.take_fresh().len(), MAX_KEPT);
    }
}
