//! Cutting the `items` of a list body into items as its bytes arrive.
//!
//! An offline streaming list (`sendInitialEvents=true`) sends a cached
//! list's items one event each, read from disk in pieces: [`ItemSplitter`]
//! is fed those pieces and hands back each complete item, holding at most
//! one item (and refusing one over its bound) however long the list is.
//! It tracks only what it must: string and escape state, nesting depth,
//! the last member name at the top level, and the bytes of the item being
//! cut.

/// Why the list could not be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemsError {
    /// One item is larger than the splitter's bound.
    TooLarge,
    /// The bytes are not a JSON object with an `items` array.
    Malformed,
}

impl std::fmt::Display for ItemsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemsError::TooLarge => write!(f, "a list item is too large"),
            ItemsError::Malformed => write!(f, "not a list with an items array"),
        }
    }
}

impl std::error::Error for ItemsError {}

/// Where the splitter is in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Outside the `items` array.
    Outside,
    /// Inside `items`, between elements.
    Between,
    /// Inside one element (its bytes are being kept).
    InItem,
    /// Past the `items` array.
    Done,
}

/// Cuts a list's items out of its bytes, piece by piece.
#[derive(Debug)]
pub struct ItemSplitter {
    place: Place,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The top-level string just read (a member name if `:` follows).
    last_string: Vec<u8>,
    /// Collecting `last_string`.
    collecting: bool,
    /// The top-level member whose value comes next.
    member: Vec<u8>,
    item: Vec<u8>,
    max_item: usize,
}

impl ItemSplitter {
    /// A splitter that refuses items over `max_item` bytes.
    pub fn new(max_item: usize) -> ItemSplitter {
        ItemSplitter {
            place: Place::Outside,
            depth: 0,
            in_string: false,
            escaped: false,
            last_string: Vec::new(),
            collecting: false,
            member: Vec::new(),
            item: Vec::new(),
            max_item,
        }
    }

    /// Whether the `items` array has been read to its end.
    pub fn finished(&self) -> bool {
        self.place == Place::Done
    }

    /// Feeds the next bytes; `each` gets every item completed by them.
    pub fn push(&mut self, bytes: &[u8], each: &mut dyn FnMut(&[u8])) -> Result<(), ItemsError> {
        let mut kept_from = (self.place == Place::InItem).then_some(0);
        for (i, &b) in bytes.iter().enumerate() {
            if self.in_string {
                self.string_byte(b);
                continue;
            }
            match (self.place, b) {
                (Place::Between, b'{') => {
                    self.place = Place::InItem;
                    kept_from = Some(i);
                    self.depth += 1;
                }
                (Place::Between, b']') => {
                    self.place = Place::Done;
                    self.depth -= 1;
                }
                (Place::Between, b',' | b' ' | b'\t' | b'\r' | b'\n') => {}
                // Items are objects.
                (Place::Between, _) => return Err(ItemsError::Malformed),
                (_, b'"') => {
                    self.in_string = true;
                    self.collecting = self.depth == 1 && self.place == Place::Outside;
                    self.last_string.clear();
                }
                (_, b'{' | b'[') => self.open(b)?,
                (_, b'}' | b']') => {
                    self.depth = self.depth.checked_sub(1).ok_or(ItemsError::Malformed)?;
                    if self.place == Place::InItem && self.depth == 2 {
                        let from = kept_from.take().unwrap_or(0);
                        self.keep(&bytes[from..=i])?;
                        each(&self.item);
                        self.item.clear();
                        self.place = Place::Between;
                    }
                }
                (_, b':') if self.depth == 1 => {
                    self.member = std::mem::take(&mut self.last_string);
                }
                _ => {}
            }
        }
        if let Some(from) = kept_from {
            self.keep(&bytes[from..])?;
        }
        Ok(())
    }

    /// A `{` or `[` outside an item: the list itself, or `items` opening.
    fn open(&mut self, b: u8) -> Result<(), ItemsError> {
        if self.depth == 0 && b != b'{' {
            return Err(ItemsError::Malformed);
        }
        self.depth += 1;
        if self.depth == 2 && b == b'[' && self.place == Place::Outside && self.member == b"items" {
            self.place = Place::Between;
        }
        Ok(())
    }

    fn string_byte(&mut self, b: u8) {
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_string = false;
            self.collecting = false;
            return;
        }
        // Member names we look for are short; longer ones never match.
        if self.collecting && self.last_string.len() < 16 {
            self.last_string.push(b);
        }
    }

    fn keep(&mut self, bytes: &[u8]) -> Result<(), ItemsError> {
        if self.item.len() + bytes.len() > self.max_item {
            return Err(ItemsError::TooLarge);
        }
        self.item.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(body: &[u8], piece: usize) -> Result<(Vec<String>, bool), ItemsError> {
        let mut s = ItemSplitter::new(1024);
        let mut out = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            s.push(chunk, &mut |item| {
                out.push(String::from_utf8(item.to_vec()).unwrap())
            })?;
        }
        Ok((out, s.finished()))
    }

    const LIST: &[u8] = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9","x":{"items":[1]}},"items":[{"metadata":{"name":"a\"}]"}},{"metadata":{"name":"b"},"spec":{"c":[{"d":"]"}]}}],"tail":"items"}"#;

    #[test]
    fn items_at_every_piece_size() {
        for piece in 1..LIST.len() + 1 {
            let (items, done) = split(LIST, piece).unwrap();
            assert_eq!(
                items,
                vec![
                    r#"{"metadata":{"name":"a\"}]"}}"#.to_owned(),
                    r#"{"metadata":{"name":"b"},"spec":{"c":[{"d":"]"}]}}"#.to_owned()
                ],
                "piece {piece}"
            );
            assert!(done);
        }
    }

    #[test]
    fn items_after_metadata_or_before_it() {
        let body = br#"{"items":[ {"a":1} , {"b":2} ],"metadata":{"resourceVersion":"3"}}"#;
        let (items, done) = split(body, 5).unwrap();
        assert_eq!(items, vec![r#"{"a":1}"#, r#"{"b":2}"#]);
        assert!(done);
    }

    #[test]
    fn empty_and_null_items() {
        assert_eq!(split(br#"{"items":[]}"#, 3).unwrap(), (vec![], true));
        assert_eq!(split(br#"{"items":null}"#, 3).unwrap(), (vec![], false));
    }

    #[test]
    fn bounds_and_shapes() {
        let big = format!(r#"{{"items":[{{"a":"{}"}}]}}"#, "x".repeat(2000));
        assert_eq!(split(big.as_bytes(), 100), Err(ItemsError::TooLarge));
        assert_eq!(split(b"[1,2]", 1), Err(ItemsError::Malformed));
        assert_eq!(split(br#"{"items":[1]}"#, 1), Err(ItemsError::Malformed));
        assert_eq!(split(b"}}", 1), Err(ItemsError::Malformed));
    }
}
