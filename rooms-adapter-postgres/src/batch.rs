//! How a pipeline groups publishes into statements: consecutive inline
//! notifications go into one `SELECT pg_notify(c, p) FROM unnest($1, $2)`
//! (one transaction, one commit, so one turn of PostgreSQL's cluster-wide
//! notify lock for many messages), an attachment is a statement of its own,
//! and the order of the queue is kept. PostgreSQL delivers identical
//! notifications (same channel and payload) of one transaction once, so a
//! batch is cut before a repeat: two equal broadcasts stay two messages.

use std::collections::HashSet;
use std::ops::Range;

/// One statement of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Statement {
    /// These publishes (indices into the queue), all inline, notified in
    /// order by one statement.
    Notify(Range<usize>),
    /// The publish at this index goes through the attachments table.
    Attach(usize),
}

/// The statements for `publishes` (each a channel and its inline text, or
/// `None` when it needs an attachment), in queue order, with at most
/// `max_batch` notifications per statement.
pub(crate) fn plan(publishes: &[(&str, Option<&str>)], max_batch: usize) -> Vec<Statement> {
    let max_batch = max_batch.max(1);
    let mut statements = Vec::new();
    let mut start = 0;
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for (index, (channel, text)) in publishes.iter().enumerate() {
        match text {
            Some(text) => {
                if index - start == max_batch || !seen.insert((channel, text)) {
                    statements.push(Statement::Notify(start..index));
                    start = index;
                    seen.clear();
                    seen.insert((channel, text));
                }
            }
            None => {
                if start < index {
                    statements.push(Statement::Notify(start..index));
                }
                statements.push(Statement::Attach(index));
                start = index + 1;
                seen.clear();
            }
        }
    }
    if start < publishes.len() {
        statements.push(Statement::Notify(start..publishes.len()));
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::Statement::{Attach, Notify};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inline_runs_share_a_statement_and_attachments_cut_them() {
        let publishes = [
            ("a", Some("1")),
            ("b", Some("2")),
            ("a", None),
            ("a", Some("3")),
        ];
        assert_eq!(
            plan(&publishes, 256),
            vec![Notify(0..2), Attach(2), Notify(3..4)]
        );
        assert_eq!(plan(&[], 256), vec![]);
        assert_eq!(plan(&[("a", None)], 256), vec![Attach(0)]);
    }

    #[test]
    fn a_repeat_starts_a_new_statement() {
        let publishes = [
            ("a", Some("x")),
            ("b", Some("x")),
            ("a", Some("x")),
            ("a", Some("y")),
        ];
        assert_eq!(plan(&publishes, 256), vec![Notify(0..2), Notify(2..4)]);
    }

    #[test]
    fn batches_are_bounded() {
        let texts: Vec<String> = (0..5).map(|n| n.to_string()).collect();
        let publishes: Vec<(&str, Option<&str>)> =
            texts.iter().map(|t| ("a", Some(t.as_str()))).collect();
        assert_eq!(
            plan(&publishes, 2),
            vec![Notify(0..2), Notify(2..4), Notify(4..5)]
        );
        assert_eq!(plan(&publishes, 0).len(), 5);
    }

    proptest! {
        /// Every publish is in exactly one statement, in order; no
        /// statement repeats a (channel, text) pair or exceeds the bound.
        #[test]
        fn plans_cover_in_order_without_repeats(
            publishes in proptest::collection::vec(
                (0u8..3, proptest::option::of(0u8..4)), 0..60),
            max_batch in 1usize..8,
        ) {
            let owned: Vec<(String, Option<String>)> = publishes
                .iter()
                .map(|(c, t)| (c.to_string(), t.map(|t| t.to_string())))
                .collect();
            let view: Vec<(&str, Option<&str>)> =
                owned.iter().map(|(c, t)| (c.as_str(), t.as_deref())).collect();
            let mut next = 0;
            for statement in plan(&view, max_batch) {
                match statement {
                    Attach(index) => {
                        prop_assert_eq!(index, next);
                        prop_assert!(view[index].1.is_none());
                        next += 1;
                    }
                    Notify(range) => {
                        prop_assert_eq!(range.start, next);
                        prop_assert!(!range.is_empty() && range.len() <= max_batch);
                        let mut seen = HashSet::new();
                        for (channel, text) in &view[range.clone()] {
                            let text = text.expect("inline");
                            prop_assert!(seen.insert((*channel, text)));
                        }
                        next = range.end;
                    }
                }
            }
            prop_assert_eq!(next, view.len());
        }
    }
}
