//! Paged LISTs (`limit` + `continue`) assembled into one cached list.
//!
//! client-go lists with `limit=500`. Caching page 1 as "the list" would be
//! a disaster offline (kubelet would see a partial pod list and kill the
//! rest), so each page is stored under its own page key, and when the last
//! page (no `continue` in its answer) arrives the pages are streamed into
//! the list entry by [`crate::cache::store::Store::assemble`]. The chain of
//! pages is followed by continue tokens: page N+1 is the request whose
//! `continue` equals page N's answer's `metadata.continue`.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::key::CacheKey;
use crate::identity::Agent;
use crate::request::Query;

/// Paged lists in progress kept at most (oldest dropped).
const MAX_OPEN: usize = 32;
/// The query parameter that makes a page's key distinct from the list's.
const PAGE_PARAM: &str = "lite-apiserver-page";

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

/// Classifies a LIST answer from its query and the start of its body.
pub fn classify(query: &Query, body_prefix: &[u8]) -> Page {
    let this = query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(|c| String::from_utf8_lossy(c).into_owned());
    let next =
        super::json::string_at(body_prefix, &["metadata", "continue"]).filter(|c| !c.is_empty());
    match (this, next) {
        (None, None) => Page::Whole,
        (this, next) => Page::Part { this, next },
    }
}

/// The entry key of one page.
pub fn page_key(
    agent: &Agent,
    path: &str,
    query: Option<&str>,
    accept: Option<&str>,
    this: Option<&str>,
) -> Option<CacheKey> {
    let marker = this.map_or_else(
        || "first".to_owned(),
        |t| t.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
    );
    let query = match query {
        Some(q) => format!("{q}&{PAGE_PARAM}={marker}"),
        None => format!("{PAGE_PARAM}={marker}"),
    };
    CacheKey::new(agent, path, Some(&query), accept).ok()
}

struct Open {
    next: String,
    list: CacheKey,
    pages: Vec<CacheKey>,
}

/// Paged lists waiting for their next page.
#[derive(Default)]
pub struct Pages {
    open: Mutex<VecDeque<Open>>,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages").finish_non_exhaustive()
    }
}

impl Pages {
    /// Records a stored page of `list`; returns every page in order when
    /// this was the last one. A page whose predecessor is unknown (e.g. a
    /// restart in between) returns None and is left to GC.
    pub fn add(
        &self,
        list: &CacheKey,
        page: CacheKey,
        this: Option<&str>,
        next: Option<&str>,
    ) -> Option<Vec<CacheKey>> {
        let mut open = self.open.lock().ok()?;
        let mut chain = match this {
            None => Vec::new(),
            Some(token) => {
                let pos = open
                    .iter()
                    .position(|o| o.next == token && &o.list == list)?;
                open.remove(pos)?.pages
            }
        };
        chain.push(page);
        match next {
            Some(next) => {
                if open.len() >= MAX_OPEN {
                    open.pop_front();
                }
                open.push_back(Open {
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

    #[test]
    fn classification() {
        let whole = br#"{"kind":"PodList","metadata":{"resourceVersion":"5"},"items":[]}"#;
        let first = br#"{"kind":"PodList","metadata":{"resourceVersion":"5","continue":"abc","remainingItemCount":1},"items":["#;
        let q = |text| Query::parse(Some(text));
        assert_eq!(classify(&q("limit=2"), whole), Page::Whole);
        assert_eq!(
            classify(&q("limit=2"), first),
            Page::Part {
                this: None,
                next: Some("abc".into())
            }
        );
        assert_eq!(
            classify(&q("limit=2&continue=abc%3D"), whole),
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
        let key =
            |t: Option<&str>| page_key(&agent, "/api/v1/pods", Some("limit=1"), None, t).unwrap();
        let pages = Pages::default();
        assert_eq!(pages.add(&list, key(None), None, Some("c1")), None);
        assert_eq!(
            pages.add(&list, key(Some("c1")), Some("c1"), Some("c2")),
            None
        );
        let all = pages.add(&list, key(Some("c2")), Some("c2"), None).unwrap();
        assert_eq!(all, [key(None), key(Some("c1")), key(Some("c2"))]);
        assert_ne!(key(None), list);
        // A page with an unknown predecessor is not assembled.
        assert_eq!(pages.add(&list, key(Some("zz")), Some("zz"), None), None);
    }
}
