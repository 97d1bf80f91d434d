//! The token trie: a lookup walks one path per wildcard branch, so its cost
//! follows the subject's tokens, not the number of subscriptions.
//!
//! Every walk is a loop, not recursion: a subject's token count is bounded
//! only by the configured length limit, and must not overflow the stack.

use super::filter::{first_token, path_edges, split_filter, Edge, FilterEnd};
use super::hash::FastMap;
use super::interest::Interest;
use super::matches::Matches;

#[derive(Default)]
pub(super) struct Trie {
    root: Node,
}

#[derive(Default)]
struct Node {
    literals: FastMap<Box<[u8]>, Node>,
    any_token: Option<Box<Node>>,
    /// Filters ending at this node.
    exact: Option<Box<Interest>>,
    /// Filters ending with `>` after this node.
    tail: Option<Box<Interest>>,
}

/// Dropping the default way recurses once per level; a deep trie (a long
/// subject) would overflow the stack, so children are dropped from a list.
impl Drop for Node {
    fn drop(&mut self) {
        let mut orphans = Vec::new();
        self.move_children_to(&mut orphans);
        while let Some(mut orphan) = orphans.pop() {
            orphan.move_children_to(&mut orphans);
            // `orphan` drops here, childless, without recursing.
        }
    }
}

impl Node {
    fn move_children_to(&mut self, orphans: &mut Vec<Node>) {
        orphans.extend(self.literals.drain().map(|(_, child)| child));
        orphans.extend(self.any_token.take().map(|child| *child));
    }

    fn child(&self, edge: Edge<'_>) -> Option<&Node> {
        match edge {
            Edge::Literal(token) => self.literals.get(token),
            Edge::AnyToken => self.any_token.as_deref(),
        }
    }

    fn child_mut(&mut self, edge: Edge<'_>) -> Option<&mut Node> {
        match edge {
            Edge::Literal(token) => self.literals.get_mut(token),
            Edge::AnyToken => self.any_token.as_deref_mut(),
        }
    }

    fn child_or_create(&mut self, edge: Edge<'_>) -> &mut Node {
        match edge {
            Edge::Literal(token) => self.literals.entry(token.into()).or_default(),
            Edge::AnyToken => self.any_token.get_or_insert_with(Box::default),
        }
    }

    fn remove_child(&mut self, edge: Edge<'_>) {
        match edge {
            Edge::Literal(token) => {
                self.literals.remove(token);
                // A map keeps its peak size; give memory back after churn.
                if self.literals.len() * 4 < self.literals.capacity() {
                    self.literals.shrink_to(self.literals.len() * 2);
                }
            }
            Edge::AnyToken => self.any_token = None,
        }
    }

    fn child_count(&self) -> usize {
        self.literals.len() + usize::from(self.any_token.is_some())
    }

    fn holds_interest(&self) -> bool {
        self.exact.is_some() || self.tail.is_some()
    }

    fn slot_mut(&mut self, end: FilterEnd) -> &mut Option<Box<Interest>> {
        match end {
            FilterEnd::Exact => &mut self.exact,
            FilterEnd::Tail => &mut self.tail,
        }
    }

    #[cfg(test)]
    fn count_nodes(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![self];
        while let Some(node) = pending.pop() {
            count += 1;
            pending.extend(node.literals.values());
            pending.extend(node.any_token.as_deref());
        }
        count
    }
}

impl Trie {
    /// The subscriptions of `filter`, created empty if needed.
    pub(super) fn interest_or_create(&mut self, filter: &[u8]) -> &mut Interest {
        let (path, end) = split_filter(filter);
        let mut node = &mut self.root;
        for edge in path_edges(path) {
            node = node.child_or_create(edge);
        }
        node.slot_mut(end).get_or_insert_with(Box::default)
    }

    /// Runs `edit` on the subscriptions of `filter` if it has any; when that
    /// leaves them empty, removes them and every node left without purpose,
    /// so subscription churn does not grow the trie.
    pub(super) fn edit<R>(
        &mut self,
        filter: &[u8],
        edit: impl FnOnce(&mut Interest) -> R,
    ) -> Option<R> {
        let (path, end) = split_filter(filter);
        let mut node = &mut self.root;
        for edge in path_edges(path) {
            node = node.child_mut(edge)?;
        }
        let slot = node.slot_mut(end);
        let interest = slot.as_deref_mut()?;
        let result = edit(interest);
        if interest.is_empty() {
            *slot = None;
            self.prune(path);
        }
        Some(result)
    }

    /// Cuts the deepest run of nodes on `path` that hold nothing but the
    /// next node of that run.
    fn prune(&mut self, path: Option<&[u8]>) {
        let edges = path_edges(path);
        let depth = edges.clone().count();
        // The first depth from which every node down the path is useless.
        let mut useless_from = None;
        let mut node = &self.root;
        for (at, edge) in edges.clone().enumerate() {
            let Some(child) = node.child(edge) else {
                return;
            };
            let is_last = at + 1 == depth;
            let useless = !child.holds_interest() && child.child_count() == usize::from(!is_last);
            match (useless, useless_from) {
                (false, _) => useless_from = None,
                (true, None) => useless_from = Some(at),
                (true, Some(_)) => {}
            }
            node = child;
        }
        let Some(cut_at) = useless_from else {
            return;
        };
        let mut node = &mut self.root;
        for (at, edge) in edges.enumerate() {
            if at == cut_at {
                node.remove_child(edge);
                return;
            }
            match node.child_mut(edge) {
                Some(child) => node = child,
                None => return,
            }
        }
    }

    /// Adds every subscription matching the literal `subject` to `out`.
    pub(super) fn collect(&self, subject: &[u8], out: &mut Matches) {
        // Each item: a node and the subject tokens still to match there
        // (`None`: all consumed). Only a node with both a literal and a `*`
        // child forks, so the stack stays empty for most subjects.
        let mut forks = ForkStack::default();
        let mut current = Some((&self.root, Some(subject)));
        while let Some((node, rest)) = current.take().or_else(|| forks.pop()) {
            let Some(rest) = rest else {
                if let Some(interest) = &node.exact {
                    interest.collect_into(out);
                }
                continue;
            };
            if let Some(interest) = &node.tail {
                interest.collect_into(out);
            }
            let (token, after) = first_token(rest);
            let literal = node.literals.get(token);
            let any_token = node.any_token.as_deref();
            current = match (literal, any_token) {
                (Some(literal), Some(any_token)) => {
                    forks.push((any_token, after));
                    Some((literal, after))
                }
                (Some(child), None) | (None, Some(child)) => Some((child, after)),
                (None, None) => None,
            };
        }
    }

    #[cfg(test)]
    pub(super) fn node_count(&self) -> usize {
        self.root.count_nodes()
    }
}

/// Pending forks of a walk: a few inline (a subject rarely forks more than
/// a handful of times), the rest spilled to the heap, so that a lookup does
/// not allocate.
#[derive(Default)]
struct ForkStack<'a> {
    inline: [Option<Fork<'a>>; 8],
    len: usize,
    spilled: Vec<Fork<'a>>,
}

/// A node and the subject tokens still to match there.
type Fork<'a> = (&'a Node, Option<&'a [u8]>);

impl<'a> ForkStack<'a> {
    fn push(&mut self, fork: Fork<'a>) {
        if self.len < self.inline.len() {
            self.inline[self.len] = Some(fork);
            self.len += 1;
        } else {
            self.spilled.push(fork);
        }
    }

    fn pop(&mut self) -> Option<Fork<'a>> {
        if let Some(fork) = self.spilled.pop() {
            return Some(fork);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
    }
}
