//! The read side, against the model: every tree of a snapshot or of the whole database,
//! and the reads of one tree (get, len, ends, prefixes, ranges walked from both ends) as
//! a read or a write transaction answers them.

use std::collections::VecDeque;
use std::ops::Bound;

use mapkv::{Database, ReadTxn};

use crate::trees::{Tree, Trees, aligned, in_range};

/// Reads every tree of `r` (its length, then its entries) and compares with `model`.
pub fn check_view(r: &ReadTxn, model: &Trees, what: &str) {
    let names = r.tree_names().expect("tree_names");
    assert_eq!(
        names,
        model.keys().cloned().collect::<Vec<_>>(),
        "tree names of {what}"
    );
    for (name, m) in model {
        let t = r.open_tree(name).expect("open_tree");
        assert_eq!(
            t.len().expect("len"),
            m.len() as u64,
            "len of {name:?} as {what} sees it"
        );
        let got: Vec<(Vec<u8>, Vec<u8>)> = t
            .iter()
            .expect("iter")
            .map(|e| {
                e.map(|(k, v)| (k.to_vec(), aligned(name, v).to_vec()))
                    .expect("entry")
            })
            .collect();
        assert!(
            got.iter().map(|(k, v)| (k, v)).eq(m.iter()),
            "{name:?} as {what} sees it"
        );
    }
}

pub enum Reader<'a, 't> {
    Read(&'a mapkv::ReadTree<'t>),
    Write(&'a mapkv::WriteTree<'t>),
}

impl Reader<'_, '_> {
    pub fn get(&self, k: &[u8]) -> Option<Vec<u8>> {
        match self {
            Reader::Read(t) => t.get(k),
            Reader::Write(t) => t.get(k),
        }
        .expect("get")
        .map(<[u8]>::to_vec)
    }

    pub fn len(&self) -> u64 {
        match self {
            Reader::Read(t) => t.len(),
            Reader::Write(t) => t.len(),
        }
        .expect("len")
    }

    /// `first`, `last`, and `prefix(p)` forwards and backwards, against the model.
    pub fn check_ends(&self, m: &Tree, p: &[u8]) {
        let pair = |e: Option<(&[u8], &[u8])>| e.map(|(k, v)| (k.to_vec(), v.to_vec()));
        let (first, last) = match self {
            Reader::Read(t) => (t.first(), t.last()),
            Reader::Write(t) => (t.first(), t.last()),
        };
        let want = |e: Option<(&Vec<u8>, &Vec<u8>)>| e.map(|(k, v)| (k.clone(), v.clone()));
        assert_eq!(
            pair(first.expect("first")),
            want(m.first_key_value()),
            "first"
        );
        assert_eq!(pair(last.expect("last")), want(m.last_key_value()), "last");
        let want: Vec<&Vec<u8>> = m.keys().filter(|k| k.starts_with(p)).collect();
        for reverse in [false, true] {
            let range = match self {
                Reader::Read(t) => t.prefix(p),
                Reader::Write(t) => t.prefix(p),
            }
            .expect("prefix");
            let keys = range.keys();
            let got: Vec<Vec<u8>> = match reverse {
                false => keys.map(|k| k.expect("key").to_vec()).collect(),
                true => keys.rev().map(|k| k.expect("key").to_vec()).collect(),
            };
            let want: Vec<&Vec<u8>> = match reverse {
                false => want.clone(),
                true => want.iter().rev().copied().collect(),
            };
            assert!(got.iter().eq(want), "prefix {p:?} (reversed: {reverse})");
        }
    }

    /// Walks the range taking from the front or the back as `pattern`'s bits say, and
    /// compares with the model's range.
    pub fn check_range(
        &self,
        m: &Tree,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        pattern: u32,
        take: usize,
    ) {
        let mut want: VecDeque<(&Vec<u8>, &Vec<u8>)> =
            m.iter().filter(|(k, _)| in_range(k, &lo, &hi)).collect();
        let bounds = (lo, hi);
        let mut range = match self {
            Reader::Read(t) => t.range(bounds),
            Reader::Write(t) => t.range(bounds),
        }
        .expect("range");
        for step in 0..take {
            let back = pattern.rotate_right(step as u32) & 1 == 1;
            let (got, exp) = if back {
                (range.next_back(), want.pop_back())
            } else {
                (range.next(), want.pop_front())
            };
            let got = got.map(|e| e.expect("range entry"));
            assert_eq!(
                got.map(|(k, v)| (k.to_vec(), v.to_vec())),
                exp.map(|(k, v)| (k.clone(), v.clone())),
                "range step {step} (back: {back})"
            );
            if exp.is_none() {
                assert!(
                    range.next().is_none() && range.next_back().is_none(),
                    "fused"
                );
                break;
            }
        }
    }
}

/// `Database::check`, then every tree of the last commit against `model`.
pub fn check_all(db: &Database, model: &Trees) {
    db.check().expect("check");
    check_view(
        &db.begin_read().expect("begin_read"),
        model,
        "the last commit",
    );
}
