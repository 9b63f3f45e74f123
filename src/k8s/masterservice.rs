//! kubelet's view of the `default/kubernetes` Service, as OpenYurt
//! YurtHub's `masterservice` filter gives it: `spec.clusterIP`, every
//! element of `spec.clusterIPs` and the `port` of the port named `https`
//! carry lite-apiserver's `--incluster-address`, so kubelet injects
//! `KUBERNETES_SERVICE_HOST`/`_PORT` (and the `KUBERNETES_PORT_*` link
//! variables) pointing at the node into every pod it starts. Nothing else
//! changes: every other byte, every other Service, every other agent.
//!
//! [`Rewriter`] works on a JSON byte stream in pieces of any size: a single
//! Service (GET), a ServiceList (LIST), or watch events (one object per
//! line). It passes bytes through until an object that may be a Service
//! begins (the document itself, an element of its `items`, or its
//! `object`), holds that one object until its `kind` or `metadata` tells
//! (the apiserver writes both before `spec`, so an ordinary Service is
//! released after its first few hundred bytes), and holds the matching
//! object to its end to splice the three values. Memory is bounded by
//! [`MAX_OBJECT`]: a larger object is passed unchanged (and logged).
//! Input that is not JSON is passed through unchanged from the first byte
//! the scanner cannot place. Rewriting is idempotent.

use std::net::SocketAddr;
use std::ops::Range;

use crate::json;
use crate::k8s::request::{Classified, Verb};

/// Largest object held to decide and rewrite; larger ones pass unchanged.
pub const MAX_OBJECT: usize = 64 * 1024;
/// Deepest nesting followed; deeper input passes through unchanged.
const MAX_DEPTH: usize = 512;

/// Whether kubelet's answer to `class` is about the Service collections
/// that hold `default/kubernetes`: GET of it, LIST or WATCH of services in
/// all namespaces or in `default`.
pub fn applies(class: &Classified, agent: &str) -> bool {
    let Some(r) = &class.resource else {
        return false;
    };
    agent == "kubelet"
        && matches!(class.verb, Verb::Get | Verb::List | Verb::Watch)
        && r.prefix == "/api/v1"
        && r.resource == "services"
        && r.subresource.is_none()
        && r.namespace.as_deref().is_none_or(|ns| ns == "default")
        && r.name.as_deref().is_none_or(|n| n == "kubernetes")
}

/// Whether a body of this Content-Type is plain JSON objects: not
/// protobuf, not a Table or metadata-only conversion (`as=`).
pub fn rewritable(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
        && parts.all(|p| {
            !p.trim()
                .get(..3)
                .is_some_and(|n| n.eq_ignore_ascii_case("as="))
        })
}

/// What a rewriter did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// `default/kubernetes` objects rewritten.
    pub rewritten: u64,
    /// `default/kubernetes` objects over [`MAX_OBJECT`], passed unchanged.
    pub oversize: u64,
    /// Largest number of bytes held at once.
    pub peak_held: usize,
}

/// Where the scanner is inside the JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Between tokens.
    Between,
    /// Inside a string (a member key or a value); after a backslash.
    Str { key: bool, escaped: bool },
    /// Inside a number or `true`/`false`/`null`.
    Scalar,
}

/// The member keys that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Other,
    Kind,
    Metadata,
    Items,
    Object,
}

/// One open object or array.
#[derive(Debug, Clone, Copy)]
struct Frame {
    object: bool,
    /// The key of the member being read (objects).
    key: Key,
    /// The next string is a key (objects).
    expect_key: bool,
}

/// A member key being read (only short unescaped keys can matter).
#[derive(Debug, Default)]
struct KeyBuf {
    bytes: [u8; 8],
    len: usize,
    other: bool,
}

impl KeyBuf {
    fn clear(&mut self) {
        self.len = 0;
        self.other = false;
    }

    fn extend(&mut self, bytes: &[u8]) {
        match self.bytes.get_mut(self.len..self.len + bytes.len()) {
            Some(room) if !self.other => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            _ => self.other = true,
        }
    }

    fn key(&self) -> Key {
        match &self.bytes[..self.len] {
            _ if self.other => Key::Other,
            b"kind" => Key::Kind,
            b"metadata" => Key::Metadata,
            b"items" => Key::Items,
            b"object" => Key::Object,
            _ => Key::Other,
        }
    }
}

/// The object being held: from its `{` up to what was scanned.
#[derive(Debug)]
struct Hold {
    buf: Vec<u8>,
    /// Index of the object's frame in the stack.
    frame: usize,
    /// Its metadata says `default/kubernetes`.
    matched: bool,
    /// Where in `buf` the value of the member being read starts.
    value_start: usize,
}

/// The streaming rewriter; see the module documentation.
#[derive(Debug)]
pub struct Rewriter {
    /// The address as a JSON string literal, and the port's digits.
    ip: Vec<u8>,
    port: Vec<u8>,
    lex: Lex,
    stack: Vec<Frame>,
    key: KeyBuf,
    hold: Option<Hold>,
    /// Gave up on the input: everything passes through.
    broken: bool,
    stats: RewriteStats,
}

impl Rewriter {
    /// A rewriter showing `addr` as the `default/kubernetes` Service.
    pub fn new(addr: SocketAddr) -> Rewriter {
        Rewriter {
            ip: json::quote(&addr.ip().to_string()).into_bytes(),
            port: addr.port().to_string().into_bytes(),
            lex: Lex::Between,
            stack: Vec::new(),
            key: KeyBuf::default(),
            hold: None,
            broken: false,
            stats: RewriteStats::default(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> RewriteStats {
        self.stats
    }

    /// Feeds the next piece of the body; appends what can be sent now to
    /// `out` (possibly nothing, while an object is held).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut run = 0;
        let mut i = 0;
        while i < input.len() && !self.broken {
            i = self.step(input, i, out, &mut run);
        }
        let rest = &input[run..];
        let Some(hold) = &mut self.hold else {
            out.extend_from_slice(rest);
            return;
        };
        if hold.buf.len() + rest.len() > MAX_OBJECT {
            self.release_oversize(rest, out);
            return;
        }
        hold.buf.extend_from_slice(rest);
        self.stats.peak_held = self.stats.peak_held.max(hold.buf.len());
    }

    /// The body ended: whatever is still held goes out unchanged (a
    /// truncated object is never rewritten).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(hold) = self.hold.take() {
            out.extend_from_slice(&hold.buf);
        }
    }

    /// Scans from `input[i]`; returns where to continue. `run` is the
    /// start of the bytes not yet copied to `out` or the held buffer.
    fn step(&mut self, input: &[u8], i: usize, out: &mut Vec<u8>, run: &mut usize) -> usize {
        match self.lex {
            Lex::Str { key, escaped: true } => {
                // An escaped character in a key: not one of ours.
                if key {
                    self.key.other = true;
                }
                self.lex = Lex::Str {
                    key,
                    escaped: false,
                };
                i + 1
            }
            Lex::Str { key, .. } => self.string(input, i, key, out, run),
            Lex::Scalar if is_scalar_byte(input[i]) => i + 1,
            Lex::Scalar => {
                // The byte after a scalar is scanned again between tokens.
                self.lex = Lex::Between;
                self.value_end(input, i, out, run);
                i
            }
            Lex::Between => self.token(input, i, out, run),
        }
    }

    /// Inside a string: up to its closing quote or the next backslash.
    fn string(
        &mut self,
        input: &[u8],
        i: usize,
        key: bool,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> usize {
        let rest = &input[i..];
        let Some(p) = rest.iter().position(|&b| b == b'"' || b == b'\\') else {
            if key {
                self.key.extend(rest);
            }
            return input.len();
        };
        if key {
            self.key.extend(&rest[..p]);
        }
        if rest[p] == b'\\' {
            self.lex = Lex::Str { key, escaped: true };
            return i + p + 1;
        }
        self.lex = Lex::Between;
        let end = i + p + 1;
        if key {
            self.key_end(input, end, out, run);
        } else {
            self.value_end(input, end, out, run);
        }
        end
    }

    /// Between tokens, at `input[i]`.
    fn token(&mut self, input: &[u8], i: usize, out: &mut Vec<u8>, run: &mut usize) -> usize {
        match input[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b':' => {}
            b'{' | b'[' => self.open(input[i] == b'{', input, i, out, run),
            b'}' | b']' => self.close(input[i] == b'}', input, i, out, run),
            b',' => {
                if let Some(top) = self.stack.last_mut() {
                    top.expect_key = top.object;
                }
            }
            b'"' => {
                let key = self.stack.last().is_some_and(|f| f.object && f.expect_key);
                if key {
                    self.key.clear();
                } else {
                    self.value_start(i, *run);
                }
                self.lex = Lex::Str {
                    key,
                    escaped: false,
                };
            }
            b if is_scalar_byte(b) => {
                self.value_start(i, *run);
                self.lex = Lex::Scalar;
            }
            _ => self.give_up(input, i, out, run),
        }
        i + 1
    }

    /// A `{` or `[` at `i`: maybe the start of an object to hold.
    fn open(&mut self, object: bool, input: &[u8], i: usize, out: &mut Vec<u8>, run: &mut usize) {
        self.value_start(i, *run);
        if self.stack.len() >= MAX_DEPTH {
            return self.give_up(input, i, out, run);
        }
        if object && self.hold.is_none() && self.may_be_service() {
            out.extend_from_slice(&input[*run..i]);
            *run = i;
            self.hold = Some(Hold {
                buf: Vec::new(),
                frame: self.stack.len(),
                matched: false,
                value_start: 0,
            });
        }
        self.stack.push(Frame {
            object,
            key: Key::Other,
            expect_key: object,
        });
    }

    /// Whether an object opening now may be a Service: the document, an
    /// element of its `items`, or its `object` (a watch event).
    fn may_be_service(&self) -> bool {
        match self.stack.as_slice() {
            [] => true,
            [root] => root.object && root.key == Key::Object,
            [root, items] => root.object && root.key == Key::Items && !items.object,
            _ => false,
        }
    }

    /// A `}` or `]` at `i`.
    fn close(&mut self, object: bool, input: &[u8], i: usize, out: &mut Vec<u8>, run: &mut usize) {
        match self.stack.pop() {
            Some(frame) if frame.object == object => {}
            _ => return self.give_up(input, i, out, run),
        }
        if self
            .hold
            .as_ref()
            .is_some_and(|h| h.frame == self.stack.len())
        {
            return self.end_held(input, i + 1, out, run);
        }
        self.value_end(input, i + 1, out, run);
    }

    /// A member key ended at `end`: `items` or `object` in the held object
    /// means it is a list or an event, not a Service.
    fn key_end(&mut self, input: &[u8], end: usize, out: &mut Vec<u8>, run: &mut usize) {
        let key = self.key.key();
        let depth = self.stack.len();
        if let Some(top) = self.stack.last_mut() {
            top.key = key;
            top.expect_key = false;
        }
        let held_here = self.hold.as_ref().is_some_and(|h| h.frame + 1 == depth);
        if held_here && matches!(key, Key::Items | Key::Object) {
            self.release(input, end, out, run);
        }
    }

    /// A value begins at `i`: remembered if it is a member of the held
    /// object (its `kind` or `metadata` decide).
    fn value_start(&mut self, i: usize, run: usize) {
        let depth = self.stack.len();
        if let Some(hold) = self.hold.as_mut().filter(|h| h.frame + 1 == depth) {
            hold.value_start = hold.buf.len() + (i - run);
        }
    }

    /// A value ended at `end` (exclusive) in the top frame: the held
    /// object's `kind` or `metadata` decides whether it is kept.
    fn value_end(&mut self, input: &[u8], end: usize, out: &mut Vec<u8>, run: &mut usize) {
        let depth = self.stack.len();
        let Some(hold) = self.hold.as_ref() else {
            return;
        };
        let key = self.stack.last().map_or(Key::Other, |f| f.key);
        if hold.matched || hold.frame + 1 != depth || !matches!(key, Key::Kind | Key::Metadata) {
            return;
        }
        if !self.absorb(input, end, out, run) {
            return;
        }
        let Some(hold) = self.hold.as_mut() else {
            return;
        };
        let value = hold.buf.get(hold.value_start..).unwrap_or_default();
        let keep = match key {
            Key::Kind => json::string_value(value).as_deref() == Some("Service"),
            _ => is_default_kubernetes(value),
        };
        hold.matched = key == Key::Metadata && keep;
        if !keep {
            self.release(input, end, out, run);
        }
    }

    /// The held object closed at `end`: rewritten if it matched.
    fn end_held(&mut self, input: &[u8], end: usize, out: &mut Vec<u8>, run: &mut usize) {
        if !self.absorb(input, end, out, run) {
            return;
        }
        let Some(hold) = self.hold.take() else {
            return;
        };
        match hold
            .matched
            .then(|| rewrite(&hold.buf, &self.ip, &self.port))
        {
            Some(Some(new)) => {
                self.stats.rewritten += 1;
                out.extend_from_slice(&new);
            }
            Some(None) => {
                log::debug!("default/kubernetes Service without a spec to rewrite");
                out.extend_from_slice(&hold.buf);
            }
            None => out.extend_from_slice(&hold.buf),
        }
    }

    /// Moves `input[run..end]` into the held buffer; false if that would
    /// pass [`MAX_OBJECT`] (the object was then released unchanged).
    fn absorb(&mut self, input: &[u8], end: usize, out: &mut Vec<u8>, run: &mut usize) -> bool {
        let piece = &input[*run..end];
        *run = end;
        let Some(hold) = self.hold.as_mut() else {
            out.extend_from_slice(piece);
            return false;
        };
        if hold.buf.len() + piece.len() > MAX_OBJECT {
            self.release_oversize(piece, out);
            return false;
        }
        hold.buf.extend_from_slice(piece);
        self.stats.peak_held = self.stats.peak_held.max(hold.buf.len());
        true
    }

    /// The held object is not the one: it goes out as it came, with
    /// `input[run..end]`.
    fn release(&mut self, input: &[u8], end: usize, out: &mut Vec<u8>, run: &mut usize) {
        if let Some(hold) = self.hold.take() {
            out.extend_from_slice(&hold.buf);
        }
        out.extend_from_slice(&input[*run..end]);
        *run = end;
    }

    /// The held object grew past the bound: it goes out unchanged.
    fn release_oversize(&mut self, rest: &[u8], out: &mut Vec<u8>) {
        let Some(hold) = self.hold.take() else {
            return out.extend_from_slice(rest);
        };
        if hold.matched {
            self.stats.oversize += 1;
            log::warn!(
                "the default/kubernetes Service is over {MAX_OBJECT} bytes: passed to kubelet unchanged"
            );
        } else {
            log::debug!("an object over {MAX_OBJECT} bytes before its metadata: passed unchanged");
        }
        out.extend_from_slice(&hold.buf);
        out.extend_from_slice(rest);
    }

    /// Not JSON as expected: everything from here passes unchanged.
    fn give_up(&mut self, input: &[u8], i: usize, out: &mut Vec<u8>, run: &mut usize) {
        log::debug!("masterservice: not JSON at a byte; the rest passes unchanged");
        self.release(input, i, out, run);
        self.broken = true;
    }
}

fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

/// Whether a `metadata` value names `default/kubernetes`.
fn is_default_kubernetes(meta: &[u8]) -> bool {
    let field = |name: &str| json::member(meta, 0, name).and_then(|r| json::string_value(&meta[r]));
    field("name").as_deref() == Some("kubernetes")
        && field("namespace").as_deref() == Some("default")
}

/// The Service object `obj` with its `spec.clusterIP`, each string of
/// `spec.clusterIPs` and the `port` of the `https` port spliced; `None`
/// if it has no `spec` object.
pub fn rewrite(obj: &[u8], ip: &[u8], port: &[u8]) -> Option<Vec<u8>> {
    let spec = json::member(obj, 0, "spec")?;
    let mut edits: Vec<(Range<usize>, &[u8])> = Vec::new();
    json::for_each_member(obj, spec.start, |b, m| {
        let at = m.value.start;
        match &b[m.key.clone()] {
            b"clusterIP" if b[at] == b'"' => edits.push((m.value.clone(), ip)),
            b"clusterIPs" => each_element(b, at, |r| {
                if b[r.start] == b'"' {
                    edits.push((r, ip));
                }
            }),
            b"ports" => each_element(b, at, |r| {
                if let Some(p) = https_port(b, r.start) {
                    edits.push((p, port));
                }
            }),
            _ => {}
        }
        true
    })
    .ok()?;
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(obj.len() + 64);
    let mut from = 0;
    for (range, value) in edits {
        out.extend_from_slice(&obj[from..range.start]);
        out.extend_from_slice(value);
        from = range.end;
    }
    out.extend_from_slice(&obj[from..]);
    Some(out)
}

/// Calls `f` with the range of each element of the array at `at` (not an
/// array, or malformed: stops quietly; the object then keeps its bytes).
fn each_element(b: &[u8], at: usize, mut f: impl FnMut(Range<usize>)) {
    if b.get(at) != Some(&b'[') {
        return;
    }
    let mut j = json::skip_ws(b, at + 1);
    if b.get(j) == Some(&b']') {
        return;
    }
    while let Ok(value) = json::value_range(b, j) {
        j = json::skip_ws(b, value.end);
        f(value);
        match b.get(j) {
            Some(b',') => j += 1,
            _ => return,
        }
    }
}

/// The range of the `port` number of a ServicePort object named `https`.
fn https_port(b: &[u8], at: usize) -> Option<Range<usize>> {
    let name = json::member(b, at, "name")?;
    if json::string_value(&b[name]).as_deref() != Some("https") {
        return None;
    }
    json::member(b, at, "port").filter(|r| b[r.start].is_ascii_digit())
}

#[cfg(test)]
mod tests;
