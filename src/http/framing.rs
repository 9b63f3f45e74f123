//! The fields that frame a body and the fields a proxy drops, read the
//! same way from owned heads and from httparse's borrowed ones
//! ([`Fields`]): RFC 9112 section 6, with the proxy as the strict party.

use super::HttpError;

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// Headers a proxy must not forward (RFC 9110 7.6.1), compared lower-case.
/// `Content-Length` is not hop-by-hop, but a forwarded request always gets
/// its framing written by the proxy itself.
pub(super) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// The hop-by-hop field names of one message.
#[derive(Debug)]
pub struct HopByHop<'a> {
    named: Vec<&'a [u8]>,
}

impl<'a> HopByHop<'a> {
    /// The hop-by-hop names of a head with these fields.
    pub fn of<F: Fields + ?Sized>(fields: &'a F) -> HopByHop<'a> {
        let named = fields
            .all("connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .collect();
        HopByHop { named }
    }

    /// Whether a field called `name` is hop-by-hop.
    pub fn contains(&self, name: &str) -> bool {
        HOP_BY_HOP.iter().any(|h| same_name(h, name))
            || self.named.iter().any(|t| same_name(t, name.as_bytes()))
    }
}

/// Whether two field names (or tokens) are equal ignoring ASCII case: the
/// lengths first, since most names compared differ in length, then eight
/// bytes at a time (look-ups and the hop-by-hop test run over every field
/// of every head).
// (always inline: the length test is most of the work, a call is not.)
#[inline(always)]
pub fn same_name(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    let (a, b) = (a.as_ref(), b.as_ref());
    a.len() == b.len() && same_len_name(a, b)
}

/// [`same_name`] for `a` and `b` of the same length.
fn same_len_name(a: &[u8], b: &[u8]) -> bool {
    use crate::json::word;
    let n = a.len();
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y));
    }
    let mut at = 0;
    while at + 8 <= n {
        if lower_word(word(&a[at..at + 8])) != lower_word(word(&b[at..at + 8])) {
            return false;
        }
        at += 8;
    }
    // The last (overlapping) eight bytes.
    at == n || lower_word(word(&a[n - 8..])) == lower_word(word(&b[n - 8..]))
}

/// Eight bytes with `A-Z` made lower-case (no other byte changes).
fn lower_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // (no carry between bytes: each sum stays below 0x100)
    let low = w & LOW;
    let at_least_a = low + ONES * (0x80 - u64::from(b'A'));
    let above_z = low + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = at_least_a & !above_z & !w & HIGH;
    w | (upper >> 2)
}

/// Read access to a head's fields, owned ([`super::Headers`]) or borrowed
/// (httparse's), so that the framing rules exist once.
pub trait Fields {
    /// Every (name, value) in order.
    fn each(&self) -> impl Iterator<Item = (&str, &[u8])>;

    /// Every value of `name` (case-insensitive).
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.each()
            .filter(move |(n, _)| same_name(n, name))
            .map(|(_, v)| v)
    }

    /// Whether any comma-separated token of any `name` field is `token`.
    fn token(&self, name: &str, token: &str) -> bool {
        self.all(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| same_name(t.trim_ascii(), token))
        })
    }
}

impl Fields for [httparse::Header<'_>] {
    fn each(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.iter().map(|h| (h.name, h.value))
    }
}

/// The body framing that `headers` declare (RFC 9112 6.1-6.3), strictly:
/// both Transfer-Encoding and Content-Length, a coding list that does not
/// end in exactly one `chunked`, or a Content-Length that is not one
/// 1*DIGIT value, are refused. `None`: neither field is present.
pub fn framing_of<F: Fields + ?Sized>(headers: &F) -> Result<Option<Framing>, HttpError> {
    let has_te = headers.all("transfer-encoding").next().is_some();
    let has_cl = headers.all("content-length").next().is_some();
    if has_te && has_cl {
        return Err(HttpError::BadFraming(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    if has_te {
        return transfer_codings(headers).map(Some);
    }
    let mut length = None;
    for value in headers.all("content-length") {
        let n = parse_content_length(value)?;
        if length.is_some_and(|l| l != n) {
            return Err(HttpError::BadFraming("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    Ok(length.map(|n| match n {
        0 => Framing::Empty,
        n => Framing::Length(n),
    }))
}

/// Reads the Transfer-Encoding list: only `chunked`, once, last, is
/// something we can delimit; a known-good list with another coding in
/// front is well-formed but not implemented (501).
fn transfer_codings<F: Fields + ?Sized>(headers: &F) -> Result<Framing, HttpError> {
    let mut codings = Vec::new();
    for value in headers.all("transfer-encoding") {
        for element in value.split(|&b| b == b',') {
            let element = trim_ows(element);
            if element.is_empty() {
                continue;
            }
            if !element.iter().all(|&b| is_tchar(b)) {
                return Err(HttpError::BadFraming(
                    "Transfer-Encoding is not a list of codings",
                ));
            }
            codings.push(element);
        }
    }
    let is_chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    match codings.last() {
        None => Err(HttpError::BadFraming("empty Transfer-Encoding")),
        Some(last) if !is_chunked(last) => Err(HttpError::BadFraming(
            "chunked is not the final transfer coding",
        )),
        Some(_) if codings.iter().filter(|c| is_chunked(c)).count() > 1 => {
            Err(HttpError::BadFraming("chunked is applied more than once"))
        }
        Some(_) if codings.len() > 1 => Err(HttpError::UnsupportedCoding),
        Some(_) => Ok(Framing::Chunked),
    }
}

/// A Content-Length value: exactly 1*DIGIT (leading zeros allowed).
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadFraming("Content-Length is not a number"));
    }
    digits
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(HttpError::BadFraming("Content-Length is too large"))
}

/// Strips SP and HTAB (RFC 9110 OWS) from both ends.
pub fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// RFC 9110 `tchar`: the bytes of a token.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_is_eq_ignore_ascii_case() {
        // Every byte against every byte, at every position of a word and
        // in the overlapping tail.
        let base = b"content-length-xyz";
        for len in [1, 7, 8, 9, 14, 16, 18] {
            for at in 0..len {
                for x in 0..=255u8 {
                    for y in [x, x ^ 0x20, x.to_ascii_lowercase(), b'a', b'A', b'@', b'['] {
                        let mut a = base[..len].to_vec();
                        let mut b = a.clone();
                        a[at] = x;
                        b[at] = y;
                        assert_eq!(same_name(&a, &b), a.eq_ignore_ascii_case(&b), "{a:?} {b:?}");
                    }
                }
            }
        }
        assert!(same_name("Transfer-Encoding", "transfer-encoding"));
        assert!(!same_name("content-type", "content-types"));
    }
}
