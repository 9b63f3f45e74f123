//! The on-disk cache.
//!
//! - [`key`]: which file an answer goes to (agent, path, variant).
//! - [`entry`]: the entry file format (text header + body as received).
//! - [`store`]: the crash-safe store and its single writer thread.
//! - [`json`]: the byte scanner used instead of parsing bodies into trees.
//! - [`patch`]: streaming list patching from watch events, and page merging.
//! - [`paging`]: paged LISTs assembled into one entry.
//! - [`live`]: watch tees and the once-a-second coalescing of list rewrites.
//! - [`gc`]: removal of entries not read for `--cache-ttl`.

pub mod entry;
pub mod gc;
pub mod json;
pub mod key;
pub mod live;
pub mod paging;
pub mod patch;
pub mod store;
