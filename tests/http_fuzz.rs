//! Differential fuzzing of the request reading path (issue 9).
//!
//! A seeded generator writes request streams (valid requests of every shape,
//! pipelined, then mutated to hit each rule of `notes/http-policy.md`), and
//! each stream is read twice: by the crate, through
//! `lite_apiserver::http::fuzzing::split_requests_in_pieces` (its own
//! `Conn` + head parser + body decoder, fed in pieces of generated sizes), and
//! by [`reference`], an independent reading of RFC 9112 and the policy that
//! shares no code with the crate. Both must find the same requests (method,
//! target as forwarded, version, body bytes) and end the same way. The crate
//! must also never panic, never hang, and not depend on the piece sizes.
//!
//! - `LITE_FUZZ_SECS` (default 3): how long `fuzz` runs.
//! - `LITE_FUZZ_SEED` (default: from the clock, printed): the generator seed.
//! - `LITE_FUZZ_REPLAY=path` (a `.case` file or a directory of them): replay
//!   saved cases instead of generating.
//!
//! A mismatch is printed (seed, case index, input escaped), minimized, and
//! saved under `target/fuzz-failures/` for replay. `tests/fuzz.sh` runs this
//! for an hour in release mode.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lite_apiserver::http::fuzzing::{split_requests_in_pieces, End, Split};

/// One case must be read within this bound, or the crate hangs.
const HANG_BOUND: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The reference reader
// ---------------------------------------------------------------------------

/// The reference reader (its own file, so that the libFuzzer target in
/// `tests/fuzz/` checks against the same reading).
#[path = "support/http_reference.rs"]
mod reference;

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

/// xorshift64* (no dependency; a case is reproducible from its seed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability 1/n.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A request as the generator builds it, before serialization.
#[derive(Clone, Debug)]
struct Req {
    /// Bytes before the request line (empty lines).
    lead: Vec<u8>,
    method: Vec<u8>,
    sp1: Vec<u8>,
    target: Vec<u8>,
    sp2: Vec<u8>,
    version: Vec<u8>,
    /// Field lines without their CRLF.
    fields: Vec<Vec<u8>>,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    None,
    /// Raw bytes after the head (a Content-Length body, or garbage).
    Raw(Vec<u8>),
    Chunked(Chunked),
}

#[derive(Clone, Debug)]
struct Chunked {
    /// (chunk-size line without CRLF, data).
    chunks: Vec<(Vec<u8>, Vec<u8>)>,
    last: Vec<u8>,
    trailers: Vec<Vec<u8>>,
}

impl Req {
    fn head(&self) -> Vec<u8> {
        let mut out = self.lead.clone();
        for part in [
            &self.method,
            &self.sp1,
            &self.target,
            &self.sp2,
            &self.version,
        ] {
            out.extend_from_slice(part);
        }
        out.extend_from_slice(b"\r\n");
        for f in &self.fields {
            out.extend_from_slice(f);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head());
        match &self.body {
            Body::None => {}
            Body::Raw(b) => out.extend_from_slice(b),
            Body::Chunked(c) => {
                for (line, data) in &c.chunks {
                    out.extend_from_slice(line);
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(&c.last);
                out.extend_from_slice(b"\r\n");
                for t in &c.trailers {
                    out.extend_from_slice(t);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn is_field(&self, i: usize, name: &str) -> bool {
        let f = &self.fields[i];
        f.len() > name.len()
            && f[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && f[name.len()] == b':'
    }

    fn remove_fields(&mut self, name: &str) {
        let mut i = 0;
        while i < self.fields.len() {
            if self.is_field(i, name) {
                self.fields.remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn insert_field(&mut self, rng: &mut Rng, line: Vec<u8>) {
        let at = rng.below(self.fields.len() + 1);
        self.fields.insert(at, line);
    }

    /// Makes the body chunked (keeping data), with a valid TE field.
    fn make_chunked(&mut self, rng: &mut Rng) {
        let data = match &self.body {
            Body::Raw(b) => b.clone(),
            _ => {
                let n = rng.range(1, 40);
                random_data(rng, n)
            }
        };
        self.remove_fields("content-length");
        self.remove_fields("transfer-encoding");
        self.insert_field(rng, b"Transfer-Encoding: chunked".to_vec());
        if !matches!(self.body, Body::Chunked(_)) {
            self.body = Body::Chunked(Chunked {
                chunks: if data.is_empty() {
                    vec![]
                } else {
                    vec![(format!("{:x}", data.len()).into_bytes(), data)]
                },
                last: b"0".to_vec(),
                trailers: vec![],
            });
        }
    }
}

const METHODS: &[&str] = &[
    "GET",
    "GET",
    "GET",
    "GET",
    "POST",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "HEAD",
    "OPTIONS",
    "M-SEARCH",
    "X_Custom!",
];
const PATHS: &[&str] = &[
    "/",
    "/healthz",
    "/api",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/kube-system/pods/coredns-7f9c",
    "/apis/apps/v1/deployments",
    "/api/v1/pods?watch=1&resourceVersion=12",
    "/api/v1/nodes?labelSelector=a%3Db&limit=500",
    "/api?x=%2F%20&y=",
    "//double/slash",
    "/a/b;c=d",
    "/q?a=b?c/d",
    "/api/v1/namespaces/e/configmaps/x:y@z",
];
const HOSTS: &[&str] = &[
    "127.0.0.1:6443",
    "kubernetes.default.svc",
    "h",
    "[::1]:6443",
    "",
];
const TE_VALID: &[&str] = &[
    "chunked",
    "Chunked",
    "CHUNKED",
    "chunked ",
    "\tchunked",
    ", chunked",
    "chunked,",
    " , chunked , ",
];
const TE_VARIANTS: &[&str] = &[
    "gzip, chunked",
    "identity, chunked",
    "chunked, chunked",
    "chunked, gzip",
    "gzip",
    "identity",
    "chunked;x=1",
    "chun ked",
    "",
    ",",
    " , ",
    "x-custom, chunked",
    "chunked , identity",
    "\"chunked\"",
    "chunked\t",
    "deflate,chunked",
    "CHUNKED, Chunked",
    "chunked\x0b",
    "chunked, ,",
];
const TE_PAIRS: &[(&str, &str)] = &[
    ("gzip", "chunked"),
    ("chunked", "chunked"),
    ("chunked", "gzip"),
    ("chunked", ""),
    ("", "chunked"),
    ("identity", "chunked"),
];
const CL_VARIANTS: &[&str] = &[
    "+5",
    "-1",
    "5,5",
    "5, 5",
    "5 5",
    "",
    "0x5",
    "5.0",
    "99999999999999999999",
    "18446744073709551615",
    "18446744073709551616",
    "000000000000000000000018446744073709551615",
    "1e3",
    "\u{0663}",
    "5\x00",
];
const EXT_VALID: &[&str] = &[
    ";a",
    ";a=b",
    ";name=\"quoted value\"",
    " ;a",
    "; a",
    ";a = b",
    ";a=\"x\\\"y\"",
    ";a;b=c;d=\"\"",
    "\t;\ta\t=\t1",
    ";q=\"\\\t\"",
];
const EXT_BAD: &[&str] = &[
    ";",
    ";=",
    ";a=",
    ";a=b c",
    ";a b",
    "; ",
    ";a=\"unterminated",
    ";a=\"x\"y",
    ";a=\"\x01\"",
    ";\x00",
    "a",
    ";a==b",
    ";a=b;",
    ";a=\"\\\x7f\"",
    " ",
    ";a ",
    ";a=b ",
    ";a=\"x\" ",
    ";a,b",
];
const TRAILER_VALID: &[&str] = &[
    "X-Checksum: abc",
    "X:y",
    "X-Empty:",
    "X-Ws: \t v \t",
    "X-Obs: \u{e9}",
];
const TRAILER_BAD: &[&str] = &[
    "X : y",
    " X: y",
    "\tX: y",
    "X",
    ":y",
    "X: a\x00b",
    "X: a\rb",
    "X:\x7f",
    "X\t: y",
    "X y: z",
];
const NAME_BAD: &[&str] = &[
    "Name : v",
    "Name\t: v",
    "Na me: v",
    ": v",
    "Name v",
    " Name: v",
    "\tName: v",
    "N@me: v",
    "N\u{e9}me: v",
    "Name:: v",
    "Host : h",
    "Content-Length : 1",
    "Transfer-Encoding : chunked",
    " Transfer-Encoding: chunked",
];
const VERSIONS: &[&str] = &[
    "HTTP/1.0",
    "HTTP/1.1",
    "HTTP/1.2",
    "HTTP/2.0",
    "HTTP/0.9",
    "http/1.1",
    "HTTP/1.10",
    "HTTP/1",
    "HTTP/11",
    "HTTP/1.1 ",
    "HTTPS/1.1",
    "",
    "HTTP/1.1\t",
];
const TARGETS: &[&str] = &[
    "*",
    "h:443",
    "kubernetes:6443",
    "/a#b",
    "#",
    "/a?b#c",
    "http://h/a#b",
    "ftp://h/x",
    "http://",
    "http:///x",
    "http://h",
    "https://h?q=1",
    "HTTP://H/P",
    "hTtPs://h:6443/api/v1/pods?watch=true",
    "http:/x",
    "api/v1",
    "/caf\u{e9}",
    "/\u{1f600}",
    "http://u@h/x",
    "/%",
    "/\"<>{}|\\^`",
    "http://h?",
    "https://[::1]:6443",
];
const METHODS_ODD: &[&str] = &[
    "CONNECT",
    "connect",
    "G@T",
    "",
    "PO,ST",
    "get",
    "{",
    "GE\u{e9}T",
    "GET/",
];
const CTLS: &[u8] = &[
    0x00, b'\r', b'\n', 0x7f, 0x01, 0x0b, 0x0c, 0x1b, 0x80, 0xff, b'\t', 0x08,
];
const SPECIAL: &[u8] = &[
    b'\r', b'\n', b' ', b'\t', b':', b';', b'0', b'a', 0x00, 0x80, b'"', b',', b'#', b'/', b'=',
    b'F', 0x7f,
];

fn random_data(rng: &mut Rng, len: usize) -> Vec<u8> {
    match rng.below(4) {
        // JSON-ish text.
        0 => {
            let text = b"{\"kind\":\"ConfigMap\",\"data\":{\"k\":\"v\"}}\n";
            (0..len).map(|i| text[i % text.len()]).collect()
        }
        // Text that looks like HTTP framing: what a smuggler would send.
        1 => {
            let text: &[u8] = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
            (0..len).map(|i| text[i % text.len()]).collect()
        }
        // Any bytes.
        2 => (0..len).map(|_| rng.next() as u8).collect(),
        _ => (0..len).map(|_| b'a' + rng.below(26) as u8).collect(),
    }
}

/// Field-value bytes: mostly visible ASCII, sometimes SP/HTAB/obs-text.
fn random_value(rng: &mut Rng) -> Vec<u8> {
    let len = rng.range(0, 30);
    (0..len)
        .map(|_| match rng.below(20) {
            0 => b' ',
            1 => b'\t',
            2 => 0x80 + rng.below(128) as u8,
            _ => 0x21 + rng.below(94) as u8,
        })
        .collect()
}

fn random_case_name(rng: &mut Rng, name: &str) -> String {
    match rng.below(4) {
        0 => name.to_ascii_lowercase(),
        1 => name.to_ascii_uppercase(),
        _ => name.to_owned(),
    }
}

fn field(rng: &mut Rng, name: &str, value: &[u8]) -> Vec<u8> {
    let mut f = random_case_name(rng, name).into_bytes();
    f.push(b':');
    f.extend_from_slice(rng.pick(&[" ", "", "  ", "\t"]).as_bytes());
    f.extend_from_slice(value);
    if rng.one_in(8) {
        f.extend_from_slice(rng.pick(&[" ", "\t", " \t "]).as_bytes());
    }
    f
}

fn hex_size(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut s = if rng.one_in(2) {
        format!("{n:x}")
    } else {
        format!("{n:X}")
    };
    if rng.one_in(8) {
        s.insert_str(0, &"0".repeat(rng.range(1, 20)));
    }
    s.into_bytes()
}

fn gen_target(rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(7) {
        let scheme = rng.pick(&["http", "https", "HTTP", "Https"]);
        let host = rng.pick(&["127.0.0.1:6443", "kubernetes", "h"]);
        let rest = rng.pick(&[
            "",
            "/",
            "/api/v1/pods",
            "?watch=1",
            "/x?y",
            "/api/v1/pods?limit=5",
        ]);
        return format!("{scheme}://{host}{rest}").into_bytes();
    }
    let mut t = rng.pick(PATHS).as_bytes().to_vec();
    if rng.one_in(5) {
        for _ in 0..rng.range(1, 4) {
            let segment: Vec<u8> = (0..rng.range(0, 8))
                .map(|_| *rng.pick(b"abcxyz0189-._~%!$&'()*+,;=:@"))
                .collect();
            t.push(b'/');
            t.extend_from_slice(&segment);
        }
    }
    t
}

fn gen_chunked(rng: &mut Rng) -> Chunked {
    let n = rng.below(5);
    let chunks = (0..n)
        .map(|_| {
            let len = if rng.one_in(10) {
                rng.range(1, 3000)
            } else {
                rng.range(1, 120)
            };
            let mut line = hex_size(rng, len);
            if rng.one_in(4) {
                line.extend_from_slice(rng.pick(EXT_VALID).as_bytes());
            }
            (line, random_data(rng, len))
        })
        .collect();
    let mut last = rng.pick(&["0", "0", "0", "00", "000"]).as_bytes().to_vec();
    if rng.one_in(5) {
        last.extend_from_slice(rng.pick(EXT_VALID).as_bytes());
    }
    let trailers = (0..if rng.one_in(4) { rng.range(1, 3) } else { 0 })
        .map(|_| rng.pick(TRAILER_VALID).as_bytes().to_vec())
        .collect();
    Chunked {
        chunks,
        last,
        trailers,
    }
}

/// A valid request of a random shape.
fn gen_req(rng: &mut Rng) -> Req {
    let minor1 = !rng.one_in(7);
    let mut req = Req {
        lead: Vec::new(),
        method: rng.pick(METHODS).as_bytes().to_vec(),
        sp1: b" ".to_vec(),
        target: gen_target(rng),
        sp2: b" ".to_vec(),
        version: if minor1 {
            &b"HTTP/1.1"[..]
        } else {
            b"HTTP/1.0"
        }
        .to_vec(),
        fields: Vec::new(),
        body: Body::None,
    };
    if minor1 || rng.one_in(2) {
        let host = rng.pick(HOSTS).as_bytes();
        req.fields.push(field(rng, "Host", host));
    }
    for _ in 0..rng.below(9) {
        let f = match rng.below(10) {
            0 => field(
                rng,
                "User-Agent",
                b"kubectl/v1.36.2 (linux/amd64) kubernetes/abc",
            ),
            1 => field(rng, "Accept", b"application/json, */*"),
            2 => field(rng, "Authorization", b"Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"),
            3 => field(rng, "Content-Type", b"application/json"),
            4 => field(rng, "Expect", b"100-continue"),
            5 => field(rng, "Connection", b"keep-alive"),
            6 => field(rng, "TE", b"trailers"),
            7 => field(rng, "Trailer", b"X-Checksum"),
            _ => {
                let name = format!("X-Test-{}", rng.below(100));
                let value = random_value(rng);
                field(rng, &name, &value)
            }
        };
        req.insert_field(rng, f);
    }
    match rng.below(20) {
        0..=8 if rng.one_in(6) => {
            let f = field(rng, "Content-Length", b"0");
            req.insert_field(rng, f);
        }
        0..=8 => {}
        9..=14 => {
            let len = if rng.one_in(10) {
                rng.range(0, 5000)
            } else {
                rng.range(0, 300)
            };
            let mut value = len.to_string();
            if rng.one_in(8) {
                value.insert_str(0, "00");
            }
            let f = field(rng, "Content-Length", value.as_bytes());
            req.insert_field(rng, f.clone());
            if rng.one_in(8) {
                let f = field(rng, "Content-Length", len.to_string().as_bytes());
                req.insert_field(rng, f);
            }
            req.body = Body::Raw(random_data(rng, len));
        }
        _ if minor1 => {
            let te = rng.pick(TE_VALID).as_bytes();
            let f = field(rng, "Transfer-Encoding", te);
            req.insert_field(rng, f);
            req.body = Body::Chunked(gen_chunked(rng));
        }
        _ => {}
    }
    req
}

/// A mutation of one request's structure, named for the report.
fn mutate_req(rng: &mut Rng, req: &mut Req) -> &'static str {
    match rng.below(27) {
        0 => {
            // Both framings.
            match req.body {
                Body::Chunked(_) => {
                    let n = rng.range(0, 9).to_string();
                    let f = field(rng, "Content-Length", n.as_bytes());
                    req.insert_field(rng, f);
                }
                _ => {
                    let f = field(rng, "Transfer-Encoding", b"chunked");
                    req.insert_field(rng, f);
                    if matches!(req.body, Body::None) {
                        let f = field(rng, "Content-Length", b"4");
                        req.insert_field(rng, f);
                        req.body = Body::Raw(b"0\r\n\r\n".to_vec());
                    }
                }
            }
            "cl+te"
        }
        1 | 2 => {
            req.make_chunked(rng);
            req.remove_fields("transfer-encoding");
            if rng.one_in(3) {
                let (a, b) = *rng.pick(TE_PAIRS);
                let fa = field(rng, "Transfer-Encoding", a.as_bytes());
                let fb = field(rng, "Transfer-Encoding", b.as_bytes());
                req.fields.push(fa);
                req.fields.push(fb);
            } else {
                let v = rng.pick(TE_VARIANTS).as_bytes();
                let f = field(rng, "Transfer-Encoding", v);
                req.insert_field(rng, f);
            }
            "te-list"
        }
        3 => {
            let body = match &req.body {
                Body::Raw(b) => b.clone(),
                _ => random_data(rng, 5),
            };
            req.remove_fields("content-length");
            req.remove_fields("transfer-encoding");
            let v = rng.pick(CL_VARIANTS).as_bytes();
            let f = field(rng, "Content-Length", v);
            req.insert_field(rng, f);
            req.body = Body::Raw(body);
            "cl-value"
        }
        4 => {
            // A Content-Length that does not match the bytes: the boundary
            // moves into the next request.
            let body = match &req.body {
                Body::Raw(b) => b.clone(),
                _ => {
                    let n = rng.range(0, 20);
                    random_data(rng, n)
                }
            };
            req.remove_fields("content-length");
            req.remove_fields("transfer-encoding");
            let n = (body.len() + rng.range(0, 4)).saturating_sub(2);
            let f = field(rng, "Content-Length", n.to_string().as_bytes());
            req.insert_field(rng, f);
            if rng.one_in(3) {
                let m = n + rng.range(1, 3);
                let f = field(rng, "Content-Length", m.to_string().as_bytes());
                req.insert_field(rng, f);
            } else if rng.one_in(3) {
                let f = field(rng, "Content-Length", format!("0{n}").as_bytes());
                req.insert_field(rng, f);
            }
            req.body = Body::Raw(body);
            "cl-shift"
        }
        5 | 6 => {
            req.make_chunked(rng);
            let Body::Chunked(c) = &mut req.body else {
                unreachable!()
            };
            if c.chunks.is_empty() {
                c.chunks.push((b"3".to_vec(), b"abc".to_vec()));
            }
            let k = rng.below(c.chunks.len());
            let len = c.chunks[k].1.len();
            let line = match rng.below(10) {
                0 => format!("{:x}", len + 1),
                1 => format!("{:x}", len.saturating_sub(1)),
                2 => "10000000000000000".to_owned(),
                3 => "ffffffffffffffff".to_owned(),
                4 => format!("{}{len:x}", "0".repeat(rng.range(10, 40))),
                5 => format!("0x{len:x}"),
                6 => format!("-{len:x}"),
                7 => String::new(),
                8 => format!(" {len:x}"),
                _ => format!("+{len:x}"),
            };
            c.chunks[k].0 = line.into_bytes();
            "chunk-size"
        }
        7 => {
            req.make_chunked(rng);
            let Body::Chunked(c) = &mut req.body else {
                unreachable!()
            };
            let ext = rng.pick(EXT_BAD).as_bytes();
            match c.chunks.len() {
                0 => c.last.extend_from_slice(ext),
                n => c.chunks[rng.below(n)].0.extend_from_slice(ext),
            }
            "chunk-ext"
        }
        8 => {
            // A chunk-size line around the 4 KiB limit.
            req.make_chunked(rng);
            let Body::Chunked(c) = &mut req.body else {
                unreachable!()
            };
            let want = reference::MAX_CHUNK_LINE + rng.range(0, 4) - 2;
            let line = match c.chunks.len() {
                0 => &mut c.last,
                n => &mut c.chunks[rng.below(n)].0,
            };
            line.extend_from_slice(b";x=");
            while line.len() < want {
                line.push(b'v');
            }
            "chunk-line-size"
        }
        9 => {
            req.make_chunked(rng);
            let Body::Chunked(c) = &mut req.body else {
                unreachable!()
            };
            let bad = rng.pick(TRAILER_BAD).as_bytes().to_vec();
            let at = rng.below(c.trailers.len() + 1);
            c.trailers.insert(at, bad);
            "trailer-line"
        }
        10 => {
            // A trailer section around the 16 KiB limit (its final CRLF
            // included).
            req.make_chunked(rng);
            let Body::Chunked(c) = &mut req.body else {
                unreachable!()
            };
            let want = reference::MAX_TRAILER + rng.range(0, 6) - 3;
            c.trailers.clear();
            let mut total = 2;
            while total + 200 < want {
                c.trailers
                    .push(format!("X-T: {}", "t".repeat(200 - 7)).into_bytes());
                total += 200;
            }
            let rest = want - total;
            if rest >= 5 {
                c.trailers
                    .push(format!("X:{}", "u".repeat(rest - 4)).into_bytes());
            }
            "trailer-size"
        }
        11 => {
            req.make_chunked(rng);
            let Body::Chunked(c) = &mut req.body else {
                unreachable!()
            };
            c.last = rng
                .pick(&["0", "00000", "0;a=b", "0 ", "", "00;x", "0;", "0\t;a"])
                .as_bytes()
                .to_vec();
            "last-chunk"
        }
        12 => {
            if req.fields.is_empty() {
                let f = field(rng, "X", b"v");
                req.fields.push(f);
            }
            let k = rng.below(req.fields.len());
            let f = &mut req.fields[k];
            let at = rng.range(
                f.iter().position(|&b| b == b':').map_or(0, |c| c + 1),
                f.len(),
            );
            f.insert(at, *rng.pick(CTLS));
            "value-ctl"
        }
        13 => {
            let fold = rng.pick(&[" folded", "\tx: y", "  ", " Transfer-Encoding: chunked"]);
            let at = rng.range(usize::from(!req.fields.is_empty()), req.fields.len());
            req.fields.insert(at, fold.as_bytes().to_vec());
            "obs-fold"
        }
        14 => {
            let f = rng.pick(NAME_BAD).as_bytes().to_vec();
            req.insert_field(rng, f);
            "field-name"
        }
        15 => {
            match rng.below(3) {
                0 => req.remove_fields("host"),
                _ => {
                    let host = *rng.pick(HOSTS);
                    let f = field(rng, "Host", host.as_bytes());
                    req.insert_field(rng, f);
                }
            }
            "host"
        }
        16 => {
            req.version = rng.pick(VERSIONS).as_bytes().to_vec();
            "version"
        }
        17 => {
            req.make_chunked(rng);
            req.version = b"HTTP/1.0".to_vec();
            "1.0+te"
        }
        18 => {
            // A head around the 64 KiB limit.
            let want = reference::MAX_HEAD + rng.range(0, 6) - 3;
            let have = req.head().len();
            if have + 10 <= want {
                let f = format!("X-Fill: {}", "f".repeat(want - have - 10)).into_bytes();
                req.insert_field(rng, f);
            }
            "head-size"
        }
        19 => {
            // Around 100 fields.
            let want = rng.range(98, 102);
            while req.fields.len() < want {
                let f = format!("X-N{}: v", req.fields.len()).into_bytes();
                req.fields.push(f);
            }
            "field-count"
        }
        20 | 21 => {
            req.target = rng.pick(TARGETS).as_bytes().to_vec();
            "target"
        }
        22 => {
            req.method = rng.pick(METHODS_ODD).as_bytes().to_vec();
            "method"
        }
        23 => {
            req.lead = rng
                .pick(&[
                    "\r\n",
                    "\r\n\r\n",
                    "\n",
                    "\r",
                    " \r\n",
                    "\r\n\n",
                    "\r\n\r\n\r\n",
                ])
                .as_bytes()
                .to_vec();
            "leading-lines"
        }
        24 => {
            let ws = rng.pick(&["  ", "\t", "", " \t"]).as_bytes().to_vec();
            if rng.one_in(2) {
                req.sp1 = ws;
            } else {
                req.sp2 = ws;
            }
            "request-line-ws"
        }
        25 => {
            // Chunk data not followed by CRLF.
            req.make_chunked(rng);
            let Body::Chunked(c) = &mut req.body else {
                unreachable!()
            };
            if c.chunks.is_empty() {
                c.chunks.push((b"3".to_vec(), b"abc".to_vec()));
            }
            let k = rng.below(c.chunks.len());
            let extra = rng.pick(&["\n", "\r", "X", "\r\r", " "]).as_bytes();
            c.chunks[k].1.extend_from_slice(extra);
            let len = c.chunks[k].1.len();
            if rng.one_in(2) {
                // Declare the extra bytes: then the CRLF after them is fine.
                c.chunks[k].0 = format!("{len:x}").into_bytes();
            }
            "chunk-data-end"
        }
        _ => {
            let f = field(rng, "Expect", b"100-continue");
            req.insert_field(rng, f);
            "expect"
        }
    }
}

/// A mutation of the serialized stream, named for the report.
fn mutate_bytes(rng: &mut Rng, input: &mut Vec<u8>) -> &'static str {
    if input.is_empty() {
        input.push(*rng.pick(SPECIAL));
        return "insert";
    }
    let crlfs: Vec<usize> = input
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == b"\r\n")
        .map(|(i, _)| i)
        .collect();
    match rng.below(6) {
        0 => {
            let at = rng.below(input.len());
            input[at] = if rng.one_in(2) {
                rng.next() as u8
            } else {
                *rng.pick(SPECIAL)
            };
            "flip"
        }
        1 => {
            let at = rng.below(input.len() + 1);
            for _ in 0..rng.range(1, 3) {
                input.insert(at, *rng.pick(SPECIAL));
            }
            "insert"
        }
        2 => {
            let at = rng.below(input.len());
            let n = rng.range(1, 4).min(input.len() - at);
            input.drain(at..at + n);
            "delete"
        }
        3 if !crlfs.is_empty() => {
            let at = *rng.pick(&crlfs);
            input.remove(at);
            "crlf-to-lf"
        }
        4 if !crlfs.is_empty() => {
            let at = *rng.pick(&crlfs);
            input.remove(at + 1);
            "crlf-to-cr"
        }
        _ if !crlfs.is_empty() => {
            let at = *rng.pick(&crlfs);
            input.splice(at..at, b"\r\n".iter().copied());
            "dup-crlf"
        }
        _ => "none",
    }
}

/// Read sizes for one case; few enough reads that the crate's re-parse of
/// a partial head on every read stays cheap on 64 KiB heads.
fn gen_pieces(rng: &mut Rng, len: usize) -> Vec<usize> {
    let floor = (len / 400).max(1);
    (0..rng.range(1, 6))
        .map(|_| {
            let p = match rng.below(7) {
                0 => 1,
                1 => rng.range(1, 4),
                2 => rng.range(1, 32),
                3 => rng.range(1, 1024),
                4 => 8192,
                5 => rng.range(1, 20_000),
                _ => rng.range(1, len.max(1)),
            };
            p.max(floor)
        })
        .collect()
}

/// One generated case.
#[derive(Clone, Debug)]
struct Case {
    input: Vec<u8>,
    pieces: Vec<usize>,
    labels: Vec<&'static str>,
    /// How many requests the generator wrote.
    requests: usize,
}

fn gen_case(rng: &mut Rng) -> Case {
    let mut reqs: Vec<Req> = (0..rng.range(1, 4)).map(|_| gen_req(rng)).collect();
    let mut labels = Vec::new();
    let mutations = *rng.pick(&[0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3]);
    let mut byte_mutations = 0;
    for _ in 0..mutations {
        if rng.one_in(4) {
            byte_mutations += 1;
        } else {
            let k = rng.below(reqs.len());
            labels.push(mutate_req(rng, &mut reqs[k]));
        }
    }
    let mut input = Vec::new();
    for r in &reqs {
        r.write(&mut input);
    }
    for _ in 0..byte_mutations {
        labels.push(mutate_bytes(rng, &mut input));
    }
    if rng.one_in(5) && !input.is_empty() {
        // Truncation: anywhere, or next to a line end.
        let at = match rng.below(3) {
            0 => {
                let ends: Vec<usize> = input
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .map(|(i, _)| i)
                    .collect();
                if ends.is_empty() {
                    rng.below(input.len())
                } else {
                    (*rng.pick(&ends) + rng.range(0, 2)).min(input.len() - 1)
                }
            }
            _ => rng.below(input.len()),
        };
        input.truncate(at);
        labels.push("truncate");
    }
    labels.sort_unstable();
    labels.dedup();
    let pieces = gen_pieces(rng, input.len());
    Case {
        input,
        pieces,
        labels,
        requests: reqs.len(),
    }
}

// ---------------------------------------------------------------------------
// Running and comparing
// ---------------------------------------------------------------------------

type CrateResult = Result<(Vec<Split>, End), String>;

/// Runs the crate on a worker thread, so that a hang is a reported
/// failure with a deadline instead of a stuck test, and a panic is caught.
struct Worker {
    jobs: mpsc::Sender<(Vec<u8>, Vec<usize>)>,
    results: mpsc::Receiver<CrateResult>,
}

impl Worker {
    fn new() -> Worker {
        let (jobs, job_rx) = mpsc::channel::<(Vec<u8>, Vec<usize>)>();
        let (result_tx, results) = mpsc::channel();
        thread::spawn(move || {
            for (input, pieces) in job_rx {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    split_requests_in_pieces(&input, &pieces)
                }))
                .map_err(|p| {
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic".to_owned())
                });
                if result_tx.send(r).is_err() {
                    return;
                }
            }
        });
        Worker { jobs, results }
    }

    /// The crate's reading, or `None` if it did not finish in time.
    fn run(&self, input: &[u8], pieces: &[usize]) -> Option<CrateResult> {
        self.jobs.send((input.to_vec(), pieces.to_vec())).ok()?;
        self.results.recv_timeout(HANG_BOUND).ok()
    }
}

/// What went wrong in one case, as a short class name for grouping
/// (`None`: the crate agrees with the reference).
fn compare(crate_out: &Option<CrateResult>, want: &reference::Reading) -> Option<String> {
    let (splits, end) = match crate_out {
        None => return Some("hang".to_owned()),
        Some(Err(msg)) => return Some(format!("panic: {msg}")),
        Some(Ok(r)) => r,
    };
    let end = match end {
        End::Eof => reference::Outcome::Eof,
        End::Truncated => reference::Outcome::Truncated,
        End::Refused(c) => reference::Outcome::Refused(*c),
    };
    for (got, exp) in splits.iter().zip(&want.requests) {
        let field = if got.method != exp.method {
            "method"
        } else if got.target != exp.target {
            "target"
        } else if got.minor != exp.minor {
            "minor"
        } else if got.body != exp.body {
            "body"
        } else {
            continue;
        };
        return Some(format!("a request differs in its {field} ({})", exp.note));
    }
    if splits.len() > want.requests.len() {
        return Some(format!(
            "crate accepts what the reference ends with {:?}: {}",
            want.ends, want.why
        ));
    }
    if let Some(exp) = want.requests.get(splits.len()) {
        return Some(format!(
            "crate ends with {end:?} where the reference accepts a request ({})",
            exp.note
        ));
    }
    if !want.ends.contains(&end) {
        return Some(format!(
            "crate ends with {end:?}, the reference with {:?}: {}",
            want.ends, want.why
        ));
    }
    None
}

/// Checks the reference against the generator: an unmutated stream is
/// read whole, each of its prefixes ends `Truncated` (or `Eof` between
/// requests) with a prefix of its requests.
fn self_check(case: &Case, sub: &Case) -> Option<String> {
    if !case.labels.is_empty() {
        return None;
    }
    let whole = reference::read(&case.input);
    if sub.labels.is_empty() {
        return (whole.requests.len() != case.requests || whole.ends != [reference::Outcome::Eof])
            .then(|| format!("reference refuses a generated valid stream: {}", whole.why));
    }
    let part = reference::read(&sub.input);
    let ok_end = part
        .ends
        .iter()
        .all(|e| matches!(e, reference::Outcome::Truncated | reference::Outcome::Eof));
    let ok_requests = whole.requests.starts_with(&part.requests);
    (!ok_end || !ok_requests).then(|| {
        format!(
            "reference reads a prefix of a valid stream wrongly: {}",
            part.why
        )
    })
}

/// Checks one input with two piece patterns: the given one and one read
/// of everything. `None`: all agree.
fn check(worker: &Worker, input: &[u8], pieces: &[usize]) -> Option<String> {
    let want = reference::read(input);
    let a = worker.run(input, pieces);
    if let Some(class) = compare(&a, &want) {
        return Some(class);
    }
    let b = worker.run(input, &[usize::MAX]);
    if let Some(class) = compare(&b, &want) {
        return Some(format!("{class} (with one read)"));
    }
    None
}

/// Shortens a failing input while it fails the same way (for at most 2 s
/// or 2000 tries).
fn minimize(worker: &Worker, case: &Case, class: &str) -> Vec<u8> {
    let stop = Instant::now() + Duration::from_secs(2);
    let mut cur = case.input.clone();
    let mut budget = 2000;
    let mut chunk = (cur.len() / 2).max(1);
    while budget > 0 {
        let mut progressed = false;
        let mut i = 0;
        while i < cur.len() && budget > 0 && Instant::now() < stop {
            let end = (i + chunk).min(cur.len());
            let mut cand = cur[..i].to_vec();
            cand.extend_from_slice(&cur[end..]);
            budget -= 1;
            if check(worker, &cand, &case.pieces).as_deref() == Some(class) {
                cur = cand;
                progressed = true;
            } else {
                i += chunk;
            }
        }
        if Instant::now() >= stop {
            break;
        }
        if !progressed {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    cur
}

/// `input` as a Rust-like byte string (long inputs elided in the middle).
fn escape(input: &[u8]) -> String {
    let mut out = String::new();
    let show = |out: &mut String, bytes: &[u8]| {
        for &b in bytes {
            match b {
                b'\r' => out.push_str("\\r"),
                b'\n' => out.push_str("\\n"),
                b'\t' => out.push_str("\\t"),
                b'\\' => out.push_str("\\\\"),
                b'"' => out.push_str("\\\""),
                0x20..=0x7e => out.push(b as char),
                _ => {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
    };
    if input.len() > 600 {
        show(&mut out, &input[..300]);
        let _ = write!(out, "...<{} bytes>...", input.len() - 600);
        show(&mut out, &input[input.len() - 300..]);
    } else {
        show(&mut out, input);
    }
    out
}

fn failures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures")
}

/// Saves a case for `LITE_FUZZ_REPLAY`.
fn save(name: &str, header: &str, input: &[u8], pieces: &[usize]) -> PathBuf {
    let dir = failures_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.case"));
    let mut text = String::new();
    for line in header.lines() {
        let _ = writeln!(text, "# {line}");
    }
    let pieces: Vec<String> = pieces.iter().map(|p| p.to_string()).collect();
    let _ = writeln!(text, "pieces: {}", pieces.join(","));
    let mut hex = String::new();
    for b in input {
        let _ = write!(hex, "{b:02x}");
    }
    let _ = writeln!(text, "hex: {hex}");
    std::fs::write(&path, text).unwrap();
    path
}

fn load(path: &Path) -> (Vec<u8>, Vec<usize>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut input = Vec::new();
    let mut pieces = vec![usize::MAX];
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("pieces: ") {
            pieces = p.split(',').filter_map(|s| s.trim().parse().ok()).collect();
        } else if let Some(h) = line.strip_prefix("hex: ") {
            input = (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
                .collect();
        }
    }
    (input, pieces)
}

fn describe(worker: &Worker, input: &[u8], pieces: &[usize]) -> String {
    let want = reference::read(input);
    let got = worker.run(input, pieces);
    let crate_text = match &got {
        Some(Ok((splits, end))) => format!(
            "{} request(s) {:?}, then {end:?}",
            splits.len(),
            splits
                .iter()
                .map(|s| format!(
                    "{} {} 1.{} body {}B",
                    s.method,
                    s.target,
                    s.minor,
                    s.body.len()
                ))
                .collect::<Vec<_>>()
        ),
        Some(Err(p)) => format!("panic: {p}"),
        None => "hang".to_owned(),
    };
    let ref_text = format!(
        "{} request(s) {:?}, then one of {:?} ({})",
        want.requests.len(),
        want.requests
            .iter()
            .map(|r| format!(
                "{} {} 1.{} body {}B",
                r.method,
                r.target,
                r.minor,
                r.body.len()
            ))
            .collect::<Vec<_>>(),
        want.ends,
        want.why
    );
    format!("crate:     {crate_text}\nreference: {ref_text}")
}

fn replay(worker: &Worker, path: &Path) {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "case"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    let mut failed = 0;
    for f in &files {
        let (input, pieces) = load(f);
        let class = check(worker, &input, &pieces);
        println!("{}: {}", f.display(), class.as_deref().unwrap_or("ok"));
        println!("  input: \"{}\"", escape(&input));
        println!(
            "  {}",
            describe(worker, &input, &pieces).replace('\n', "\n  ")
        );
        failed += usize::from(class.is_some());
    }
    assert_eq!(
        failed,
        0,
        "{failed} of {} replayed case(s) fail",
        files.len()
    );
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The generated differential run (or `LITE_FUZZ_REPLAY`).
#[test]
fn fuzz() {
    let worker = Worker::new();
    if let Ok(path) = std::env::var("LITE_FUZZ_REPLAY") {
        replay(&worker, Path::new(&path));
        return;
    }
    let secs = env_u64("LITE_FUZZ_SECS").unwrap_or(3);
    let seed = env_u64("LITE_FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    // LITE_FUZZ_MINIMIZE=0: save mismatches as found (faster when many).
    let minimizing = env_u64("LITE_FUZZ_MINIMIZE") != Some(0);
    println!("http_fuzz: seed {seed} (LITE_FUZZ_SEED={seed} to repeat), {secs} s");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut progress = started + Duration::from_secs(30);
    let mut cases = 0u64;
    // class -> (count, labels seen, saved file)
    let mut classes: BTreeMap<String, (u64, BTreeMap<String, u64>, PathBuf)> = BTreeMap::new();
    let mut index = 0u64;
    while Instant::now() < deadline {
        let mut rng = Rng::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let case = gen_case(&mut rng);
        let mut subcases = vec![case.clone()];
        // Sometimes: the same stream cut at every byte.
        if case.labels.is_empty() && case.input.len() <= 400 && rng.one_in(40) {
            subcases.extend((0..case.input.len()).map(|n| Case {
                input: case.input[..n].to_vec(),
                pieces: case.pieces.clone(),
                labels: vec!["truncate-every"],
                requests: 0,
            }));
        }
        for sub in &subcases {
            cases += 1;
            let own = self_check(&case, sub);
            let Some(class) = own.or_else(|| check(&worker, &sub.input, &sub.pieces)) else {
                continue;
            };
            let labels = if sub.labels.is_empty() {
                "valid".to_owned()
            } else {
                sub.labels.join("+")
            };
            if let Some((count, by_label, _)) = classes.get_mut(&class) {
                *count += 1;
                *by_label.entry(labels).or_default() += 1;
                continue;
            }
            let fatal = class == "hang" || class.starts_with("panic");
            let small = if fatal || !minimizing {
                sub.input.clone()
            } else {
                minimize(&worker, sub, &class)
            };
            let header = format!(
                "seed={seed} case={index} labels={labels}\n{class}\n{}",
                describe(&worker, &small, &sub.pieces)
            );
            let name = format!("{seed}-{index}-{}", classes.len());
            let path = save(&name, &header, &small, &sub.pieces);
            println!("\nMISMATCH seed={seed} case={index} labels={labels}: {class}");
            println!("  input:     \"{}\"", escape(&sub.input));
            println!("  minimized: \"{}\"", escape(&small));
            println!("  pieces:    {:?}", sub.pieces);
            println!(
                "  {}",
                describe(&worker, &small, &sub.pieces).replace('\n', "\n  ")
            );
            println!("  saved:     {}", path.display());
            let mut by_label = BTreeMap::new();
            by_label.insert(labels, 1);
            classes.insert(class, (1, by_label, path));
            if fatal {
                // A stuck or crashed worker cannot be trusted with more cases.
                break;
            }
        }
        if classes
            .keys()
            .any(|c| c == "hang" || c.starts_with("panic"))
        {
            break;
        }
        index += 1;
        if Instant::now() >= progress {
            progress += Duration::from_secs(30);
            let s = started.elapsed().as_secs_f64();
            println!(
                "http_fuzz: {cases} cases in {s:.0} s ({:.0}/s), {} mismatch classes",
                cases as f64 / s,
                classes.len()
            );
        }
    }
    let s = started.elapsed().as_secs_f64();
    let failing: u64 = classes.values().map(|c| c.0).sum();
    println!(
        "http_fuzz: seed {seed}: {cases} cases in {s:.1} s ({:.0} cases/s), {failing} mismatches in {} classes",
        cases as f64 / s,
        classes.len()
    );
    for (class, (count, by_label, path)) in &classes {
        println!("  {count:>7}  {class}\n           e.g. {}", path.display());
        let mut labels: Vec<_> = by_label.iter().collect();
        labels.sort_by(|a, b| b.1.cmp(a.1));
        for (l, n) in labels.iter().take(6) {
            println!("           {n:>7} {l}");
        }
    }
    assert!(
        classes.is_empty(),
        "the crate and the reference reader disagree (seed {seed}); replay with LITE_FUZZ_REPLAY=target/fuzz-failures"
    );
}

// ---------------------------------------------------------------------------
// Hand-written cases, through both readers
// ---------------------------------------------------------------------------

use reference::Outcome::{Eof, Refused, Truncated};

/// (input, requests found as (method, target, body), end).
type Row = (
    &'static [u8],
    &'static [(&'static str, &'static str, &'static [u8])],
    reference::Outcome,
);

const GET: &str = "GET";
const POST: &str = "POST";

fn table() -> Vec<Row> {
    vec![
        (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", &[(GET, "/a", b"")], Eof),
        (b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", &[(POST, "/p", b"abc")], Eof),
        (
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"x y\"\r\nabc\r\n0;z\r\nX-T: v\r\n\r\n",
            &[(POST, "/c", b"abc")],
            Eof,
        ),
        (
            b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nxGET /3 HTTP/1.0\r\n\r\n",
            &[(GET, "/1", b""), (POST, "/2", b"x"), (GET, "/3", b"")],
            Eof,
        ),
        // Smuggling: both framings.
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
            &[],
            Refused(400),
        ),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", &[], Refused(501)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", &[], Refused(501)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", &[], Refused(400)),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[],
            Refused(400),
        ),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n", &[], Refused(400)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", &[], Refused(400)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", &[], Refused(400)),
        (
            b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tCHUNKED \r\n\r\n1\r\nz\r\n0\r\n\r\n",
            &[(POST, "/u", b"z")],
            Eof,
        ),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[], Refused(400)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello", &[], Refused(400)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello", &[], Refused(400)),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            &[],
            Refused(400),
        ),
        (
            b"POST /z HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 005\r\n\r\nhello",
            &[(POST, "/z", b"hello")],
            Eof,
        ),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", &[], Refused(400)),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            &[],
            Refused(400),
        ),
        (
            b"POST /0 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n000000000000000000002\r\nok\r\n0\r\n\r\n",
            &[(POST, "/0", b"ok")],
            Eof,
        ),
        (b"GET / HTTP/1.1\nHost: h\r\n\r\n", &[], Refused(400)),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",
            &[],
            Refused(400),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
            &[],
            Refused(400),
        ),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", &[], Refused(400)),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", &[], Refused(400)),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", &[], Refused(400)),
        (b"GET / HTTP/1.1\r\n\r\n", &[], Refused(400)),
        (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", &[], Refused(400)),
        (b"GET /old HTTP/1.0\r\n\r\n", &[(GET, "/old", b"")], Eof),
        (b"CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n", &[], Refused(405)),
        (b"GET http://h:1/p?q=1 HTTP/1.1\r\nHost: h\r\n\r\n", &[(GET, "/p?q=1", b"")], Eof),
        (b"GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n", &[(GET, "/", b"")], Eof),
        (b"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", &[], Refused(400)),
        (b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &[], Refused(400)),
        (b"GET h:443 HTTP/1.1\r\nHost: h\r\n\r\n", &[], Refused(400)),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Par", &[], Truncated),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            &[],
            Truncated,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            &[],
            Refused(400),
        ),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", &[], Refused(400)),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n",
            &[],
            Refused(400),
        ),
        (b"\r\n\r\nGET /lead HTTP/1.1\r\nHost: h\r\n\r\n", &[(GET, "/lead", b"")], Eof),
        (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", &[], Refused(400)),
    ]
}

/// Heads around the limits, built rather than written.
fn limit_rows() -> Vec<(Vec<u8>, usize, reference::Outcome)> {
    let head_of = |len: usize| {
        let start = b"GET /big HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        let mut h = start.clone();
        h.resize(len - 4, b'a');
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    let mut fields = b"GET /n HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 1..100 {
        fields.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    let hundred = [fields.clone(), b"\r\n".to_vec()].concat();
    let hundred_one = [fields, b"X-100: v\r\n\r\n".to_vec()].concat();
    let chunk_line = |len: usize| {
        let mut r =
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;a=".to_vec();
        r.resize(r.len() + len - 4, b'v');
        r.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        r
    };
    // A syntax error, then (past the head's end) over 100 CRLFs and a bare
    // LF: 400, not "too many fields".
    let late_lf = [
        &b"GET / HTTP/1.1\r\nHost: h\r\nX\r\n"[..],
        &b"\r\n".repeat(101),
        b"\n",
    ]
    .concat();
    vec![
        (chunk_line(reference::MAX_CHUNK_LINE), 1, Eof),
        (chunk_line(reference::MAX_CHUNK_LINE + 1), 0, Refused(400)),
        (late_lf, 0, Refused(400)),
        (head_of(reference::MAX_HEAD), 1, Eof),
        (head_of(reference::MAX_HEAD + 1), 0, Refused(431)),
        (hundred, 1, Eof),
        (hundred_one, 0, Refused(431)),
    ]
}

/// The reference reader gives the hand-written answers (this checks the
/// reference itself; it passes whatever the crate does).
#[test]
fn reference_reads_the_table() {
    for (input, requests, end) in table() {
        let got = reference::read(input);
        let found: Vec<(&str, &str, &[u8])> = got
            .requests
            .iter()
            .map(|r| (r.method.as_str(), r.target.as_str(), r.body.as_slice()))
            .collect();
        assert_eq!(found, requests, "\"{}\"", escape(input));
        assert_eq!(got.ends, [end], "\"{}\"", escape(input));
    }
    for (input, n, end) in limit_rows() {
        let got = reference::read(&input);
        assert_eq!(
            (got.requests.len(), got.ends),
            (n, vec![end]),
            "{} bytes",
            input.len()
        );
    }
}

/// The crate gives the same answers, fed in several piece sizes.
#[test]
fn crate_reads_the_table() {
    let worker = Worker::new();
    let mut failures = Vec::new();
    let rows = table()
        .into_iter()
        .map(|(i, _, _)| i.to_vec())
        .chain(limit_rows().into_iter().map(|(i, _, _)| i));
    for input in rows {
        for pieces in [vec![usize::MAX], vec![1], vec![7, 3, 1000]] {
            if pieces == [1] && input.len() > 5000 {
                continue;
            }
            if let Some(class) = check(&worker, &input, &pieces) {
                failures.push(format!("\"{}\" pieces {pieces:?}: {class}", escape(&input)));
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
