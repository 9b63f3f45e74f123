//! libFuzzer on the crate's request reader: any bytes, any read sizes, must
//! give the same requests (no panic, no hang is libFuzzer's own check).
//! The first byte picks the read sizes; the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lite_apiserver::http::fuzzing::{split_requests, split_requests_in_pieces};

fuzz_target!(|data: &[u8]| {
    let Some((&sizes, input)) = data.split_first() else {
        return;
    };
    let pieces = [
        1 + usize::from(sizes & 0x0f),
        1 + usize::from(sizes >> 4) * 97,
    ];
    let whole = split_requests_in_pieces(input, &[usize::MAX]);
    assert_eq!(
        split_requests_in_pieces(input, &pieces),
        whole,
        "read sizes {pieces:?}"
    );
    assert_eq!(split_requests(input), whole);
});
