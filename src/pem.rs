//! Loading PEM certificates and keys (rustls' `PemObject`, no extra
//! crate). A leaf: used by config validation and by the TLS configs.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum PemError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// The file has no usable PEM block of the expected kind.
    Missing(PathBuf, &'static str),
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            PemError::Missing(p, what) => write!(f, "{} contains no {what}", p.display()),
        }
    }
}

impl std::error::Error for PemError {}

/// Loads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = std::fs::read(path).map_err(|e| PemError::Read(path.to_owned(), e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(PemError::Missing(path.to_owned(), "PEM certificate"));
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = std::fs::read(path).map_err(|e| PemError::Read(path.to_owned(), e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| PemError::Missing(path.to_owned(), "PEM private key"))
}
