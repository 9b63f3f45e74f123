//! An independent reader of RFC 9112 request streams under the policy in
//! `notes/http-policy.md`. Each rule quotes the policy line it implements.
//!
//! It reads the whole input at once and reports *every* end a correct
//! proxy may choose, because two correct readers may see a problem at
//! different moments:
//! - an error inside a line (or head) that is not complete in the input may
//!   be noticed at once (400) or only when the line ends (the input ends
//!   first: a silent close, `Truncated`);
//! - when a head both has more than 100 fields and another syntax error, it
//!   is 400 or 431 depending on which check runs first;
//! - several semantic rules may hit one head (e.g. `CONNECT` with `gzip,
//!   chunked`): any of their codes is correct;
//! - a head whose finished parts already break a rule (a target or method
//!   followed by SP, the Host/CL/TE fields so far) may be refused before it
//!   ends, or after;
//! - with exactly 64 KiB of head or 16 KiB of trailers and no end, a reader
//!   may wait for one more byte before it sees "larger than".
//!
//! Everything else is exact: a definite error is noticed at the first byte
//! that no valid request could have, never later than the end of its line.
//!
//! Shared by `tests/http_fuzz.rs` and the libFuzzer target in `tests/fuzz/`.

/// "Head larger than 64 KiB -> 431". The head counts from its first byte
/// (empty lines before the request line included) through the CRLF of
/// the empty line that ends it; 65536 bytes are accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// "More than 100 fields -> 431".
pub const MAX_FIELDS: usize = 100;
/// "A chunk-size line (size + extensions) longer than 4 KiB -> 400":
/// the bytes before its CRLF.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// "a trailer section longer than 16 KiB -> 400": the bytes after the
/// last-chunk line, through the CRLF of the final empty line.
pub const MAX_TRAILER: usize = 16 * 1024;

/// A request as the proxy forwards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub minor: u8,
    pub body: Vec<u8>,
    /// The most unusual thing the reference accepted in it (for
    /// grouping mismatches; never compared).
    pub note: &'static str,
}

/// How a stream may end after its last complete request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Eof,
    Truncated,
    Refused(u16),
}

/// The requests, and every acceptable end (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub requests: Vec<Request>,
    pub ends: Vec<Outcome>,
    /// The rule(s) behind the end.
    pub why: String,
}

/// How reading a request failed: every acceptable end, and why.
struct Fail {
    ends: Vec<Outcome>,
    why: String,
}

fn fail(ends: &[Outcome], why: &str) -> Fail {
    Fail {
        ends: ends.to_vec(),
        why: why.to_owned(),
    }
}

const TRUNCATED: &[Outcome] = &[Outcome::Truncated];
const BAD: &[Outcome] = &[Outcome::Refused(400)];
const BAD_OR_TRUNCATED: &[Outcome] = &[Outcome::Refused(400), Outcome::Truncated];

/// Reads every request of `input`.
pub fn read(input: &[u8]) -> Reading {
    let mut requests = Vec::new();
    let mut pos = 0;
    loop {
        if pos == input.len() {
            return finish(requests, fail(&[Outcome::Eof], "end of input"));
        }
        match read_one(input, pos) {
            Ok((request, next)) => {
                requests.push(request);
                pos = next;
            }
            Err(f) => return finish(requests, f),
        }
    }
}

fn finish(requests: Vec<Request>, f: Fail) -> Reading {
    let mut ends = f.ends;
    ends.sort();
    ends.dedup();
    Reading {
        requests,
        ends,
        why: f.why,
    }
}

/// Reads the request starting at `pos`: the request and where the next
/// one starts, or the acceptable ends.
fn read_one(input: &[u8], pos: usize) -> Result<(Request, usize), Fail> {
    let head = match scan_head(input, pos) {
        Head::Complete(head) => head,
        Head::Viable => return Err(fail(TRUNCATED, "input ends in a head")),
        Head::Error(code, why) => return Err(head_error_ends(input, pos, code, why)),
        Head::Doomed(codes, why) => {
            let mut ends: Vec<Outcome> = codes.into_iter().map(Outcome::Refused).collect();
            ends.push(Outcome::Truncated);
            return Err(fail(
                &ends,
                &format!("input ends in a head that breaks: {why}"),
            ));
        }
    };
    let mut notes = head.notes.clone();
    let (method, target, minor, framing) = semantics(&head, &mut notes)?;
    let body = read_body(input, head.end, framing, &mut notes);
    let note = NOTES
        .iter()
        .find(|n| notes.contains(n))
        .copied()
        .unwrap_or("plain");
    // A body that ends early is named after the request's most unusual
    // part: a reader that refuses that part sees no body at all.
    let (body, next) = body.map_err(|f| Fail {
        why: if f.ends == TRUNCATED {
            format!("{} ({note})", f.why)
        } else {
            f.why
        },
        ends: f.ends,
    })?;
    let request = Request {
        method,
        target,
        minor,
        body,
        note,
    };
    Ok((request, next))
}

/// Reads the body that `framing` announces, from `start`.
fn read_body(
    input: &[u8],
    head_end: usize,
    framing: Framing,
    notes: &mut Vec<&'static str>,
) -> Result<(Vec<u8>, usize), Fail> {
    Ok(match framing {
        // "Neither TE nor CL: no body."
        Framing::None => (Vec::new(), head_end),
        Framing::Length(n) => {
            let available = (input.len() - head_end) as u64;
            if available < n {
                return Err(fail(TRUNCATED, "input ends in a Content-Length body"));
            }
            let end = head_end + n as usize;
            (input[head_end..end].to_vec(), end)
        }
        Framing::Chunked => read_chunked(input, head_end, notes)?,
    })
}

/// Unusual accepted things, most unusual first.
const NOTES: &[&str] = &[
    "absolute-form target",
    "chunk-size with more than 16 digits (leading zeros)",
    "empty TE element",
    "TE split over several fields",
    "TE not lower-case",
    "several equal Content-Length values",
    "Content-Length with leading zeros",
    "chunk extension",
    "trailer fields",
    "last-chunk with several zeros",
    "empty lines before the request line",
    "obs-text in a field value",
    "HTTP/1.0",
    "chunked body",
    "Content-Length body",
];

// -- bytes ---------------------------------------------------------------

/// RFC 9110 5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 5234 VCHAR.
fn is_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// RFC 9110 5.5 `obs-text`.
fn is_obs_text(b: u8) -> bool {
    b >= 0x80
}

/// RFC 9110 5.5 field-value bytes: "no CTLs but HTAB in the value"
/// (policy: "NUL / bare CR / other CTLs except HTAB in values" -> 400).
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || is_vchar(b) || is_obs_text(b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| !is_ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|&b| !is_ws(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

// -- lines ---------------------------------------------------------------

/// How the line that starts at some offset ends, looking no further
/// than `limit`.
enum Line {
    /// Ends in CRLF; the content stops at `content_end`.
    Crlf { content_end: usize, next: usize },
    /// "Line ends must be CRLF: a bare LF or a bare CR -> 400": the
    /// offending byte's offset (the line's content stops there).
    Bad(usize),
    /// Not ended within the bytes looked at; `cr`: they end in a CR, so
    /// the line must end here (the content is complete).
    Open { content_end: usize, cr: bool },
}

fn line(input: &[u8], start: usize, limit: usize) -> Line {
    let mut i = start;
    while i < limit {
        match input[i] {
            b'\n' => return Line::Bad(i),
            b'\r' if i + 1 >= limit => {
                return Line::Open {
                    content_end: i,
                    cr: true,
                }
            }
            b'\r' if input[i + 1] == b'\n' => {
                return Line::Crlf {
                    content_end: i,
                    next: i + 2,
                }
            }
            b'\r' => return Line::Bad(i),
            _ => i += 1,
        }
    }
    Line::Open {
        content_end: limit,
        cr: false,
    }
}

impl Line {
    fn content_end(&self) -> usize {
        match *self {
            Line::Crlf { content_end, .. } | Line::Open { content_end, .. } => content_end,
            Line::Bad(at) => at,
        }
    }
}

/// A grammar fed one byte at a time: `push` says whether the byte can
/// continue a valid line, `accepting` whether the line may end here.
trait Grammar {
    fn push(&mut self, b: u8) -> bool;
    fn accepting(&self) -> bool;
}

/// Whether every byte of `content` continues `g`.
fn feed<G: Grammar>(g: &mut G, content: &[u8]) -> bool {
    content.iter().all(|&b| g.push(b))
}

/// request-line = method SP request-target SP HTTP-version (RFC 9112 3).
#[derive(Default)]
struct RequestLine {
    part: u8,
    method: Vec<u8>,
    target: Vec<u8>,
    version: Vec<u8>,
}

impl Grammar for RequestLine {
    fn push(&mut self, b: u8) -> bool {
        match self.part {
            // method = token; exactly one SP after it (httparse's default:
            // "Anything httparse refuses -> 400").
            0 if is_tchar(b) => self.method.push(b),
            0 if b == b' ' && !self.method.is_empty() => self.part = 1,
            // request-target: no SP, no CTL (its form is checked on the
            // complete head, in `target`).
            1 if is_vchar(b) || is_obs_text(b) => self.target.push(b),
            1 if b == b' ' && !self.target.is_empty() => self.part = 2,
            // "Versions: HTTP/1.0 and HTTP/1.1 only."
            2 if self.version.len() < 8 => {
                let k = self.version.len();
                let ok = if k == 7 {
                    b == b'0' || b == b'1'
                } else {
                    b == b"HTTP/1."[k]
                };
                if !ok {
                    return false;
                }
                self.version.push(b);
            }
            _ => return false,
        }
        true
    }
    fn accepting(&self) -> bool {
        self.part == 2 && self.version.len() == 8
    }
}

/// field-line = field-name ":" OWS field-value OWS (RFC 9112 5), for
/// heads and trailers. "whitespace between a field name and ':'" and
/// "obs-fold continuation lines" fail here (a space is not a tchar).
#[derive(Default)]
struct FieldLine {
    name: Vec<u8>,
    value: Vec<u8>,
    in_value: bool,
}

impl Grammar for FieldLine {
    fn push(&mut self, b: u8) -> bool {
        match self.in_value {
            false if is_tchar(b) => self.name.push(b),
            false if b == b':' && !self.name.is_empty() => self.in_value = true,
            true if is_field_byte(b) => self.value.push(b),
            _ => return false,
        }
        true
    }
    fn accepting(&self) -> bool {
        self.in_value
    }
}

/// The policy's chunk line:
/// ```text
/// chunk-size  = 1*HEXDIG   (more than 16 significant hex digits -> 400)
/// chunk-ext   = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )
/// last-chunk  = 1*"0" [ chunk-ext ] CRLF
/// ```
/// Read literally: BWS only ever comes before a ";" or around "=", so
/// `5 ` or `5;a=b ` (trailing whitespace) is not a chunk line.
#[derive(Default)]
struct ChunkLine {
    state: Ext,
    digits: usize,
    significant: usize,
    size: u64,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Ext {
    #[default]
    Size,
    /// BWS after the size or a value, before ";".
    BwsSemi,
    /// After ";": BWS then ext-name.
    Semi,
    Name,
    /// BWS after a name: "=" or ";" follows.
    BwsEq,
    /// After "=": BWS then the value.
    Eq,
    Token,
    Quoted,
    QuotedPair,
    AfterQuoted,
}

impl Grammar for ChunkLine {
    fn push(&mut self, b: u8) -> bool {
        use Ext::*;
        let next = match (self.state, b) {
            (Size, _) if b.is_ascii_hexdigit() => {
                self.digits += 1;
                let v = u64::from(match b {
                    b'0'..=b'9' => b - b'0',
                    b'a'..=b'f' => b - b'a' + 10,
                    _ => b - b'A' + 10,
                });
                if self.significant > 0 || v > 0 {
                    self.significant += 1;
                }
                // "value must fit in u64; more than 16 significant hex
                // digits -> 400"
                if self.significant > 16 {
                    return false;
                }
                self.size = self.size * 16 + v;
                Size
            }
            (Size, b';') if self.digits > 0 => Semi,
            (Size, _) if is_ws(b) && self.digits > 0 => BwsSemi,
            (BwsSemi, b';') => Semi,
            (BwsSemi | Semi | BwsEq | Eq, _) if is_ws(b) => self.state,
            (Semi | Name, _) if is_tchar(b) => Name,
            (Name | BwsEq, b';') => Semi,
            (Name, _) if is_ws(b) => BwsEq,
            (Name | BwsEq, b'=') => Eq,
            (Eq | Token, _) if is_tchar(b) => Token,
            (Eq, b'"') => Quoted,
            (Token | AfterQuoted, b';') => Semi,
            (Token | AfterQuoted, _) if is_ws(b) => BwsSemi,
            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
            (Quoted, b'"') => AfterQuoted,
            (Quoted, b'\\') => QuotedPair,
            (Quoted, _) if b == b'\t' || b == b' ' || b == 0x21 => Quoted,
            (Quoted, 0x23..=0x5b | 0x5d..=0x7e) => Quoted,
            (Quoted, _) if is_obs_text(b) => Quoted,
            (QuotedPair, _) if b == b'\t' || b == b' ' || is_vchar(b) || is_obs_text(b) => Quoted,
            _ => return false,
        };
        self.state = next;
        true
    }
    fn accepting(&self) -> bool {
        matches!(
            self.state,
            Ext::Size | Ext::Name | Ext::Token | Ext::AfterQuoted
        ) && self.digits > 0
    }
}

// -- the head ------------------------------------------------------------

struct ParsedHead {
    method: Vec<u8>,
    target: Vec<u8>,
    minor: u8,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    end: usize,
    notes: Vec<&'static str>,
}

enum Head {
    Complete(ParsedHead),
    /// The first byte no valid head could have is in the input.
    Error(u16, &'static str),
    /// The input ends inside a head that can still be valid.
    Viable,
    /// The input ends inside a head that its complete parts already
    /// condemn (a reader may say so now, or wait for the end).
    Doomed(Vec<u16>, String),
}

/// What the complete parts of an unfinished head already break: the
/// target and the method once followed by SP, the field lines so far.
fn doomed(rl: &RequestLine, fields: &[(Vec<u8>, Vec<u8>)]) -> Head {
    let mut hits: Vec<(u16, &str)> = Vec::new();
    if rl.part >= 1 && rl.method == b"CONNECT" {
        hits.push((405, "CONNECT"));
    }
    if rl.part >= 2 {
        if let Err(why) = forwarded_target(&rl.target) {
            hits.push((400, why));
        }
    }
    let count = |name: &str| {
        fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .count()
    };
    if count("host") > 1 {
        hits.push((400, "several Host fields"));
    }
    let (te, cl) = (count("transfer-encoding"), count("content-length"));
    if te > 0 && cl > 0 {
        hits.push((400, "both Transfer-Encoding and Content-Length"));
    }
    if te > 0 && rl.part == 2 && rl.version.as_slice() == b"HTTP/1.0" {
        hits.push((400, "Transfer-Encoding in HTTP/1.0"));
    }
    if hits.is_empty() {
        return Head::Viable;
    }
    let why: Vec<&str> = hits.iter().map(|h| h.1).collect();
    Head::Doomed(hits.iter().map(|h| h.0).collect(), why.join(" & "))
}

fn bad_line_end(input: &[u8], at: usize, place: &'static [&'static str; 2]) -> &'static str {
    if input[at] == b'\n' {
        place[0]
    } else {
        place[1]
    }
}

const HEAD_ENDS: &[&str; 2] = &["bare LF in the head", "bare CR in the head"];

/// Why a request line stopped being valid.
fn request_line_why(g: &RequestLine) -> &'static str {
    match g.part {
        0 if g.method.is_empty() => "request line: no method",
        0 => "request line: method not a token, or not one SP after it",
        1 if g.target.is_empty() => "request line: empty target or two SPs",
        1 => "request line: CTL in the target, or no version",
        _ => "request line: version not HTTP/1.0 or HTTP/1.1",
    }
}

/// Why a field line stopped being valid, given the byte that stopped it
/// (`None`: the line ended).
fn field_line_why(g: &FieldLine, b: Option<u8>) -> &'static str {
    match (g.in_value, b) {
        (false, None) => "field line without a colon",
        (false, Some(b' ' | b'\t')) if g.name.is_empty() => {
            "obs-fold or whitespace before a field name"
        }
        (false, Some(b' ' | b'\t')) => "whitespace in a field name or before its colon",
        (false, Some(b':')) => "empty field name",
        (false, Some(_)) => "field name not a token",
        (true, Some(0)) => "NUL in a field value",
        (true, _) => "CTL in a field value",
    }
}

/// Feeds `content`; `Err` is the byte that failed (its value).
fn feed_at<G: Grammar>(g: &mut G, content: &[u8]) -> Result<(), u8> {
    for &b in content {
        if !g.push(b) {
            return Err(b);
        }
    }
    Ok(())
}

/// Reads a head strictly, byte by byte, looking at no more than
/// [`MAX_HEAD`] bytes.
fn scan_head(input: &[u8], pos: usize) -> Head {
    let limit = input.len().min(pos + MAX_HEAD);
    // A head that has not ended within MAX_HEAD bytes is too large.
    let open = |rl: &RequestLine, fields: &[(Vec<u8>, Vec<u8>)]| {
        if limit == pos + MAX_HEAD {
            Head::Error(431, "head larger than 64 KiB")
        } else {
            doomed(rl, fields)
        }
    };
    let mut i = pos;
    let mut request_line: Option<RequestLine> = None;
    let mut fields = Vec::new();
    let mut notes = Vec::new();
    loop {
        let l = line(input, i, limit);
        let content = &input[i..l.content_end()];
        let Some(rl) = &request_line else {
            // RFC 9112 2.2: a server SHOULD ignore at least one empty line
            // (CRLF) received prior to the request-line. Any number is
            // ignored here (they count towards MAX_HEAD); a bare LF is
            // still a bare LF: "Every line of the head must end in CRLF".
            if let (true, Line::Crlf { next, .. }) = (content.is_empty(), &l) {
                notes.push("empty lines before the request line");
                i = *next;
                continue;
            }
            let mut g = RequestLine::default();
            if feed_at(&mut g, content).is_err() {
                return Head::Error(400, request_line_why(&g));
            }
            match l {
                Line::Crlf { next, .. } if g.accepting() => {
                    request_line = Some(g);
                    i = next;
                    continue;
                }
                Line::Crlf { .. } | Line::Open { cr: true, .. } if !g.accepting() => {
                    return Head::Error(400, request_line_why(&g))
                }
                Line::Crlf { .. } => unreachable!(),
                Line::Bad(at) => return Head::Error(400, bad_line_end(input, at, HEAD_ENDS)),
                Line::Open { .. } => return open(&g, &fields),
            }
        };
        if content.is_empty() {
            return match l {
                Line::Crlf { next, .. } => Head::Complete(ParsedHead {
                    method: rl.method.clone(),
                    target: rl.target.clone(),
                    minor: rl.version[7] - b'0',
                    fields,
                    end: next,
                    notes,
                }),
                Line::Bad(at) => Head::Error(400, bad_line_end(input, at, HEAD_ENDS)),
                Line::Open { .. } => open(rl, &fields),
            };
        }
        let mut g = FieldLine::default();
        if let Err(b) = feed_at(&mut g, content) {
            return Head::Error(400, field_line_why(&g, Some(b)));
        }
        match l {
            Line::Crlf { next, .. } if g.accepting() => {
                if g.value.iter().any(|&b| is_obs_text(b)) {
                    notes.push("obs-text in a field value");
                }
                fields.push((g.name, trim_ows(&g.value).to_vec()));
                // "More than 100 fields -> 431" (noticed when the 101st
                // field line is complete).
                if fields.len() > MAX_FIELDS {
                    return Head::Error(431, "more than 100 fields");
                }
                i = next;
            }
            Line::Crlf { .. } | Line::Open { cr: true, .. } if !g.accepting() => {
                return Head::Error(400, field_line_why(&g, None))
            }
            Line::Crlf { .. } => unreachable!(),
            Line::Bad(at) => return Head::Error(400, bad_line_end(input, at, HEAD_ENDS)),
            Line::Open { .. } => return open(rl, &fields),
        }
    }
}

/// Where a lenient reader (LF ends a line, CR optional) would see the
/// head at `pos` end, and how many field lines it has: what decides
/// whether a strict error could already be known to any reader.
fn lenient_head(input: &[u8], pos: usize) -> (Option<usize>, usize) {
    let limit = input.len().min(pos + MAX_HEAD);
    let mut i = pos;
    while i < limit && (input[i] == b'\r' || input[i] == b'\n') {
        i += 1;
    }
    let mut lfs = 0;
    while i < limit {
        if input[i] == b'\n' {
            lfs += 1;
            let rest = &input[i + 1..limit];
            if rest.starts_with(b"\n") {
                return (Some(i + 2), lfs - 1);
            }
            if rest.starts_with(b"\r\n") {
                return (Some(i + 3), lfs - 1);
            }
        }
        i += 1;
    }
    (None, lfs.saturating_sub(1))
}

/// The acceptable ends when the head at `pos` is refused with `code`.
fn head_error_ends(input: &[u8], pos: usize, code: u16, why: &str) -> Fail {
    let (end, fields) = lenient_head(input, pos);
    let mut ends = vec![Outcome::Refused(code)];
    // No reader finds this head's end within MAX_HEAD bytes.
    let too_large = end.is_none() && input.len() - pos >= MAX_HEAD;
    if end.is_none() && !too_large {
        // The input ends before the head does: a reader that checks
        // lines (or the head) once they end never saw the error.
        ends.push(Outcome::Truncated);
    }
    if code == 400 && (fields > MAX_FIELDS || too_large) {
        // A syntax error in a head that is also too large or has too
        // many fields: whichever check runs first.
        ends.push(Outcome::Refused(431));
    }
    if code == 431 && input.len() - pos == MAX_HEAD && end.is_none() {
        // Exactly 64 KiB and no end yet: a reader may wait for one more
        // byte to see "larger than 64 KiB".
        ends.push(Outcome::Truncated);
    }
    // A finished target or method that breaks a rule may be noticed
    // before a later error (httparse refuses a target that is not
    // UTF-8 at once).
    ends.extend(
        request_line_hits(input, pos)
            .into_iter()
            .map(Outcome::Refused),
    );
    fail(&ends, why)
}

/// The rules that the finished parts of the request line at `pos`
/// break (its target once followed by SP, its method).
fn request_line_hits(input: &[u8], pos: usize) -> Vec<u16> {
    let mut i = pos;
    while input[i..].starts_with(b"\r\n") {
        i += 2;
    }
    let mut g = RequestLine::default();
    for &b in &input[i..] {
        if !g.push(b) {
            break;
        }
    }
    match doomed(&g, &[]) {
        Head::Doomed(codes, _) => codes,
        _ => Vec::new(),
    }
}

// -- what the head means -------------------------------------------------

enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Applies the policy's rules to a syntactically valid head: the
/// request (method, forwarded target, minor) and its framing, or every
/// status that a rule it breaks calls for.
fn semantics(
    head: &ParsedHead,
    notes: &mut Vec<&'static str>,
) -> Result<(String, String, u8, Framing), Fail> {
    let mut hits: Vec<(u16, &'static str)> = Vec::new();
    let fields = |name: &str| -> Vec<&[u8]> {
        head.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
            .collect()
    };

    let target = forwarded_target(&head.target);
    match &target {
        Err(why) => hits.push((400, why)),
        Ok(_) if !head.target.starts_with(b"/") => notes.push("absolute-form target"),
        Ok(_) => {}
    }

    // "Host: an HTTP/1.1 request must carry exactly one Host field; none
    // or several -> 400. HTTP/1.0: at most one."
    match fields("host").len() {
        0 if head.minor == 1 => hits.push((400, "no Host in HTTP/1.1")),
        0 | 1 => {}
        _ => hits.push((400, "several Host fields")),
    }

    // "Method CONNECT -> 405, close." (methods are case-sensitive)
    if head.method == b"CONNECT" {
        hits.push((405, "CONNECT"));
    }

    let te = fields("transfer-encoding");
    let cl = fields("content-length");
    // "Both Transfer-Encoding and Content-Length present -> 400, close."
    if !te.is_empty() && !cl.is_empty() {
        hits.push((400, "both Transfer-Encoding and Content-Length"));
    }
    // "Transfer-Encoding in an HTTP/1.0 request -> 400, close."
    if !te.is_empty() && head.minor == 0 {
        hits.push((400, "Transfer-Encoding in HTTP/1.0"));
    }
    if head.minor == 0 {
        notes.push("HTTP/1.0");
    }
    let framing = if !te.is_empty() {
        hits.extend(transfer_coding_hits(&te, notes));
        notes.push("chunked body");
        Framing::Chunked
    } else if !cl.is_empty() {
        match content_length(&cl) {
            Ok(n) => {
                if cl.len() > 1 {
                    notes.push("several equal Content-Length values");
                }
                if cl.iter().any(|v| v.len() > 1 && v[0] == b'0') {
                    notes.push("Content-Length with leading zeros");
                }
                if n == 0 {
                    Framing::None
                } else {
                    notes.push("Content-Length body");
                    Framing::Length(n)
                }
            }
            Err(why) => {
                hits.push((400, why));
                Framing::None
            }
        }
    } else {
        Framing::None
    };

    if !hits.is_empty() {
        hits.sort_unstable();
        hits.dedup();
        let mut codes: Vec<Outcome> = hits.iter().map(|h| Outcome::Refused(h.0)).collect();
        codes.dedup();
        let why: Vec<&str> = hits.iter().map(|h| h.1).collect();
        return Err(fail(&codes, &why.join(" & ")));
    }
    let method =
        String::from_utf8(head.method.clone()).map_err(|_| fail(BAD, "method not UTF-8"))?;
    Ok((method, target.unwrap_or_default(), head.minor, framing))
}

/// "Transfer-Encoding: all TE field lines are joined into one
/// comma-separated list; each element is trimmed of SP/HTAB; empty
/// elements are ignored. Coding names compare case-insensitively."
/// Every rule the list breaks adds its code.
fn transfer_coding_hits(
    values: &[&[u8]],
    notes: &mut Vec<&'static str>,
) -> Vec<(u16, &'static str)> {
    let joined = values.join(&b","[..]);
    let all: Vec<&[u8]> = joined.split(|&b| b == b',').map(trim_ows).collect();
    let elements: Vec<&[u8]> = all.iter().copied().filter(|e| !e.is_empty()).collect();
    if elements.len() < all.len() {
        notes.push("empty TE element");
    }
    if values.len() > 1 {
        notes.push("TE split over several fields");
    }
    if elements
        .iter()
        .any(|e| e.iter().any(u8::is_ascii_uppercase))
    {
        notes.push("TE not lower-case");
    }
    let chunked = |e: &[u8]| e.eq_ignore_ascii_case(b"chunked");
    let mut hits = Vec::new();
    // "an element that is not a plain token (e.g. `chunked;x=1`,
    // `chun ked`) -> 400"
    if elements.iter().any(|e| !e.iter().all(|&b| is_tchar(b))) {
        hits.push((400, "TE element not a token"));
    }
    match elements.split_last() {
        // "no elements at all -> 400"
        None => hits.push((400, "TE without elements")),
        Some((last, before)) => {
            // "the last element is not `chunked` -> 400"
            if !chunked(last) {
                hits.push((400, "TE: last coding not chunked"));
            }
            // "`chunked` appears more than once -> 400"
            if elements.iter().filter(|e| chunked(e)).count() > 1 {
                hits.push((400, "TE: chunked twice"));
            }
            // "any other coding before the final `chunked` (`gzip,
            // chunked`, `identity, chunked`) -> 501"
            if chunked(last) && before.iter().any(|e| !chunked(e)) {
                hits.push((501, "TE: another coding before chunked"));
            }
        }
    }
    hits
}

/// "Content-Length: every CL field value must be exactly 1*DIGIT (no
/// sign, no inner space, no comma list); leading zeros are fine; values
/// that differ -> 400; a value that does not fit in u64 -> 400. Several
/// equal values = that length."
fn content_length(values: &[&[u8]]) -> Result<u64, &'static str> {
    let mut length = None;
    for v in values {
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Err("Content-Length not 1*DIGIT");
        }
        let n = v
            .iter()
            .try_fold(0u64, |n, d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or("Content-Length beyond u64")?;
        if length.is_some_and(|l| l != n) {
            return Err("Content-Length values differ");
        }
        length = Some(n);
    }
    length.ok_or("no Content-Length")
}

/// The target as forwarded, or why it is refused (400).
///
/// "origin-form (`/path[?query]`) is forwarded as is. absolute-form
/// (`http://authority/path?query` or `https://...`, scheme
/// case-insensitive) is accepted and forwarded in origin-form (empty
/// path -> `/`). asterisk-form (`*`), authority-form (`host:port`) or
/// anything else -> 400. A `#` anywhere in the target -> 400."
///
/// Beyond the policy text: obs-text (bytes >= 0x80) is refused, since
/// no form of request-target (RFC 9112 3.2, RFC 3986) contains it; and
/// the authority of an absolute-form must not be empty (RFC 9110 4.2.1:
/// a recipient MUST reject an http URI with an empty host).
fn forwarded_target(raw: &[u8]) -> Result<String, &'static str> {
    if raw.contains(&b'#') {
        return Err("'#' in the target");
    }
    if raw.iter().any(|&b| is_obs_text(b)) {
        return Err("obs-text in the target");
    }
    let text = std::str::from_utf8(raw).map_err(|_| "obs-text in the target")?;
    if text.starts_with('/') {
        return Ok(text.to_owned());
    }
    let lower = text.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &text[7..]
    } else if lower.starts_with("https://") {
        &text[8..]
    } else {
        return Err("target neither origin- nor absolute-form");
    };
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    if path_at == 0 {
        return Err("absolute-form without authority");
    }
    let path = &rest[path_at..];
    Ok(if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    })
}

// -- chunked bodies ------------------------------------------------------

const CHUNK_ENDS: &[&str; 2] = &["bare LF in a chunk line", "bare CR in a chunk line"];
const TRAILER_ENDS: &[&str; 2] = &["bare LF in the trailers", "bare CR in the trailers"];

/// Why a chunk line is not valid.
fn chunk_line_why(g: &ChunkLine) -> &'static str {
    match g.state {
        Ext::Size if g.significant > 16 => "chunk-size beyond 16 hex digits",
        Ext::Size => "chunk-size not 1*HEXDIG",
        _ => "chunk-ext syntax",
    }
}

/// Reads a chunked body from `start`: the data and where it ends.
fn read_chunked(
    input: &[u8],
    start: usize,
    notes: &mut Vec<&'static str>,
) -> Result<(Vec<u8>, usize), Fail> {
    let mut body = Vec::new();
    let mut i = start;
    loop {
        let l = line(input, i, input.len());
        let content = &input[i..l.content_end()];
        let too_long = content.len() > MAX_CHUNK_LINE;
        let mut g = ChunkLine::default();
        if !feed(&mut g, &content[..content.len().min(MAX_CHUNK_LINE)]) {
            return Err(match l {
                // The line has not ended in the input: a reader may
                // wait for its end and see EOF first.
                Line::Open { .. } if !too_long => fail(BAD_OR_TRUNCATED, chunk_line_why(&g)),
                _ => fail(BAD, chunk_line_why(&g)),
            });
        }
        if too_long {
            return Err(fail(BAD, "chunk line longer than 4 KiB"));
        }
        let next = match l {
            Line::Crlf { next, .. } if g.accepting() => next,
            Line::Crlf { .. } => return Err(fail(BAD, chunk_line_why(&g))),
            // The line must end at the CR, and would be invalid.
            Line::Open { cr: true, .. } if !g.accepting() => {
                return Err(fail(BAD_OR_TRUNCATED, chunk_line_why(&g)))
            }
            Line::Bad(at) => return Err(fail(BAD, bad_line_end(input, at, CHUNK_ENDS))),
            Line::Open { .. } => return Err(fail(TRUNCATED, "input ends in a chunk line")),
        };
        if g.digits > 16 {
            notes.push("chunk-size with more than 16 digits (leading zeros)");
        }
        if g.state != Ext::Size {
            notes.push("chunk extension");
        }
        if g.size == 0 {
            // "last-chunk = 1*"0" [ chunk-ext ] CRLF"
            if g.digits > 1 {
                notes.push("last-chunk with several zeros");
            }
            let end = read_trailers(input, next, notes)?;
            return Ok((body, end));
        }
        if ((input.len() - next) as u64) < g.size {
            return Err(fail(TRUNCATED, "input ends in chunk data"));
        }
        let data_end = next + g.size as usize;
        body.extend_from_slice(&input[next..data_end]);
        // "Chunk data not followed by CRLF -> 400."
        match &input[data_end..] {
            [] | [b'\r'] => return Err(fail(TRUNCATED, "input ends after chunk data")),
            [b'\r', b'\n', ..] => i = data_end + 2,
            _ => return Err(fail(BAD, "chunk data not followed by CRLF")),
        }
    }
}

/// "trailer = *( field-line CRLF ) CRLF (field-line = token ":" OWS
/// value OWS, no CTLs but HTAB in the value)"; "trailer fields are
/// discarded". Returns where the body ends.
fn read_trailers(input: &[u8], start: usize, notes: &mut Vec<&'static str>) -> Result<usize, Fail> {
    let limit = input.len().min(start + MAX_TRAILER);
    // "a trailer section longer than 16 KiB -> 400"
    let open = || {
        if input.len() == start + MAX_TRAILER {
            // Exactly 16 KiB and no end yet: a reader may wait for one
            // more byte to see "longer than 16 KiB".
            fail(BAD_OR_TRUNCATED, "trailer section longer than 16 KiB")
        } else if limit == start + MAX_TRAILER {
            fail(BAD, "trailer section longer than 16 KiB")
        } else {
            fail(TRUNCATED, "input ends in the trailers")
        }
    };
    let mut i = start;
    loop {
        let l = line(input, i, limit);
        let content = &input[i..l.content_end()];
        if content.is_empty() {
            return match l {
                Line::Crlf { next, .. } => Ok(next),
                Line::Bad(at) => Err(fail(BAD, bad_line_end(input, at, TRAILER_ENDS))),
                Line::Open { .. } => Err(open()),
            };
        }
        let mut g = FieldLine::default();
        if let Err(b) = feed_at(&mut g, content) {
            let why = format!("trailer: {}", field_line_why(&g, Some(b)));
            let why = why.as_str();
            return Err(match l {
                Line::Open { .. } if limit < start + MAX_TRAILER => fail(BAD_OR_TRUNCATED, why),
                _ => fail(BAD, why),
            });
        }
        match l {
            Line::Crlf { next, .. } if g.accepting() => {
                notes.push("trailer fields");
                i = next;
            }
            Line::Crlf { .. } => {
                let why = format!("trailer: {}", field_line_why(&g, None));
                return Err(fail(BAD, &why));
            }
            Line::Open { cr: true, .. } if !g.accepting() && limit < start + MAX_TRAILER => {
                let why = format!("trailer: {}", field_line_why(&g, None));
                return Err(fail(BAD_OR_TRUNCATED, &why));
            }
            Line::Bad(at) => return Err(fail(BAD, bad_line_end(input, at, TRAILER_ENDS))),
            Line::Open { .. } => return Err(open()),
        }
    }
}
