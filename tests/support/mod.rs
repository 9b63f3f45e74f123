//! Shared test support: the kube-apiserver double, PKI, clients, and a
//! runner for the real lite-apiserver binary.
#![allow(dead_code)]

pub mod client;
pub mod connect;
pub mod daemon;
pub mod double;
pub mod entries;
pub mod kubectl;
pub mod netns;
pub mod pki;
pub mod reflector;
pub mod relay;
pub mod sa;
pub mod setup;
pub mod silence;
pub mod strict;
pub mod world;

use std::path::PathBuf;

/// A fresh temp directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("lite-apiserver-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
