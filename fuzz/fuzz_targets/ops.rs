//! Arbitrary sequences of operations against a `BTreeMap` model: inserts, removes, gets,
//! ranges in both directions (front and back mixed), trees opened and deleted, commits,
//! aborts, reopens (with another mmap_size, durability, read-only), long-lived snapshots,
//! at every page size; `check()` after the run. Mostly on an in-memory backend (fast, no
//! files); one input in sixteen on a real temporary file, so the map is exercised too.

#![no_main]

#[path = "common/mem.rs"]
mod mem;

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mapkv::testing::open_with_backend;
use mapkv::{Database, Durability, Error, Options, ReadTxn, WriteTxn};

use mem::MemFile;

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;
type Trees = BTreeMap<String, Tree>;

const TREE_NAMES: [&str; 4] = ["a", "b", "", "a tree with a longer name"];

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
}

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
        let key_max = self.page_size / 2 - 128;
        let Some(wtx) = self.wtx() else { return };
        let mut t = wtx.open_tree(tree).expect("open_tree");
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

    fn remove(&mut self, tree: &str, k: &[u8]) {
        let Some(wtx) = self.wtx() else { return };
        let mut t = wtx.open_tree(tree).expect("open_tree");
        let was = t.remove(k).expect("remove");
        drop(t);
        let m = self.pending.entry(tree.to_string()).or_default();
        assert_eq!(was, m.remove(k).is_some(), "remove {k:?}");
    }

    /// Runs `f` on the tree as the write transaction sees it (if one is open and
    /// `committed` is false) or as a fresh read transaction does.
    fn read<R>(
        &mut self,
        tree: &str,
        committed: bool,
        f: impl FnOnce(Reader<'_, '_>, Option<&Tree>) -> R,
    ) -> Option<R> {
        if !committed && self.wtx.is_some() {
            let wtx = self.wtx.as_mut().unwrap();
            let t = wtx.open_tree(tree).expect("open_tree");
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
        }
    }

    fn close(&mut self) {
        self.snapshot = None;
        self.wtx = None;
        self.db = None;
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
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("entry"))
            .collect();
        assert!(got.iter().map(|(k, v)| (k, v)).eq(m.iter()), "{name:?}");
    }
}

fuzz_target!(|input: Input| {
    let page_size = page_size_of(input.page_size);
    let store = if input.file % 16 == 0 {
        Store::File(tempfile::tempdir().expect("tempdir"))
    } else {
        Store::Mem(MemFile::default())
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
                    drop(w.open_tree(name(*tree)).expect("open_tree"));
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
            Op::Abort => {
                if let Some(w) = h.wtx.take() {
                    w.abort();
                }
            }
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
                    let names = r.tree_names().expect("tree_names");
                    assert_eq!(
                        names,
                        model.keys().cloned().collect::<Vec<_>>(),
                        "snapshot names"
                    );
                    for (name, m) in model {
                        let t = r.open_tree(name).expect("open_tree");
                        let got: Vec<(Vec<u8>, Vec<u8>)> = t
                            .iter()
                            .expect("iter")
                            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("entry"))
                            .collect();
                        assert!(
                            got.iter().map(|(k, v)| (k, v)).eq(m.iter()),
                            "snapshot of {name:?} changed"
                        );
                    }
                }
            }
            Op::Check => {
                h.db().check().expect("check");
            }
        }
    }
    if input.ops.len() % 2 == 0 {
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
