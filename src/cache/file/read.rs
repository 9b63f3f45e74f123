//! Reading entries, off the executor: the open, the header check and every
//! body piece run on the I/O pool ([`crate::iopool`]), so a slow flash or
//! a 100 MB entry streamed to a slow reader never stalls other requests.
//!
//! A bad file (torn, truncated, foreign) is a miss: it is reported as
//! [`Miss::Torn`], logged once, and removed by the writer thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::shared::{Job, Shared};
use crate::auth::identity::Credential;
use crate::cache::entry::EntryMeta;
use crate::cache::key::CacheKey;

/// Bodies up to this size are read with the header, in one pool job.
const SMALL: u64 = 64 * 1024;
/// Piece size when streaming a larger body.
pub const PIECE: usize = 64 * 1024;

/// Why a read found no usable entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No entry.
    Absent,
    /// A bad entry (logged, and removed).
    Torn,
}

/// An entry opened for reading.
#[derive(Debug)]
pub struct Entry {
    /// The header.
    pub meta: EntryMeta,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// The whole body, read with the header.
    Memory(Option<Vec<u8>>),
    /// The rest of the body, in the file.
    File {
        file: Arc<File>,
        offset: u64,
        left: u64,
    },
}

impl Entry {
    /// Whether `credential` may read it offline.
    pub fn allows(&self, credential: &Credential) -> bool {
        self.meta.allows(credential)
    }

    /// The next piece of the body; `None` at its end.
    pub async fn next_piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        match &mut self.body {
            Body::Memory(body) => Ok(body.take().filter(|b| !b.is_empty())),
            Body::File { left: 0, .. } => Ok(None),
            Body::File { file, offset, left } => {
                let want = (*left).min(PIECE as u64) as usize;
                let (file2, at) = (file.clone(), *offset);
                let piece = crate::iopool::run(move || read_exact_at(&file2, want, at))
                    .await
                    .unwrap_or_else(|| Err(io::Error::other("I/O pool stopped")))?;
                *offset += want as u64;
                *left -= want as u64;
                Ok(Some(piece))
            }
        }
    }

    /// The whole body, if it is at most `max` bytes.
    pub async fn read_all(mut self, max: u64) -> Option<Vec<u8>> {
        if self.meta.length > max {
            return None;
        }
        let mut body = Vec::with_capacity(self.meta.length as usize);
        while let Some(piece) = self.next_piece().await.ok()? {
            body.extend_from_slice(&piece);
        }
        Some(body)
    }

    /// The first bytes of the body, at most `n` (a bookmark needs the kind).
    pub async fn prefix(mut self, n: usize) -> Option<Vec<u8>> {
        let mut piece = self.next_piece().await.ok()??;
        piece.truncate(n);
        Some(piece)
    }
}

fn read_exact_at(file: &File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Opens `key`'s entry on the I/O pool.
pub(crate) async fn open(shared: Arc<Shared>, key: &CacheKey) -> Result<Entry, Miss> {
    let path = shared.dir.join(key.rel_path());
    let at = path.clone();
    match crate::iopool::run(move || open_blocking(&at)).await {
        Some(Ok(entry)) => Ok(entry),
        Some(Err(Some(why))) => {
            drop_torn(&shared, path, &why).await;
            Err(Miss::Torn)
        }
        Some(Err(None)) | None => Err(Miss::Absent),
    }
}

/// The entry at `path`; `Err(None)`: absent; `Err(Some(why))`: bad.
fn open_blocking(path: &std::path::Path) -> Result<Entry, Option<String>> {
    let mut file = File::open(path).map_err(|_| None)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (meta, body_at) = EntryMeta::read_from(&mut file, len).map_err(|e| Some(e.to_string()))?;
    crate::cache::gc::touch(&file);
    let body = if meta.length <= SMALL {
        let body = read_exact_at(&file, meta.length as usize, body_at).map_err(|_| None)?;
        Body::Memory(Some(body))
    } else {
        Body::File {
            file: Arc::new(file),
            offset: body_at,
            left: meta.length,
        }
    };
    Ok(Entry { meta, body })
}

/// Logs a bad entry once and has the writer remove it (before the miss is
/// answered, so the next read does not find it again).
async fn drop_torn(shared: &Shared, path: std::path::PathBuf, why: &str) {
    let first = shared
        .warned
        .lock()
        .map(|mut w| w.insert(path.clone()))
        .unwrap_or(true);
    if first {
        log::warn!("cache: removing bad entry {}: {why}", path.display());
    }
    let (done, removed) = smol::channel::bounded(1);
    if shared.send(Job::RemoveTorn { path, done }) {
        let _ = removed.recv().await;
    }
}
