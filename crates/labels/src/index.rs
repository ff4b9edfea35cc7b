//! An in-memory inverted index from labels to object ids.

use std::borrow::{Borrow, Cow};
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use roaring::RoaringBitmap;

use crate::labels::{LabelLookup, Labels};
use crate::selector::{Op, Selector};

/// Answers selectors over many labeled objects without scanning them all.
///
/// Each object gets a dense slot number; for every key the index keeps a
/// posting bitmap of the slots that have the key, and one per `key=value`.
/// A selector is answered by intersecting the positive requirements'
/// postings, smallest first, and then subtracting the postings that negative
/// requirements (`!=`, `notin`, `!k`) exclude. Only when a selector has no
/// positive requirement does the answer start from every object.
///
/// Updates touch only the postings of the labels that changed.
///
/// ```
/// use drover_labels::{LabelIndex, Labels, Selector};
///
/// let mut index = LabelIndex::new();
/// index.insert("n1", Labels::try_from_pairs([("zone", "a"), ("tier", "web")])?);
/// index.insert("n2", Labels::try_from_pairs([("zone", "b"), ("tier", "web")])?);
/// index.insert("n3", Labels::try_from_pairs([("zone", "a")])?);
///
/// let sel: Selector = "zone=a,tier".parse()?;
/// assert_eq!(index.select(&sel), vec![&"n1"]);
/// let sel: Selector = "tier notin (web)".parse()?;
/// assert_eq!(index.select(&sel), vec![&"n3"]);
/// # Ok::<(), drover_labels::LabelError>(())
/// ```
pub struct LabelIndex<Id = String> {
    entries: Vec<Option<Entry<Id>>>,
    free: Vec<u32>,
    slot_of: HashMap<Id, u32>,
    all: RoaringBitmap,
    postings: HashMap<String, KeyPostings>,
}

#[derive(Debug)]
struct Entry<Id> {
    id: Id,
    labels: Labels,
}

#[derive(Debug, Default)]
struct KeyPostings {
    any: RoaringBitmap,
    by_value: HashMap<String, RoaringBitmap>,
}

impl<Id: fmt::Debug> fmt::Debug for LabelIndex<Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabelIndex")
            .field("objects", &self.slot_of.len())
            .field("keys", &self.postings.len())
            .finish_non_exhaustive()
    }
}

impl<Id: Eq + Hash + Clone> Default for LabelIndex<Id> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Id: Eq + Hash + Clone> LabelIndex<Id> {
    pub fn new() -> Self {
        LabelIndex {
            entries: Vec::new(),
            free: Vec::new(),
            slot_of: HashMap::new(),
            all: RoaringBitmap::new(),
            postings: HashMap::new(),
        }
    }

    /// Number of indexed objects.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Indexes `id` with `labels`, replacing (and returning) its previous
    /// labels. Only postings of labels that differ are touched.
    pub fn insert(&mut self, id: Id, labels: Labels) -> Option<Labels> {
        if let Some(&slot) = self.slot_of.get(&id) {
            let old = {
                let entry = self.entries[slot as usize]
                    .as_mut()
                    .expect("slot_of points at a live entry");
                std::mem::replace(&mut entry.labels, labels)
            };
            let new = &self.entries[slot as usize]
                .as_ref()
                .expect("slot_of points at a live entry")
                .labels;
            for (k, v) in old.iter() {
                if new.get(k) != Some(v) {
                    unpost(&mut self.postings, slot, k, v, !new.contains_key(k));
                }
            }
            for (k, v) in new.iter() {
                if old.get(k) != Some(v) {
                    post(&mut self.postings, slot, k, v, !old.contains_key(k));
                }
            }
            return Some(old);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.entries.len())
                    .expect("a LabelIndex holds at most u32::MAX objects");
                self.entries.push(None);
                slot
            }
        };
        for (k, v) in labels.iter() {
            post(&mut self.postings, slot, k, v, true);
        }
        self.all.insert(slot);
        self.slot_of.insert(id.clone(), slot);
        self.entries[slot as usize] = Some(Entry { id, labels });
        None
    }

    /// Removes every object.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.free.clear();
        self.slot_of.clear();
        self.all.clear();
        self.postings.clear();
    }

    /// Removes `id`, returning its labels.
    pub fn remove<Q>(&mut self, id: &Q) -> Option<Labels>
    where
        Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.slot_of.remove(id)?;
        let entry = self.entries[slot as usize].take()?;
        for (k, v) in entry.labels.iter() {
            unpost(&mut self.postings, slot, k, v, true);
        }
        self.all.remove(slot);
        self.free.push(slot);
        Some(entry.labels)
    }

    /// The labels of `id`.
    pub fn get<Q>(&self, id: &Q) -> Option<&Labels>
    where
        Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = *self.slot_of.get(id)?;
        self.entries[slot as usize].as_ref().map(|e| &e.labels)
    }

    /// Every indexed object, in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, &Labels)> + '_ {
        self.entries.iter().flatten().map(|e| (&e.id, &e.labels))
    }

    /// Ids of the objects `selector` matches, in unspecified order.
    pub fn select(&self, selector: &Selector) -> Vec<&Id> {
        self.select_with_labels(selector)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// Ids and labels of the objects `selector` matches, in unspecified order.
    pub fn select_with_labels(&self, selector: &Selector) -> Vec<(&Id, &Labels)> {
        if selector.is_everything() {
            return self.iter().collect();
        }
        let slots = self.slots(selector);
        let mut out = Vec::with_capacity(slots.len() as usize);
        out.extend(slots.iter().filter_map(|slot| {
            self.entries[slot as usize]
                .as_ref()
                .map(|e| (&e.id, &e.labels))
        }));
        out
    }

    /// How many objects `selector` matches.
    pub fn count(&self, selector: &Selector) -> u64 {
        self.slots(selector).len()
    }

    fn value_postings(&self, key: &str, value: &str) -> Option<&RoaringBitmap> {
        self.postings.get(key)?.by_value.get(value)
    }

    fn union<'a>(&self, key: &str, values: impl Iterator<Item = &'a String>) -> RoaringBitmap {
        let mut union = RoaringBitmap::new();
        for v in values {
            if let Some(b) = self.value_postings(key, v) {
                union |= b;
            }
        }
        union
    }

    fn slots(&self, selector: &Selector) -> RoaringBitmap {
        let mut include: Vec<Cow<'_, RoaringBitmap>> = Vec::new();
        let mut exclude: Vec<Cow<'_, RoaringBitmap>> = Vec::new();
        for req in selector.requirements() {
            let key = req.key();
            match req.op() {
                Op::Exists => match self.postings.get(key) {
                    Some(p) => include.push(Cow::Borrowed(&p.any)),
                    None => return RoaringBitmap::new(),
                },
                Op::Equals(v) => match self.value_postings(key, v) {
                    Some(b) => include.push(Cow::Borrowed(b)),
                    None => return RoaringBitmap::new(),
                },
                Op::In(values) => {
                    let union = self.union(key, values.iter());
                    if union.is_empty() {
                        return union;
                    }
                    include.push(Cow::Owned(union));
                }
                Op::GreaterThan(_) | Op::LessThan(_) => {
                    // Few distinct values per key: union the postings of
                    // those whose integer reading passes.
                    let mut union = RoaringBitmap::new();
                    if let Some(p) = self.postings.get(key) {
                        for (v, b) in &p.by_value {
                            if req.matches(&SingleLabel(key, v)) {
                                union |= b;
                            }
                        }
                    }
                    if union.is_empty() {
                        return union;
                    }
                    include.push(Cow::Owned(union));
                }
                Op::DoesNotExist => {
                    if let Some(p) = self.postings.get(key) {
                        exclude.push(Cow::Borrowed(&p.any));
                    }
                }
                Op::NotEquals(v) => {
                    if let Some(b) = self.value_postings(key, v) {
                        exclude.push(Cow::Borrowed(b));
                    }
                }
                Op::NotIn(values) => exclude.push(Cow::Owned(self.union(key, values.iter()))),
            }
        }
        // Starting from the most selective posting keeps every later
        // intersection no larger than the final answer's first bound.
        include.sort_by_key(|b| b.len());
        let mut include = include.into_iter();
        let mut acc = match include.next() {
            Some(first) => first.into_owned(),
            None => self.all.clone(),
        };
        for b in include {
            if acc.is_empty() {
                return acc;
            }
            acc &= b.as_ref();
        }
        for b in &exclude {
            if acc.is_empty() {
                break;
            }
            acc -= b.as_ref();
        }
        acc
    }
}

/// One label, to test a requirement against a posting's value.
struct SingleLabel<'a>(&'a str, &'a str);

impl LabelLookup for SingleLabel<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        (key == self.0).then_some(self.1)
    }
}

fn post(
    postings: &mut HashMap<String, KeyPostings>,
    slot: u32,
    key: &str,
    value: &str,
    new_key: bool,
) {
    let p = match postings.get_mut(key) {
        Some(p) => p,
        None => postings.entry(key.to_owned()).or_default(),
    };
    if new_key {
        p.any.insert(slot);
    }
    match p.by_value.get_mut(value) {
        Some(b) => {
            b.insert(slot);
        }
        None => {
            p.by_value
                .insert(value.to_owned(), RoaringBitmap::from_iter([slot]));
        }
    }
}

/// Removes `slot` from `key=value` (and from `key` when `gone_key`), dropping
/// postings that become empty so memory follows the live label set.
fn unpost(
    postings: &mut HashMap<String, KeyPostings>,
    slot: u32,
    key: &str,
    value: &str,
    gone_key: bool,
) {
    let Some(p) = postings.get_mut(key) else {
        return;
    };
    if let Some(b) = p.by_value.get_mut(value) {
        b.remove(slot);
        if b.is_empty() {
            p.by_value.remove(value);
        }
    }
    if gone_key {
        p.any.remove(slot);
        if p.any.is_empty() {
            postings.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::try_from_pairs(pairs.iter().copied()).unwrap()
    }

    fn sorted(mut ids: Vec<&&'static str>) -> Vec<&'static str> {
        ids.sort();
        ids.into_iter().copied().collect()
    }

    fn q(index: &LabelIndex<&'static str>, sel: &str) -> Vec<&'static str> {
        let sel = Selector::parse(sel).unwrap();
        let got = sorted(index.select(&sel));
        let mut scan: Vec<_> = index
            .iter()
            .filter(|(_, labels)| sel.matches(*labels))
            .map(|(id, _)| *id)
            .collect();
        scan.sort();
        assert_eq!(got, scan, "index and scan disagree on {sel}");
        assert_eq!(index.count(&sel), got.len() as u64);
        got
    }

    #[test]
    fn answers_every_operator() {
        let mut index = LabelIndex::new();
        index.insert("n1", l(&[("zone", "a"), ("tier", "web")]));
        index.insert("n2", l(&[("zone", "b"), ("tier", "web"), ("gpu", "")]));
        index.insert("n3", l(&[("zone", "a")]));
        index.insert("n4", Labels::new());
        assert_eq!(q(&index, ""), ["n1", "n2", "n3", "n4"]);
        assert_eq!(q(&index, "zone=a"), ["n1", "n3"]);
        assert_eq!(q(&index, "zone!=a"), ["n2", "n4"]);
        assert_eq!(q(&index, "zone in (a,b)"), ["n1", "n2", "n3"]);
        assert_eq!(q(&index, "zone notin (a,b)"), ["n4"]);
        assert_eq!(q(&index, "zone in (x,y)"), Vec::<&str>::new());
        assert_eq!(q(&index, "tier"), ["n1", "n2"]);
        assert_eq!(q(&index, "!tier"), ["n3", "n4"]);
        assert_eq!(q(&index, "gpu="), ["n2"]);
        assert_eq!(q(&index, "zone=a,tier=web"), ["n1"]);
        assert_eq!(q(&index, "zone=a,!tier"), ["n3"]);
        assert_eq!(q(&index, "missing"), Vec::<&str>::new());
        assert_eq!(q(&index, "!missing,zone=b"), ["n2"]);
        assert_eq!(q(&index, crate::NOTHING), Vec::<&str>::new());
        index.insert("n5", l(&[("cpus", "8")]));
        index.insert("n6", l(&[("cpus", "32")]));
        index.insert("n7", l(&[("cpus", "many")]));
        assert_eq!(q(&index, "cpus>8"), ["n6"]);
        assert_eq!(q(&index, "cpus>7,cpus<33"), ["n5", "n6"]);
        assert_eq!(q(&index, "cpus<0"), Vec::<&str>::new());
        assert_eq!(q(&index, "zone>0"), Vec::<&str>::new());
    }

    #[test]
    fn updates_and_removals_move_postings() {
        let mut index = LabelIndex::new();
        index.insert("n1", l(&[("zone", "a"), ("tier", "web")]));
        index.insert("n2", l(&[("zone", "a")]));
        let old = index.insert("n1", l(&[("zone", "b"), ("rack", "r1")]));
        assert_eq!(old, Some(l(&[("zone", "a"), ("tier", "web")])));
        assert_eq!(q(&index, "zone=a"), ["n2"]);
        assert_eq!(q(&index, "zone=b"), ["n1"]);
        assert_eq!(q(&index, "tier"), Vec::<&str>::new());
        assert_eq!(q(&index, "rack"), ["n1"]);
        assert_eq!(index.remove("n2"), Some(l(&[("zone", "a")])));
        assert_eq!(index.remove("n2"), None);
        assert_eq!(q(&index, "zone"), ["n1"]);
        assert_eq!(index.len(), 1);
        // The freed slot is reused without leaking the old object's postings.
        index.insert("n3", l(&[("tier", "db")]));
        assert_eq!(q(&index, "zone=a"), Vec::<&str>::new());
        assert_eq!(q(&index, "tier=db"), ["n3"]);
        assert_eq!(index.get("n3"), Some(&l(&[("tier", "db")])));
        let mut cleared = LabelIndex::new();
        cleared.insert("x", l(&[("zone", "a")]));
        cleared.clear();
        assert!(cleared.is_empty() && cleared.postings.is_empty());
        cleared.insert("y", l(&[("tier", "db")]));
        assert_eq!(q(&cleared, "zone=a"), Vec::<&str>::new());
        assert_eq!(q(&cleared, ""), ["y"]);
        // Emptied postings are dropped.
        index.remove("n1");
        index.remove("n3");
        assert!(index.postings.is_empty());
        assert!(index.is_empty());
        assert_eq!(q(&index, ""), Vec::<&str>::new());
    }
}
