//! The Kubernetes API as lite-apiserver needs to understand it: what a
//! request is ([`request`]), the `Status` bodies and replies we write
//! ourselves ([`status`], [`reply`]), watch streams split into events
//! ([`watch`]), and kubelet's view of the `default/kubernetes` Service
//! ([`masterservice`]). Built on [`crate::http`] and [`crate::json`] only.

pub mod masterservice;
pub mod reply;
pub mod request;
pub mod status;
pub mod watch;
