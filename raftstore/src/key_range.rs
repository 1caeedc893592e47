//! etcd's key-range convention, as pure functions: a range is `[key, range_end)`, an empty
//! `range_end` means the single key `key`, a `range_end` of `\0` means every key `>= key`, and
//! `key` = `range_end` = `\0` means every key.
//!
//! Owns only the interpretation of ranges; it must not touch storage.

use std::ops::Bound;

/// An etcd-style key range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// First key (inclusive).
    pub key: Vec<u8>,
    /// End (exclusive); see the module docs for the special values.
    pub range_end: Vec<u8>,
}

impl KeyRange {
    /// The range `[key, range_end)`.
    pub fn new(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            key: key.into(),
            range_end: range_end.into(),
        }
    }

    /// Whether the range is the single key `key`.
    pub fn is_single(&self) -> bool {
        self.range_end.is_empty()
    }

    /// Whether `k` lies in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        if self.is_single() {
            return k == self.key.as_slice();
        }
        let from = self.start_bound();
        let above = match &from {
            Bound::Included(s) => k >= s.as_slice(),
            _ => true,
        };
        above && (self.unbounded_above() || k < self.range_end.as_slice())
    }

    /// Whether the range can hold no key: a `range_end` (other than `\0`) not above `key`.
    pub fn is_empty(&self) -> bool {
        !self.is_single() && !self.unbounded_above() && self.key >= self.range_end
    }

    fn unbounded_above(&self) -> bool {
        self.range_end == [0]
    }

    fn start_bound(&self) -> Bound<Vec<u8>> {
        if self.key == [0] && self.unbounded_above() {
            Bound::Unbounded
        } else {
            Bound::Included(self.key.clone())
        }
    }

    /// The `(start, end)` bounds to scan an ordered map or sled tree with.
    pub fn bounds(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        if self.is_single() {
            return (
                Bound::Included(self.key.clone()),
                Bound::Included(self.key.clone()),
            );
        }
        let end = if self.unbounded_above() {
            Bound::Unbounded
        } else {
            Bound::Excluded(self.range_end.clone())
        };
        // An inverted range is empty; sled and BTreeMap would panic on it.
        if let (Bound::Included(s), Bound::Excluded(e)) = (&self.start_bound(), &end) {
            if s >= e {
                return (Bound::Excluded(Vec::new()), Bound::Included(Vec::new()));
            }
        }
        (self.start_bound(), end)
    }

    /// The longest prefix every key of the range starts with (for prefix-based watches).
    pub fn common_prefix(&self) -> Vec<u8> {
        if self.is_single() {
            return self.key.clone();
        }
        if self.unbounded_above() {
            return Vec::new();
        }
        // Any k with key <= k < end is sandwiched between two strings sharing this prefix.
        self.key
            .iter()
            .zip(&self.range_end)
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| *a)
            .collect()
    }
}

/// The `range_end` that makes `[prefix, range_end)` cover every key starting with `prefix`
/// (`\0`, i.e. all keys, for an empty or all-`0xff` prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_prefix_from_key_and_all() {
        let single = KeyRange::new("a", "");
        assert!(single.contains(b"a") && !single.contains(b"ab"));
        let prefix = KeyRange::new("a", prefix_end(b"a"));
        assert!(prefix.contains(b"a") && prefix.contains(b"az") && !prefix.contains(b"b"));
        let from = KeyRange::new("b", vec![0]);
        assert!(from.contains(b"zz") && !from.contains(b"a"));
        let all = KeyRange::new(vec![0], vec![0]);
        assert!(all.contains(b"") && all.contains(b"\xff"));
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
        let inverted = KeyRange::new("b", "a");
        let map: std::collections::BTreeMap<Vec<u8>, ()> =
            [(b"a".to_vec(), ()), (b"b".to_vec(), ())]
                .into_iter()
                .collect();
        assert_eq!(map.range(inverted.bounds()).count(), 0);
        assert!(inverted.is_empty() && KeyRange::new("a", "a").is_empty());
        assert!(!single.is_empty() && !from.is_empty() && !all.is_empty() && !prefix.is_empty());
        assert_eq!(KeyRange::new("/a/b", "/a/c").common_prefix(), b"/a/");
    }
}
