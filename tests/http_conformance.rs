//! HTTP/1.1 framing conformance (issue 9): no request can desync a pooled
//! upstream connection or poison another client's cache.
//!
//! Each vector is sent as exact bytes over TLS to the real binary, in
//! front of a strict recording upstream (tests/support/strict.rs, its own
//! RFC 9112 reader). Per vector, the invariant:
//!
//! - EITHER the client got no 2xx (a 4xx/5xx, or a close) AND the upstream
//!   saw no complete request from it (at most an aborted one, on a
//!   connection that then ended);
//! - OR the upstream saw exactly the intended request(s): same method and
//!   target, exactly one framing field that matches the body, the body
//!   byte for byte, no chunk extensions or trailers; and the client got
//!   each one's own answer, in order.
//!
//! Where the policy (notes/http-policy.md) names a status, the vector table
//! pins it (and whether the connection is closed). After every vector: a
//! kubelet GET of a fresh path on a new connection gets its own answer; no
//! upstream connection shows a request after this upstream sent it a
//! malformed answer; no upstream connection was left mid-request; and every
//! cache entry's body names the path of its own file (nothing for
//! `/smuggled`).
//!
//! Failures are collected over the whole group and reported together.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::daemon::Daemon;
use support::pki::Pki;
use support::strict::{
    describe_end, show, ConnRecord, End, Exchange, Misbehavior, RawClient, Seen, Step,
    StrictUpstream,
};

const CM: &str = "/api/v1/namespaces/default/configmaps";
const UA: &str = "kubelet/v1.36.2";
/// How long the client waits for the proxy's answer to one vector.
const CLIENT_DEADLINE: Duration = Duration::from_millis(1200);
/// How long the upstream may take to settle (an aborted request closed).
const SETTLE: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------
// The bench: one strict upstream, one lite-apiserver.

struct Bench {
    _dir: PathBuf,
    _pki: Pki,
    up: StrictUpstream,
    proxy: Daemon,
    client: RawClient,
}

impl Bench {
    fn new(name: &str) -> Bench {
        let dir = support::temp_dir(name);
        let pki = Pki::generate(&dir.join("pki"));
        let up = StrictUpstream::start(&pki);
        let mut args: Vec<String> = vec!["--server".into(), up.url()];
        args.extend(pki.proxy_flags());
        args.extend(["--cache-agents", "*", "--health-interval", "1"].map(String::from));
        // The ConfigMap follower's own requests would land between the
        // vectors' and make the upstream's record of a vector ambiguous.
        args.extend(["--cache-agents-configmap", "none"].map(String::from));
        let proxy = Daemon::start(&dir.join("cache"), &args);
        let client = RawClient::new(proxy.addr, &pki.ca.pem, Some(&pki.node));
        Bench {
            _dir: dir,
            _pki: pki,
            up,
            proxy,
            client,
        }
    }
}

// ---------------------------------------------------------------------------
// Vectors.

/// A request the upstream must see.
#[derive(Clone, Debug)]
struct Intended {
    method: &'static str,
    target: String,
    body: Vec<u8>,
}

type Extra = fn(&Exchange, &[Seen]) -> Result<(), String>;

struct Vector {
    name: &'static str,
    /// The policy clause that decides it.
    policy: &'static str,
    steps: Vec<Step>,
    /// What the upstream must see, in order; empty: refused.
    forwarded: Vec<Intended>,
    /// Final statuses the client must get, in order (None: only the
    /// invariant decides).
    statuses: Option<Vec<u16>>,
    /// The policy closes the client connection after the last answer.
    close: bool,
    /// An upstream misbehavior to arm for the vector's path first.
    misbehave: Option<Misbehavior>,
    extra: Option<Extra>,
}

impl Vector {
    fn want(&self) -> usize {
        self.statuses
            .as_ref()
            .map_or(0, Vec::len)
            .max(self.forwarded.len())
            .max(1)
    }
}

/// A request head for `{CM}/{name}` with Host and kubelet's User-Agent;
/// `extra` is more field lines, each ending in CRLF.
fn h(method: &str, name: &str, extra: &str) -> String {
    format!("{method} {CM}/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n{extra}\r\n")
}

fn target(name: &str) -> String {
    format!("{CM}/{name}")
}

fn intended(method: &'static str, name: &str, body: &[u8]) -> Intended {
    Intended {
        method,
        target: target(name),
        body: body.to_vec(),
    }
}

fn send(bytes: impl AsRef<[u8]>) -> Vec<Step> {
    vec![Step::Send(bytes.as_ref().to_vec())]
}

/// Refused with `status`; `close`: the connection is closed after.
fn refuse(
    name: &'static str,
    status: u16,
    close: bool,
    policy: &'static str,
    bytes: impl AsRef<[u8]>,
) -> Vector {
    Vector {
        name,
        policy,
        steps: send(bytes),
        forwarded: Vec::new(),
        statuses: Some(vec![status]),
        close,
        misbehave: None,
        extra: None,
    }
}

/// Refused, status not pinned (a 4xx/5xx or a close).
fn refuse_any(name: &'static str, policy: &'static str, steps: Vec<Step>) -> Vector {
    Vector {
        name,
        policy,
        steps,
        forwarded: Vec::new(),
        statuses: None,
        close: false,
        misbehave: None,
        extra: None,
    }
}

/// Forwarded exactly as `forwarded`, each answered 200.
fn forward(
    name: &'static str,
    policy: &'static str,
    steps: Vec<Step>,
    forwarded: Vec<Intended>,
) -> Vector {
    Vector {
        name,
        policy,
        steps,
        statuses: Some(vec![200; forwarded.len()]),
        forwarded,
        close: false,
        misbehave: None,
        extra: None,
    }
}

/// `forward` of one POST of `body` to `{CM}/{name}`.
fn post_ok(
    name: &'static str,
    policy: &'static str,
    bytes: impl AsRef<[u8]>,
    body: &[u8],
) -> Vector {
    forward(
        name,
        policy,
        send(bytes),
        vec![intended("POST", name, body)],
    )
}

fn cat(a: &str, b: &str) -> String {
    format!("{a}{b}")
}

/// `5\r\nhello\r\n0\r\n\r\n`: a valid chunked "hello".
const HELLO_CHUNKED: &str = "5\r\nhello\r\n0\r\n\r\n";
const CLOSE: bool = true;
const OPEN: bool = false;

/// CL/TE combinations and transfer-codings.
fn framing_vectors() -> Vec<Vector> {
    let smuggled_get = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cl_te_body = format!(
        "0\r\n\r\nGET {CM}/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n\r\n"
    );
    let te_cl_body = format!("{:x}\r\n{smuggled_get}\r\n0\r\n\r\n", smuggled_get.len());
    vec![
        refuse("cl-te", 400, CLOSE, "TE and CL -> 400, close",
            cat(&h("POST", "cl-te", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"), HELLO_CHUNKED)),
        refuse("te-cl", 400, CLOSE, "TE and CL -> 400, close",
            cat(&h("POST", "te-cl", "Transfer-Encoding: chunked\r\nContent-Length: 15\r\n"), HELLO_CHUNKED)),
        refuse("cl-te-smuggle", 400, CLOSE, "TE and CL -> 400, close (CL.TE)",
            cat(&h("POST", "cl-te-smuggle", &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", cl_te_body.len())), &cl_te_body)),
        refuse("te-cl-smuggle", 400, CLOSE, "TE and CL -> 400, close (TE.CL, issue shape)",
            cat(&h("POST", "te-cl-smuggle", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"), &te_cl_body)),
        refuse("te-cl-lowercase", 400, CLOSE, "TE and CL -> 400, close",
            cat(&h("POST", "te-cl-lowercase", "transfer-encoding: chunked\r\ncontent-length: 4\r\n"), &te_cl_body)),
        refuse("te-gzip", 400, CLOSE, "last coding not chunked -> 400",
            cat(&h("POST", "te-gzip", "Transfer-Encoding: gzip\r\n"), "hello")),
        refuse("te-xchunked", 400, CLOSE, "last coding not chunked -> 400",
            cat(&h("POST", "te-xchunked", "Transfer-Encoding: xchunked\r\n"), HELLO_CHUNKED)),
        refuse("te-gzip-chunked", 501, CLOSE, "other coding before chunked -> 501",
            cat(&h("POST", "te-gzip-chunked", "Transfer-Encoding: gzip, chunked\r\n"), HELLO_CHUNKED)),
        refuse("te-identity-chunked", 501, CLOSE, "other coding before chunked -> 501",
            cat(&h("POST", "te-identity-chunked", "Transfer-Encoding: identity, chunked\r\n"), HELLO_CHUNKED)),
        refuse("te-chunked-chunked", 400, CLOSE, "chunked more than once -> 400",
            cat(&h("POST", "te-chunked-chunked", "Transfer-Encoding: chunked, chunked\r\n"), HELLO_CHUNKED)),
        refuse("te-two-lines-chunked", 400, CLOSE, "TE lines joined; chunked twice -> 400",
            cat(&h("POST", "te-two-lines-chunked", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), HELLO_CHUNKED)),
        refuse("te-two-lines-gzip-chunked", 501, CLOSE, "TE lines joined; gzip before chunked -> 501",
            cat(&h("POST", "te-two-lines-gzip-chunked", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"), HELLO_CHUNKED)),
        refuse("te-two-lines-chunked-gzip", 400, CLOSE, "TE lines joined; last not chunked -> 400",
            cat(&h("POST", "te-two-lines-chunked-gzip", "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"), HELLO_CHUNKED)),
        refuse("te-chunked-param", 400, CLOSE, "element not a plain token -> 400",
            cat(&h("POST", "te-chunked-param", "Transfer-Encoding: chunked;x=1\r\n"), HELLO_CHUNKED)),
        refuse("te-chun-ked", 400, CLOSE, "element not a plain token -> 400",
            cat(&h("POST", "te-chun-ked", "Transfer-Encoding: chun ked\r\n"), HELLO_CHUNKED)),
        refuse("te-empty", 400, CLOSE, "no elements -> 400",
            cat(&h("POST", "te-empty", "Transfer-Encoding: \r\n"), HELLO_CHUNKED)),
        refuse("te-http10", 400, CLOSE, "TE in HTTP/1.0 -> 400, close",
            format!("POST {CM}/te-http10 HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\nTransfer-Encoding: chunked\r\n\r\n{HELLO_CHUNKED}")),
        post_ok("te-tab-chunked", "elements trimmed of SP/HTAB: chunked",
            cat(&h("POST", "te-tab-chunked", "Transfer-Encoding:\tchunked\r\n"), HELLO_CHUNKED), b"hello"),
        post_ok("te-uppercase", "coding names compare case-insensitively",
            cat(&h("POST", "te-uppercase", "Transfer-Encoding: CHUNKED\r\n"), HELLO_CHUNKED), b"hello"),
        post_ok("te-empty-elements", "empty elements are ignored",
            cat(&h("POST", "te-empty-elements", "Transfer-Encoding: , chunked ,\r\n"), HELLO_CHUNKED), b"hello"),
        refuse("cl-differ", 400, CLOSE, "CL values differ -> 400",
            cat(&h("POST", "cl-differ", "Content-Length: 5\r\nContent-Length: 6\r\n"), "hello!")),
        post_ok("cl-same-twice", "several equal CL values = that length",
            cat(&h("POST", "cl-same-twice", "Content-Length: 5\r\nContent-Length: 5\r\n"), "hello"), b"hello"),
        refuse("cl-list", 400, CLOSE, "CL must be 1*DIGIT (no comma list)",
            cat(&h("POST", "cl-list", "Content-Length: 5, 5\r\n"), "hello")),
        refuse("cl-plus", 400, CLOSE, "CL must be 1*DIGIT (no sign)",
            cat(&h("POST", "cl-plus", "Content-Length: +5\r\n"), "hello")),
        refuse("cl-minus", 400, CLOSE, "CL must be 1*DIGIT (no sign)",
            cat(&h("POST", "cl-minus", "Content-Length: -1\r\n"), "hello")),
        refuse("cl-hex", 400, CLOSE, "CL must be 1*DIGIT",
            cat(&h("POST", "cl-hex", "Content-Length: 0x5\r\n"), "hello")),
        refuse("cl-inner-space", 400, CLOSE, "CL must be 1*DIGIT (no inner space)",
            cat(&h("POST", "cl-inner-space", "Content-Length: 5 5\r\n"), "hello")),
        refuse("cl-empty", 400, CLOSE, "CL must be 1*DIGIT",
            cat(&h("POST", "cl-empty", "Content-Length: \r\n"), "hello")),
        refuse("cl-overflow", 400, CLOSE, "CL not fitting u64 -> 400",
            cat(&h("POST", "cl-overflow", "Content-Length: 99999999999999999999999\r\n"), "hello")),
        post_ok("cl-leading-zeros", "leading zeros are fine",
            cat(&h("POST", "cl-leading-zeros", "Content-Length: 005\r\n"), "hello"), b"hello"),
        post_ok("cl-ows", "OWS around a field value is not part of it",
            cat(&h("POST", "cl-ows", "Content-Length: \t5 \r\n"), "hello"), b"hello"),
        post_ok("get-with-body", "a CL body on GET is forwarded as framed",
            cat(&h("GET", "get-with-body", "Content-Length: 5\r\n"), "hello"), b"hello")
            .method("GET"),
    ]
}

/// The chunked body grammar.
fn chunk_vectors() -> Vec<Vector> {
    let te = "Transfer-Encoding: chunked\r\n";
    let c = |name: &str, body: &str| cat(&h("POST", name, te), body);
    let smuggled =
        format!("GET {CM}/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n\r\n");
    vec![
        post_ok(
            "chunked-plain",
            "chunked body re-framed upstream",
            c("chunked-plain", HELLO_CHUNKED),
            b"hello",
        ),
        post_ok(
            "chunked-many",
            "chunk boundaries may differ; same data",
            c("chunked-many", "1\r\nh\r\n2\r\nel\r\n02\r\nlo\r\n0\r\n\r\n"),
            b"hello",
        ),
        post_ok(
            "chunked-smuggle-in-data",
            "chunk data is body, never a request",
            c(
                "chunked-smuggle-in-data",
                &format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len()),
            ),
            smuggled.as_bytes(),
        ),
        post_ok(
            "chunked-empty",
            "a chunked empty body",
            c("chunked-empty", "0\r\n\r\n"),
            b"",
        ),
        refuse(
            "chunk-size-overflow",
            400,
            CLOSE,
            "more than 16 significant hex digits -> 400",
            c(
                "chunk-size-overflow",
                "10000000000000000\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        post_ok(
            "chunk-size-leading-zeros",
            "leading zeros are not significant",
            c(
                "chunk-size-leading-zeros",
                "0000000000000000000005\r\nhello\r\n0\r\n\r\n",
            ),
            b"hello",
        ),
        refuse(
            "chunk-size-0x",
            400,
            CLOSE,
            "chunk-size = 1*HEXDIG",
            c("chunk-size-0x", "0x5\r\nhello\r\n0\r\n\r\n"),
        ),
        refuse(
            "chunk-size-empty",
            400,
            CLOSE,
            "chunk-size = 1*HEXDIG",
            c("chunk-size-empty", "\r\nhello\r\n0\r\n\r\n"),
        ),
        refuse(
            "chunk-size-negative",
            400,
            CLOSE,
            "chunk-size = 1*HEXDIG",
            c("chunk-size-negative", "-5\r\nhello\r\n0\r\n\r\n"),
        ),
        refuse(
            "chunk-size-trailing-space",
            400,
            CLOSE,
            "BWS only before \";\" of an extension",
            c("chunk-size-trailing-space", "5 \r\nhello\r\n0\r\n\r\n"),
        ),
        refuse(
            "chunk-line-bare-lf",
            400,
            CLOSE,
            "chunk line bare LF -> 400",
            c("chunk-line-bare-lf", "5\nhello\r\n0\r\n\r\n"),
        ),
        refuse(
            "chunk-line-bare-cr",
            400,
            CLOSE,
            "chunk line bare CR -> 400",
            c("chunk-line-bare-cr", "5\rhello\r\n0\r\n\r\n"),
        ),
        refuse(
            "chunk-data-no-crlf",
            400,
            CLOSE,
            "data not followed by CRLF -> 400",
            c("chunk-data-no-crlf", "5\r\nhelloXX\r\n0\r\n\r\n"),
        ),
        refuse(
            "chunk-data-bare-lf",
            400,
            CLOSE,
            "data not followed by CRLF -> 400",
            c("chunk-data-bare-lf", "5\r\nhello\n0\r\n\r\n"),
        ),
        refuse(
            "chunk-last-bare-lf",
            400,
            CLOSE,
            "last-chunk line bare LF -> 400",
            c("chunk-last-bare-lf", "5\r\nhello\r\n0\n\r\n"),
        ),
        refuse(
            "chunk-end-bare-lf",
            400,
            CLOSE,
            "final CRLF bare LF -> 400",
            c("chunk-end-bare-lf", "5\r\nhello\r\n0\r\n\n"),
        ),
        post_ok(
            "chunk-ext-valid",
            "extensions are ignored",
            c("chunk-ext-valid", "5;name=value\r\nhello\r\n0;last\r\n\r\n"),
            b"hello",
        ),
        post_ok(
            "chunk-ext-quoted",
            "ext value may be a quoted-string",
            c("chunk-ext-quoted", "5;q=\"a;b\\\"c\"\r\nhello\r\n0\r\n\r\n"),
            b"hello",
        ),
        post_ok(
            "chunk-ext-bws",
            "BWS around ; and =",
            c("chunk-ext-bws", "5 ; a = b\r\nhello\r\n0\r\n\r\n"),
            b"hello",
        ),
        refuse(
            "chunk-ext-no-name",
            400,
            CLOSE,
            "ext-name is a token",
            c("chunk-ext-no-name", "5;\r\nhello\r\n0\r\n\r\n"),
        ),
        refuse(
            "chunk-ext-bad-quote",
            400,
            CLOSE,
            "unterminated quoted-string",
            c("chunk-ext-bad-quote", "5;a=\"b\r\nhello\r\n0\r\n\r\n"),
        ),
        post_ok(
            "chunk-trailers",
            "trailer fields are discarded",
            c(
                "chunk-trailers",
                "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
            ),
            b"hello",
        ),
        refuse(
            "chunk-trailer-bad-name",
            400,
            CLOSE,
            "trailer field-line = token \":\" ...",
            c(
                "chunk-trailer-bad-name",
                "5\r\nhello\r\n0\r\nX Bad: v\r\n\r\n",
            ),
        ),
        refuse(
            "chunk-trailer-bare-lf",
            400,
            CLOSE,
            "trailer bare LF -> 400",
            c("chunk-trailer-bare-lf", "5\r\nhello\r\n0\r\nX-T: v\n\r\n"),
        ),
        refuse_any(
            "chunked-then-close",
            "body error after head forwarded: upstream conn closed",
            vec![
                Step::Send(c("chunked-then-close", "5\r\nhello\r\n").into_bytes()),
                Step::CloseWrite,
            ],
        ),
        refuse_any(
            "cl-short-then-close",
            "body shorter than CL: upstream conn closed",
            vec![
                Step::Send(
                    cat(
                        &h("POST", "cl-short-then-close", "Content-Length: 100\r\n"),
                        "hello",
                    )
                    .into_bytes(),
                ),
                Step::CloseWrite,
            ],
        ),
        refuse_any(
            "head-then-close",
            "an unfinished head is never forwarded",
            vec![
                Step::Send(
                    format!("GET {CM}/head-then-close HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                        .into_bytes(),
                ),
                Step::CloseWrite,
            ],
        ),
    ]
}

/// The head: field syntax, line ends, Host, targets, methods.
fn head_vectors() -> Vec<Vector> {
    vec![
        refuse("space-before-colon-cl", 400, CLOSE, "whitespace before \":\" -> 400, close",
            cat(&h("POST", "space-before-colon-cl", "Content-Length : 5\r\n"), "hello")),
        refuse("space-before-colon-te", 400, CLOSE, "whitespace before \":\" -> 400, close",
            cat(&h("POST", "space-before-colon-te", "Transfer-Encoding : chunked\r\n"), HELLO_CHUNKED)),
        refuse("nul-in-value", 400, CLOSE, "NUL in a value -> 400, close",
            h("GET", "nul-in-value", "X-Test: a\0b\r\n")),
        refuse("cr-in-value", 400, CLOSE, "bare CR in a value -> 400, close",
            h("GET", "cr-in-value", "X-Test: a\rb\r\n")),
        refuse("vt-in-te", 400, CLOSE, "CTL in a value -> 400, close",
            cat(&h("POST", "vt-in-te", "Transfer-Encoding: \x0bchunked\r\n"), HELLO_CHUNKED)),
        refuse("obs-fold", 400, CLOSE, "obs-fold -> 400, close",
            h("GET", "obs-fold", "X-Test: a\r\n b\r\n")),
        refuse("obs-fold-te", 400, CLOSE, "obs-fold -> 400, close",
            cat(&h("POST", "obs-fold-te", "Transfer-Encoding: gzip,\r\n chunked\r\n"), HELLO_CHUNKED)),
        refuse("bare-lf-head", 400, CLOSE, "bare LF in the head -> 400, close",
            format!("GET {CM}/bare-lf-head HTTP/1.1\nHost: 127.0.0.1\nUser-Agent: {UA}\n\n")),
        refuse("bare-lf-one-line", 400, CLOSE, "bare LF in the head -> 400, close",
            format!("GET {CM}/bare-lf-one-line HTTP/1.1\r\nHost: 127.0.0.1\nUser-Agent: {UA}\r\n\r\n")),
        refuse("bad-method-char", 400, CLOSE, "invalid token in method -> 400, close",
            format!("G(ET {CM}/bad-method-char HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")),
        refuse("head-too-large", 431, CLOSE, "head > 64 KiB -> 431, close",
            h("GET", "head-too-large", &format!("X-Big: {}\r\n", "a".repeat(70 * 1024)))),
        refuse_any("version-2", "only HTTP/1.0 and HTTP/1.1",
            send(format!("GET {CM}/version-2 HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n"))),
        refuse("no-host", 400, OPEN, "HTTP/1.1 without Host -> 400",
            format!("GET {CM}/no-host HTTP/1.1\r\nUser-Agent: {UA}\r\n\r\n")),
        refuse("two-hosts", 400, OPEN, "several Host -> 400",
            h("GET", "two-hosts", "Host: other\r\n")),
        forward("http10-no-host", "HTTP/1.0: at most one Host",
            send(format!("GET {CM}/http10-no-host HTTP/1.0\r\nUser-Agent: {UA}\r\n\r\n")),
            vec![intended("GET", "http10-no-host", b"")]),
        forward("absolute-form", "absolute-form forwarded in origin-form",
            send(format!("GET https://127.0.0.1:6443{CM}/absolute-form?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n\r\n")),
            vec![Intended { method: "GET", target: format!("{CM}/absolute-form?x=1"), body: Vec::new() }]),
        forward("absolute-form-empty-path", "scheme case-insensitive; empty path -> /",
            send(format!("GET HTTP://127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n\r\n")),
            vec![Intended { method: "GET", target: "/".into(), body: Vec::new() }]),
        refuse("asterisk-form", 400, OPEN, "asterisk-form -> 400",
            format!("OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n\r\n")),
        refuse("authority-form", 400, OPEN, "authority-form -> 400",
            format!("GET 127.0.0.1:6443 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n\r\n")),
        refuse("connect", 405, CLOSE, "CONNECT -> 405, close",
            format!("CONNECT 127.0.0.1:6443 HTTP/1.1\r\nHost: 127.0.0.1:6443\r\nUser-Agent: {UA}\r\n\r\n")),
        refuse("fragment", 400, OPEN, "# in the target -> 400",
            h("GET", "fragment#frag", "")),
        refuse("fragment-in-query", 400, OPEN, "# in the target -> 400",
            h("GET", "fragment-in-query?a=1#x", "")),
    ]
}

/// Pipelining, Expect, mixed good and bad.
fn pipeline_vectors() -> Vec<Vector> {
    let get = |name: &str| h("GET", name, "");
    vec![
        forward(
            "pipeline-two",
            "pipelined requests served in order",
            send(cat(&get("pipeline-two-a"), &get("pipeline-two-b"))),
            vec![
                intended("GET", "pipeline-two-a", b""),
                intended("GET", "pipeline-two-b", b""),
            ],
        ),
        forward(
            "pipeline-three-bodies",
            "pipelined requests served in order",
            send(format!(
                "{}hello{}{HELLO_CHUNKED}{}{{\"a\":1}}",
                h("POST", "pipeline-three-a", "Content-Length: 5\r\n"),
                h("POST", "pipeline-three-b", "Transfer-Encoding: chunked\r\n"),
                h("PUT", "pipeline-three-c", "Content-Length: 7\r\n")
            )),
            vec![
                intended("POST", "pipeline-three-a", b"hello"),
                intended("POST", "pipeline-three-b", b"hello"),
                intended("PUT", "pipeline-three-c", b"{\"a\":1}"),
            ],
        ),
        Vector {
            statuses: Some(vec![200, 400]),
            ..forward(
                "pipeline-then-cl-te",
                "the bad second request -> 400, close; the first is served",
                send(format!(
                    "{}{}{HELLO_CHUNKED}",
                    get("pipeline-then-cl-te-a"),
                    h(
                        "POST",
                        "pipeline-then-cl-te-b",
                        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"
                    )
                )),
                vec![intended("GET", "pipeline-then-cl-te-a", b"")],
            )
        },
        Vector {
            statuses: Some(vec![200, 400]),
            ..forward(
                "body-longer-than-cl",
                "CL bytes are the body; the rest is the next head",
                send(cat(
                    &h("POST", "body-longer-than-cl", "Content-Length: 3\r\n"),
                    "hello\r\n\r\n",
                )),
                vec![intended("POST", "body-longer-than-cl", b"hel")],
            )
        },
        Vector {
            extra: Some(|ex, seen| {
                if ex.interim != [100] {
                    return Err(format!("client got interim {:?}, want [100]", ex.interim));
                }
                match seen.first().and_then(|s| s.header("expect")) {
                    Some(v) => Err(format!("Expect: {v} was forwarded")),
                    None => Ok(()),
                }
            }),
            ..forward(
                "expect-100",
                "the proxy answers 100 Continue itself; Expect not forwarded",
                vec![
                    Step::Send(
                        h(
                            "POST",
                            "expect-100",
                            "Content-Length: 5\r\nExpect: 100-continue\r\n",
                        )
                        .into_bytes(),
                    ),
                    Step::AwaitInterim,
                    Step::Send(b"hello".to_vec()),
                ],
                vec![intended("POST", "expect-100", b"hello")],
            )
        },
        Vector {
            extra: Some(|ex, seen| {
                if ex.interim != [100] {
                    return Err(format!("client got interim {:?}, want [100]", ex.interim));
                }
                match seen.first().and_then(|s| s.header("expect")) {
                    Some(v) => Err(format!("Expect: {v} was forwarded")),
                    None => Ok(()),
                }
            }),
            ..forward(
                "expect-100-chunked",
                "the proxy answers 100 Continue itself; Expect not forwarded",
                vec![
                    Step::Send(
                        h(
                            "POST",
                            "expect-100-chunked",
                            "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n",
                        )
                        .into_bytes(),
                    ),
                    Step::AwaitInterim,
                    Step::Send(HELLO_CHUNKED.as_bytes().to_vec()),
                ],
                vec![intended("POST", "expect-100-chunked", b"hello")],
            )
        },
    ]
}

/// The upstream answers badly; the client gets 502 (or a close), that
/// connection is never reused.
fn response_vectors() -> Vec<Vector> {
    use Misbehavior::*;
    let modes: [(&'static str, Misbehavior, Option<u16>, &'static str); 12] = [
        ("resp-cl-te", ClAndTe, Some(502), "CL+TE answer -> 502"),
        ("resp-te-gzip", TeGzip, Some(502), "unknown coding -> 502"),
        (
            "resp-bare-lf-status",
            BareLfStatus,
            Some(502),
            "malformed head -> 502",
        ),
        (
            "resp-two-cl",
            TwoContentLengths,
            Some(502),
            "differing CL -> 502",
        ),
        (
            "resp-cl-plus",
            ContentLengthPlus,
            Some(502),
            "CL not 1*DIGIT -> 502",
        ),
        (
            "resp-bad-chunk-size",
            BadChunkSize,
            None,
            "bad chunk: 502 or a close",
        ),
        (
            "resp-chunk-overflow",
            ChunkSizeOverflow,
            None,
            "bad chunk: 502 or a close",
        ),
        (
            "resp-chunk-no-crlf",
            ChunkDataNoCrlf,
            None,
            "bad chunk: 502 or a close",
        ),
        (
            "resp-chunked-cut",
            ChunkedCutThenClose,
            None,
            "no terminator: a close",
        ),
        (
            "resp-truncated",
            TruncatedThenClose,
            None,
            "short body: a close",
        ),
        (
            "resp-extra-bytes",
            ExtraBytes,
            Some(200),
            "bytes after the answer: never pooled",
        ),
        (
            "resp-late-extra-bytes",
            LateExtraBytes,
            Some(200),
            "bytes while idle: discarded",
        ),
    ];
    modes
        .into_iter()
        .map(|(name, how, status, policy)| Vector {
            name,
            policy,
            steps: send(h("GET", name, "")),
            forwarded: vec![intended("GET", name, b"")],
            statuses: status.map(|s| vec![s]),
            close: false,
            misbehave: Some(how),
            extra: None,
        })
        .collect()
}

impl Vector {
    /// Same vector, the single intended request with another method.
    fn method(mut self, m: &'static str) -> Vector {
        for f in &mut self.forwarded {
            f.method = m;
        }
        self
    }
}

// ---------------------------------------------------------------------------
// Running and judging.

/// Requests the proxy makes by itself (probes), not part of any vector.
fn background(s: &Seen) -> bool {
    s.path().ends_with("/readyz") || s.path().starts_with("/openid/")
}

/// What one vector is judged on: the upstream's records from just before
/// the vector to just after its follow-up GET. Requests for the follow-up's
/// path are the follow-up's; every other one is the vector's (so a request
/// the proxy sends late, after the client is gone, is still the vector's).
struct Window<'a> {
    conns: &'a [ConnRecord],
    before: u64,
    until: u64,
    follow_up: &'a str,
    /// Connections already reported as left mid-request.
    stuck: &'a HashSet<usize>,
}

impl Window<'_> {
    /// Requests in the window, in order; `follow_up`: those of the
    /// follow-up path, else all others.
    fn requests(&self, follow_up: bool) -> Vec<Seen> {
        let mut out: Vec<Seen> = self
            .conns
            .iter()
            .flat_map(|c| c.requests.iter().cloned())
            .filter(|r| r.seq > self.before && r.seq <= self.until && !background(r))
            .filter(|r| (r.path() == self.follow_up) == follow_up)
            .collect();
        out.sort_by_key(|r| r.seq);
        out
    }

    fn ended_here(&self, c: &ConnRecord) -> bool {
        c.end_seq > self.before && c.end_seq <= self.until
    }
}

/// Connections that saw something in the window (for messages).
fn touched(w: &Window) -> String {
    let mut s = String::new();
    for c in w.conns {
        let any = c
            .requests
            .iter()
            .any(|r| r.seq > w.before && !background(r))
            || w.ended_here(c) && !matches!(c.end, End::Clean(_) | End::ClosedByUpstream(_))
            || c.mid_request() && !w.stuck.contains(&c.id);
        if any {
            s.push_str(&format!("\n    {}", c.describe()));
        }
    }
    if s.is_empty() {
        s.push_str(" (no request)");
    }
    s
}

/// Whether one framing line matches a body of `len` bytes.
fn framing_ok(seen: &Seen) -> Result<(), String> {
    let len = seen.body.len();
    match &seen.framing[..] {
        [] if len == 0 => Ok(()),
        [] => Err(format!("no framing field for a {len}-byte body")),
        [one] => {
            let (name, value) = one.split_once(':').unwrap_or((one, ""));
            let value = value.trim();
            let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            let length_ok = name.eq_ignore_ascii_case("content-length")
                && digits
                && value.parse::<u64>().ok() == Some(len as u64);
            let chunked_ok = name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
                && seen.chunked;
            if length_ok || chunked_ok {
                Ok(())
            } else {
                Err(format!("framing {one:?} does not match a {len}-byte body"))
            }
        }
        many => Err(format!("{} framing fields: {many:?}", many.len())),
    }
}

fn check_intended(it: &Intended, seen: &Seen) -> Result<(), String> {
    if seen.method != it.method || seen.target != it.target {
        return Err(format!(
            "upstream got {} {}, want {} {}",
            seen.method, seen.target, it.method, it.target
        ));
    }
    framing_ok(seen)?;
    if seen.body != it.body {
        return Err(format!(
            "body {} differs from the intended {}",
            show(&seen.body),
            show(&it.body)
        ));
    }
    if !seen.chunk_exts.is_empty() || !seen.trailers.is_empty() {
        return Err(format!(
            "forwarded chunk extensions {:?} / trailers {:?}",
            seen.chunk_exts, seen.trailers
        ));
    }
    Ok(())
}

/// The per-vector invariant and the pinned statuses.
fn judge(v: &Vector, ex: &Exchange, w: &Window) -> Vec<String> {
    let mut bad = Vec::new();
    let seen = w.requests(false);
    let refused_tail = ex.finals.iter().any(|r| r.status >= 400);
    for c in w.conns {
        if c.mid_request() && !w.stuck.contains(&c.id) {
            bad.push(format!(
                "upstream conn#{} left mid-request: {}",
                c.id,
                show(&c.pending)
            ));
        }
        if w.ended_here(c) {
            match &c.end {
                End::Desync { .. } => bad.push(format!(
                    "upstream could not parse what it got: conn#{} {}",
                    c.id,
                    describe_end(&c.end)
                )),
                End::Aborted { .. } if !v.forwarded.is_empty() && !refused_tail => {
                    bad.push(format!(
                        "an aborted upstream request: conn#{} {}",
                        c.id,
                        describe_end(&c.end)
                    ))
                }
                _ => {}
            }
        }
    }
    if v.forwarded.is_empty() {
        if ex.got_2xx() {
            bad.push("refused vector, but the client got a 2xx".into());
        }
        if !seen.is_empty() {
            bad.push(format!(
                "refused vector, but the upstream got {} complete request(s): {}",
                seen.len(),
                seen.iter()
                    .map(Seen::describe)
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
    } else {
        if seen.len() != v.forwarded.len() {
            bad.push(format!(
                "upstream got {} request(s), want {}",
                seen.len(),
                v.forwarded.len()
            ));
        }
        for (i, it) in v.forwarded.iter().enumerate() {
            if let Some(s) = seen.get(i) {
                if let Err(e) = check_intended(it, s) {
                    bad.push(format!("request {}: {e}", i + 1));
                }
            }
            match ex.finals.get(i) {
                Some(r) if (200..300).contains(&r.status) => {
                    if r.named_target().as_deref() != Some(&it.target) {
                        bad.push(format!(
                            "answer {} names {:?}, want {:?} (someone else's answer)",
                            i + 1,
                            r.named_target(),
                            it.target
                        ));
                    }
                }
                Some(r) if v.misbehave.is_some() => {
                    if v.statuses.is_none() && r.status < 400 {
                        bad.push(format!("answer {} is {}", i + 1, r.status));
                    }
                }
                Some(r) => bad.push(format!("answer {} is {}, want 2xx", i + 1, r.status)),
                None if v.misbehave.is_some() => {}
                None => bad.push(format!("no answer {} for {}", i + 1, it.target)),
            }
        }
        if v.misbehave.is_some() && v.statuses.is_none() && ex.got_2xx() {
            bad.push("a malformed upstream answer reached the client as a complete 2xx".into());
        }
    }
    if let Some(want) = &v.statuses {
        if &ex.statuses() != want {
            bad.push(format!(
                "policy: statuses {want:?}, client got {:?}",
                ex.statuses()
            ));
        }
    }
    if v.close && ex.closed.is_none() {
        bad.push("policy: connection closed after the answer, but it stayed open".into());
    }
    if let Some(extra) = v.extra {
        if let Err(e) = extra(ex, &seen) {
            bad.push(e);
        }
    }
    bad
}

/// Every request that arrived on a connection after a malformed answer.
fn reused_after_misbehavior(conns: &[ConnRecord]) -> Vec<String> {
    conns
        .iter()
        .flat_map(|c| {
            c.requests
                .iter()
                .filter(|r| r.after_misbehavior.is_some())
                .map(move |r| {
                    format!(
                        "upstream conn#{} was reused after its malformed answer: {}",
                        c.id,
                        r.describe()
                    )
                })
        })
        .collect()
}

/// Percent-decoding of an entry file's escaped segment.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every cache entry's body names the path of its own file; nothing is
/// stored for a smuggled path.
fn cache_problems(cache: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for f in files(cache) {
        let rel = f.strip_prefix(cache).unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let Some(file) = parts.last() else { continue };
        if file.starts_with('.')
            || !file.ends_with(".json")
            || !file.contains('@')
            || parts.len() < 2
        {
            continue;
        }
        let (name, _) = file.split_once('@').unwrap();
        let mut segs: Vec<String> = parts[1..parts.len() - 1]
            .iter()
            .map(|s| unescape(s))
            .collect();
        if !name.is_empty() {
            segs.push(unescape(name));
        }
        let path = format!("/{}", segs.join("/"));
        if path.contains("smuggled") {
            bad.push(format!(
                "cache entry for a smuggled path: {}",
                rel.display()
            ));
        }
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let Some(at) = bytes.windows(2).position(|w| w == b"\n\n") else {
            bad.push(format!("cache entry {} has no header end", rel.display()));
            continue;
        };
        let body = &bytes[at + 2..];
        let named = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["data"]["target"].as_str().map(str::to_owned));
        match named {
            Some(t) if t.split('?').next() == Some(path.as_str()) => {}
            other => bad.push(format!(
                "cache entry {} (path {path}) holds the answer for {other:?}: {}",
                rel.display(),
                show(body)
            )),
        }
    }
    bad
}

/// What was already reported in a group (so one defect is named once, by
/// the vector that caused it).
#[derive(Default)]
struct Memory {
    /// Upstream connections left mid-request.
    stuck: HashSet<usize>,
    /// Cache problems.
    cache_reported: HashSet<String>,
}

/// Runs one vector and the after-checks; returns its failures.
fn run_vector(b: &Bench, v: &Vector, memory: &mut Memory) -> Vec<String> {
    let stuck = &memory.stuck;
    let started = Instant::now();
    if let Some(how) = v.misbehave {
        b.up.misbehave(&target(v.name), how);
    }
    let settle = |stuck: &HashSet<usize>| {
        b.up.wait_until(SETTLE, |cs| {
            !cs.iter().any(|c| c.mid_request() && !stuck.contains(&c.id))
        })
    };
    let before = b.up.mark();
    let ex = b
        .client
        .exchange(&v.steps, v.want(), v.close, CLIENT_DEADLINE);
    // Let an aborted upstream request be closed before going on.
    settle(stuck);
    if v.misbehave == Some(Misbehavior::LateExtraBytes) {
        let path = target(v.name);
        let written = b.up.wait_until(Duration::from_secs(2), |cs| {
            cs.iter()
                .any(|c| c.misbehaved.is_some() && c.requests.iter().any(|r| r.path() == path))
        });
        assert!(
            written,
            "[{}] the upstream never sent its late bytes",
            v.name
        );
    }

    // A kubelet GET of a fresh path, on a new connection.
    let path = target(&format!("after-{}", v.name));
    let get = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\nAccept: application/json\r\n\r\n"
    );
    let fx = b
        .client
        .exchange(&send(get), 1, false, Duration::from_secs(5));
    // Its request reaches the upstream (even when the proxy answered it
    // with stale bytes before sending it), then the records settle.
    b.up.wait_until(Duration::from_secs(2), |cs| {
        cs.iter()
            .any(|c| c.requests.iter().any(|r| r.path() == path))
    });
    settle(stuck);
    let (until, conns) = b.up.snapshot();
    let w = Window {
        conns: &conns,
        before,
        until,
        follow_up: &path,
        stuck,
    };
    let mut bad = judge(v, &ex, &w);
    match fx.finals.first() {
        Some(r) if r.status == 200 && r.named_target().as_deref() == Some(path.as_str()) => {}
        Some(r) => bad.push(format!(
            "follow-up GET {path} got {} naming {:?} (not its own answer)",
            r.status,
            r.named_target()
        )),
        None => bad.push(format!(
            "follow-up GET {path} got no answer: {}",
            fx.describe()
        )),
    }
    let follow = w.requests(true);
    let follow_ok = matches!(&follow[..], [one] if one.method == "GET" && one.target == path
        && one.body.is_empty() && one.framing.is_empty());
    if !follow_ok {
        bad.push(format!(
            "follow-up: upstream got {:?}, want exactly one GET {path}",
            follow.iter().map(Seen::describe).collect::<Vec<_>>()
        ));
    }
    bad.extend(reused_after_misbehavior(&conns));
    let context = format!(
        "\n  client: {}\n  upstream:{}\n  ({:.2}s)",
        ex.describe(),
        touched(&w),
        started.elapsed().as_secs_f64()
    );
    memory
        .stuck
        .extend(conns.iter().filter(|c| c.mid_request()).map(|c| c.id));

    // The follow-up is cached (the writer has flushed what came before it),
    // and every entry holds its own answer.
    let entry = b.proxy.cache_dir.join(format!("kubelet{path}@.json"));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !entry.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !entry.exists() {
        bad.push(format!(
            "follow-up answer was never cached at {}",
            entry.display()
        ));
    }
    for problem in cache_problems(&b.proxy.cache_dir) {
        if memory.cache_reported.insert(problem.clone()) {
            bad.push(problem);
        }
    }
    if bad.is_empty() {
        return bad;
    }
    vec![format!(
        "[{}] ({})\n  - {}{context}",
        v.name,
        v.policy,
        bad.join("\n  - ")
    )]
}

/// Runs a group on its own bench; panics with every failure at once.
fn run_group(name: &str, vectors: Vec<Vector>) {
    let started = Instant::now();
    let b = Bench::new(name);
    let mut failures = Vec::new();
    let mut names = HashSet::new();
    let mut memory = Memory::default();
    for v in &vectors {
        assert!(names.insert(v.name), "duplicate vector name {}", v.name);
        failures.extend(run_vector(&b, v, &mut memory));
        // Forget what was judged; open connections keep their flags.
        b.up.clear();
    }
    eprintln!(
        "{name}: {} vectors, {} failed, {:.1}s",
        vectors.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n\n{}\n\nproxy log (tail):\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n\n"),
        tail(&b.proxy.log_text(), 40)
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn framing_vectors_cl_te() {
    run_group("conf-framing", framing_vectors());
}

#[test]
fn framing_vectors_chunked() {
    run_group("conf-chunked", chunk_vectors());
}

#[test]
fn framing_vectors_head() {
    run_group("conf-head", head_vectors());
}

#[test]
fn framing_vectors_pipeline() {
    run_group("conf-pipeline", pipeline_vectors());
}

#[test]
fn framing_vectors_response() {
    run_group("conf-response", response_vectors());
}

/// The corpus itself: enough vectors, every class represented.
#[test]
fn corpus_size() {
    let request_side = framing_vectors().len()
        + chunk_vectors().len()
        + head_vectors().len()
        + pipeline_vectors().len();
    assert!(
        request_side >= 40,
        "only {request_side} request-side vectors"
    );
    assert!(response_vectors().len() >= 8);
}

// ---------------------------------------------------------------------------
// Real clients through the proxy to the double.

mod real_clients {
    use super::support::setup::Setup;
    use std::process::Command;

    const CM_JSON: &str = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"curl-chunked","namespace":"edge"},"data":{"via":"curl","mode":"chunked"}}"#;

    /// curl `-H 'Transfer-Encoding: chunked' --data-binary @cm.json`
    /// through the proxy creates the object (issue 9: it used to reach the
    /// apiserver with no framing and an empty body).
    #[test]
    fn curl_chunked_post_creates_the_object() {
        let s = Setup::new("conf-curl");
        let file = s.dir.join("cm.json");
        std::fs::write(&file, CM_JSON).unwrap();
        let out = Command::new("curl")
            .args(["-sS", "--http1.1", "--max-time", "10"])
            .arg("--cacert")
            .arg(&s.pki.ca.pem)
            .arg("--cert")
            .arg(&s.pki.node.cert)
            .arg("--key")
            .arg(&s.pki.node.key)
            .args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-H",
                "Transfer-Encoding: chunked",
                "-H",
                "User-Agent: curl-test/1.0",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .args(["-w", "\n%{http_code}"])
            .arg(format!(
                "{}/api/v1/namespaces/edge/configmaps",
                s.proxy.url()
            ))
            .output()
            .expect("curl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = stdout.lines().last().unwrap_or("").to_owned();
        let seen = s
            .double
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .map(|r| format!("{} {} {:?}", r.method, r.target, r.headers))
            .collect::<Vec<_>>();
        assert_eq!(
            code,
            "201",
            "curl chunked POST through the proxy: {stdout}\nstderr: {}\ndouble saw: {seen:?}\nproxy log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.proxy.log_text()
        );
        let obj = s
            .double
            .get("/api/v1", "configmaps", "edge", "curl-chunked")
            .unwrap_or_else(|| panic!("the double has no curl-chunked; it saw {seen:?}"));
        assert_eq!(obj["data"]["via"], "curl");
        assert_eq!(obj["data"]["mode"], "chunked");
    }

    /// `kubectl create -f` and `kubectl apply -f` through the proxy.
    #[test]
    fn kubectl_create_and_apply_keep_working() {
        let s = Setup::new("conf-kubectl");
        let k = s.kubectl();
        let created = s.dir.join("created.yaml");
        std::fs::write(
            &created,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: made-by-create\n  namespace: edge\ndata:\n  how: create\n",
        )
        .unwrap();
        k.ok(&[
            "create",
            "--validate=false",
            "-f",
            &created.display().to_string(),
        ]);
        let obj = s
            .double
            .get("/api/v1", "configmaps", "edge", "made-by-create")
            .expect("kubectl create reached the double");
        assert_eq!(obj["data"]["how"], "create");

        let applied = s.dir.join("applied.yaml");
        for value in ["one", "two"] {
            std::fs::write(
                &applied,
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: made-by-apply\n  namespace: edge\ndata:\n  how: apply\n  round: {value}\n"),
            )
            .unwrap();
            k.ok(&[
                "apply",
                "--validate=false",
                "-f",
                &applied.display().to_string(),
            ]);
            let obj = s
                .double
                .get("/api/v1", "configmaps", "edge", "made-by-apply")
                .expect("kubectl apply reached the double");
            assert_eq!(obj["data"]["round"], value, "apply round {value}: {obj}");
        }
    }
}

/// The recorder itself, without the proxy: it reads valid framings, records
/// what it should, and refuses or flags what it should (so a vector that
/// fails is the proxy's fault, not the recorder's).
#[test]
fn strict_upstream_self_check() {
    let dir = support::temp_dir("conf-self");
    let pki = Pki::generate(&dir.join("pki"));
    let up = StrictUpstream::start(&pki);
    let c = RawClient::new(up.addr(), &pki.ca.pem, None);
    let t = Duration::from_secs(5);
    let conn_of = |path: &str| {
        let p = target(path);
        let found = up.wait_until(t, |cs| {
            cs.iter().any(|c| {
                c.end != End::Open
                    && (c.requests.iter().any(|r| r.path() == p)
                        || matches!(&c.end, End::Desync { raw, .. } | End::Aborted { partial: raw, .. }
                            if String::from_utf8_lossy(raw).contains(&p)))
            })
        });
        assert!(found, "no ended connection for {p}: {:?}", up.connections());
        up.connections()
            .into_iter()
            .find(|c| {
                c.requests.iter().any(|r| r.path() == p)
                    || matches!(&c.end, End::Desync { raw, .. } | End::Aborted { partial: raw, .. }
                        if String::from_utf8_lossy(raw).contains(&p))
            })
            .unwrap()
    };

    // Chunked with an extension and a trailer, then a CL request, pipelined.
    let two = format!(
        "{}5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n{}abc",
        h("POST", "self-chunked", "Transfer-Encoding: chunked\r\n"),
        h(
            "PUT",
            "self-cl",
            "Content-Length: 3\r\nConnection: close\r\n"
        )
    );
    let ex = c.exchange(&send(two), 2, true, t);
    let names: Vec<_> = ex.finals.iter().map(|r| r.named_target()).collect();
    assert_eq!(
        names,
        [Some(target("self-chunked")), Some(target("self-cl"))],
        "{}",
        ex.describe()
    );
    let rec = conn_of("self-chunked");
    assert!(
        matches!(rec.end, End::ClosedByUpstream(_)),
        "{}",
        rec.describe()
    );
    let [a, b] = &rec.requests[..] else {
        panic!("{}", rec.describe())
    };
    assert!(a.chunked && a.body == b"hello" && a.framing == ["Transfer-Encoding: chunked"]);
    assert_eq!(
        (a.chunk_exts.clone(), a.trailers.clone()),
        (vec![";ext=1".to_owned()], vec!["X-T: 1".to_owned()])
    );
    assert!(
        check_intended(&intended("POST", "self-chunked", b"hello"), a).is_err(),
        "exts/trailers are flagged"
    );
    assert!(b.body == b"abc" && b.framing == ["Content-Length: 3"] && b.method == "PUT");
    check_intended(&intended("PUT", "self-cl", b"abc"), b).unwrap();

    // Refused strictly: a desync, recorded raw, connection closed.
    for (name, extra, body) in [
        (
            "self-cl-te",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            HELLO_CHUNKED,
        ),
        (
            "self-trailing-space",
            "Transfer-Encoding: chunked\r\n",
            "5 \r\nhello\r\n0\r\n\r\n",
        ),
        (
            "self-bare-lf",
            "Transfer-Encoding: chunked\r\n",
            "5\nhello\r\n0\r\n\r\n",
        ),
        (
            "self-gzip",
            "Transfer-Encoding: gzip, chunked\r\n",
            HELLO_CHUNKED,
        ),
        (
            "self-no-crlf",
            "Transfer-Encoding: chunked\r\n",
            "5\r\nhelloXX0\r\n\r\n",
        ),
    ] {
        let ex = c.exchange(&send(cat(&h("POST", name, extra), body)), 1, true, t);
        assert!(
            ex.finals.is_empty() && ex.closed.is_some(),
            "{name}: {}",
            ex.describe()
        );
        let rec = conn_of(name);
        assert!(
            matches!(rec.end, End::Desync { .. }) && rec.requests.is_empty(),
            "{name}: {}",
            rec.describe()
        );
    }

    // A short body, then a close: aborted, with the partial bytes.
    let ex = c.exchange(
        &[
            Step::Send(
                cat(&h("POST", "self-short", "Content-Length: 10\r\n"), "hello").into_bytes(),
            ),
            Step::CloseWrite,
        ],
        1,
        true,
        t,
    );
    assert!(ex.finals.is_empty(), "{}", ex.describe());
    let rec = conn_of("self-short");
    assert!(
        matches!(&rec.end, End::Aborted { partial, .. } if partial.ends_with(b"hello")),
        "{}",
        rec.describe()
    );

    // A malformed answer, then another request on that connection: flagged.
    up.misbehave(&target("self-extra"), Misbehavior::ExtraBytes);
    let ex = c.exchange(
        &send(format!(
            "{}{}",
            h("GET", "self-extra", ""),
            h("GET", "self-next", "Connection: close\r\n")
        )),
        3,
        true,
        t,
    );
    assert_eq!(
        ex.finals.get(1).and_then(|r| r.named_target()).as_deref(),
        Some("/smuggled"),
        "{}",
        ex.describe()
    );
    let rec = conn_of("self-next");
    assert_eq!(rec.misbehaved, Some(Misbehavior::ExtraBytes));
    assert_eq!(
        rec.requests[1].after_misbehavior,
        Some(Misbehavior::ExtraBytes)
    );
    assert_eq!(reused_after_misbehavior(&[rec]).len(), 1);
}
