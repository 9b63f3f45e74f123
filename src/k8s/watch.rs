//! Splitting a watch stream into events.
//!
//! The apiserver sends one event per chunk, each one JSON object and a
//! newline, but chunk boundaries are not promised to align with events (a
//! proxy in between may re-chunk), so [`EventSplitter`] works on the decoded
//! byte stream and cuts at newlines. An event larger than [`MAX_EVENT`] is
//! skipped rather than buffered without bound.

use crate::json;

/// Largest event kept.
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

/// The `type` of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// An object appeared.
    Added,
    /// An object changed.
    Modified,
    /// An object was removed.
    Deleted,
    /// Only the resourceVersion moves.
    Bookmark,
    /// The watch failed (e.g. 410 Expired); carries a Status.
    Error,
}

impl EventType {
    fn parse(raw: &[u8]) -> Option<EventType> {
        Some(match raw {
            b"\"ADDED\"" => EventType::Added,
            b"\"MODIFIED\"" => EventType::Modified,
            b"\"DELETED\"" => EventType::Deleted,
            b"\"BOOKMARK\"" => EventType::Bookmark,
            b"\"ERROR\"" => EventType::Error,
            _ => return None,
        })
    }
}

/// Why an event line could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// Not a JSON object with `type` and `object`.
    Malformed(String),
    /// The object has no `metadata.name` (and is not a bookmark or error).
    NoName,
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventError::Malformed(why) => write!(f, "malformed watch event: {why}"),
            EventError::NoName => write!(f, "watch event object has no metadata.name"),
        }
    }
}

impl std::error::Error for EventError {}

/// One parsed event, borrowing the object's bytes from the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The event type.
    pub kind: EventType,
    /// The object's namespace.
    pub namespace: Option<String>,
    /// The object's name (empty for bookmarks and errors).
    pub name: String,
    /// The object's resourceVersion.
    pub resource_version: Option<String>,
    /// Where the `object` value is in the line.
    pub object: std::ops::Range<usize>,
}

/// An event with its object bytes, for batching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEvent {
    /// The event type.
    pub kind: EventType,
    /// The object's namespace.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
    /// The object's resourceVersion.
    pub resource_version: Option<String>,
    /// The object exactly as sent.
    pub object: Vec<u8>,
}

impl WatchEvent {
    /// Parses one event line.
    pub fn parse(line: &[u8]) -> Result<WatchEvent, EventError> {
        let malformed = |why: &str| EventError::Malformed(why.to_owned());
        let kind = json::member(line, 0, "type").ok_or_else(|| malformed("no type"))?;
        let kind = EventType::parse(&line[kind]).ok_or_else(|| malformed("unknown type"))?;
        let object = json::member(line, 0, "object").ok_or_else(|| malformed("no object"))?;
        let obj = &line[object.clone()];
        let (namespace, name, resource_version) = match (kind, json::object_identity(obj)) {
            (_, Some(identity)) => identity,
            (EventType::Bookmark | EventType::Error, None) => {
                (None, String::new(), json::resource_version(obj))
            }
            (_, None) => return Err(EventError::NoName),
        };
        Ok(WatchEvent {
            kind,
            namespace,
            name,
            resource_version,
            object,
        })
    }

    /// Copies the object out of `line` (the line it was parsed from).
    pub fn to_owned_event(&self, line: &[u8]) -> OwnedEvent {
        OwnedEvent {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            resource_version: self.resource_version.clone(),
            object: line.get(self.object.clone()).unwrap_or_default().to_vec(),
        }
    }
}

/// Cuts a byte stream into newline-terminated event lines.
#[derive(Debug, Default)]
pub struct EventSplitter {
    partial: Vec<u8>,
    /// Skipping the rest of an oversize event.
    skipping: bool,
    /// Oversize events skipped so far.
    pub skipped: u64,
}

impl EventSplitter {
    /// A splitter with nothing buffered.
    pub fn new() -> EventSplitter {
        EventSplitter::default()
    }

    /// Feeds bytes; returns the complete lines they finish (without `\n`,
    /// blank lines dropped).
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let (head, rest) = bytes.split_at(nl);
            bytes = &rest[1..];
            if self.skipping {
                self.skipping = false;
                continue;
            }
            let line = if self.partial.is_empty() {
                head.to_vec()
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                line
            };
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                lines.push(line);
            }
        }
        if !self.skipping {
            if self.partial.len() + bytes.len() > MAX_EVENT {
                self.partial = Vec::new();
                self.skipping = true;
                self.skipped += 1;
            } else {
                self.partial.extend_from_slice(bytes);
            }
        }
        lines
    }

    /// The stream ended: a last line without its newline, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.partial);
        (!self.skipping && line.iter().any(|b| !b.is_ascii_whitespace())).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_arbitrary_pieces() {
        let stream = b"{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}";
        for step in 1..stream.len() {
            let mut s = EventSplitter::new();
            let mut lines = Vec::new();
            for piece in stream.chunks(step) {
                lines.extend(s.push(piece));
            }
            lines.extend(s.finish());
            assert_eq!(
                lines,
                [
                    b"{\"a\":1}".to_vec(),
                    b"{\"b\":2}".to_vec(),
                    b"{\"c\":3}".to_vec()
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn oversize_events_are_skipped() {
        let mut s = EventSplitter::new();
        let big = vec![b'x'; MAX_EVENT + 1];
        assert!(s.push(&big).is_empty());
        assert_eq!(s.push(b"tail\n{}\n"), [b"{}".to_vec()]);
        assert_eq!(s.skipped, 1);
    }

    #[test]
    fn event_table() {
        type Want<'a> = Result<(EventType, Option<&'a str>, &'a str, Option<&'a str>), ()>;
        let cases: &[(&str, Want<'_>)] = &[
            (
                r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","namespace":"edge","resourceVersion":"7"}}}"#,
                Ok((EventType::Added, Some("edge"), "a", Some("7"))),
            ),
            (
                r#"{"type":"DELETED","object":{"metadata":{"name":"n1","resourceVersion":"8"}}}"#,
                Ok((EventType::Deleted, None, "n1", Some("8"))),
            ),
            (
                r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"9"}}}"#,
                Ok((EventType::Bookmark, None, "", Some("9"))),
            ),
            (
                r#"{"type":"ERROR","object":{"kind":"Status","code":410}}"#,
                Ok((EventType::Error, None, "", None)),
            ),
            (r#"{"type":"ADDED","object":{"metadata":{}}}"#, Err(())),
            (r#"{"type":"WEIRD","object":{}}"#, Err(())),
            (r#"{"object":{}}"#, Err(())),
            ("garbage", Err(())),
        ];
        for (line, want) in cases {
            let got = WatchEvent::parse(line.as_bytes())
                .map(|e| (e.kind, e.namespace, e.name, e.resource_version))
                .map_err(|_| ());
            let want = want.map(|(k, ns, n, rv)| {
                (
                    k,
                    ns.map(str::to_owned),
                    n.to_owned(),
                    rv.map(str::to_owned),
                )
            });
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn object_bytes_are_kept_exactly() {
        let line = br#"{"type":"MODIFIED","object":{"metadata":{"name":"a"},"x": [1, 2]}}"#;
        let e = WatchEvent::parse(line).unwrap();
        assert_eq!(
            e.to_owned_event(line).object,
            br#"{"metadata":{"name":"a"},"x": [1, 2]}"#.to_vec()
        );
    }
}
