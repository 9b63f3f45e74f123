//! An offline streaming list: the cached list sent as a WatchList stream.
//!
//! client-go's informers (and kubelet's) open `watch=true&
//! sendInitialEvents=true` and expect one ADDED event per object, then a
//! BOOKMARK annotated `k8s.io/initial-events-end`, then live events.
//! Offline we send the cached list's items that way, read from disk piece
//! by piece and cut by [`ItemSplitter`] (memory: one item), then the end
//! bookmark at the list's resourceVersion; the caller then holds the watch
//! like any offline watch.

use std::io;

use smol::io::{AsyncRead, AsyncWrite};

use crate::cache::initial::{added_event, end_bookmark};
use crate::cache::Entry;
use crate::http::body::push_chunk;
use crate::http::Conn;
use crate::json::items::ItemSplitter;
use crate::k8s::masterservice::Rewriter;

/// Largest cached item sent (etcd's default object limit is 1.5 MiB).
const MAX_ITEM: usize = 3 << 20;

/// What a later BOOKMARK of the same watch needs.
#[derive(Debug, Clone)]
pub struct ListKind {
    /// The items' kind (`Pod` for a `PodList`).
    pub kind: String,
    /// Their apiVersion.
    pub api_version: String,
    /// The list's resourceVersion.
    pub rv: String,
}

impl ListKind {
    /// A plain BOOKMARK event line at the list's resourceVersion.
    pub fn bookmark(&self) -> Vec<u8> {
        let mut line = String::with_capacity(128);
        line.push_str(r#"{"type":"BOOKMARK","object":{"kind":"#);
        line.push_str(&crate::json::quote(&self.kind));
        line.push_str(r#","apiVersion":"#);
        line.push_str(&crate::json::quote(&self.api_version));
        line.push_str(r#","metadata":{"resourceVersion":"#);
        line.push_str(&crate::json::quote(&self.rv));
        line.push_str("}}}\n");
        line.into_bytes()
    }
}

/// Reads what a list entry's first piece says of its kind.
fn list_kind(first: &[u8], rv: Option<&str>) -> Option<ListKind> {
    let (kind, api_version) = crate::json::kind_and_api_version(first)?;
    Some(ListKind {
        kind: kind.strip_suffix("List").unwrap_or(&kind).to_owned(),
        api_version,
        rv: rv?.to_owned(),
    })
}

/// A cached list about to be sent as initial events.
pub struct InitialEvents {
    entry: Entry,
    first: Vec<u8>,
    /// What the list is.
    pub list: ListKind,
    /// kubelet's view of `default/kubernetes` (`--incluster-address`),
    /// applied again on the way out so an entry cached before the flag (or
    /// with another address) shows the current one.
    pub rewrite: Option<Rewriter>,
}

impl InitialEvents {
    /// Reads the start of `entry`; `None` if it is not a list of objects
    /// with a resourceVersion (a Table, say), so nothing can be sent.
    pub async fn open(mut entry: Entry) -> Option<InitialEvents> {
        let first = entry.next_piece().await.ok()??;
        let list = list_kind(&first, entry.meta.resource_version.as_deref())?;
        (list.kind != "Table").then_some(InitialEvents {
            entry,
            first,
            list,
            rewrite: None,
        })
    }

    /// Sends the items as ADDED events and then the end bookmark, each as
    /// one chunk (the response head is already sent).
    pub async fn send<S>(self, client: &mut Conn<S>) -> io::Result<ListKind>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let InitialEvents {
            mut entry,
            first,
            list,
            mut rewrite,
        } = self;
        let mut splitter = ItemSplitter::new(MAX_ITEM);
        let mut piece = Some(first);
        while let Some(bytes) = piece {
            let mut out = Vec::with_capacity(bytes.len() + 256);
            splitter
                .push(&bytes, &mut |item| {
                    let event = added_event(item, &list.kind, &list.api_version);
                    match rewrite.as_mut() {
                        Some(rewriter) => chunk_rewritten(rewriter, &event, &mut out),
                        None => push_chunk(&event, &mut out),
                    }
                })
                .map_err(io::Error::other)?;
            client.write_all(&out).await?;
            piece = entry.next_piece().await?;
        }
        if !splitter.finished() {
            return Err(io::Error::other("cached list ends inside its items"));
        }
        let mut out = Vec::with_capacity(256);
        push_chunk(
            &end_bookmark(&list.kind, &list.api_version, &list.rv),
            &mut out,
        );
        client.write_all(&out).await?;
        client.flush().await?;
        Ok(list)
    }
}

/// A BOOKMARK event line carrying a cached list's resourceVersion.
pub async fn bookmark_of(mut entry: Entry) -> Option<Vec<u8>> {
    let first = entry.next_piece().await.ok()??;
    Some(list_kind(&first, entry.meta.resource_version.as_deref())?.bookmark())
}

/// Appends `event` through `rewriter` as one chunk. An event line is one
/// whole object, so the rewriter releases all of it here.
fn chunk_rewritten(rewriter: &mut Rewriter, event: &[u8], out: &mut Vec<u8>) {
    let mut line = Vec::with_capacity(event.len() + 32);
    rewriter.push(event, &mut line);
    rewriter.finish(&mut line);
    push_chunk(&line, out);
}
