//! Who is calling, and who may read an entry offline.
//!
//! - [`identity`]: the [`identity::Agent`] (which cache directory, from the
//!   User-Agent: never a permission) and the [`identity::Credential`] (what
//!   grants an offline read: a verified client cert CN, a service-account
//!   subject, a token hash), gathered per request into a [`identity::Caller`].
//! - [`jwt`]: service-account token verification (RS256/ES256, ring).
//! - [`jwks`]: the cluster's service-account keys, fetched online through a
//!   [`jwks::KeyFetch`] the upstream layer provides, and kept on disk.

pub mod identity;
pub mod jwks;
pub mod jwt;
