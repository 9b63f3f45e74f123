//! lite-apiserver: a node-local caching reverse proxy for the Kubernetes API.
//!
//! # Layout
//! The modules follow one request through the daemon:
//!
//! - [`config`]: flags, validated into a [`config::Config`] before any port is bound.
//! - [`listener`]: accepts TCP, runs the rustls server handshake, caps connections,
//!   and serves HTTP/1.1 keep-alive requests on each connection.
//! - [`http`]: request/response heads (httparse), body framing, chunked coding,
//!   streaming, Upgrade pass-through.
//! - [`identity`]: who is calling: the [`identity::Agent`] (a cache directory) and
//!   the [`identity::Credential`] (what may read an entry offline).
//! - [`jwt`]: service-account token verification against the cluster's JWKS.
//! - [`proxy`]: the routing decision: upstream when healthy, else [`offline`].
//! - [`upstream`]: connector, per-identity keep-alive pool, CONNECT proxy, failover.
//! - [`tls`]: PEM loading, server and client configs, certificate reload.
//! - [`cache`]: keys, the entry file format, the crash-safe store, list patching, GC.
//! - [`watch`]: splits a watch stream into events for the cache.
//! - [`health`]: the background probe that flips online/offline for everyone.
//! - [`offline`]: what is answered when the cloud is gone.
//! - [`metrics`], [`admin`]: Prometheus counters and the plain-HTTP admin port.
//! - [`status`]: Kubernetes `Status` bodies for errors we answer ourselves.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod admin;
pub mod cache;
pub mod config;
pub mod health;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod listener;
pub mod metrics;
pub mod offline;
pub mod proxy;
pub mod status;
pub mod tls;
pub mod upstream;
pub mod watch;
