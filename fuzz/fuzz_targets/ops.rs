//! Arbitrary sequences of operations against a `BTreeMap` model: inserts, removes, gets,
//! ranges in both directions (front and back mixed), trees opened and deleted, commits,
//! aborts, reopens (with another mmap_size, durability, read-only), long-lived snapshots,
//! at every page size; `check()` after the run. Mostly on an in-memory backend (fast, no
//! files); one input in sixteen on a real temporary file, so the map is exercised too.
//!
//! What safe code may do to handles is fuzzed too: a `WriteTree` forgotten
//! (`mem::forget`) after some changes, a panic from user code while a tree is borrowed
//! (caught), and the database, readers and the writer dropped, aborted or committed in
//! any order, the database first included.

#![no_main]

#[path = "common/mem.rs"]
mod mem;

// The model's digest and a full read of a database, shared with the crash target.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, VecDeque};
use std::ffi::c_char;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::atomic::Ordering;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mapkv::testing::{MemFile, open_with_backend};
use mapkv::{Database, Durability, Error, Options, ReadTxn, TreeOptions, WriteTxn};

use support::model::{digest, read_all};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;
type Trees = BTreeMap<String, Tree>;

const TREE_NAMES: [&str; 4] = ["a", "b", "", "a tree with a longer name"];

/// Tree "b" stores its values aligned to 16 bytes (FORMAT.md#aligned-values); the
/// others are plain. Every write transaction opens trees with these options, and
/// `Database::check` verifies the alignment.
const ALIGNED_TREE: (&str, usize) = ("b", 16);

fn tree_options(tree: &str) -> TreeOptions {
    match tree == ALIGNED_TREE.0 {
        true => TreeOptions::new().value_align(ALIGNED_TREE.1),
        false => TreeOptions::new(),
    }
}

/// The longest key `tree` takes: the padding of aligned values comes out of its room.
fn key_max(page_size: usize, tree: &str) -> usize {
    let pads = match tree == ALIGNED_TREE.0 {
        true => 2 * (ALIGNED_TREE.1 - 1),
        false => 0,
    };
    page_size / 2 - 128 - pads
}

/// `value`, after checking that a value of the aligned tree lies at an aligned address
/// (page buffers are 64-byte aligned, the map page-aligned).
fn aligned<'v>(tree: &str, value: &'v [u8]) -> &'v [u8] {
    if tree == ALIGNED_TREE.0 {
        assert_eq!(
            value.as_ptr() as usize % ALIGNED_TREE.1,
            0,
            "an unaligned value"
        );
    }
    value
}

trait OpenModelTree {
    fn open_model_tree(&self, tree: &str) -> mapkv::Result<mapkv::WriteTree<'_>>;
}

impl OpenModelTree for mapkv::WriteTxn {
    fn open_model_tree(&self, tree: &str) -> mapkv::Result<mapkv::WriteTree<'_>> {
        self.open_tree_with(tree, tree_options(tree))
    }
}

#[derive(Arbitrary, Debug)]
enum Key {
    /// One of a few hundred short keys, so that operations meet.
    Index(u16),
    Bytes(Vec<u8>),
    /// A long key (up to and past the limit), `len` bytes after a short prefix.
    Long(u8, u16),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Small(Vec<u8>),
    /// `len` bytes (up to about 80 KB: overflow blobs of several pages).
    Sized(u32, u8),
}

#[derive(Arbitrary, Debug)]
enum KeyBound {
    Unbounded,
    Included(Key),
    Excluded(Key),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MmapSize {
    Whole,
    Zero,
    /// This many pages of 4 KiB.
    Pages(u8),
}

/// Where a panic strikes while a `WriteTree` is borrowed. All but `MidChange` come from
/// user code between two changes of the engine: the transaction must stay usable and
/// keep every change made before the panic.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum PanicPoint {
    /// Right after `open_tree`, before any change.
    Opened,
    /// After `insert` returned.
    AfterInsert,
    /// After `remove` returned.
    AfterRemove,
    /// While a `Range` over the tree is alive (after its first entry).
    InRange,
    /// After a run of inserts and removes.
    AfterRun,
    /// Inside the engine, at its `n % 8 + 1`th read or write of the in-memory file during
    /// a run of inserts and removes (if it gets that far): the change is cut half-way, so
    /// the transaction must refuse further changes and its commit, and nothing of it
    /// may become visible. Only where the database lives in a `MemFile`.
    MidChange(u8),
}

/// What becomes of the write transaction when its turn comes in a `Lifecycle`.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Fate {
    Commit,
    Abort,
    Drop,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct WriterEnd {
    /// Inserted into this tree just before the fate, when the database may be gone.
    tree: u8,
    start: u16,
    count: u8,
    immediate: bool,
    fate: Fate,
}

/// Every handle ends, in a fuzzer-chosen order: the database, the long-lived snapshot
/// and a few new readers (each checked against its model first), the write transaction
/// (the one in progress, or a new one). Then the file is reopened.
#[derive(Arbitrary, Debug)]
struct Lifecycle {
    /// New readers (0 to 3).
    readers: u8,
    /// Begins a write transaction if none is in progress; its end (otherwise the one in
    /// progress is dropped when its turn comes).
    writer: Option<WriterEnd>,
    /// Which handle ends next, as an index into those still alive (default: the first).
    order: Vec<u8>,
    /// For the reopen.
    mmap: MmapSize,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Insert {
        tree: u8,
        key: Key,
        value: Value,
    },
    InsertRun {
        tree: u8,
        start: u16,
        count: u8,
        value_len: u16,
        long: bool,
    },
    Remove {
        tree: u8,
        key: Key,
    },
    RemoveRun {
        tree: u8,
        start: u16,
        count: u8,
        step: u8,
    },
    Get {
        tree: u8,
        key: Key,
        committed: bool,
    },
    Range {
        tree: u8,
        lo: KeyBound,
        hi: KeyBound,
        pattern: u32,
        take: u8,
        committed: bool,
    },
    Len {
        tree: u8,
        committed: bool,
    },
    OpenTree {
        tree: u8,
    },
    DeleteTree {
        tree: u8,
    },
    TreeNames {
        committed: bool,
    },
    Commit,
    Abort,
    Durability(bool),
    Reopen {
        mmap: MmapSize,
        immediate: bool,
        read_only: bool,
        page_size: u8,
    },
    Snapshot,
    CheckSnapshot,
    Check,
    /// Opens a tree, makes `count` changes (a remove every `remove_every`-th), and
    /// `mem::forget`s the `WriteTree`.
    ForgetTree {
        tree: u8,
        start: u16,
        count: u8,
        value_len: u16,
        remove_every: u8,
    },
    /// Opens a tree and panics (caught) at `point`.
    UserPanic {
        tree: u8,
        key: Key,
        value: Value,
        point: PanicPoint,
    },
    Lifecycle(Lifecycle),
    /// `Database::compact` (in place), when no write transaction of the harness is open.
    Compact,
    /// `remove_range` between two bounds of any kinds (inverted and empty ranges too).
    RemoveRange {
        tree: u8,
        lo: KeyBound,
        hi: KeyBound,
    },
    /// `retain`, keeping the entries whose bytes hash with `seed` to a number that is not
    /// a multiple of `modulus % 4 + 1` (1: none kept). With `panic_at`, the predicate
    /// panics (caught) at that call if it gets there: a change cut half-way by user code,
    /// after which the transaction refuses further changes and its commit.
    Retain {
        tree: u8,
        modulus: u8,
        seed: u8,
        panic_at: Option<u8>,
    },
    /// `WriteTree::append` of `key`: taken exactly when it is past the tree's last key
    /// (and not too long), else refused (`Unsorted` with the tree's length) with no change.
    Append {
        tree: u8,
        key: Key,
        value: Value,
    },
    /// `count` appends, each key the successor of the tree's last, of values of
    /// `value_len` bytes (blobs past about 2 KiB at 4 KiB pages), then one of the last key
    /// again (refused).
    AppendRun {
        tree: u8,
        count: u8,
        value_len: u16,
    },
    /// `replace`, `take` or `update` of one key, against the model.
    Rmw {
        tree: u8,
        key: Key,
        value: Value,
        kind: u8,
    },
    /// `first`, `last`, and the prefixes of `key` read both ways.
    Ends {
        tree: u8,
        key: Key,
        committed: bool,
    },
    /// Two trees open at once and changed in turn; then the first opened again while
    /// the older handle lives: that one is stale, and what it returned stays intact.
    TwoTrees {
        a: u8,
        b: u8,
        start: u16,
        count: u8,
        value_len: u16,
    },
    /// `insert_from` of `value` streamed from a reader; with `short`, the reader gives
    /// one byte less than the length asked for: `Error::Io`, nothing changed, and the
    /// transaction still usable.
    InsertFrom {
        tree: u8,
        key: Key,
        value: Value,
        short: bool,
    },
    /// `insert_reserve` of `value`'s length, filled in place up to `filled` 256ths (the
    /// rest must read as zeros); with `freeze`, another tree is opened twice between the
    /// two halves of the filling, which freezes every dirty page but the reserved one.
    InsertReserve {
        tree: u8,
        key: Key,
        value: Value,
        filled: u8,
        freeze: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    page_size: u8,
    mmap: MmapSize,
    /// A real file when this is 0 mod 16.
    file: u8,
    ops: Vec<Op>,
}

fn page_size_of(b: u8) -> usize {
    4096 << (b % 5)
}

fn mmap_bytes(m: MmapSize) -> u64 {
    match m {
        MmapSize::Whole => u64::MAX,
        MmapSize::Zero => 0,
        MmapSize::Pages(n) => u64::from(n) * 4096,
    }
}

fn key_bytes(k: &Key) -> Vec<u8> {
    match k {
        Key::Index(i) => format!("k{:04}", i % 400).into_bytes(),
        Key::Bytes(b) => b.clone(),
        Key::Long(p, len) => {
            let mut k = vec![b'L', *p % 8];
            k.resize(2 + (*len as usize % 33_000), b'x');
            k
        }
    }
}

fn value_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Small(b) => b.clone(),
        Value::Sized(len, fill) => {
            let len = *len as usize % 80_000;
            (0..len)
                .map(|i| fill.wrapping_add((i / 251) as u8))
                .collect()
        }
    }
}

fn name(t: u8) -> &'static str {
    TREE_NAMES[t as usize % TREE_NAMES.len()]
}

fn bound(b: &KeyBound) -> Bound<Vec<u8>> {
    match b {
        KeyBound::Unbounded => Bound::Unbounded,
        KeyBound::Included(k) => Bound::Included(key_bytes(k)),
        KeyBound::Excluded(k) => Bound::Excluded(key_bytes(k)),
    }
}

fn in_range(k: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(l) => k >= l.as_slice(),
        Bound::Excluded(l) => k > l.as_slice(),
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => k <= h.as_slice(),
        Bound::Excluded(h) => k < h.as_slice(),
    };
    above && below
}

enum Store {
    Mem(MemFile),
    File(tempfile::TempDir),
}

struct Harness {
    store: Store,
    page_size: usize,
    db: Option<Database>,
    read_only: bool,
    wtx: Option<WriteTxn>,
    durability: Durability,
    committed: Trees,
    /// The write transaction's view (meaningful while `wtx` is Some).
    pending: Trees,
    snapshot: Option<(ReadTxn, Trees)>,
    /// A `WriteTree` of the write transaction in progress was forgotten: `check()` right
    /// after its commit.
    forgot: bool,
    /// Digests of the states a kill -9 may leave: the last durable commit's, then each
    /// later commit's (`Durability::None`). Kept only when the input has a `Lifecycle`
    /// (`track_chain`); None while unknown (more than `CHAIN_MAX` states).
    chain: Option<Vec<u128>>,
    track_chain: bool,
}

/// States of `Harness::chain` kept at most.
const CHAIN_MAX: usize = 16;

impl Harness {
    fn open(&mut self, mmap: MmapSize, page_size: usize, read_only: bool) {
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
    fn image(&self) -> Vec<u8> {
        match &self.store {
            Store::Mem(m) => m.contents(),
            Store::File(dir) => std::fs::read(dir.path().join("fuzz.mapkv")).expect("read"),
        }
    }

    /// `committed` has just been committed with `durability`.
    fn note_commit(&mut self, durability: Durability) {
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

    fn db(&self) -> &Database {
        self.db.as_ref().expect("open")
    }

    /// The write transaction, begun if needed; None on a read-only handle.
    fn wtx(&mut self) -> Option<&mut WriteTxn> {
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

    fn insert(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>) {
        let key_max = key_max(self.page_size, tree);
        let Some(wtx) = self.wtx() else { return };
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        match t.insert(&k, &v) {
            Ok(()) => {
                drop(t);
                assert!(k.len() <= key_max, "key of {} accepted", k.len());
                self.pending
                    .entry(tree.to_string())
                    .or_default()
                    .insert(k, v);
            }
            Err(Error::KeyTooLarge { size, max }) => {
                drop(t);
                assert!(size == k.len() && max == key_max && size > max);
                self.pending.entry(tree.to_string()).or_default();
            }
            Err(e) => panic!("insert: {e}"),
        }
    }

    /// `insert_from` of `v`; `short`: the reader ends a byte early, which changes nothing.
    fn insert_from(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>, short: bool) {
        let key_max = key_max(self.page_size, tree);
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
                assert!(k.len() <= key_max, "key of {} accepted", k.len());
                self.pending
                    .entry(tree.to_string())
                    .or_default()
                    .insert(k, v);
            }
            Err(Error::KeyTooLarge { size, max }) => {
                drop(t);
                assert!(size == k.len() && max == key_max && size > max);
                self.pending.entry(tree.to_string()).or_default();
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
    fn insert_reserve(
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
                assert!(size == k.len() && max == key_max && size > max);
                self.pending.entry(tree.to_string()).or_default();
            }
            Err(e) => panic!("insert_reserve: {e}"),
        }
    }

    /// `replace` (kind 0), `take` (1) or `update` (2: stores, removes or keeps, by the
    /// value's length) of `k`, against the model.
    fn rmw(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>, kind: u8) {
        let key_max = key_max(self.page_size, tree);
        if self.wtx().is_none() {
            return;
        }
        let wtx = self.wtx.as_ref().expect("begun");
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        let m = self.pending.entry(tree.to_string()).or_default();
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
    fn two_trees(&mut self, a: &str, b: &str, start: u16, count: u8, value_len: u16) {
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
    fn append(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>) {
        let key_max = key_max(self.page_size, tree);
        if self.wtx().is_none() {
            return;
        }
        let wtx = self.wtx.as_ref().expect("begun");
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        let m = self.pending.entry(tree.to_string()).or_default();
        let past_last = m.keys().next_back().is_none_or(|last| k > *last);
        match t.append(&k, &v) {
            Ok(()) => {
                assert!(k.len() <= key_max && past_last, "append of {k:?} taken");
                m.insert(k, v);
            }
            Err(Error::KeyTooLarge { size, max }) => {
                assert!(size == k.len() && max == key_max && size > max);
            }
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
    fn successor(&self, tree: &str) -> Vec<u8> {
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

    fn remove(&mut self, tree: &str, k: &[u8]) {
        let Some(wtx) = self.wtx() else { return };
        let mut t = wtx.open_model_tree(tree).expect("open_tree");
        let was = t.remove(k).expect("remove");
        drop(t);
        let m = self.pending.entry(tree.to_string()).or_default();
        assert_eq!(was, m.remove(k).is_some(), "remove {k:?}");
    }

    fn remove_range(&mut self, tree: &str, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) {
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

    fn retain(&mut self, tree: &str, modulus: u8, seed: u8, panic_at: Option<u8>) {
        if self.wtx().is_none() {
            return;
        }
        let (Some(wtx), pending) = (self.wtx.as_mut(), &mut self.pending) else {
            unreachable!("begun above");
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
            // Cut inside a change: the transaction refuses everything, and its commit.
            let wtx = self.wtx.take().expect("a write transaction");
            assert!(
                wtx.open_model_tree(tree).is_err(),
                "a change after an interrupted one"
            );
            assert!(wtx.commit().is_err(), "commit after an interrupted change");
            self.pending = self.committed.clone();
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

    /// Runs `f` on the tree as the write transaction sees it (if one is open and
    /// `committed` is false) or as a fresh read transaction does.
    fn read<R>(
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

    fn commit(&mut self) {
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

    fn abort(&mut self) {
        if let Some(w) = self.wtx.take() {
            w.abort();
            self.forgot = false;
        }
    }

    fn close(&mut self) {
        self.snapshot = None;
        self.wtx = None;
        self.forgot = false;
        self.db = None;
    }

    /// Changes made through a tree that is then forgotten are kept, as if it had been
    /// dropped: the transaction must know every change at every moment.
    fn forget_tree(&mut self, tree: &str, start: u16, count: u8, value_len: u16, every: u8) {
        if self.wtx().is_none() {
            return;
        }
        let (Some(wtx), pending) = (self.wtx.as_mut(), &mut self.pending) else {
            unreachable!("begun above");
        };
        let m = pending.entry(tree.to_string()).or_default();
        forget_write_tree(wtx, m, tree, start, count, value_len, every);
        self.forgot = true;
    }

    /// A panic from user code while a tree is borrowed, caught by the user: it strikes
    /// between changes, so the transaction goes on with every change made before it.
    fn user_panic(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>, point: PanicPoint) {
        let key_max = key_max(self.page_size, tree);
        if self.wtx().is_none() {
            return;
        }
        let in_memory = matches!(self.store, Store::Mem(_));
        let (Some(wtx), pending) = (self.wtx.as_mut(), &mut self.pending) else {
            unreachable!("begun above");
        };
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let mut t = wtx.open_model_tree(tree).expect("open_tree");
            let m = pending.entry(tree.to_string()).or_default();
            match point {
                PanicPoint::Opened => {}
                PanicPoint::AfterInsert if k.len() <= key_max => {
                    t.insert(&k, &v).expect("insert");
                    m.insert(k, v);
                }
                PanicPoint::AfterInsert => {}
                PanicPoint::AfterRemove => {
                    let was = t.remove(&k).expect("remove");
                    assert_eq!(was, m.remove(&k).is_some(), "remove {k:?}");
                }
                PanicPoint::InRange => {
                    let mut range = t.range(..).expect("range");
                    let first = range.next().map(|e| e.expect("range entry").0.to_vec());
                    assert_eq!(first.as_ref(), m.keys().next(), "first key");
                    panic_any(UserPanic);
                }
                PanicPoint::AfterRun | PanicPoint::MidChange(_) => {
                    if let (PanicPoint::MidChange(n), true) = (point, in_memory) {
                        mem::PANIC_IN_OPS.store(u64::from(n % 8) + 1, Ordering::Relaxed);
                    }
                    let start = v.len() as u16;
                    for i in 0..24u16 {
                        let n = start.wrapping_add(i * 7) % 400;
                        let key = format!("k{n:04}").into_bytes();
                        if i % 3 == 2 {
                            let was = t.remove(&key).expect("remove");
                            assert_eq!(was, m.remove(&key).is_some(), "remove {key:?}");
                        } else {
                            let value = vec![i as u8; (i as usize * 211) % 3000];
                            t.insert(&key, &value).expect("insert");
                            m.insert(key, value);
                        }
                    }
                }
            }
            panic_any(UserPanic);
        }));
        mem::PANIC_IN_OPS.store(0, Ordering::Relaxed);
        let payload = caught.expect_err("the closure panics");
        if payload.is::<mem::InjectedPanic>() {
            // Cut inside a change: the transaction refuses everything, and its commit.
            let wtx = self.wtx.take().expect("a write transaction");
            assert!(
                wtx.open_model_tree(tree).is_err(),
                "a change after an interrupted one"
            );
            assert!(wtx.commit().is_err(), "commit after an interrupted change");
            self.pending = self.committed.clone();
            return;
        }
        assert!(payload.is::<UserPanic>(), "not our panic");
    }
}

/// The payload of the panics this target raises on purpose, as user code would. The
/// panic hook lets them through to `catch_unwind`; any other panic still aborts, as
/// libFuzzer's hook makes every panic do.
struct UserPanic;

fn let_user_panics_through() {
    let fuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let ours = info.payload().is::<UserPanic>() || info.payload().is::<mem::InjectedPanic>();
        if !ours {
            fuzzer_hook(info);
        }
    }));
}

/// Makes `count` changes through a `WriteTree` of `tree` (model: `m`), then forgets it.
/// Not inlined: LeakSanitizer is told, by this function's name, that what a forgotten
/// tree owns (its name) is leaked on purpose.
#[inline(never)]
fn forget_write_tree(
    wtx: &mut WriteTxn,
    m: &mut Tree,
    tree: &str,
    start: u16,
    count: u8,
    value_len: u16,
    remove_every: u8,
) {
    let mut t = wtx.open_model_tree(tree).expect("open_tree");
    for i in 0..u16::from(count) {
        let n = start.wrapping_add(i) % 400;
        let key = format!("k{n:04}").into_bytes();
        if remove_every > 0 && i % u16::from(remove_every) == 0 {
            let was = t.remove(&key).expect("remove");
            assert_eq!(was, m.remove(&key).is_some(), "remove {key:?}");
        } else {
            let value = vec![(n % 251) as u8; (value_len as usize + i as usize) % 5000];
            t.insert(&key, &value).expect("insert");
            m.insert(key, value);
        }
    }
    std::mem::forget(t);
}

/// LeakSanitizer's default suppressions (it calls this at start): a forgotten `WriteTree`
/// leaks what it owns by definition.
#[unsafe(no_mangle)]
pub extern "C" fn __lsan_default_suppressions() -> *const c_char {
    c"leak:forget_write_tree\n".as_ptr()
}

/// A handle alive in a `Lifecycle`.
#[expect(
    clippy::large_enum_variant,
    reason = "a lifecycle holds a few handles; boxing the writer would buy nothing"
)]
enum Handle {
    Db(Database),
    /// A reader and the state it must see.
    Reader(ReadTxn, Trees),
    /// The writer, its view, and its end (None: dropped as it is).
    Writer(WriteTxn, Trees, Option<WriterEnd>),
}

/// Ends every handle in the order the input gives, then reopens the file: it must hold
/// the last commit (a clean close makes `Durability::None` commits durable too). The file
/// as it was before the last handle ended (a kill -9 then) must hold the last durable
/// commit or a later one.
fn lifecycle(h: &mut Harness, plan: &Lifecycle) {
    let db = h.db.take().expect("open");
    let mut handles = Vec::new();
    if let Some((r, m)) = h.snapshot.take() {
        handles.push(Handle::Reader(r, m));
    }
    for _ in 0..plan.readers % 4 {
        let r = db.begin_read().expect("begin_read");
        handles.push(Handle::Reader(r, h.committed.clone()));
    }
    match (h.wtx.take(), plan.writer) {
        (Some(w), end) => handles.push(Handle::Writer(w, std::mem::take(&mut h.pending), end)),
        (None, Some(end)) if !h.read_only => {
            let w = db.begin_write().expect("begin_write");
            handles.push(Handle::Writer(w, h.committed.clone(), Some(end)));
        }
        (None, _) => {}
    }
    handles.push(Handle::Db(db));
    let mut order = plan.order.iter();
    let mut kill = None;
    while !handles.is_empty() {
        if handles.len() == 1 {
            kill = Some((h.image(), h.chain.clone()));
        }
        let next = order.next().map_or(0, |&o| o as usize % handles.len());
        match handles.remove(next) {
            Handle::Db(db) => drop(db),
            Handle::Reader(r, m) => {
                check_view(&r, &m, "a reader");
                drop(r);
            }
            Handle::Writer(w, _, None) => drop(w),
            Handle::Writer(mut w, mut m, Some(end)) => {
                let tree = name(end.tree);
                let key_max = key_max(h.page_size, tree);
                {
                    let mut t = w.open_model_tree(tree).expect("open_tree");
                    let mt = m.entry(tree.to_string()).or_default();
                    for i in 0..u16::from(end.count) {
                        let n = end.start.wrapping_add(i) % 400;
                        let key = format!("k{n:04}").into_bytes();
                        let value = vec![i as u8; (i as usize * 37) % 3000];
                        assert!(key.len() <= key_max);
                        t.insert(&key, &value).expect("insert");
                        mt.insert(key, value);
                    }
                }
                let durability = if end.immediate {
                    Durability::Immediate
                } else {
                    Durability::None
                };
                w.set_durability(durability);
                match end.fate {
                    Fate::Commit => {
                        w.commit().expect("commit");
                        h.committed = m;
                        // After the reopen, `check_all` checks it (and any forgotten tree).
                        h.note_commit(durability);
                    }
                    Fate::Abort => w.abort(),
                    Fate::Drop => drop(w),
                }
            }
        }
    }
    h.forgot = false;
    // Every handle is gone: the last one closed the file.
    h.open(plan.mmap, h.page_size, false);
    check_all(h.db(), &h.committed);
    if let Some((image, Some(chain))) = kill {
        let db = open_with_backend(mem::file(image).backend(), Options::new())
            .expect("open the file as a kill -9 before the last handle ended leaves it");
        db.check().expect("check the kill -9 image");
        let got = digest(&read_all(&db).expect("read the kill -9 image"));
        assert!(
            chain.contains(&got),
            "the kill -9 image holds neither the last durable commit nor a later one"
        );
    }
}

/// Reads every tree of `r` and compares with `model`.
fn check_view(r: &ReadTxn, model: &Trees, what: &str) {
    let names = r.tree_names().expect("tree_names");
    assert_eq!(
        names,
        model.keys().cloned().collect::<Vec<_>>(),
        "tree names of {what}"
    );
    for (name, m) in model {
        let t = r.open_tree(name).expect("open_tree");
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

enum Reader<'a, 't> {
    Read(&'a mapkv::ReadTree<'t>),
    Write(&'a mapkv::WriteTree<'t>),
}

impl Reader<'_, '_> {
    fn get(&self, k: &[u8]) -> Option<Vec<u8>> {
        match self {
            Reader::Read(t) => t.get(k),
            Reader::Write(t) => t.get(k),
        }
        .expect("get")
        .map(<[u8]>::to_vec)
    }

    fn len(&self) -> u64 {
        match self {
            Reader::Read(t) => t.len(),
            Reader::Write(t) => t.len(),
        }
        .expect("len")
    }

    /// `first`, `last`, and `prefix(p)` forwards and backwards, against the model.
    fn check_ends(&self, m: &Tree, p: &[u8]) {
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
    fn check_range(
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

fn check_all(db: &Database, model: &Trees) {
    db.check().expect("check");
    let rtx = db.begin_read().expect("begin_read");
    let names = rtx.tree_names().expect("tree_names");
    assert_eq!(
        names,
        model.keys().cloned().collect::<Vec<_>>(),
        "tree names"
    );
    for (name, m) in model {
        let t = rtx.open_tree(name).expect("open_tree");
        assert_eq!(t.len().expect("len"), m.len() as u64, "len of {name:?}");
        let got: Vec<(Vec<u8>, Vec<u8>)> = t
            .iter()
            .expect("iter")
            .map(|e| {
                e.map(|(k, v)| (k.to_vec(), aligned(name, v).to_vec()))
                    .expect("entry")
            })
            .collect();
        assert!(got.iter().map(|(k, v)| (k, v)).eq(m.iter()), "{name:?}");
    }
}

fuzz_target!(init: let_user_panics_through(), |input: Input| {
    let page_size = page_size_of(input.page_size);
    let store = if input.file.is_multiple_of(16) {
        Store::File(tempfile::tempdir().expect("tempdir"))
    } else {
        Store::Mem(mem::file(Vec::new()))
    };
    let mut h = Harness {
        store,
        page_size,
        db: None,
        read_only: false,
        wtx: None,
        durability: Durability::Immediate,
        committed: Trees::new(),
        pending: Trees::new(),
        snapshot: None,
        forgot: false,
        chain: None,
        track_chain: input.ops.iter().any(|op| matches!(op, Op::Lifecycle(_))),
    };
    h.open(input.mmap, page_size, false);
    for op in input.ops.iter().take(200) {
        match op {
            Op::Insert { tree, key, value } => {
                h.insert(name(*tree), key_bytes(key), value_bytes(value))
            }
            Op::InsertRun {
                tree,
                start,
                count,
                value_len,
                long,
            } => {
                for i in 0..*count as u16 {
                    let n = start.wrapping_add(i) % 400;
                    let k = if *long {
                        format!("run-{n:04}-{}", "r".repeat(n as usize % 300)).into_bytes()
                    } else {
                        format!("k{n:04}").into_bytes()
                    };
                    let v = vec![(n % 251) as u8; *value_len as usize % 2500];
                    h.insert(name(*tree), k, v);
                }
            }
            Op::Remove { tree, key } => h.remove(name(*tree), &key_bytes(key)),
            Op::RemoveRun {
                tree,
                start,
                count,
                step,
            } => {
                let step = (*step as usize % 4) + 1;
                for i in (0..*count as u16).step_by(step) {
                    let n = start.wrapping_add(i) % 400;
                    h.remove(name(*tree), format!("k{n:04}").as_bytes());
                }
            }
            Op::Get {
                tree,
                key,
                committed,
            } => {
                let k = key_bytes(key);
                h.read(name(*tree), *committed, |t, m| {
                    assert_eq!(t.get(&k), m.and_then(|m| m.get(&k).cloned()), "get {k:?}");
                });
            }
            Op::Range {
                tree,
                lo,
                hi,
                pattern,
                take,
                committed,
            } => {
                let (lo, hi) = (bound(lo), bound(hi));
                h.read(name(*tree), *committed, |t, m| {
                    t.check_range(
                        m.unwrap_or(&Tree::new()),
                        lo,
                        hi,
                        *pattern,
                        *take as usize + 1,
                    )
                });
            }
            Op::Len { tree, committed } => {
                h.read(name(*tree), *committed, |t, m| {
                    assert_eq!(t.len(), m.map_or(0, |m| m.len() as u64), "len");
                });
            }
            Op::OpenTree { tree } => {
                if let Some(w) = h.wtx() {
                    drop(w.open_model_tree(name(*tree)).expect("open_tree"));
                    h.pending.entry(name(*tree).to_string()).or_default();
                }
            }
            Op::DeleteTree { tree } => {
                if let Some(w) = h.wtx() {
                    let existed = w.delete_tree(name(*tree)).expect("delete_tree");
                    assert_eq!(
                        existed,
                        h.pending.remove(name(*tree)).is_some(),
                        "delete_tree"
                    );
                }
            }
            Op::TreeNames { committed } => {
                let (names, model) = match (&h.wtx, committed) {
                    (Some(w), false) => (w.tree_names().expect("tree_names"), &h.pending),
                    _ => (
                        h.db()
                            .begin_read()
                            .and_then(|r| r.tree_names())
                            .expect("tree_names"),
                        &h.committed,
                    ),
                };
                assert_eq!(
                    names,
                    model.keys().cloned().collect::<Vec<_>>(),
                    "tree names"
                );
            }
            Op::Commit => h.commit(),
            Op::Abort => h.abort(),
            Op::Durability(immediate) => {
                h.durability = if *immediate {
                    Durability::Immediate
                } else {
                    Durability::None
                };
                let d = h.durability;
                if let Some(w) = h.wtx.as_mut() {
                    w.set_durability(d);
                }
            }
            Op::Reopen {
                mmap,
                immediate,
                read_only,
                page_size,
            } => {
                h.close();
                h.durability = if *immediate {
                    Durability::Immediate
                } else {
                    Durability::None
                };
                // Another page size is ignored: the file's wins.
                h.open(*mmap, page_size_of(*page_size), *read_only);
            }
            Op::Snapshot => {
                let r = h.db().begin_read().expect("begin_read");
                h.snapshot = Some((r, h.committed.clone()));
            }
            Op::CheckSnapshot => {
                if let Some((r, model)) = &h.snapshot {
                    check_view(r, model, "the snapshot");
                }
            }
            Op::Compact if h.wtx.is_none() => {
                // Commits that move pages and cut the file: all durable, content unchanged.
                match h.db().compact() {
                    Ok(_) => h.note_commit(Durability::Immediate),
                    Err(Error::ReadOnly) if h.read_only => {}
                    Err(e) => panic!("compact: {e}"),
                }
                h.db().check().expect("check after compact");
                let r = h.db().begin_read().expect("begin_read");
                check_view(&r, &h.committed, "after compact");
            }
            Op::Compact => {}
            Op::Append { tree, key, value } => {
                h.append(name(*tree), key_bytes(key), value_bytes(value))
            }
            // (A read-only handle has no write transaction: nothing to append to.)
            Op::AppendRun {
                tree,
                count,
                value_len,
            } if h.wtx().is_some() => {
                let tree = name(*tree);
                for i in 0..*count {
                    let v = vec![i; *value_len as usize % 9000];
                    h.append(tree, h.successor(tree), v);
                }
                if let Some(last) = h.pending.get(tree).and_then(|m| m.keys().next_back()) {
                    h.append(tree, last.clone(), b"refused".to_vec());
                }
            }
            Op::AppendRun { .. } => {}
            Op::Check => {
                h.db().check().expect("check");
            }
            Op::Rmw {
                tree,
                key,
                value,
                kind,
            } => h.rmw(name(*tree), key_bytes(key), value_bytes(value), *kind),
            Op::Ends {
                tree,
                key,
                committed,
            } => {
                let k = key_bytes(key);
                for len in [0, 1, k.len() / 2, k.len()] {
                    let p = &k[..len.min(k.len())];
                    h.read(name(*tree), *committed, |t, m| {
                        t.check_ends(m.unwrap_or(&Tree::new()), p)
                    });
                }
            }
            Op::TwoTrees {
                a,
                b,
                start,
                count,
                value_len,
            } => h.two_trees(name(*a), name(*b), *start, *count, *value_len),
            Op::InsertFrom {
                tree,
                key,
                value,
                short,
            } => h.insert_from(name(*tree), key_bytes(key), value_bytes(value), *short),
            Op::InsertReserve {
                tree,
                key,
                value,
                filled,
                freeze,
            } => h.insert_reserve(
                name(*tree),
                name(tree.wrapping_add(1)),
                key_bytes(key),
                value_bytes(value),
                *filled,
                *freeze,
            ),
            Op::ForgetTree {
                tree,
                start,
                count,
                value_len,
                remove_every,
            } => h.forget_tree(name(*tree), *start, *count, *value_len, *remove_every),
            Op::UserPanic {
                tree,
                key,
                value,
                point,
            } => h.user_panic(name(*tree), key_bytes(key), value_bytes(value), *point),
            Op::Lifecycle(plan) => lifecycle(&mut h, plan),
            Op::RemoveRange { tree, lo, hi } => h.remove_range(name(*tree), bound(lo), bound(hi)),
            Op::Retain {
                tree,
                modulus,
                seed,
                panic_at,
            } => h.retain(name(*tree), *modulus, *seed, *panic_at),
        }
    }
    if input.ops.len().is_multiple_of(2) {
        h.commit();
    }
    h.wtx = None;
    h.snapshot = None;
    check_all(h.db(), &h.committed);
    // What a clean close leaves must reopen to the same content.
    h.close();
    h.open(MmapSize::Whole, page_size, false);
    check_all(h.db(), &h.committed);
});
