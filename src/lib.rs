//! lite-apiserver: a node-local caching reverse proxy for the Kubernetes API.
//!
//! # Layout
//! Modules sit in layers; each imports only from layers below it
//! (`tests/layout.rs` enforces it), and the wiring, [`server`], is
//! imported by nobody. Bottom to top, following one request:
//!
//! - Leaves: [`clock`] (time, jitter), [`pem`], [`json`] (a zero-copy byte
//!   scanner), [`net`] (keepalive and `TCP_USER_TIMEOUT` on every socket),
//!   [`iopool`] (threads for blocking file I/O), [`durable`] (small files
//!   replaced crash-safely), [`netlink`], [`timeout`] (coarse timeouts
//!   that cost no system call to arm), [`workers`] (the executor threads
//!   client connections run on).
//! - [`http`]: strict HTTP/1.1 on httparse (RFC 9112): heads, framing,
//!   chunked coding, streaming pumps, Upgrade pass-through.
//! - [`config`]: flags validated into a [`config::Config`] before any bind.
//! - [`k8s`]: what a request is, classified as the apiserver does (verb,
//!   resource, percent-decoding, boolean query parameters); `Status`
//!   replies; watch streams split into events.
//! - [`metrics`]: the counters behind `/metrics`.
//! - [`auth`]: who is calling (agent, verified CN, token) and who may read
//!   an entry offline (service-account JWTs checked against the JWKS).
//! - [`tls`]: serving and per-identity client configs, reloaded on change.
//! - [`upstream`]: dials, the per-identity pool, health (passive, plus a
//!   probe for quiet servers), failover, cancellation of what is in flight
//!   on a server declared down, dial pacing.
//! - [`cache`]: keys, the entry format, the crash-safe writer thread, list
//!   patching from watch events, paged and streaming lists, GC.
//! - [`proxy`]: one client connection: route online (forward, tee the
//!   answer into the cache) or offline (answer from the cache, hold
//!   watches, renew kubelet's Lease and replay it when back).
//! - [`listener`], [`admin`], [`incluster`]: the TLS accept loops, the
//!   plain-HTTP admin port, the `--incluster-address` IP made local.
//! - [`server`]: builds everything from the config and runs it.
//!
//! ## One GET, online
//! [`listener`] accepts the TCP connection, hands it to an executor
//! ([`workers`]: the main one for the first connections) and runs the TLS
//! handshake;
//! `proxy::conn` reads the head with [`http`] (strictly: a framing doubt
//! is a 400 and a closed connection), classifies it with `k8s::request`
//! (verb, resource, certainty), and names the caller with `auth`
//! (agent from the User-Agent, CN of the verified client certificate,
//! token). `proxy::online` leases a connection from [`upstream`] (pooled
//! per identity, or dialed, paced), forwards the head with its own
//! framing and waits for the answer's head, cancelled if the server is
//! declared down meanwhile. `proxy::relay` streams the answer to the
//! client and, for a cached agent, into a `cache::file::Tee`: the body
//! bytes go once to the writer thread, which finds the resourceVersion,
//! skips an unchanged answer and otherwise writes temp file, fsync,
//! rename, directory fsync. A watch's events go the same way into the
//! cached list they patch (`cache::live`).
//!
//! ## One GET, offline
//! When [`upstream`]'s health says offline (or the lease cannot be had),
//! `proxy::offline` looks the entry up (`cache::key` names the file,
//! `cache::file` reads it on the I/O pool), checks that the caller's
//! credential read it online (`auth`), and streams it back piece by piece;
//! a watch is held with bookmarks until the cloud returns, a streaming list
//! first gets the cached items (`proxy::watchlist`), kubelet's Lease
//! renewal is answered and kept for later (`proxy::lease`), other writes
//! get a `Status` 503 (`k8s::status`).
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod admin;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod durable;
pub mod http;
pub mod incluster;
pub mod iopool;
pub mod json;
pub mod k8s;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod netlink;
pub mod pem;
pub mod proxy;
pub mod server;
pub mod timeout;
pub mod tls;
pub mod upstream;
pub mod workers;
