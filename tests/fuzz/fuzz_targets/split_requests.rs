//! libFuzzer on the crate's request reader: for any bytes and read sizes,
//! the crate must find the requests that the reference reader of RFC 9112
//! and the policy finds (tests/support/http_reference.rs), end the stream
//! as it allows, and not depend on the read sizes (no panic, no hang are
//! libFuzzer's own checks). The first byte picks the read sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lite_apiserver::http::fuzzing::{split_requests_in_pieces, End};

#[allow(dead_code)]
#[path = "../../support/http_reference.rs"]
mod reference;

fuzz_target!(|data: &[u8]| {
    let Some((&sizes, input)) = data.split_first() else {
        return;
    };
    let pieces = [
        1 + usize::from(sizes & 0x0f),
        1 + usize::from(sizes >> 4) * 97,
    ];
    let (splits, end) = split_requests_in_pieces(input, &pieces);
    let whole = split_requests_in_pieces(input, &[usize::MAX]);
    assert_eq!(
        (&splits, &end),
        (&whole.0, &whole.1),
        "read sizes {pieces:?}"
    );

    let want = reference::read(input);
    let found: Vec<_> = splits
        .iter()
        .map(|s| {
            (
                s.method.as_str(),
                s.target.as_str(),
                s.minor,
                s.body.as_slice(),
            )
        })
        .collect();
    let expected: Vec<_> = want
        .requests
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.target.as_str(),
                r.minor,
                r.body.as_slice(),
            )
        })
        .collect();
    assert_eq!(found, expected, "requests ({})", want.why);
    let end = match end {
        End::Eof => reference::Outcome::Eof,
        End::Truncated => reference::Outcome::Truncated,
        End::Refused(c) => reference::Outcome::Refused(c),
    };
    assert!(
        want.ends.contains(&end),
        "{end:?} not in {:?} ({})",
        want.ends,
        want.why
    );
});
