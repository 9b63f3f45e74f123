//! jwt (to be written)
#![allow(missing_docs)]
