//! A small zero-copy JSON byte scanner.
//!
//! Cached bodies are never parsed into trees (miniserde would reorder keys
//! and hold a whole list in memory): we find byte ranges of values and
//! splice them. Skipping a value is a loop with a depth counter, not
//! recursion, so hostile nesting cannot blow the stack. The scanner checks
//! structure (brackets, strings, escapes), not every JSON rule: it is used
//! on bodies the apiserver produced.

use std::fmt;
use std::ops::Range;

pub mod items;

/// Why a value could not be scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// The input ends inside a value: more bytes may complete it.
    Truncated,
    /// A byte that cannot be here.
    Unexpected {
        /// Offset of the byte.
        offset: usize,
        /// What was expected there.
        expected: &'static str,
    },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Truncated => write!(f, "JSON ends early"),
            JsonError::Unexpected { offset, expected } => {
                write!(f, "JSON byte {offset}: expected {expected}")
            }
        }
    }
}

impl std::error::Error for JsonError {}

fn unexpected(offset: usize, expected: &'static str) -> JsonError {
    JsonError::Unexpected { offset, expected }
}

/// Index of the first non-whitespace byte at or after `i`.
pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting with `"` at `i`.
fn string_end(b: &[u8], i: usize) -> Result<usize, JsonError> {
    let mut j = i + 1;
    while j < b.len() {
        j = skip_plain(b, j);
        let Some(&c) = b.get(j) else { break };
        match c {
            b'"' => return Ok(j + 1),
            b'\\' => j += 2,
            c if c < 0x20 => return Err(unexpected(j, "no control characters in strings")),
            _ => j += 1,
        }
    }
    Err(JsonError::Truncated)
}

/// The first offset at or after `j` that may end or escape a string (`"`,
/// `\\`, or a control character), eight bytes at a time: most of a body
/// is long plain strings, and this is the scanner's inner loop.
fn skip_plain(b: &[u8], mut j: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = b.get(j..j + 8) {
        let x = word(chunk);
        let special = has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if special != 0 {
            return j + (special.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    j
}

/// Eight bytes as a little-endian word (0 unless `b` has exactly eight).
/// Through a `&[u8; 8]`, which compiles to one load: at opt-level "z",
/// `copy_from_slice` into an array becomes a memcpy call.
pub fn word(b: &[u8]) -> u64 {
    <&[u8; 8]>::try_from(b).map_or(0, |w| u64::from_le_bytes(*w))
}

/// The range of the value starting at or after `i` (leading whitespace
/// skipped).
pub fn value_range(b: &[u8], i: usize) -> Result<Range<usize>, JsonError> {
    let start = skip_ws(b, i);
    let Some(&first) = b.get(start) else {
        return Err(JsonError::Truncated);
    };
    let end = match first {
        b'"' => string_end(b, start)?,
        b'{' | b'[' => container_end(b, start)?,
        b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => scalar_end(b, start)?,
        _ => return Err(unexpected(start, "a JSON value")),
    };
    Ok(start..end)
}

fn scalar_end(b: &[u8], start: usize) -> Result<usize, JsonError> {
    let mut j = start;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'-' | b'+' | b'.')) {
        j += 1;
    }
    if j == b.len() {
        // A number at the very end might continue in the next read.
        return Err(JsonError::Truncated);
    }
    Ok(j)
}

fn container_end(b: &[u8], start: usize) -> Result<usize, JsonError> {
    let mut stack: Vec<u8> = Vec::new();
    let mut j = start;
    while j < b.len() {
        match b[j] {
            b'"' => {
                j = string_end(b, j)?;
                continue;
            }
            c @ (b'{' | b'[') => {
                if stack.len() >= 512 {
                    return Err(unexpected(j, "at most 512 levels of nesting"));
                }
                stack.push(if c == b'{' { b'}' } else { b']' });
            }
            c @ (b'}' | b']') => {
                if stack.pop() != Some(c) {
                    return Err(unexpected(j, "a matching bracket"));
                }
                if stack.is_empty() {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(JsonError::Truncated)
}

/// One member of an object: the key's raw contents (between the quotes,
/// still escaped) and the value's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Key bytes without quotes.
    pub key: Range<usize>,
    /// The value.
    pub value: Range<usize>,
}

/// Scans the members of the object whose `{` is at or after `i`, calling
/// `f` for each until it returns false. Returns the end of the object, or
/// the error that stopped the scan (Truncated for a cut-off prefix).
pub fn for_each_member(
    b: &[u8],
    i: usize,
    mut f: impl FnMut(&[u8], &Member) -> bool,
) -> Result<usize, JsonError> {
    let mut j = skip_ws(b, i);
    match b.get(j) {
        Some(b'{') => j += 1,
        Some(_) => return Err(unexpected(j, "an object")),
        None => return Err(JsonError::Truncated),
    }
    loop {
        j = skip_ws(b, j);
        match b.get(j) {
            Some(b'}') => return Ok(j + 1),
            Some(b'"') => {}
            Some(_) => return Err(unexpected(j, "a key or }")),
            None => return Err(JsonError::Truncated),
        }
        let key_end = string_end(b, j)?;
        let key = j + 1..key_end - 1;
        j = skip_ws(b, key_end);
        match b.get(j) {
            Some(b':') => j += 1,
            Some(_) => return Err(unexpected(j, ":")),
            None => return Err(JsonError::Truncated),
        }
        let value = value_range(b, j)?;
        j = skip_ws(b, value.end);
        let member = Member { key, value };
        if !f(b, &member) {
            return Ok(j);
        }
        match b.get(j) {
            Some(b',') => j += 1,
            Some(b'}') => return Ok(j + 1),
            Some(_) => return Err(unexpected(j, ", or }")),
            None => return Err(JsonError::Truncated),
        }
    }
}

/// The value range of member `name` of the object at `i`, if present and
/// complete.
pub fn member(b: &[u8], i: usize, name: &str) -> Option<Range<usize>> {
    let mut found = None;
    let _ = for_each_member(b, i, |b, m| {
        if &b[m.key.clone()] == name.as_bytes() {
            found = Some(m.value.clone());
            return false;
        }
        true
    });
    found
}

/// The value range at a path of member names from the object at `i`.
pub fn path(b: &[u8], i: usize, names: &[&str]) -> Option<Range<usize>> {
    let mut range = skip_ws(b, i)..b.len();
    for name in names {
        range = member(b, range.start, name)?;
    }
    Some(range)
}

/// Decodes a JSON string value (with its quotes) into text.
pub fn string_value(raw: &[u8]) -> Option<String> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    unescape(inner)
}

/// Decodes the contents of a JSON string (between the quotes).
pub fn unescape(inner: &[u8]) -> Option<String> {
    if !inner.contains(&b'\\') {
        return String::from_utf8(inner.to_vec()).ok();
    }
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] != b'\\' {
            out.push(inner[i]);
            i += 1;
            continue;
        }
        let esc = *inner.get(i + 1)?;
        i += 2;
        let c = match esc {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(inner.get(i..i + 4)?)?;
                i += 4;
                if (0xd800..0xdc00).contains(&hi) {
                    if inner.get(i..i + 2)? != b"\\u" {
                        return None;
                    }
                    let lo = hex4(inner.get(i + 2..i + 6)?)?;
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo.checked_sub(0xdc00)?))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    String::from_utf8(out).ok()
}

fn hex4(digits: &[u8]) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// The string at a path of member names, decoded.
pub fn string_at(doc: &[u8], names: &[&str]) -> Option<String> {
    let range = path(doc, 0, names)?;
    string_value(&doc[range])
}

/// The top-level `metadata.resourceVersion` of a document, looking only at
/// `prefix` (e.g. the first 64 KiB of a streamed list).
pub fn resource_version(prefix: &[u8]) -> Option<String> {
    string_at(prefix, &["metadata", "resourceVersion"]).filter(|rv| !rv.is_empty())
}

/// The top-level `kind` and `apiVersion` of a document's prefix.
pub fn kind_and_api_version(prefix: &[u8]) -> Option<(String, String)> {
    Some((
        string_at(prefix, &["kind"])?,
        string_at(prefix, &["apiVersion"])?,
    ))
}

/// Namespace (if any), name and resourceVersion (if any) of an object.
pub fn object_identity(obj: &[u8]) -> Option<(Option<String>, String, Option<String>)> {
    let meta = member(obj, 0, "metadata")?;
    let field = |name: &str| member(obj, meta.start, name).and_then(|r| string_value(&obj[r]));
    let name = field("name")?;
    Some((
        field("namespace").filter(|n| !n.is_empty()),
        name,
        field("resourceVersion"),
    ))
}

/// Writes `s` as a JSON string literal (with quotes).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    escape_into(s, &mut out);
    out.push('"');
    out
}

/// Appends `s` to `out` as the inside of a JSON string literal.
pub fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_ranges() {
        let cases: &[(&str, Result<&str, JsonError>)] = &[
            (r#" "a\"b" ,"#, Ok(r#""a\"b""#)),
            (r#"{"a":[1,{"b":"}"}]} x"#, Ok(r#"{"a":[1,{"b":"}"}]}"#)),
            ("123,", Ok("123")),
            ("true]", Ok("true")),
            ("123", Err(JsonError::Truncated)),
            (r#"{"a":"#, Err(JsonError::Truncated)),
            (r#""abc"#, Err(JsonError::Truncated)),
            (
                "[}",
                Err(JsonError::Unexpected {
                    offset: 1,
                    expected: "a matching bracket",
                }),
            ),
            (
                "x",
                Err(JsonError::Unexpected {
                    offset: 0,
                    expected: "a JSON value",
                }),
            ),
        ];
        for (input, want) in cases {
            let got = value_range(input.as_bytes(), 0).map(|r| &input[r]);
            assert_eq!(&got, want, "{input}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(value_range(deep.as_bytes(), 0).is_err());
    }

    #[test]
    fn resource_versions_from_prefixes() {
        let list = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"226"},"items":[{"metadata":{"resourceVersion":"1"}}"#;
        assert_eq!(resource_version(list).as_deref(), Some("226"));
        let pretty = b"{\n  \"kind\": \"PodList\",\n  \"metadata\": {\n    \"resourceVersion\": \"9\"\n  },\n  \"items\": [";
        assert_eq!(resource_version(pretty).as_deref(), Some("9"));
        assert_eq!(resource_version(br#"{"metadata":{"resourceVer"#), None);
        assert_eq!(resource_version(br#"{"items":[],"metadata":{}}"#), None);
        assert_eq!(
            kind_and_api_version(list),
            Some(("PodList".to_owned(), "v1".to_owned()))
        );
    }

    #[test]
    fn identities_and_escapes() {
        let obj = br#"{"metadata":{"name":"w\u00e9b-1","namespace":"edge","resourceVersion":"5"}}"#;
        assert_eq!(
            object_identity(obj),
            Some((
                Some("edge".to_owned()),
                "wéb-1".to_owned(),
                Some("5".to_owned())
            ))
        );
        assert_eq!(unescape(br"\ud83d\ude00").as_deref(), Some("😀"));
        assert_eq!(unescape(br"\x"), None);
        assert_eq!(
            object_identity(br#"{"metadata":{"name":"n"}}"#),
            Some((None, "n".to_owned(), None))
        );
        assert_eq!(quote("a\"b"), r#""a\"b""#);
    }

    #[test]
    fn fixture_list_scans() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/list-pods-ns.body"
        );
        let Ok(body) = std::fs::read(path) else {
            return;
        };
        assert_eq!(resource_version(&body).as_deref(), Some("226"));
        let items = member(&body, 0, "items").expect("items");
        assert!(body[items].starts_with(b"["));
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        escape_into("a\u{1}\tb", &mut out);
        assert_eq!(out, "a\\u0001\\tb");
    }

    #[test]
    fn the_word_scanner_finds_what_the_byte_scanner_finds() {
        let naive = |b: &[u8], i: usize| -> Result<usize, ()> {
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    b'"' => return Ok(j + 1),
                    b'\\' => j += 2,
                    c if c < 0x20 => return Err(()),
                    _ => j += 1,
                }
            }
            Err(())
        };
        let alphabet = [
            b'a', b'"', b'\\', 0x01, 0x1f, 0x20, 0x7f, 0x80, 0xc3, 0xff, b'z',
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..40 {
            for _ in 0..200 {
                let mut text = vec![b'"'];
                for _ in 0..len {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    text.push(alphabet[(seed % alphabet.len() as u64) as usize]);
                }
                assert_eq!(
                    string_end(&text, 0).map_err(|_| ()),
                    naive(&text, 0),
                    "{text:?}"
                );
            }
        }
    }
}
