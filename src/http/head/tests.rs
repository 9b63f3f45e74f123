use super::*;

fn req(text: &str) -> RequestHead {
    match RequestHead::parse(text.as_bytes()) {
        Ok(Parsed::Complete(h, n)) => {
            assert_eq!(n, text.len());
            h
        }
        other => panic!("{text:?}: {other:?}"),
    }
}

/// What parsing a request head gives: its framing, or the status the
/// proxy answers.
fn verdict(text: &str) -> Result<Framing, u16> {
    match RequestHead::parse(text.as_bytes()) {
        Ok(Parsed::Complete(h, _)) => Ok(h.body_framing()),
        Ok(Parsed::Partial) => Err(0),
        Err(e) => Err(e.client_status().unwrap_or(0)),
    }
}

#[test]
fn request_framing_table() {
    let post = |fields: &str| format!("POST /a HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
    let cases: &[(&str, Result<Framing, u16>)] = &[
        ("", Ok(Framing::Empty)),
        ("Content-Length: 5\r\n", Ok(Framing::Length(5))),
        ("Content-Length: 005\r\n", Ok(Framing::Length(5))),
        ("Content-Length: 0\r\n", Ok(Framing::Empty)),
        (
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            Ok(Framing::Length(5)),
        ),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", Err(400)),
        ("Content-Length: 5, 5\r\n", Err(400)),
        ("Content-Length: +5\r\n", Err(400)),
        ("Content-Length: -1\r\n", Err(400)),
        ("Content-Length: 0x5\r\n", Err(400)),
        ("Content-Length: 5 5\r\n", Err(400)),
        ("Content-Length: \r\n", Err(400)),
        ("Content-Length: 99999999999999999999999\r\n", Err(400)),
        ("Transfer-Encoding: chunked\r\n", Ok(Framing::Chunked)),
        ("Transfer-Encoding: CHUNKED\r\n", Ok(Framing::Chunked)),
        ("Transfer-Encoding: \tchunked\r\n", Ok(Framing::Chunked)),
        ("Transfer-Encoding: , chunked,\r\n", Ok(Framing::Chunked)),
        ("Transfer-Encoding: gzip, chunked\r\n", Err(501)),
        ("Transfer-Encoding: identity, chunked\r\n", Err(501)),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            Err(501),
        ),
        ("Transfer-Encoding: chunked, chunked\r\n", Err(400)),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            Err(400),
        ),
        ("Transfer-Encoding: gzip\r\n", Err(400)),
        ("Transfer-Encoding: chunked, gzip\r\n", Err(400)),
        ("Transfer-Encoding: chunked;q=1\r\n", Err(400)),
        ("Transfer-Encoding: chun ked\r\n", Err(400)),
        ("Transfer-Encoding: ,\r\n", Err(400)),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            Err(400),
        ),
        (
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            Err(400),
        ),
        ("Transfer-Encoding : chunked\r\n", Err(400)),
        ("Content-Length:5\r\n X: folded\r\n", Err(400)),
        ("X: a\0b\r\n", Err(400)),
        ("X: a\rb\r\n", Err(400)),
        ("X: a\nContent-Length: 5\r\n", Err(400)),
    ];
    for (fields, want) in cases {
        let text = post(fields);
        assert_eq!(&verdict(&text), want, "{text:?}");
    }
}

#[test]
fn request_line_and_host_table() {
    let cases: &[(&str, Result<&str, u16>)] = &[
        ("GET /api?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", Ok("/api?x=1")),
        (
            "GET http://h/api?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
            Ok("/api?x=1"),
        ),
        ("GET HTTPS://h:6443 HTTP/1.1\r\nHost: h\r\n\r\n", Ok("/")),
        ("GET https://h?x HTTP/1.1\r\nHost: h\r\n\r\n", Ok("/?x")),
        ("GET http:///a HTTP/1.1\r\nHost: h\r\n\r\n", Err(400)),
        ("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", Err(400)),
        ("GET h:443 HTTP/1.1\r\nHost: h\r\n\r\n", Err(400)),
        ("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", Err(400)),
        ("CONNECT /a HTTP/1.1\r\nHost: h\r\n\r\n", Err(405)),
        ("GET / HTTP/1.1\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Err(400)),
        ("GET / HTTP/1.0\r\n\r\n", Ok("/")),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            Err(400),
        ),
        ("GET / HTTP/1.1\nHost: h\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: h\n\n", Err(400)),
        ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", Err(400)),
        ("GET / HTTP/2.0\r\nHost: h\r\n\r\n", Err(400)),
    ];
    for (text, want) in cases {
        let got = match RequestHead::parse(text.as_bytes()) {
            Ok(Parsed::Complete(h, _)) => Ok(h.target),
            Ok(Parsed::Partial) => Err(0),
            Err(e) => Err(e.client_status().unwrap_or(0)),
        };
        assert_eq!(got.as_deref().map_err(|c| *c), *want, "{text:?}");
    }
}

#[test]
fn head_limits_count_from_the_start() {
    // A head that does not end within MAX_HEAD is too large, even if a
    // syntax error follows later.
    let mut long = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
    long.extend_from_slice(b"\0\r\n\r\n");
    assert!(matches!(
        RequestHead::parse(&long),
        Err(HttpError::HeadTooLarge)
    ));
    let mut many = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..MAX_HEADERS {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("Y: bare\n\r\n");
    assert!(matches!(
        RequestHead::parse(many.as_bytes()),
        Err(HttpError::TooManyHeaders)
    ));
    // A bare LF after the head ends is body, not head.
    let ok = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n\n\n";
    let head_len = ok.len() - 2;
    assert!(matches!(RequestHead::parse(ok), Ok(Parsed::Complete(_, n)) if n == head_len));
}

#[test]
fn response_framing_table() {
    let cases: &[(&str, &str, Framing)] = &[
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            "GET",
            Framing::Length(2),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            "HEAD",
            Framing::Empty,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", "GET", Framing::Close),
        ("HTTP/1.1 204 No Content\r\n\r\n", "DELETE", Framing::Empty),
        ("HTTP/1.1 304 Not Modified\r\n\r\n", "GET", Framing::Empty),
        (
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "GET",
            Framing::Empty,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET",
            Framing::Chunked,
        ),
    ];
    for (text, method, want) in cases {
        let Ok(Parsed::Complete(head, _)) = ResponseHead::parse(text.as_bytes()) else {
            panic!("{text:?}");
        };
        assert_eq!(head.framing(method).ok(), Some(*want), "{text:?}");
    }
}

#[test]
fn partial_and_bad_heads() {
    assert!(matches!(
        RequestHead::parse(b"GET / HTTP/1.1\r\nHost: x\r\n"),
        Ok(Parsed::Partial)
    ));
    assert!(matches!(RequestHead::parse(b"GET"), Ok(Parsed::Partial)));
    assert!(RequestHead::parse(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").is_err());
    assert!(matches!(
        RequestHead::parse(b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n"),
        Err(HttpError::BadTarget)
    ));
    let mut many = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..MAX_HEADERS {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert!(matches!(
        RequestHead::parse(many.as_bytes()),
        Err(HttpError::TooManyHeaders)
    ));
}

#[test]
fn hop_by_hop_headers_are_dropped() {
    let mut h = req("GET /api?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nAuthorization: Bearer t\r\nTE: trailers\r\nImpersonate-User: u\r\n\r\n");
    assert_eq!(h.path(), "/api");
    assert_eq!(h.query(), Some("x=1"));
    h.headers.remove_hop_by_hop();
    let names: Vec<&str> = h.headers.0.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["Host", "Authorization", "Impersonate-User"]);
}

#[test]
fn keep_alive_and_upgrade() {
    assert!(req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive());
    assert!(!req("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive());
    assert!(!req("GET / HTTP/1.0\r\n\r\n").keep_alive());
    assert!(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
    assert!(req(
        "POST /exec HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
    )
    .is_upgrade());
    assert!(!req("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n").is_upgrade());
}

#[test]
fn encode_round_trips() {
    let text = "PUT /a/b?c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let mut out = Vec::new();
    req(text).encode(&mut out);
    assert_eq!(out, text.as_bytes());
    let mut res = ResponseHead::new(503);
    res.headers.set("Retry-After", "5");
    let mut out = Vec::new();
    res.encode(&mut out);
    assert_eq!(
        out,
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n"
    );
}

/// The word-at-a-time scan finds what a byte-by-byte one finds, for every
/// placement of CR and LF around word boundaries.
#[test]
fn bare_lf_matches_the_byte_scan() {
    let reference =
        |b: &[u8]| (0..b.len()).find(|&i| b[i] == b'\n' && (i == 0 || b[i - 1] != b'\r'));
    let alphabet = [b'\r', b'\n', b'a', 0x8a, 0x0d | 0x80, 0];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for len in 0..40 {
        for _ in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            assert_eq!(bare_lf(&bytes), reference(&bytes), "{bytes:?}");
        }
    }
    let mut line = b"GET / HTTP/1.1\r\n".repeat(3);
    assert_eq!(bare_lf(&line), None);
    line[30] = b'x';
    assert_eq!(bare_lf(&line), Some(31));
}

#[test]
fn find_byte_matches_the_byte_scan() {
    let text = b"/api/v1/namespaces/edge/pods?limit=5#x\xc3\xa9/#?";
    for start in 0..text.len() {
        for end in start..=text.len() {
            let bytes = &text[start..end];
            for needle in [b'?', b'#', b'/'] {
                let plain = bytes.iter().position(|&b| b == needle);
                assert_eq!(find_byte(bytes, needle, false), plain, "{bytes:?}");
                let any = bytes.iter().position(|&b| b == needle || !b.is_ascii());
                assert_eq!(find_byte(bytes, needle, true), any, "{bytes:?}");
            }
        }
    }
    for (target, path, query) in [
        ("/a/b?x=1", "/a/b", Some("x=1")),
        (
            "/a/very/long/path/indeed?",
            "/a/very/long/path/indeed",
            Some(""),
        ),
        ("/a/very/long/path/indeed", "/a/very/long/path/indeed", None),
        ("/?q?r", "/", Some("q?r")),
    ] {
        let h = req(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!((h.path(), h.query()), (path, query), "{target}");
    }
    for bad in ["/a/long/path#frag", "/a/long/pa\u{e9}th", "/\u{e9}"] {
        let text = format!("GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(RequestHead::parse(text.as_bytes()).is_err(), "{bad}");
    }
}
