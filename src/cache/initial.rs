//! Streaming lists, both ways: a list entry built from a watch's initial
//! events, and a cached list sent as initial events.
//!
//! A `sendInitialEvents=true` watch (client-go's WatchList) starts with one
//! ADDED event per object, then a BOOKMARK annotated
//! `k8s.io/initial-events-end: "true"` carrying the list's
//! resourceVersion. [`InitialList`] writes those objects, as they come,
//! into a cache tee as the items of a list
//! (`{"kind":"PodList","apiVersion":"v1","items":[...],"metadata":{...}}`,
//! metadata last because the resourceVersion comes last), and commits it
//! at the bookmark: the same entry a LIST of the collection makes, so an
//! offline LIST, an offline streaming list and the patcher all use it.
//!
//! Offline, [`added_event`] and [`end_bookmark`] turn a cached list back
//! into that stream.

use crate::cache::file::Tee;
use crate::json;

/// The annotation that marks the end of a streaming list's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// A list entry being built from initial events.
pub struct InitialList {
    tee: Tee,
    /// The list's opening has been written.
    opened: bool,
}

impl InitialList {
    /// Builds into `tee` (a LIST entry's tee).
    pub fn new(tee: Tee) -> InitialList {
        InitialList { tee, opened: false }
    }

    /// An initial ADDED event's object: the next item. The first one (or
    /// the bookmark, for an empty list) names the list's kind.
    pub fn item(&mut self, object: &[u8]) {
        if self.opened {
            self.tee.write(b",");
        } else if !self.open(object) {
            return;
        }
        self.tee.write(object);
    }

    /// The end bookmark: the list is complete at its resourceVersion.
    /// Whether it was committed (an empty list needs the bookmark's kind).
    pub fn finish(mut self, bookmark: &[u8]) -> bool {
        let Some(rv) = json::resource_version(bookmark) else {
            return false;
        };
        if !self.opened && !self.open(bookmark) {
            return false;
        }
        let mut tail = String::with_capacity(rv.len() + 40);
        tail.push_str(r#"],"metadata":{"resourceVersion":"#);
        tail.push_str(&json::quote(&rv));
        tail.push_str("}}");
        self.tee.write(tail.as_bytes());
        let live = self.tee.is_live();
        self.tee.commit_with_version(rv);
        live
    }

    /// Writes `{"kind":"XList","apiVersion":"V","items":[` from an object
    /// of the collection; false if it names no kind.
    fn open(&mut self, object: &[u8]) -> bool {
        let Some((kind, api_version)) = json::kind_and_api_version(object) else {
            return false;
        };
        let mut head = String::with_capacity(kind.len() + api_version.len() + 48);
        head.push_str(r#"{"kind":"#);
        head.push_str(&json::quote(&format!("{kind}List")));
        head.push_str(r#","apiVersion":"#);
        head.push_str(&json::quote(&api_version));
        head.push_str(r#","items":["#);
        self.tee.write(head.as_bytes());
        self.opened = true;
        true
    }
}

/// Whether a BOOKMARK's object carries the end-of-initial-events mark.
pub fn is_initial_events_end(object: &[u8]) -> bool {
    json::string_at(object, &["metadata", "annotations", INITIAL_EVENTS_END]).as_deref()
        == Some("true")
}

/// An ADDED event line for a cached list's item, with the `kind` and
/// `apiVersion` a LIST leaves out of its items added (a watch decoder
/// needs them).
pub fn added_event(item: &[u8], kind: &str, api_version: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(item.len() + kind.len() + api_version.len() + 64);
    line.extend_from_slice(br#"{"type":"ADDED","object":"#);
    let has_kind = json::member(item, 0, "kind").is_some();
    match item.split_first() {
        Some((b'{', rest)) if !has_kind => {
            line.extend_from_slice(br#"{"kind":"#);
            line.extend_from_slice(json::quote(kind).as_bytes());
            line.extend_from_slice(br#","apiVersion":"#);
            line.extend_from_slice(json::quote(api_version).as_bytes());
            if !rest[json::skip_ws(rest, 0)..].starts_with(b"}") {
                line.push(b',');
            }
            line.extend_from_slice(rest);
        }
        _ => line.extend_from_slice(item),
    }
    line.extend_from_slice(b"}\n");
    line
}

/// The BOOKMARK that ends the initial events, at `rv`.
pub fn end_bookmark(kind: &str, api_version: &str, rv: &str) -> Vec<u8> {
    let mut line = String::with_capacity(160 + kind.len() + rv.len());
    line.push_str(r#"{"type":"BOOKMARK","object":{"kind":"#);
    line.push_str(&json::quote(kind));
    line.push_str(r#","apiVersion":"#);
    line.push_str(&json::quote(api_version));
    line.push_str(r#","metadata":{"resourceVersion":"#);
    line.push_str(&json::quote(rv));
    line.push_str(r#","annotations":{""#);
    line.push_str(INITIAL_EVENTS_END);
    line.push_str("\":\"true\"}}}}\n");
    line.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_get_their_kind_back() {
        let line = added_event(br#"{"metadata":{"name":"a"}}"#, "Pod", "v1");
        assert_eq!(
            line,
            br#"{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a"}}}
"#
        );
        let kept = added_event(br#"{"kind":"Widget","apiVersion":"x/v1"}"#, "Pod", "v1");
        assert_eq!(
            kept,
            br#"{"type":"ADDED","object":{"kind":"Widget","apiVersion":"x/v1"}}
"#
        );
        let empty = added_event(b"{ }", "Pod", "v1");
        assert_eq!(
            empty,
            br#"{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1" }}
"#
        );
    }

    #[test]
    fn the_end_bookmark_is_recognised() {
        let line = end_bookmark("Pod", "v1", "42");
        let event = crate::k8s::watch::WatchEvent::parse(&line).unwrap();
        assert_eq!(event.kind, crate::k8s::watch::EventType::Bookmark);
        assert_eq!(event.resource_version.as_deref(), Some("42"));
        assert!(is_initial_events_end(&line[event.object]));
        assert!(!is_initial_events_end(
            br#"{"kind":"Pod","metadata":{"resourceVersion":"1"}}"#
        ));
    }
}
