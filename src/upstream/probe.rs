//! The background health probe: `GET /readyz`, only where traffic says
//! nothing.
//!
//! - Online, the current server is probed only when traffic gives a sign:
//!   a request has been waiting for its answer for a jittered
//!   `--health-interval` with nothing succeeding meanwhile (a silent link
//!   makes every request hang), or nothing at all succeeded for
//!   [`IDLE_FACTOR`] intervals (a node with only watches open). While
//!   requests succeed, or simply nothing is asked, the probe costs the
//!   cloud nothing. The flip to offline comes within `--health-interval`
//!   plus the probe timeout (`--upstream-timeout`) of the first request
//!   left unanswered, and within three intervals plus the timeout of the
//!   link going silent when nothing is asked.
//! - Offline, every server is probed in order every interval; the first
//!   that answers collects successes (two bring the state back online; the
//!   second is asked a fifth of an interval after the first).
//! - Each server's probe reuses one kept-alive anonymous connection: a
//!   fleet of nodes does not cost the apiserver a TLS handshake per probe.
//! - Intervals are jittered (80-100%) so a fleet does not probe in step.

use std::time::Duration;

use smol::future::FutureExt;

use super::Upstream;

/// Largest `/readyz` body read.
const MAX_READYZ: usize = 4096;

/// A server with nothing succeeding for this many intervals is probed
/// even when no request waits (kubelet renews its Lease every 10 s, so a
/// kubelet's node is never probed at the default 5 s interval).
pub const IDLE_FACTOR: u32 = 3;

/// Runs the probe forever.
pub async fn probe_loop(upstream: &Upstream, every: Duration) {
    loop {
        let wait = jittered(every);
        let health = &upstream.health;
        // On the first server, online: probe only on a sign of trouble.
        if health.is_online() && health.current() == 0 {
            if let Some(nap) = nothing_to_learn(health, wait, wait * IDLE_FACTOR) {
                smol::Timer::after(nap).await;
                continue;
            }
        }
        probe_round(upstream, wait).await;
        // A first success while offline is confirmed a fifth of an
        // interval later, not a whole one: a healed node is back in about
        // a second, and a link that answered once is still asked twice.
        let next = match health.is_confirming() {
            true => wait / 5,
            false => wait,
        };
        smol::Timer::after(next).await;
    }
}

/// `None` if server 0 should be probed now, else how long to sleep before
/// looking again: until a waiting request would count as stalled, at most
/// a quarter interval (a request may start waiting meanwhile).
fn nothing_to_learn(
    health: &super::health::Health,
    wait: Duration,
    idle: Duration,
) -> Option<Duration> {
    let stalled = health.stalled_for(0);
    let quiet = health.quiet_for(0);
    if stalled >= wait || quiet >= idle {
        return None;
    }
    let until_stalled = match stalled.is_zero() {
        true => wait / 4,
        false => wait - stalled,
    };
    Some(
        until_stalled
            .min(idle - quiet)
            .max(Duration::from_millis(20)),
    )
}

/// Probes the servers in order up to the first healthy one (a current
/// server whose requests succeed within `busy` counts as healthy without a
/// probe). The ones before it that fail are declared down; none healthy is
/// offline.
async fn probe_round(upstream: &Upstream, busy: Duration) {
    let health = &upstream.health;
    let mut last_error = String::new();
    for server in 0..upstream.server_count() {
        let current = health.is_online() && server == health.current();
        if current && health.quiet_for(server) < busy {
            return;
        }
        match probe(upstream, server).await {
            Ok(()) => {
                health.probe_succeeded(server);
                return;
            }
            Err(e) => {
                last_error = format!("{}: {e}", upstream.server(server).authority);
                upstream.declare_down(server, &format!("probe: {last_error}"));
            }
        }
    }
    health.all_down(&last_error);
}

/// One `GET /readyz` on `server`'s probe connection (dialed if needed),
/// within `--upstream-timeout` in all.
pub async fn probe(upstream: &Upstream, server: usize) -> Result<(), String> {
    super::Counters::bump(&upstream.counters.probes);
    let slot = &upstream.probes[server.min(upstream.probes.len() - 1)];
    let kept = slot.lock().ok().and_then(|mut c| c.take());
    let attempt = async {
        let kept = match kept {
            Some(mut conn) => super::is_quiet(&mut conn).await.then_some(conn),
            _ => None,
        };
        let mut conn = match kept {
            Some(conn) => conn,
            None => {
                super::Counters::bump(&upstream.counters.probe_dials);
                let (_, config) = upstream.tls.client_config(None);
                super::dial::dial(
                    upstream.server(server),
                    upstream.proxy.as_ref(),
                    config,
                    upstream.timeout,
                )
                .await
                .map_err(|e| e.to_string())?
            }
        };
        let target = upstream.server(server);
        let head = format!(
            "GET {}/readyz HTTP/1.1\r\nHost: {}\r\nUser-Agent: lite-apiserver/{}\r\nAccept: */*\r\n\r\n",
            target.path_prefix,
            target.authority,
            env!("CARGO_PKG_VERSION")
        );
        let (status, _, reusable) =
            super::exchange(&mut conn, head.as_bytes(), "GET", MAX_READYZ).await?;
        if reusable {
            if let Ok(mut c) = slot.lock() {
                *c = Some(conn);
            }
        }
        match status {
            200 => Ok(()),
            other => Err(format!("/readyz answered {other}")),
        }
    };
    attempt
        .or(async {
            crate::timeout::sleep(upstream.timeout).await;
            Err("/readyz timed out".to_owned())
        })
        .await
}

/// `every` scaled by a random factor in [0.8, 1.0].
fn jittered(every: Duration) -> Duration {
    every.mul_f64(0.8) + crate::clock::random_within(every.mul_f64(0.2))
}
