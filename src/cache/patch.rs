//! The list patcher: applies watch events to a cached list by streaming it.
//!
//! The cached body is read through a bounded buffer, one member and one
//! item at a time; untouched items are copied byte for byte, an item named
//! by an ADDED/MODIFIED event is replaced by the event's object bytes, one
//! named by DELETED is dropped, and upserts of items not in the list are
//! appended before `]`. `metadata.resourceVersion` becomes the newest
//! event's. Memory is bounded by the largest single item plus the batch,
//! never by the list. Tables (`rows`, not `items`) are refused with
//! [`PatchError::NotAList`]: their rows are server-rendered and are
//! refreshed by the next LIST instead.
//!
//! [`merge_pages`] streams the pages of a paged LIST into one list the
//! same way.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};

use crate::json::{self, JsonError};
use crate::k8s::watch::{EventType, OwnedEvent};

/// Bytes read from the source at a time.
const READ_SIZE: usize = 64 * 1024;

/// Why a list could not be patched.
#[derive(Debug)]
#[non_exhaustive]
pub enum PatchError {
    /// Reading or writing failed.
    Io(io::Error),
    /// The cached body is not valid JSON of the expected shape.
    Json(JsonError),
    /// The body has no `items` array (e.g. a Table).
    NotAList,
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::Io(e) => write!(f, "patching list: {e}"),
            PatchError::Json(e) => write!(f, "patching list: {e}"),
            PatchError::NotAList => write!(f, "not a list with items"),
        }
    }
}

impl std::error::Error for PatchError {}

impl From<io::Error> for PatchError {
    fn from(e: io::Error) -> Self {
        PatchError::Io(e)
    }
}

impl From<JsonError> for PatchError {
    fn from(e: JsonError) -> Self {
        PatchError::Json(e)
    }
}

/// What a patch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PatchOutcome {
    /// Items in the new list.
    pub items: u64,
    /// Items replaced in place.
    pub replaced: u64,
    /// Items removed.
    pub removed: u64,
    /// Items appended.
    pub appended: u64,
    /// Largest number of bytes buffered at once.
    pub peak_buffer: usize,
}

/// A bounded read buffer over the source.
struct Buf<'a> {
    src: &'a mut dyn Read,
    data: Vec<u8>,
    pos: usize,
    eof: bool,
    peak: usize,
}

impl<'a> Buf<'a> {
    fn new(src: &'a mut dyn Read) -> Buf<'a> {
        Buf {
            src,
            data: Vec::new(),
            pos: 0,
            eof: false,
            peak: 0,
        }
    }

    /// Reads more, dropping consumed bytes first.
    fn fill(&mut self) -> Result<bool, PatchError> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.data.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.data.len();
        self.data.resize(start + READ_SIZE, 0);
        let n = loop {
            match self.src.read(&mut self.data[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        self.data.truncate(start + n);
        self.peak = self.peak.max(self.data.len());
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// The next non-whitespace byte (not consumed).
    fn peek(&mut self) -> Result<u8, PatchError> {
        loop {
            self.pos = json::skip_ws(&self.data, self.pos);
            if let Some(&b) = self.data.get(self.pos) {
                return Ok(b);
            }
            if !self.fill()? {
                return Err(JsonError::Truncated.into());
            }
        }
    }

    fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), PatchError> {
        if self.peek()? != byte {
            return Err(JsonError::Unexpected {
                offset: self.pos,
                expected,
            }
            .into());
        }
        self.pos += 1;
        Ok(())
    }

    /// The next complete value (reading more as needed); valid until the
    /// next call that reads.
    fn value(&mut self) -> Result<std::ops::Range<usize>, PatchError> {
        loop {
            match json::value_range(&self.data, self.pos) {
                Ok(r) => {
                    self.pos = r.end;
                    return Ok(r);
                }
                Err(JsonError::Truncated) => {
                    if !self.fill()? {
                        // A number at the very end of input is complete.
                        let start = json::skip_ws(&self.data, self.pos);
                        if start < self.data.len() {
                            self.pos = self.data.len();
                            return Ok(start..self.data.len());
                        }
                        return Err(JsonError::Truncated.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The final fate of one object in a batch of events.
#[derive(Clone, Copy)]
enum Fate {
    /// Replace or append with the object of `events[i]`.
    Upsert(usize),
    Delete,
}

type ObjectKey = (Option<String>, String);

/// Writes items with commas and reports them; also carries the output for
/// the envelope.
struct ItemSink<'a, 'b> {
    out: &'a mut dyn Write,
    written: u64,
    on_item: &'b mut dyn FnMut(Option<&str>, &str),
}

impl ItemSink<'_, '_> {
    fn write(&mut self, item: &[u8], ns: Option<&str>, name: &str) -> Result<(), PatchError> {
        if self.written > 0 {
            self.out.write_all(b",")?;
        }
        self.out.write_all(item)?;
        self.written += 1;
        if !name.is_empty() {
            (self.on_item)(ns, name);
        }
        Ok(())
    }

    /// Writes an item as it is, reporting its identity.
    fn keep(&mut self, item: &[u8]) -> Result<(), PatchError> {
        match json::object_identity(item) {
            Some((ns, name, _)) => self.write(item, ns.as_deref(), &name),
            None => self.write(item, None, ""),
        }
    }
}

/// What happens to the items of a streamed list.
trait Items {
    /// One item of the list, in order.
    fn item(&mut self, bytes: &[u8], sink: &mut ItemSink<'_, '_>) -> Result<(), PatchError>;
    /// After the last item, before `]`.
    fn finish(&mut self, sink: &mut ItemSink<'_, '_>) -> Result<(), PatchError>;
}

/// Applies a batch of events.
struct Patcher<'e> {
    events: &'e [OwnedEvent],
    fates: HashMap<ObjectKey, Fate>,
    order: Vec<ObjectKey>,
    outcome: PatchOutcome,
}

impl<'e> Patcher<'e> {
    fn new(events: &'e [OwnedEvent]) -> Patcher<'e> {
        let mut fates = HashMap::new();
        let mut order = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let fate = match e.kind {
                EventType::Added | EventType::Modified => Fate::Upsert(i),
                EventType::Deleted => Fate::Delete,
                EventType::Bookmark | EventType::Error => continue,
            };
            let key = (e.namespace.clone(), e.name.clone());
            if fates.insert(key.clone(), fate).is_none() {
                order.push(key);
            }
        }
        Patcher {
            events,
            fates,
            order,
            outcome: PatchOutcome::default(),
        }
    }
}

impl Items for Patcher<'_> {
    fn item(&mut self, bytes: &[u8], sink: &mut ItemSink<'_, '_>) -> Result<(), PatchError> {
        let Some((ns, name, _)) = json::object_identity(bytes) else {
            return sink.write(bytes, None, "");
        };
        let key = (ns, name);
        match self.fates.get(&key).copied() {
            None => sink.write(bytes, key.0.as_deref(), &key.1),
            Some(Fate::Delete) => {
                self.fates.remove(&key);
                self.outcome.removed += 1;
                Ok(())
            }
            Some(Fate::Upsert(i)) => {
                self.fates.remove(&key);
                self.outcome.replaced += 1;
                sink.write(&self.events[i].object, key.0.as_deref(), &key.1)
            }
        }
    }

    fn finish(&mut self, sink: &mut ItemSink<'_, '_>) -> Result<(), PatchError> {
        for key in std::mem::take(&mut self.order) {
            if let Some(Fate::Upsert(i)) = self.fates.remove(&key) {
                self.outcome.appended += 1;
                sink.write(&self.events[i].object, key.0.as_deref(), &key.1)?;
            }
        }
        Ok(())
    }
}

/// Applies `events` (in order) to the list read from `list`, writing the
/// new list to `out`. `on_item` sees (namespace, name) of every item of the
/// new list. With no events this is a validating copy.
pub fn apply_events(
    list: &mut dyn Read,
    out: &mut dyn Write,
    events: &[OwnedEvent],
    on_item: &mut dyn FnMut(Option<&str>, &str),
) -> Result<PatchOutcome, PatchError> {
    let new_rv = events
        .iter()
        .filter(|e| e.kind != EventType::Error)
        .rev()
        .find_map(|e| e.resource_version.clone());
    let mut patcher = Patcher::new(events);
    let mut buf = Buf::new(list);
    let mut sink = ItemSink {
        out,
        written: 0,
        on_item,
    };
    stream_list(&mut buf, &mut sink, new_rv.as_deref(), false, &mut patcher)?;
    let mut outcome = patcher.outcome;
    outcome.items = sink.written;
    outcome.peak_buffer = buf.peak;
    Ok(outcome)
}

/// Appends the items of later pages after the first page's.
struct Pages<'p, 'r> {
    rest: &'p mut [&'r mut dyn Read],
    peak: usize,
}

impl Items for Pages<'_, '_> {
    fn item(&mut self, bytes: &[u8], sink: &mut ItemSink<'_, '_>) -> Result<(), PatchError> {
        sink.keep(bytes)
    }

    fn finish(&mut self, sink: &mut ItemSink<'_, '_>) -> Result<(), PatchError> {
        for page in self.rest.iter_mut() {
            let mut buf = Buf::new(&mut **page);
            buf.expect(b'{', "a list object")?;
            let mut first = true;
            loop {
                if buf.peek()? == b'}' {
                    break;
                }
                if !first {
                    buf.expect(b',', ", or }")?;
                }
                first = false;
                let key = buf.value()?;
                let is_items = &buf.data[key] == b"\"items\"";
                buf.expect(b':', ":")?;
                if is_items {
                    for_each_element(&mut buf, &mut |item| sink.keep(item))?;
                } else {
                    buf.value()?;
                }
            }
            self.peak = self.peak.max(buf.peak);
        }
        Ok(())
    }
}

/// Streams the pages of a paged LIST (in order) into one list: the first
/// page's envelope without `metadata.continue` and
/// `metadata.remainingItemCount`, the items of every page.
pub fn merge_pages(
    pages: &mut [&mut dyn Read],
    out: &mut dyn Write,
) -> Result<PatchOutcome, PatchError> {
    let Some((first, rest)) = pages.split_first_mut() else {
        return Err(PatchError::NotAList);
    };
    let mut on_item = |_: Option<&str>, _: &str| {};
    let mut sink = ItemSink {
        out,
        written: 0,
        on_item: &mut on_item,
    };
    let mut buf = Buf::new(&mut **first);
    let mut later = Pages { rest, peak: 0 };
    stream_list(&mut buf, &mut sink, None, true, &mut later)?;
    Ok(PatchOutcome {
        items: sink.written,
        peak_buffer: buf.peak.max(later.peak),
        ..PatchOutcome::default()
    })
}

/// Streams one list object: members copied, `metadata` rewritten, `items`
/// handed to `items` element by element.
fn stream_list(
    buf: &mut Buf<'_>,
    sink: &mut ItemSink<'_, '_>,
    rv: Option<&str>,
    strip_paging: bool,
    items: &mut dyn Items,
) -> Result<(), PatchError> {
    buf.expect(b'{', "a list object")?;
    sink.out.write_all(b"{")?;
    let mut first = true;
    let mut saw_items = false;
    loop {
        if buf.peek()? == b'}' {
            buf.pos += 1;
            break;
        }
        if !first {
            buf.expect(b',', ", or }")?;
            sink.out.write_all(b",")?;
        }
        first = false;
        let key = buf.value()?;
        let key = buf.data[key].to_vec();
        buf.expect(b':', ":")?;
        sink.out.write_all(&key)?;
        sink.out.write_all(b":")?;
        match key.as_slice() {
            b"\"items\"" => {
                saw_items = true;
                sink.out.write_all(b"[")?;
                for_each_element(buf, &mut |item| items.item(item, sink))?;
                items.finish(sink)?;
                sink.out.write_all(b"]")?;
            }
            b"\"rows\"" => return Err(PatchError::NotAList),
            b"\"metadata\"" => {
                let meta = buf.value()?;
                let rewritten = rewrite_metadata(&buf.data[meta], rv, strip_paging)?;
                sink.out.write_all(&rewritten)?;
            }
            _ => {
                let value = buf.value()?;
                sink.out.write_all(&buf.data[value])?;
            }
        }
    }
    sink.out.write_all(b"}")?;
    if !saw_items {
        return Err(PatchError::NotAList);
    }
    Ok(())
}

/// Calls `f` with each element of the array (or `null`) next in `buf`.
fn for_each_element(
    buf: &mut Buf<'_>,
    f: &mut dyn FnMut(&[u8]) -> Result<(), PatchError>,
) -> Result<(), PatchError> {
    if buf.peek()? == b'n' {
        buf.value()?;
        return Ok(());
    }
    buf.expect(b'[', "an items array")?;
    let mut first = true;
    loop {
        if buf.peek()? == b']' {
            buf.pos += 1;
            return Ok(());
        }
        if !first {
            buf.expect(b',', ", or ]")?;
        }
        first = false;
        let r = buf.value()?;
        f(&buf.data[r])?;
    }
}

/// The list's `metadata` with `resourceVersion` set to `rv` (if given) and,
/// when `strip_paging`, without `continue` and `remainingItemCount`.
fn rewrite_metadata(
    meta: &[u8],
    rv: Option<&str>,
    strip_paging: bool,
) -> Result<Vec<u8>, PatchError> {
    let mut out = Vec::with_capacity(meta.len() + 64);
    out.push(b'{');
    let mut saw_rv = false;
    let mut count = 0;
    let end = json::for_each_member(meta, 0, |b, m| {
        let key = &b[m.key.clone()];
        let value: &[u8] = match (key, rv) {
            (b"resourceVersion", Some(rv)) => {
                saw_rv = true;
                out.extend_from_slice(if count > 0 { b"," } else { b"" });
                out.extend_from_slice(b"\"resourceVersion\":");
                out.extend_from_slice(json::quote(rv).as_bytes());
                count += 1;
                return true;
            }
            (b"continue" | b"remainingItemCount", _) if strip_paging => return true,
            _ => &b[m.value.clone()],
        };
        if count > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value);
        count += 1;
        true
    });
    end?;
    if let (Some(rv), false) = (rv, saw_rv) {
        if count > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"resourceVersion\":");
        out.extend_from_slice(json::quote(rv).as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests;
