//! The Kubernetes API as lite-apiserver needs to understand it: what a
//! request is ([`request`]), the `Status` bodies and replies we write
//! ourselves ([`status`], [`reply`]), and watch streams split into events
//! ([`watch`]). Built on [`crate::http`] and [`crate::json`] only.

pub mod reply;
pub mod request;
pub mod status;
pub mod watch;
