//! The on-disk cache: keys, entry format, crash-safe store, list patching, GC.
