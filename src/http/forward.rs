//! A response head parsed for forwarding: what a proxy must know about it
//! (status, framing, keep-alive, content type) and the head it passes on,
//! built in one buffer straight from httparse's borrowed fields.
//!
//! An owned [`super::ResponseHead`] costs two allocations per field; a
//! relayed answer needs none of them, only the bytes it forwards.

use std::ops::Range;

use super::head::{
    complete_head, framing_of, head_window, parse_within, same_name, slots, Fields, Framing,
    HopByHop, Parsed, MAX_HEADERS,
};
use super::HttpError;

/// A response head, ready to forward.
#[derive(Debug, Clone)]
pub struct ForwardHead {
    /// Status code.
    pub status: u16,
    /// HTTP minor version of the answer.
    pub minor: u8,
    /// The framing its fields declare, or why they are refused.
    declared: Result<Option<Framing>, &'static str>,
    keep_alive: bool,
    /// Whether the body is plain JSON: media type `application/json` (see
    /// [`is_json_type`]) and no content coding.
    json: bool,
    /// The status line and every field a proxy forwards ("Name: value"
    /// lines, hop-by-hop ones dropped but for a 101's Upgrade pair),
    /// without the blank line that ends the head: the relay adds its own
    /// framing fields first.
    pub head: Vec<u8>,
    content_type: Option<Range<usize>>,
}

impl ForwardHead {
    /// Parses a response head from the start of `buf` (the line rules of
    /// [`super::ResponseHead::parse`]).
    pub fn parse(buf: &[u8]) -> Result<Parsed<ForwardHead>, HttpError> {
        // The usual head, complete in `buf`: parsed once.
        let window = head_window(buf);
        let mut slots = slots();
        let mut res = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        if let Ok(httparse::Status::Complete(n)) =
            config.parse_response_with_uninit_headers(&mut res, window, &mut slots)
        {
            return Self::build(&res, complete_head(window, n)?);
        }
        Self::parse_general(buf)
    }

    /// [`ForwardHead::parse`] for a head that is not complete or not
    /// valid: the first rule broken decides.
    #[inline(never)]
    fn parse_general(buf: &[u8]) -> Result<Parsed<ForwardHead>, HttpError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut slots);
        let Some(used) = parse_within(buf, |b| res.parse(b))? else {
            return Ok(Parsed::Partial);
        };
        Self::build(&res, used)
    }

    /// The forwarded head of what httparse parsed in `used` bytes.
    fn build(
        res: &httparse::Response<'_, '_>,
        used: usize,
    ) -> Result<Parsed<ForwardHead>, HttpError> {
        let (Some(status), Some(minor)) = (res.code, res.version) else {
            return Ok(Parsed::Partial);
        };
        let fields: &[httparse::Header<'_>] = res.headers;
        let keep_alive = !fields.token("connection", "close")
            && (minor >= 1 || fields.token("connection", "keep-alive"));
        let declared = framing_of(fields).map_err(|e| match e {
            HttpError::BadFraming(why) => why,
            _ => "transfer codings other than chunked are not implemented",
        });
        // Room for the relay's framing fields and the first body piece,
        // which go out in the same write.
        let mut head = Vec::with_capacity(used + 64 + super::conn::INITIAL_BUFFER);
        head.extend_from_slice(b"HTTP/1.1 ");
        push_status(status, &mut head);
        head.push(b' ');
        let reason = res.reason.filter(|r| !r.is_empty());
        head.extend_from_slice(reason.unwrap_or(super::reason_phrase(status)).as_bytes());
        head.extend_from_slice(b"\r\n");
        let content_type = encode_fields(fields, status == 101, &mut head);
        // A content-coded (gzip) body is not the JSON itself: never cached.
        let json = !fields.iter().any(is_content_coded)
            && content_type
                .clone()
                .and_then(|r| head.get(r))
                .is_some_and(is_json_type);
        Ok(Parsed::Complete(
            ForwardHead {
                status,
                minor,
                declared,
                keep_alive,
                json,
                head,
                content_type,
            },
            used,
        ))
    }

    /// The body's framing, given the request method it answers (RFC 9112
    /// 6.3: HEAD, 1xx, 204 and 304 have no body). Ambiguous framing fields
    /// are an error even where the body is empty.
    pub fn framing(&self, request_method: &str) -> Result<Framing, HttpError> {
        let declared = self.declared.map_err(HttpError::BadFraming)?;
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(Framing::Empty);
        }
        Ok(declared.unwrap_or(Framing::Close))
    }

    /// Whether the server keeps the connection open after this answer.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// The `Content-Type` value, if there is one in UTF-8.
    pub fn content_type(&self) -> Option<&str> {
        let range = self.content_type.clone()?;
        std::str::from_utf8(self.head.get(range)?).ok()
    }

    /// Whether the body is plain JSON: media type (parameters aside)
    /// `application/json` and no content coding (a gzipped body is relayed
    /// but never cached, patched or rewritten).
    pub fn is_json(&self) -> bool {
        self.json
    }
}

/// Whether a Content-Type value in UTF-8 has the media type (parameters
/// aside, whitespace trimmed) `application/json`; on the bytes when they
/// are ASCII, as they are.
fn is_json_type(value: &[u8]) -> bool {
    const JSON: &str = "application/json";
    if !value.is_ascii() {
        return std::str::from_utf8(value).is_ok_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(JSON))
        });
    }
    let media = value.split(|&b| b == b';').next().unwrap_or(value);
    same_name(media.trim_ascii(), JSON)
}

/// A `Content-Encoding` field naming a coding other than `identity`.
fn is_content_coded(f: &httparse::Header<'_>) -> bool {
    same_name(f.name, "content-encoding")
        && !f.value.trim_ascii().eq_ignore_ascii_case(b"identity")
        && !f.value.trim_ascii().is_empty()
}

/// Appends the forwarded fields; returns where the Content-Type value is.
fn encode_fields(
    fields: &[httparse::Header<'_>],
    upgrade: bool,
    out: &mut Vec<u8>,
) -> Option<Range<usize>> {
    let hop = HopByHop::of(fields);
    let mut content_type = None;
    for f in fields {
        let pair = ["connection", "upgrade"]
            .iter()
            .any(|n| same_name(n, f.name));
        if hop.contains(f.name) && !(upgrade && pair) {
            continue;
        }
        out.extend_from_slice(f.name.as_bytes());
        out.extend_from_slice(b": ");
        if content_type.is_none() && same_name("content-type", f.name) {
            content_type = Some(out.len()..out.len() + f.value.len());
        }
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    content_type
}

/// Appends a status code's three digits.
fn push_status(status: u16, out: &mut Vec<u8>) {
    let digits = [status / 100 % 10, status / 10 % 10, status % 10];
    out.extend(digits.iter().map(|d| b'0' + *d as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> ForwardHead {
        match ForwardHead::parse(text.as_bytes()) {
            Ok(Parsed::Complete(h, n)) => {
                assert_eq!(n, text.len());
                h
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn a_content_coded_body_is_not_json_to_cache() {
        let gz = head("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\n");
        assert!(!gz.is_json());
        let identity = head("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: identity\r\nContent-Length: 3\r\n\r\n");
        assert!(identity.is_json());
    }

    #[test]
    fn forwards_end_to_end_fields_only() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nAudit-Id: a\r\n\r\n");
        assert_eq!(
            String::from_utf8(h.head.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nAudit-Id: a\r\n"
        );
        assert!(h.is_json() && h.keep_alive());
        assert_eq!(h.framing("GET").unwrap(), Framing::Chunked);
        assert_eq!(h.framing("HEAD").unwrap(), Framing::Empty);
        let up = head(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n",
        );
        assert!(String::from_utf8_lossy(&up.head).contains("Upgrade: SPDY/3.1\r\n"));
        assert!(String::from_utf8_lossy(&up.head).contains("Connection: Upgrade\r\n"));
    }

    #[test]
    fn framing_rules_are_the_owned_heads() {
        let bad =
            head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(bad.framing("GET").is_err());
        let close = head("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(close.framing("GET").unwrap(), Framing::Close);
        assert!(!close.keep_alive());
        let len = head("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
        assert_eq!(len.framing("GET").unwrap(), Framing::Length(5));
        assert!(!len.keep_alive() && !len.is_json());
    }
}
