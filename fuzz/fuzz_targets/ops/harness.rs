//! The database under test beside a `BTreeMap` model of what is committed and of what
//! the write transaction in progress sees; each change goes to both, and what the
//! database answers is checked against the model.

use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};

use mapkv::testing::{MemFile, open_with_backend};
use mapkv::{Database, Durability, Error, Options, ReadTxn, WriteTxn};

use crate::checks::Reader;
use crate::handles::UserPanic;
use crate::input::{MmapSize, mmap_bytes};
use crate::support::model::digest;
use crate::trees::{OpenModelTree, Tree, Trees, in_range, key_max};

pub enum Store {
    Mem(MemFile),
    File(tempfile::TempDir),
}

pub struct Harness {
    pub store: Store,
    pub page_size: usize,
    pub db: Option<Database>,
    pub read_only: bool,
    pub wtx: Option<WriteTxn>,
    pub durability: Durability,
    pub committed: Trees,
    /// The write transaction's view (meaningful while `wtx` is Some).
    pub pending: Trees,
    pub snapshot: Option<(ReadTxn, Trees)>,
    /// A `WriteTree` of the write transaction in progress was forgotten: `check()` right
    /// after its commit.
    pub forgot: bool,
    /// Digests of the states a kill -9 may leave: the last durable commit's, then each
    /// later commit's (`Durability::None`). Kept only when the input has a `Lifecycle`
    /// (`track_chain`); None while unknown (more than `CHAIN_MAX` states).
    pub chain: Option<Vec<u128>>,
    pub track_chain: bool,
}

/// States of `Harness::chain` kept at most.
const CHAIN_MAX: usize = 16;

impl Harness {
    pub fn open(&mut self, mmap: MmapSize, page_size: usize, read_only: bool) {
        let options = Options::new()
            .page_size(page_size)
            .mmap_size(mmap_bytes(mmap))
            .durability(self.durability)
            .read_only(read_only);
        let db = match &self.store {
            Store::Mem(m) => open_with_backend(m.backend(), options),
            Store::File(dir) => options.open(dir.path().join("fuzz.mapkv")),
        };
        self.db = Some(db.expect("open"));
        self.read_only = read_only;
        // What was opened is durable: the open synced, or a clean close did.
        self.chain = self.track_chain.then(|| vec![digest(&self.committed)]);
    }

    /// The file as a kill -9 would leave it now.
    pub fn image(&self) -> Vec<u8> {
        match &self.store {
            Store::Mem(m) => m.contents(),
            Store::File(dir) => std::fs::read(dir.path().join("fuzz.mapkv")).expect("read"),
        }
    }

    /// `committed` has just been committed with `durability`.
    pub fn note_commit(&mut self, durability: Durability) {
        if !self.track_chain {
            return;
        }
        let d = digest(&self.committed);
        match &mut self.chain {
            _ if durability == Durability::Immediate => self.chain = Some(vec![d]),
            Some(chain) if chain.len() < CHAIN_MAX => chain.push(d),
            _ => self.chain = None,
        }
    }

    pub fn db(&self) -> &Database {
        self.db.as_ref().expect("open")
    }

    /// The write transaction, begun if needed; None on a read-only handle.
    pub fn wtx(&mut self) -> Option<&mut WriteTxn> {
        if self.wtx.is_none() {
            match self.db().begin_write() {
                Ok(mut w) => {
                    assert!(!self.read_only, "begin_write on a read-only handle");
                    w.set_durability(self.durability);
                    self.wtx = Some(w);
                    self.pending = self.committed.clone();
                }
                Err(Error::ReadOnly) if self.read_only => return None,
                Err(e) => panic!("begin_write: {e}"),
            }
        }
        self.wtx.as_mut()
    }

    /// The write transaction, begun if needed, and its view of the trees, borrowed
    /// together; None on a read-only handle.
    pub fn wtx_and_pending(&mut self) -> Option<(&mut WriteTxn, &mut Trees)> {
        self.wtx()?;
        Some((self.wtx.as_mut().expect("begun"), &mut self.pending))
    }

    pub fn insert(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>) {
        let Some(wtx) = self.wtx() else { return };
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        match t.insert(&k, &v) {
            Ok(()) => {
                drop(t);
                self.key_taken(tree, k, v);
            }
            Err(Error::KeyTooLarge { size, max }) => {
                drop(t);
                self.key_refused(tree, &k, (size, max));
            }
            Err(e) => panic!("insert: {e}"),
        }
    }

    /// `insert_from` of `v`; `short`: the reader ends a byte early, which changes nothing.
    pub fn insert_from(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>, short: bool) {
        if self.wtx().is_none() {
            return;
        }
        // After `wtx`, which begins a transaction (and its model) if none is open.
        let old = self.pending.get(tree).and_then(|m| m.get(&k)).cloned();
        let wtx = self.wtx().expect("open");
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        let len = v.len() as u64 + u64::from(short);
        match t.insert_from(&k, len, &mut &v[..]) {
            Ok(()) => {
                drop(t);
                assert!(!short, "a short reader was accepted");
                self.key_taken(tree, k, v);
            }
            Err(Error::KeyTooLarge { size, max }) => {
                drop(t);
                self.key_refused(tree, &k, (size, max));
            }
            Err(Error::Io(e)) if short && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                assert!(t.get(&k).expect("get") == old.as_deref(), "changed");
                drop(t);
                self.pending.entry(tree.to_string()).or_default();
            }
            Err(e) => panic!("insert_from: {e}"),
        }
    }

    /// `insert_reserve` of `v.len()` bytes, of which the first `filled` 256ths are
    /// written in place; with `freeze`, tree `other` is opened twice half-way.
    pub fn insert_reserve(
        &mut self,
        tree: &str,
        other: &str,
        k: Vec<u8>,
        v: Vec<u8>,
        filled: u8,
        freeze: bool,
    ) {
        let key_max = key_max(self.page_size, tree);
        if self.wtx().is_none() {
            return;
        }
        let mut want = v;
        let filled = want.len() * filled as usize / 256;
        want[filled..].fill(0);
        let wtx = self.wtx().expect("open");
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        match t.insert_reserve(&k, want.len()) {
            Ok(bytes) => {
                assert!(k.len() <= key_max, "key of {} accepted", k.len());
                assert!(bytes.iter().all(|&b| b == 0), "reserved bytes are zeroed");
                let half = filled / 2;
                bytes[..half].copy_from_slice(&want[..half]);
                if freeze && other != tree {
                    let older = wtx.open_model_tree(other).expect("open other");
                    let newer = wtx.open_model_tree(other).expect("open other again");
                    assert!(matches!(older.len(), Err(Error::StaleTree(_))));
                    drop((older, newer));
                }
                bytes[half..filled].copy_from_slice(&want[half..filled]);
                assert!(t.get(&k).expect("get") == Some(&want[..]), "reads back");
                drop(t);
                if freeze && other != tree {
                    self.pending.entry(other.to_string()).or_default();
                }
                self.pending
                    .entry(tree.to_string())
                    .or_default()
                    .insert(k, want);
            }
            Err(Error::KeyTooLarge { size, max }) => {
                drop(t);
                self.key_refused(tree, &k, (size, max));
            }
            Err(e) => panic!("insert_reserve: {e}"),
        }
    }

    /// `k` was taken into `tree` with value `v`: it must fit.
    fn key_taken(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>) {
        let key_max = key_max(self.page_size, tree);
        assert!(k.len() <= key_max, "key of {} accepted", k.len());
        self.pending
            .entry(tree.to_string())
            .or_default()
            .insert(k, v);
    }

    /// `k` was refused as too large for `tree`, which the attempt opened, so created.
    fn key_refused(&mut self, tree: &str, k: &[u8], size_and_max: (usize, usize)) {
        check_key_too_large(k, key_max(self.page_size, tree), size_and_max);
        self.pending.entry(tree.to_string()).or_default();
    }

    /// `replace` (kind 0), `take` (1) or `update` (2: stores, removes or keeps, by the
    /// value's length) of `k`, against the model.
    pub fn rmw(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>, kind: u8) {
        let key_max = key_max(self.page_size, tree);
        let Some((wtx, pending)) = self.wtx_and_pending() else {
            return;
        };
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        let m = pending.entry(tree.to_string()).or_default();
        if k.len() > key_max {
            return;
        }
        match kind % 3 {
            0 => assert_eq!(t.replace(&k, &v).expect("replace"), m.insert(k, v)),
            1 => assert_eq!(t.take(&k).expect("take"), m.remove(&k)),
            _ => {
                let old = m.get(&k).cloned();
                let new = match v.len() % 3 {
                    0 => Some(v),
                    1 => None,
                    _ => old.clone(),
                };
                let mut seen = None;
                t.update(&k, |o| {
                    seen = Some(o.map(<[u8]>::to_vec));
                    new.clone()
                })
                .expect("update");
                assert_eq!(seen, Some(old), "update saw the old value");
                match new {
                    Some(v) => m.insert(k, v),
                    None => m.remove(&k),
                };
            }
        }
    }

    /// Two trees open at once, changed in turn, then `a` opened again while the first
    /// handle of it lives.
    pub fn two_trees(&mut self, a: &str, b: &str, start: u16, count: u8, value_len: u16) {
        if a == b {
            return;
        }
        let Some(wtx) = self.wtx() else { return };
        let mut ta = wtx.open_model_tree(a).expect("open_tree");
        let mut tb = wtx.open_model_tree(b).expect("open_tree");
        let mut changes = Vec::new();
        for i in 0..count as u16 {
            let n = start.wrapping_add(i) % 400;
            let (k, v) = (
                format!("k{n:04}").into_bytes(),
                vec![n as u8; value_len as usize % 9000],
            );
            match i % 2 {
                0 => ta.insert(&k, &v).expect("insert"),
                _ => tb.insert(&k, &v).expect("insert"),
            }
            changes.push((i % 2, k, v));
        }
        let k = format!("k{:04}", start % 400).into_bytes();
        let kept = ta.get(&k).expect("get");
        let copy = kept.map(<[u8]>::to_vec);
        let mut again = wtx.open_model_tree(a).expect("open_tree");
        again.insert(&k, &[7; 5000]).expect("insert");
        again.remove(&k).expect("remove");
        assert_eq!(
            kept.map(<[u8]>::to_vec),
            copy,
            "a slice of a stale handle changed"
        );
        assert!(
            matches!(ta.get(&k), Err(Error::StaleTree(_))),
            "stale handle"
        );
        drop((again, tb));
        for (which, k, v) in changes {
            let tree = [a, b][which as usize];
            self.pending
                .entry(tree.to_string())
                .or_default()
                .insert(k, v);
        }
        self.pending.entry(b.to_string()).or_default();
        self.pending.entry(a.to_string()).or_default().remove(&k);
    }

    /// `WriteTree::append`, checked against the model: taken exactly when `k` is past the
    /// last key and fits.
    pub fn append(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>) {
        let key_max = key_max(self.page_size, tree);
        let Some((wtx, pending)) = self.wtx_and_pending() else {
            return;
        };
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        let m = pending.entry(tree.to_string()).or_default();
        let past_last = m.keys().next_back().is_none_or(|last| k > *last);
        match t.append(&k, &v) {
            Ok(()) => {
                assert!(k.len() <= key_max && past_last, "append of {k:?} taken");
                m.insert(k, v);
            }
            Err(Error::KeyTooLarge { size, max }) => check_key_too_large(&k, key_max, (size, max)),
            Err(Error::Unsorted { index }) => {
                assert!(!past_last && k.len() <= key_max, "append of {k:?} refused");
                assert_eq!(index, m.len() as u64, "Unsorted index");
            }
            Err(e) => panic!("append: {e}"),
        }
        assert_eq!(t.len().expect("len"), m.len() as u64);
    }

    /// The key right after the last of `tree` (the write transaction's view): its last
    /// byte incremented, or a zero byte added after 0xff.
    pub fn successor(&self, tree: &str) -> Vec<u8> {
        let Some(last) = self.pending.get(tree).and_then(|m| m.keys().next_back()) else {
            return b"k".to_vec();
        };
        let mut k = last.clone();
        match k.last_mut() {
            Some(b) if *b < 0xff => *b += 1,
            _ => k.push(0),
        }
        k
    }

    pub fn remove(&mut self, tree: &str, k: &[u8]) {
        let Some(wtx) = self.wtx() else { return };
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        let was = t.remove(k).expect("remove");
        drop(t);
        let m = self.pending.entry(tree.to_string()).or_default();
        assert_eq!(was, m.remove(k).is_some(), "remove {k:?}");
    }

    pub fn remove_range(&mut self, tree: &str, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) {
        let Some(wtx) = self.wtx() else { return };
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        let removed = t
            .remove_range::<Vec<u8>, _>((lo.clone(), hi.clone()))
            .expect("remove_range");
        drop(t);
        let m = self.pending.entry(tree.to_string()).or_default();
        let before = m.len();
        m.retain(|k, _| !in_range(k, &lo, &hi));
        assert_eq!(
            removed,
            (before - m.len()) as u64,
            "remove_range {lo:?}..{hi:?}"
        );
    }

    pub fn retain(&mut self, tree: &str, modulus: u8, seed: u8, panic_at: Option<u8>) {
        let Some((wtx, pending)) = self.wtx_and_pending() else {
            return;
        };
        let m = pending.entry(tree.to_string()).or_default();
        let keep = |k: &[u8], v: &[u8]| {
            let h = k
                .iter()
                .chain(v.iter().take(16))
                .fold(u32::from(seed), |h, &b| {
                    h.wrapping_mul(31).wrapping_add(u32::from(b))
                });
            h.wrapping_add(v.len() as u32) % (u32::from(modulus % 4) + 1) != 0
        };
        let mut seen = Vec::new();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut t = wtx.open_model_tree(tree).expect("open_tree");
            t.retain(|k, v| {
                if panic_at.is_some_and(|n| usize::from(n) == seen.len()) {
                    panic_any(UserPanic);
                }
                assert_eq!(m.get(k).map(Vec::as_slice), Some(v), "retain offers {k:?}");
                seen.push(k.to_vec());
                keep(k, v)
            })
            .expect("retain")
        }));
        let Ok(removed) = outcome else {
            self.end_interrupted(tree);
            return;
        };
        assert!(
            seen.iter().eq(m.keys()),
            "retain offers each entry once, in order"
        );
        let before = m.len();
        m.retain(|k, v| keep(k, v));
        assert_eq!(removed, (before - m.len()) as u64, "retain");
    }

    /// The write transaction was cut inside a change (a panic unwound through it): it
    /// must refuse everything, its commit included, and ends as an abort would.
    pub fn end_interrupted(&mut self, tree: &str) {
        let wtx = self.wtx.take().expect("a write transaction");
        assert!(
            wtx.open_model_tree(tree).is_err(),
            "a change after an interrupted one"
        );
        assert!(wtx.commit().is_err(), "commit after an interrupted change");
        self.pending = self.committed.clone();
    }

    /// Runs `f` on the tree as the write transaction sees it (if one is open and
    /// `committed` is false) or as a fresh read transaction does.
    pub fn read<R>(
        &mut self,
        tree: &str,
        committed: bool,
        f: impl FnOnce(Reader<'_, '_>, Option<&Tree>) -> R,
    ) -> Option<R> {
        if !committed && let Some(wtx) = self.wtx.as_mut() {
            let t = wtx.open_model_tree(tree).expect("open_tree");
            let m = self.pending.entry(tree.to_string()).or_default();
            return Some(f(Reader::Write(&t), Some(m)));
        }
        let rtx = self.db().begin_read().expect("begin_read");
        let m = self.committed.get(tree);
        match rtx.open_tree(tree) {
            Ok(t) => Some(f(Reader::Read(&t), m)),
            Err(Error::TreeNotFound(n)) => {
                assert!(m.is_none() && n == tree, "tree {tree} not found");
                None
            }
            Err(e) => panic!("open_tree: {e}"),
        }
    }

    pub fn commit(&mut self) {
        if let Some(w) = self.wtx.take() {
            w.commit().expect("commit");
            self.committed = std::mem::take(&mut self.pending);
            self.note_commit(self.durability);
            if std::mem::take(&mut self.forgot) {
                self.db()
                    .check()
                    .expect("check after a commit with a forgotten tree");
            }
        }
    }

    pub fn abort(&mut self) {
        if let Some(w) = self.wtx.take() {
            w.abort();
            self.forgot = false;
        }
    }

    pub fn close(&mut self) {
        self.snapshot = None;
        self.wtx = None;
        self.forgot = false;
        self.db = None;
    }
}

/// A `KeyTooLarge { size, max }` for `k` must give its size and the tree's limit, which
/// it exceeds.
fn check_key_too_large(k: &[u8], key_max: usize, (size, max): (usize, usize)) {
    assert!(size == k.len() && max == key_max && size > max);
}
