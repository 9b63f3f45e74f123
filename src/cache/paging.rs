//! Paged LISTs (`limit` + `continue`) assembled into one cached list.
//!
//! client-go lists with `limit=500`. Caching page 1 as "the list" would be
//! a disaster offline (kubelet would see a partial pod list and kill the
//! rest), so each page is stored under its own page key
//! ([`CacheKey::page`]), and when the last page (no `continue` in its
//! answer) arrives the pages are streamed into the list entry. The chain
//! of pages is followed by continue tokens: page N+1 is the request whose
//! `continue` equals page N's answer's `metadata.continue`. All of this
//! runs on the cache writer thread, which owns [`Pages`].

use std::collections::VecDeque;

use super::key::CacheKey;

/// Paged lists in progress kept at most (oldest dropped).
const MAX_OPEN: usize = 32;

/// What one LIST answer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// A complete list.
    Whole,
    /// One page: the `continue` it was asked with (None for the first)
    /// and the one its answer carries (None for the last).
    Part {
        /// The request's `continue`.
        this: Option<String>,
        /// The answer's `metadata.continue`.
        next: Option<String>,
    },
}

/// Classifies a LIST answer from the request's `continue` (decoded) and
/// the start of its body.
pub fn classify(continued: Option<&str>, body_prefix: &[u8]) -> Page {
    let this = continued.filter(|c| !c.is_empty()).map(str::to_owned);
    let next =
        crate::json::string_at(body_prefix, &["metadata", "continue"]).filter(|c| !c.is_empty());
    match (this, next) {
        (None, None) => Page::Whole,
        (this, next) => Page::Part { this, next },
    }
}

#[derive(Debug)]
struct Open {
    next: String,
    list: CacheKey,
    pages: Vec<CacheKey>,
}

/// Paged lists waiting for their next page.
#[derive(Debug, Default)]
pub struct Pages {
    open: VecDeque<Open>,
}

impl Pages {
    /// Records a stored page of `list`; returns every page in order when
    /// this was the last one. A page whose predecessor is unknown (e.g. a
    /// restart in between) returns None and is left to GC.
    pub fn add(
        &mut self,
        list: &CacheKey,
        page: CacheKey,
        this: Option<&str>,
        next: Option<&str>,
    ) -> Option<Vec<CacheKey>> {
        let mut chain = match this {
            None => Vec::new(),
            Some(token) => {
                let pos = self
                    .open
                    .iter()
                    .position(|o| o.next == token && &o.list == list)?;
                self.open.remove(pos)?.pages
            }
        };
        chain.push(page);
        match next {
            Some(next) => {
                if self.open.len() >= MAX_OPEN {
                    self.open.pop_front();
                }
                self.open.push_back(Open {
                    next: next.to_owned(),
                    list: list.clone(),
                    pages: chain,
                });
                None
            }
            None => Some(chain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::Agent;

    #[test]
    fn classification() {
        let whole = br#"{"kind":"PodList","metadata":{"resourceVersion":"5"},"items":[]}"#;
        let first = br#"{"kind":"PodList","metadata":{"resourceVersion":"5","continue":"abc","remainingItemCount":1},"items":["#;
        assert_eq!(classify(None, whole), Page::Whole);
        assert_eq!(
            classify(None, first),
            Page::Part {
                this: None,
                next: Some("abc".into())
            }
        );
        assert_eq!(
            classify(Some("abc="), whole),
            Page::Part {
                this: Some("abc=".into()),
                next: None
            }
        );
    }

    #[test]
    fn chains_pages_in_order() {
        let agent = Agent::from_user_agent(Some("kubelet"));
        let list = CacheKey::new(&agent, "/api/v1/pods", None, None).unwrap();
        let key = |t: Option<&str>| list.page(t);
        let mut pages = Pages::default();
        assert_eq!(pages.add(&list, key(None), None, Some("c1")), None);
        assert_eq!(
            pages.add(&list, key(Some("c1")), Some("c1"), Some("c2")),
            None
        );
        let all = pages.add(&list, key(Some("c2")), Some("c2"), None).unwrap();
        assert_eq!(all, [key(None), key(Some("c1")), key(Some("c2"))]);
        assert_ne!(key(None), list);
        assert_eq!(key(None).rel_path().parent(), list.rel_path().parent());
        // A page with an unknown predecessor is not assembled.
        assert_eq!(pages.add(&list, key(Some("zz")), Some("zz"), None), None);
    }
}
