//! lite-apiserver: a node-local caching reverse proxy for the Kubernetes API.
//!
//! # Layout
//! The modules follow one request through the daemon:
//!
//! - [`config`]: flags, validated into a [`config::Config`] before any port is bound.
//! - [`server`]: the shared state and [`server::run`], which wires the rest.
//! - [`listener`]: accepts TCP, runs the rustls server handshake, caps connections.
//! - [`http`]: request/response heads (httparse), body framing, chunked coding,
//!   streaming, Upgrade pass-through.
//! - [`request`]: what a request is in Kubernetes terms (verb, resource).
//! - [`identity`]: who is calling: the [`identity::Agent`] (a cache directory) and
//!   the [`identity::Credential`] (what may read an entry offline).
//! - [`jwt`], [`jwks`]: service-account token verification and the cluster's keys.
//! - [`proxy`]: the routing decision, and the online path with its cache tee.
//! - [`upstream`]: connector, per-identity keep-alive pool, CONNECT proxy, failover.
//! - [`tls`]: PEM loading, server and client configs, certificate reload.
//! - [`cache`]: keys, the entry file format, the crash-safe store, list
//!   patching from watch events, GC.
//! - [`watch`]: splits a watch stream into events.
//! - [`health`]: the background probe that flips online/offline for everyone.
//! - [`offline`], [`tokens`]: what is answered when the cloud is gone.
//! - [`reply`], [`status`]: answers we write ourselves, as Kubernetes `Status`.
//! - [`metrics`], [`admin`]: Prometheus counters and the plain-HTTP admin port.
//! - [`incluster`] over [`netlink`]: the `--incluster-address` IP made local
//!   (a dummy interface, or a /32 on `lo`) and removed at shutdown.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod admin;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
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
pub mod tls;
pub mod upstream;
