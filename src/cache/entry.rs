//! The entry file format: a short text header, a blank line, the body as
//! received.
//!
//! ```text
//! lite-apiserver-entry 1
//! status: 200
//! content-type: application/json
//! stored: 1795521600
//! allow: cn:system:node:edge-1
//! resource-version: 226                          (padded)
//! length: 16504                                  (padded)
//!
//! {"kind":"PodList",...
//! ```
//!
//! `head` shows it. The body streams into the file before its length and
//! resourceVersion are known, so those two lines come last and are written
//! padded to a fixed width, then overwritten in place at commit (before the
//! fsync and rename that publish the file). A reader checks the magic line
//! and that the file holds exactly `length` body bytes: a torn, truncated or
//! foreign file is refused, never served.

use std::fmt;
use std::io::Read;

use crate::auth::identity::Credential;

/// First line of every entry.
pub const MAGIC: &str = "lite-apiserver-entry 1";
/// Most credentials kept per entry (oldest dropped first).
pub const MAX_ALLOW: usize = 32;
/// Width of the padded resource-version value.
pub const RV_WIDTH: usize = 64;
/// Width of the padded length value.
pub const LENGTH_WIDTH: usize = 20;
/// Largest header accepted when reading.
pub const MAX_HEADER: usize = 8 * 1024;

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// HTTP status of the answer.
    pub status: u16,
    /// Its Content-Type.
    pub content_type: String,
    /// `metadata.resourceVersion` of the body, when known.
    pub resource_version: Option<String>,
    /// Body length in bytes.
    pub length: u64,
    /// When the body was stored (Unix seconds).
    pub stored: u64,
    /// Credentials that may read it offline.
    pub allow: Vec<Credential>,
}

/// Why a file is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryError {
    /// The first line is not [`MAGIC`].
    BadMagic,
    /// No blank line within [`MAX_HEADER`] bytes.
    NoHeaderEnd,
    /// A header line is malformed.
    BadLine(String),
    /// A required field is missing.
    Missing(&'static str),
    /// The file's body length differs from the header's.
    LengthMismatch {
        /// What the header says.
        expected: u64,
        /// What is on disk.
        found: u64,
    },
    /// A value cannot be written into a header (CR/LF, too long).
    BadValue(&'static str),
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryError::BadMagic => write!(f, "not a lite-apiserver entry"),
            EntryError::NoHeaderEnd => write!(f, "header has no end within {MAX_HEADER} bytes"),
            EntryError::BadLine(l) => write!(f, "bad header line {l:?}"),
            EntryError::Missing(field) => write!(f, "header lacks {field}"),
            EntryError::LengthMismatch { expected, found } => {
                write!(
                    f,
                    "body is {found} bytes, header says {expected} (torn write?)"
                )
            }
            EntryError::BadValue(field) => write!(f, "{field} cannot be stored in a header"),
        }
    }
}

impl std::error::Error for EntryError {}

/// A header ready to write, with the offsets of its two padded fields.
#[derive(Debug, Clone)]
pub struct EncodedHeader {
    /// The header bytes, ending with the blank line.
    pub bytes: Vec<u8>,
    /// Offset of the resource-version value.
    pub rv_at: usize,
    /// Offset of the length value.
    pub length_at: usize,
}

impl EntryMeta {
    /// Encodes the header with `resource_version` and `length` padded so
    /// they can be overwritten later with [`padded`].
    pub fn encode(&self) -> Result<EncodedHeader, EntryError> {
        if has_line_break(&self.content_type) || self.content_type.len() > 256 {
            return Err(EntryError::BadValue("content-type"));
        }
        let mut text = format!(
            "{MAGIC}\nstatus: {}\ncontent-type: {}\nstored: {}\n",
            self.status, self.content_type, self.stored
        );
        let skip = self.allow.len().saturating_sub(MAX_ALLOW);
        for cred in &self.allow[skip..] {
            let line = cred.to_string();
            if has_line_break(&line) || line.len() > 512 {
                return Err(EntryError::BadValue("allow"));
            }
            text.push_str("allow: ");
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str("resource-version: ");
        let rv_at = text.len();
        text.push_str(&padded(
            self.resource_version.as_deref().unwrap_or(""),
            RV_WIDTH,
        ));
        text.push_str("\nlength: ");
        let length_at = text.len();
        text.push_str(&padded(&self.length.to_string(), LENGTH_WIDTH));
        text.push_str("\n\n");
        Ok(EncodedHeader {
            bytes: text.into_bytes(),
            rv_at,
            length_at,
        })
    }

    /// Parses a header from the start of `buf`; returns it and its length.
    pub fn parse(buf: &[u8]) -> Result<(EntryMeta, usize), EntryError> {
        let window = &buf[..buf.len().min(MAX_HEADER)];
        let end = window.windows(2).position(|w| w == b"\n\n").ok_or(
            if buf.starts_with(MAGIC.as_bytes()) {
                EntryError::NoHeaderEnd
            } else {
                EntryError::BadMagic
            },
        )?;
        let text = std::str::from_utf8(&window[..end])
            .map_err(|_| EntryError::BadLine("not UTF-8".into()))?;
        let mut lines = text.split('\n');
        if lines.next() != Some(MAGIC) {
            return Err(EntryError::BadMagic);
        }
        let (mut status, mut content_type, mut length, mut stored) = (None, None, None, 0);
        let mut resource_version = None;
        let mut allow = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(": ")
                .ok_or_else(|| EntryError::BadLine(line.to_owned()))?;
            let value = value.trim_end_matches(' ');
            let bad = || EntryError::BadLine(line.to_owned());
            match name {
                "status" => status = Some(value.parse::<u16>().map_err(|_| bad())?),
                "content-type" => content_type = Some(value.to_owned()),
                "stored" => stored = value.parse().map_err(|_| bad())?,
                "resource-version" => {
                    resource_version = (!value.is_empty()).then(|| value.to_owned())
                }
                "length" => length = Some(value.parse::<u64>().map_err(|_| bad())?),
                "allow" => allow.extend(Credential::parse(value)),
                _ => {} // unknown fields from newer versions are ignored
            }
        }
        let meta = EntryMeta {
            status: status.ok_or(EntryError::Missing("status"))?,
            content_type: content_type.ok_or(EntryError::Missing("content-type"))?,
            resource_version,
            length: length.ok_or(EntryError::Missing("length"))?,
            stored,
            allow,
        };
        Ok((meta, end + 2))
    }

    /// Reads and checks the header of an open entry file of `file_len`
    /// bytes; leaves the reader positioned at the body.
    pub fn read_from(
        file: &mut impl ReadAt,
        file_len: u64,
    ) -> Result<(EntryMeta, u64), EntryError> {
        let mut buf = vec![0u8; MAX_HEADER.min(usize::try_from(file_len).unwrap_or(MAX_HEADER))];
        let n = file
            .read_prefix(&mut buf)
            .map_err(|e| EntryError::BadLine(e.to_string()))?;
        let (meta, header_len) = EntryMeta::parse(&buf[..n])?;
        let found = file_len.saturating_sub(header_len as u64);
        if found != meta.length {
            return Err(EntryError::LengthMismatch {
                expected: meta.length,
                found,
            });
        }
        Ok((meta, header_len as u64))
    }

    /// Whether `credential` may read this entry offline.
    pub fn allows(&self, credential: &Credential) -> bool {
        self.allow.contains(credential)
    }
}

/// Reads the start of a file (what the header check needs).
pub trait ReadAt {
    /// Fills as much of `buf` as the file has from offset 0.
    fn read_prefix(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_prefix(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Seek, SeekFrom};
        self.seek(SeekFrom::Start(0))?;
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}

/// `value` left-aligned in `width` columns (values longer than the width
/// are dropped: an unknown resourceVersion is better than a broken header).
pub fn padded(value: &str, width: usize) -> String {
    let value = if value.len() > width || has_line_break(value) {
        ""
    } else {
        value
    };
    format!("{value:<width$}")
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\n', '\r'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EntryMeta {
        EntryMeta {
            status: 200,
            content_type: "application/json".into(),
            resource_version: Some("226".into()),
            length: 5,
            stored: 1_795_521_600,
            allow: vec![
                Credential::ClientCert("system:node:edge-1".into()),
                Credential::from_token("t"),
            ],
        }
    }

    #[test]
    fn round_trip() {
        let m = meta();
        let h = m.encode().unwrap();
        let mut file = h.bytes.clone();
        file.extend_from_slice(b"hello");
        let (parsed, len) = EntryMeta::parse(&file).unwrap();
        assert_eq!(parsed, m);
        assert_eq!(len, h.bytes.len());
        assert_eq!(&h.bytes[h.rv_at..h.rv_at + 3], b"226");
        assert_eq!(&h.bytes[h.length_at..h.length_at + 1], b"5");
    }

    #[test]
    fn broken_headers() {
        let good = meta().encode().unwrap().bytes;
        let text = String::from_utf8(good.clone()).unwrap();
        let cases: Vec<(Vec<u8>, EntryError)> = vec![
            (b"garbage".to_vec(), EntryError::BadMagic),
            (b"{\"kind\":\"PodList\"}\n\n".to_vec(), EntryError::BadMagic),
            (good[..good.len() - 2].to_vec(), EntryError::NoHeaderEnd),
            (
                text.replace("status: 200", "status: abc").into_bytes(),
                EntryError::BadLine("status: abc".into()),
            ),
            (
                text.replace("status: 200\n", "").into_bytes(),
                EntryError::Missing("status"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(EntryMeta::parse(&input).err(), Some(want));
        }
    }

    #[test]
    fn header_injection_is_refused() {
        let mut m = meta();
        m.content_type = "application/json\nallow: cn:attacker".into();
        assert_eq!(m.encode().err(), Some(EntryError::BadValue("content-type")));
    }

    #[test]
    fn allow_list_is_capped() {
        let mut m = meta();
        m.allow = (0..100)
            .map(|i| Credential::ClientCert(format!("cn-{i}")))
            .collect();
        let h = m.encode().unwrap();
        let (parsed, _) = EntryMeta::parse(&h.bytes).unwrap();
        assert_eq!(parsed.allow.len(), MAX_ALLOW);
        assert_eq!(
            parsed.allow.last(),
            Some(&Credential::ClientCert("cn-99".into()))
        );
    }

    #[test]
    fn padding() {
        assert_eq!(padded("12", 4), "12  ");
        assert_eq!(padded("12345", 4), "    ");
        assert_eq!(padded("a\nb", 4), "    ");
    }
}
