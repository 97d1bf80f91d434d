//! Token-level subject rules shared by the trie, the cache and the tests.
//!
//! Inputs are validated by the caller; on anything else these functions
//! still behave consistently (a `>` that is not last is an ordinary token)
//! and never panic.

const SEPARATOR: u8 = b'.';
const ONE_TOKEN: &[u8] = b"*";
const ALL_REMAINING: &[u8] = b">";

/// Does `filter` match the literal `subject`? Deliberately naive: the cache
/// uses it to find entries a subscription change affects, and the tests use
/// it as the oracle for the trie.
pub fn filter_matches(filter: &[u8], subject: &[u8]) -> bool {
    let mut subject_tokens = tokens(subject);
    let mut filter_tokens = tokens(filter).peekable();
    while let Some(wanted) = filter_tokens.next() {
        if wanted == ALL_REMAINING && filter_tokens.peek().is_none() {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(token) if wanted == ONE_TOKEN || wanted == token => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// True when `filter` has no wildcard, so it matches only the subject equal
/// to itself: the cache can then update one entry instead of scanning.
pub(super) fn is_literal(filter: &[u8]) -> bool {
    let (path, end) = split_filter(filter);
    end == FilterEnd::Exact
        && path
            .into_iter()
            .flat_map(tokens)
            .all(|token| token != ONE_TOKEN)
}

pub(super) fn tokens(bytes: &[u8]) -> std::slice::Split<'_, u8, fn(&u8) -> bool> {
    bytes.split(is_separator as fn(&u8) -> bool)
}

fn is_separator(byte: &u8) -> bool {
    *byte == SEPARATOR
}

/// Splits off the first token of a non-empty token sequence; `None` as the
/// rest means no tokens remain (as opposed to one empty token).
pub(super) fn first_token(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(is_separator) {
        Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
        None => (bytes, None),
    }
}

/// Where a filter's subscriptions hang off its last trie node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FilterEnd {
    /// The filter ends there: matches subjects with exactly these tokens.
    Exact,
    /// The filter ends with `>` after that node: one or more further tokens.
    Tail,
}

/// The tokens leading to a filter's trie node (`None`: the root itself, for
/// the filter `>`) and how the filter ends there.
pub(super) fn split_filter(filter: &[u8]) -> (Option<&[u8]>, FilterEnd) {
    if filter == ALL_REMAINING {
        return (None, FilterEnd::Tail);
    }
    match filter.strip_suffix(b".>") {
        Some(path) => (Some(path), FilterEnd::Tail),
        None => (Some(filter), FilterEnd::Exact),
    }
}

/// One step down the trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Edge<'a> {
    Literal(&'a [u8]),
    AnyToken,
}

impl<'a> Edge<'a> {
    pub(super) fn of(token: &'a [u8]) -> Self {
        if token == ONE_TOKEN {
            Edge::AnyToken
        } else {
            Edge::Literal(token)
        }
    }
}

/// The edges from the root to a filter's node, as returned by
/// [`split_filter`]; cloneable so removal can walk the path twice.
pub(super) fn path_edges(path: Option<&[u8]>) -> impl Iterator<Item = Edge<'_>> + Clone {
    path.into_iter().flat_map(tokens).map(Edge::of)
}
