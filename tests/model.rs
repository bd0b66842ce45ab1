//! Random operations against mapkv and a `BTreeMap` model, checked after every step.

mod support;

use std::ops::Bound;

use mapkv::{Database, Durability, Error, Options, Result, WriteTxn};
use quickcheck::{Arbitrary, Gen, QuickCheck};
use support::model::{Tree, Trees, Walk, check_range, model_range};

const TREES: [&str; 3] = ["alpha", "beta", "gamma"];
const VALUE_SIZES: [usize; 7] = [0, 3, 150, 900, 1700, 5000, 70_000];

#[derive(Clone, Debug)]
enum Op {
    /// Inserts keys `start..start + count` (stride 1) with values of one size class.
    Insert {
        tree: u8,
        start: u16,
        count: u16,
        long_keys: bool,
        size: u8,
        seed: u8,
    },
    Remove {
        tree: u8,
        start: u16,
        count: u16,
        stride: u8,
        long_keys: bool,
    },
    /// Inserts keys `start..start + count` once per round, each round with new values of
    /// one size class, and reads every key back after each round: a round reuses the
    /// overflow pages the one before freed, which must not be read back stale.
    Overwrite {
        tree: u8,
        start: u16,
        count: u8,
        size: u8,
        rounds: u8,
        seed: u8,
    },
    /// Appends `count` keys past the model's last (`stride` apart, long ones if the last
    /// is long or `long_keys`), then appends the last key and the least one again,
    /// which must be refused (`Unsorted`) and change nothing.
    Append {
        tree: u8,
        count: u16,
        stride: u8,
        long_keys: bool,
        size: u8,
        seed: u8,
    },
    Get {
        tree: u8,
        key: u16,
        long_keys: bool,
    },
    /// Every bound kind at either end (inverted and equal bounds included), read forward,
    /// backward, and from both ends in an order drawn from `seed`.
    Range {
        tree: u8,
        lower: Bound<BoundKey>,
        upper: Bound<BoundKey>,
        seed: u64,
    },
    /// Every bound kind, as for `Range`.
    RemoveRange {
        tree: u8,
        lower: Bound<BoundKey>,
        upper: Bound<BoundKey>,
    },
    /// Keeps the entries for which a hash of key, value and `seed` is not a multiple of
    /// `modulus` (1: removes all).
    Retain {
        tree: u8,
        modulus: u8,
        seed: u8,
    },
    DeleteTree {
        tree: u8,
    },
    /// Read-modify-write on keys `start..start + count`: `replace`, `take` or
    /// `update` (which stores, removes or keeps, by key), each checked against the
    /// model's old value.
    Rmw {
        tree: u8,
        start: u16,
        count: u8,
        kind: u8,
        size: u8,
        seed: u8,
    },
    /// `first`, `last`, and `prefix` read both ways, for the prefixes of a key.
    Ends {
        tree: u8,
        key: u16,
        long_keys: bool,
    },
    /// Two trees open at once, changed in turn; then the first opened again, which
    /// makes the older handle stale while a value it returned must stay intact.
    Interleave {
        first: u8,
        second: u8,
        start: u16,
        count: u8,
        size: u8,
        seed: u8,
    },
    Commit {
        durable: bool,
    },
    Abort,
    Reopen,
    /// `insert_from` of one value; with `short`, the reader ends a byte early, which
    /// must be `Error::Io` and change nothing (the transaction stays usable).
    InsertFrom {
        tree: u8,
        key: u16,
        size: u8,
        seed: u8,
        short: bool,
    },
    /// `insert_reserve` of one value, filled in place up to `filled` of 256ths of it
    /// (the rest must read as zeros); with `freeze`, another tree is opened twice
    /// between the two halves of the filling, which freezes the dirty pages.
    InsertReserve {
        tree: u8,
        key: u16,
        size: u8,
        seed: u8,
        filled: u8,
        freeze: bool,
    },
}

/// The key of a range bound, resolved against the model when the range is read.
#[derive(Clone, Copy, Debug)]
enum BoundKey {
    /// The model's key at this index (modulo its length): bounds on present keys are
    /// where inclusive and exclusive differ.
    Present(u16),
    /// `key_bytes(key, long)`, present or not.
    Drawn(u16, bool),
}

impl BoundKey {
    fn arbitrary(g: &mut Gen) -> BoundKey {
        if bool::arbitrary(g) {
            BoundKey::Present(u16::arbitrary(g))
        } else {
            BoundKey::Drawn(u16::arbitrary(g) % 2000, u8::arbitrary(g) % 5 == 0)
        }
    }

    /// An upper key drawn near `lower` a third of the time, so that equal and inverted
    /// bounds come up often.
    fn arbitrary_after(g: &mut Gen, lower: &Bound<BoundKey>) -> BoundKey {
        match lower {
            Bound::Included(BoundKey::Present(i)) | Bound::Excluded(BoundKey::Present(i))
                if u8::arbitrary(g) % 3 == 0 =>
            {
                BoundKey::Present(i.wrapping_add(u16::arbitrary(g) % 3).wrapping_sub(1))
            }
            _ => BoundKey::arbitrary(g),
        }
    }

    fn resolve(self, model: &Tree) -> Vec<u8> {
        match self {
            BoundKey::Present(i) if !model.is_empty() => {
                model.keys().nth(i as usize % model.len()).unwrap().clone()
            }
            BoundKey::Present(i) => key_bytes(i % 2000, false),
            BoundKey::Drawn(k, long) => key_bytes(k, long),
        }
    }
}

fn arbitrary_bound(g: &mut Gen, key: impl FnOnce(&mut Gen) -> BoundKey) -> Bound<BoundKey> {
    match u8::arbitrary(g) % 3 {
        0 => Bound::Unbounded,
        1 => Bound::Included(key(g)),
        _ => Bound::Excluded(key(g)),
    }
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        let tree = u8::arbitrary(g) % TREES.len() as u8;
        let key = |g: &mut Gen| u16::arbitrary(g) % 2000;
        match u8::arbitrary(g) % 36 {
            0..=6 => Op::Insert {
                tree,
                start: key(g),
                count: u16::arbitrary(g) % 300 + 1,
                long_keys: u8::arbitrary(g) % 5 == 0,
                size: u8::arbitrary(g) % VALUE_SIZES.len() as u8,
                seed: u8::arbitrary(g),
            },
            7..=9 => Op::Remove {
                tree,
                start: key(g),
                count: u16::arbitrary(g) % 300 + 1,
                stride: u8::arbitrary(g) % 3 + 1,
                long_keys: u8::arbitrary(g) % 5 == 0,
            },
            10..=11 => Op::Get {
                tree,
                key: key(g),
                long_keys: bool::arbitrary(g),
            },
            12..=13 => {
                let lower = arbitrary_bound(g, BoundKey::arbitrary);
                let upper = arbitrary_bound(g, |g| BoundKey::arbitrary_after(g, &lower));
                Op::Range {
                    tree,
                    lower,
                    upper,
                    seed: u64::arbitrary(g),
                }
            }
            14 => Op::DeleteTree { tree },
            27..=28 => {
                let lower = arbitrary_bound(g, BoundKey::arbitrary);
                let upper = arbitrary_bound(g, |g| BoundKey::arbitrary_after(g, &lower));
                Op::RemoveRange { tree, lower, upper }
            }
            29 => Op::Retain {
                tree,
                modulus: u8::arbitrary(g) % 4 + 1,
                seed: u8::arbitrary(g),
            },
            15..=17 => Op::Commit {
                durable: u8::arbitrary(g) % 3 != 0,
            },
            18 => Op::Abort,
            19 => Op::Reopen,
            22..=23 => Op::Rmw {
                tree,
                start: key(g),
                count: u8::arbitrary(g) % 64 + 1,
                kind: u8::arbitrary(g) % 3,
                size: u8::arbitrary(g) % VALUE_SIZES.len() as u8,
                seed: u8::arbitrary(g),
            },
            24 => Op::Ends {
                tree,
                key: key(g),
                long_keys: u8::arbitrary(g) % 5 == 0,
            },
            25..=26 => Op::Interleave {
                first: tree,
                second: (tree + 1 + u8::arbitrary(g) % 2) % TREES.len() as u8,
                start: key(g),
                count: u8::arbitrary(g) % 100 + 1,
                size: u8::arbitrary(g) % VALUE_SIZES.len() as u8,
                seed: u8::arbitrary(g),
            },
            30..=31 => Op::Append {
                tree,
                count: u16::arbitrary(g) % 400 + 1,
                stride: u8::arbitrary(g) % 4 + 1,
                long_keys: u8::arbitrary(g) % 5 == 0,
                size: u8::arbitrary(g) % VALUE_SIZES.len() as u8,
                seed: u8::arbitrary(g),
            },
            20..=21 => Op::Overwrite {
                tree,
                start: key(g),
                count: u8::arbitrary(g) % 16 + 1,
                // The three largest classes: overflow values at every page size
                // (70,000), at 4 KiB pages (5000), and inline ones (1700).
                size: VALUE_SIZES.len() as u8 - 1 - u8::arbitrary(g) % 3,
                rounds: u8::arbitrary(g) % 2 + 2,
                seed: u8::arbitrary(g),
            },
            32..=33 => Op::InsertFrom {
                tree,
                key: key(g),
                size: u8::arbitrary(g) % VALUE_SIZES.len() as u8,
                seed: u8::arbitrary(g),
                short: u8::arbitrary(g) % 4 == 0,
            },
            34..=35 => Op::InsertReserve {
                tree,
                key: key(g),
                size: u8::arbitrary(g) % VALUE_SIZES.len() as u8,
                seed: u8::arbitrary(g),
                filled: u8::arbitrary(g),
                freeze: bool::arbitrary(g),
            },
            _ => unreachable!(),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Op>> {
        match self.clone() {
            Op::Insert {
                tree,
                start,
                count,
                long_keys,
                size,
                seed,
            } if count > 1 => Box::new([count / 2, 1].into_iter().map(move |count| Op::Insert {
                tree,
                start,
                count,
                long_keys,
                size,
                seed,
            })),
            _ => Box::new(std::iter::empty()),
        }
    }
}

fn key_bytes(k: u16, long: bool) -> Vec<u8> {
    let mut key = if long { vec![b'L'; 700] } else { Vec::new() };
    key.extend_from_slice(&k.to_be_bytes());
    key
}

fn value_bytes(k: u16, size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ k as u8)
        .collect()
}

struct Harness {
    dir: tempfile::TempDir,
    options: Options,
    /// `mmap_size` settings used in turn at each reopen: results must not depend on them.
    windows: &'static [u64],
    opens: usize,
    db: Option<Database>,
    committed: Trees,
    working: Trees,
}

impl Harness {
    fn new(options: Options, windows: &'static [u64]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = options
            .clone()
            .mmap_size(windows[0])
            .open(dir.path().join("db"))
            .unwrap();
        Harness {
            dir,
            options,
            windows,
            opens: 1,
            db: Some(db),
            committed: Trees::new(),
            working: Trees::new(),
        }
    }

    fn db(&self) -> &Database {
        self.db.as_ref().unwrap()
    }

    /// Opens the database again with the next `mmap_size` setting.
    fn open_next(&mut self) -> Database {
        let window = self.windows[self.opens % self.windows.len()];
        self.opens += 1;
        self.options
            .clone()
            .mmap_size(window)
            .open(self.dir.path().join("db"))
            .unwrap()
    }

    fn reopen(&mut self) {
        self.db = None;
        self.db = Some(
            self.options
                .clone()
                .mmap_size(self.windows[0])
                .open(self.dir.path().join("db"))
                .unwrap(),
        );
    }

    /// Runs `ops`; a write transaction is open between commits.
    fn run(&mut self, ops: &[Op]) -> Result<()> {
        let db = self.db.take().unwrap();
        let mut txn = Some(db.begin_write()?);
        self.working = self.committed.clone();
        for op in ops {
            let w = txn.as_mut().unwrap();
            match op {
                Op::Commit { durable } => {
                    let mut w = txn.take().unwrap();
                    if !durable {
                        w.set_durability(Durability::None);
                    }
                    w.commit()?;
                    self.committed = self.working.clone();
                    let report = db.check()?;
                    let entries: usize = self.committed.values().map(|t| t.len()).sum();
                    assert_eq!(report.entries, entries as u64);
                    assert_eq!(report.trees, self.committed.len() as u64);
                    self.compare_committed(&db)?;
                    txn = Some(db.begin_write()?);
                }
                Op::Abort => {
                    txn.take().unwrap().abort();
                    self.working = self.committed.clone();
                    self.compare_committed(&db)?;
                    txn = Some(db.begin_write()?);
                }
                Op::Reopen => {
                    drop(txn.take());
                    drop(db);
                    self.working = self.committed.clone();
                    self.db = Some(self.open_next());
                    self.compare_committed(self.db())?;
                    self.db().check()?;
                    return self
                        .run(&ops[ops.iter().position(|o| std::ptr::eq(o, op)).unwrap() + 1..]);
                }
                op => apply(w, &mut self.working, op)?,
            }
        }
        drop(txn);
        self.db = Some(db);
        self.compare_committed(self.db())
    }

    fn compare_committed(&self, db: &Database) -> Result<()> {
        let r = db.begin_read()?;
        assert_eq!(
            r.tree_names()?,
            self.committed.keys().cloned().collect::<Vec<_>>()
        );
        for (name, model) in &self.committed {
            let t = r.open_tree(name)?;
            assert_eq!(t.len()?, model.len() as u64);
            let got: Vec<(Vec<u8>, Vec<u8>)> = t
                .iter()?
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<_>>()?;
            let want: Vec<(Vec<u8>, Vec<u8>)> =
                model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert!(got == want, "tree {name}: contents differ from the model");
        }
        Ok(())
    }
}

fn apply(w: &mut WriteTxn, model: &mut Trees, op: &Op) -> Result<()> {
    match *op {
        Op::Insert {
            tree,
            start,
            count,
            long_keys,
            size,
            seed,
        } => {
            let name = TREES[tree as usize];
            let mut t = w.open_tree(name)?;
            let m = model.entry(name.to_string()).or_default();
            for k in start..start.saturating_add(count) {
                let (key, value) = (
                    key_bytes(k, long_keys),
                    value_bytes(k, VALUE_SIZES[size as usize], seed),
                );
                t.insert(&key, &value)?;
                m.insert(key, value);
            }
            assert_eq!(t.len()?, m.len() as u64);
        }
        Op::Remove {
            tree,
            start,
            count,
            stride,
            long_keys,
        } => {
            let name = TREES[tree as usize];
            let mut t = w.open_tree(name)?;
            let m = model.entry(name.to_string()).or_default();
            for k in (start..start.saturating_add(count)).step_by(stride as usize) {
                let key = key_bytes(k, long_keys);
                assert_eq!(t.remove(&key)?, m.remove(&key).is_some());
            }
            assert_eq!(t.len()?, m.len() as u64);
        }
        Op::Overwrite {
            tree,
            start,
            count,
            size,
            rounds,
            seed,
        } => {
            let name = TREES[tree as usize];
            let mut t = w.open_tree(name)?;
            let m = model.entry(name.to_string()).or_default();
            let keys = start..start.saturating_add(count.into());
            for round in 0..rounds {
                let seed = seed.wrapping_add(round.wrapping_mul(101));
                for k in keys.clone() {
                    let (key, value) = (
                        key_bytes(k, false),
                        value_bytes(k, VALUE_SIZES[size as usize], seed),
                    );
                    t.insert(&key, &value)?;
                    m.insert(key, value);
                }
                for k in keys.clone() {
                    let key = key_bytes(k, false);
                    assert!(
                        t.get(&key)? == m.get(&key).map(|v| &v[..]),
                        "key {k} reads back a stale value after overwrite round {round}"
                    );
                }
            }
        }
        Op::InsertFrom {
            tree,
            key,
            size,
            seed,
            short,
        } => {
            let name = TREES[tree as usize];
            let mut t = w.open_tree(name)?;
            let m = model.entry(name.to_string()).or_default();
            let (key, value) = (
                key_bytes(key, false),
                value_bytes(key, VALUE_SIZES[size as usize], seed),
            );
            if short {
                let given = &value[..value.len().saturating_sub(1)];
                let r = t.insert_from(&key, value.len() as u64 + 1, &mut &given[..]);
                assert!(matches!(r, Err(Error::Io(_))), "short reader: {r:?}");
                assert!(t.get(&key)? == m.get(&key).map(|v| &v[..]), "changed");
            } else {
                t.insert_from(&key, value.len() as u64, &mut &value[..])?;
                m.insert(key, value);
            }
        }
        Op::InsertReserve {
            tree,
            key,
            size,
            seed,
            filled,
            freeze,
        } => {
            let name = TREES[tree as usize];
            let other = TREES[(tree as usize + 1) % TREES.len()];
            let mut t = w.open_tree(name)?;
            let mut value = value_bytes(key, VALUE_SIZES[size as usize], seed);
            let filled = value.len() * filled as usize / 256;
            value[filled..].fill(0);
            let (key, other_key) = (key_bytes(key, false), key_bytes(key ^ 1, false));
            let reserved = t.insert_reserve(&key, value.len())?;
            let half = filled / 2;
            reserved[..half].copy_from_slice(&value[..half]);
            if freeze {
                let older = w.open_tree(other)?;
                let mut newer = w.open_tree(other)?;
                newer.insert(&other_key, b"")?;
                model
                    .entry(other.to_string())
                    .or_default()
                    .insert(other_key, Vec::new());
                drop((older, newer));
            }
            reserved[half..filled].copy_from_slice(&value[half..filled]);
            assert!(
                t.get(&key)? == Some(&value[..]),
                "reserved value reads back"
            );
            model
                .entry(name.to_string())
                .or_default()
                .insert(key, value);
        }
        Op::Append {
            tree,
            count,
            stride,
            long_keys,
            size,
            seed,
        } => {
            let name = TREES[tree as usize];
            let mut t = w.open_tree(name)?;
            let m = model.entry(name.to_string()).or_default();
            // Model keys are `key_bytes(k, long)`; long ones sort after short ones.
            let (first, long) = match m.keys().next_back() {
                None => (0, long_keys),
                Some(last) => {
                    let k = u16::from_be_bytes(last[last.len() - 2..].try_into().unwrap());
                    match (last.len() > 2, long_keys) {
                        (false, true) => (0, true),
                        (long, _) => (k as u32 + 1, long),
                    }
                }
            };
            let keys = (first..=u16::MAX as u32).step_by(stride as usize);
            for k in keys.take(count as usize).map(|k| k as u16) {
                let (key, value) = (
                    key_bytes(k, long),
                    value_bytes(k, VALUE_SIZES[size as usize], seed),
                );
                t.append(&key, &value)?;
                m.insert(key, value);
            }
            let len = m.len() as u64;
            if let Some(last) = m.keys().next_back() {
                for key in [last.clone(), key_bytes(0, false)] {
                    let r = t.append(&key, b"refused");
                    assert!(
                        matches!(r, Err(Error::Unsorted { index }) if index == len),
                        "{r:?}"
                    );
                }
                assert_eq!(t.get(last)?, m.get(last).map(|v| &v[..]));
            }
            assert_eq!(t.len()?, len);
        }
        Op::Get {
            tree,
            key,
            long_keys,
        } => {
            let name = TREES[tree as usize];
            let m = model.entry(name.to_string()).or_default();
            let t = w.open_tree(name)?;
            let key = key_bytes(key, long_keys);
            assert_eq!(t.get(&key)?, m.get(&key).map(|v| &v[..]));
        }
        Op::Range {
            tree,
            lower,
            upper,
            seed,
        } => {
            let name = TREES[tree as usize];
            let m = model.entry(name.to_string()).or_default();
            let t = w.open_tree(name)?;
            let (lower, upper) = (lower.map(|k| k.resolve(m)), upper.map(|k| k.resolve(m)));
            for walk in [Walk::Forward, Walk::Reverse, Walk::Mixed(seed)] {
                let range = t.range((lower.clone(), upper.clone()))?;
                check_range(range, m, as_slice(&lower), as_slice(&upper), walk)?;
            }
        }
        Op::RemoveRange { tree, lower, upper } => {
            let name = TREES[tree as usize];
            let m = model.entry(name.to_string()).or_default();
            let mut t = w.open_tree(name)?;
            let (lower, upper) = (lower.map(|k| k.resolve(m)), upper.map(|k| k.resolve(m)));
            let gone: Vec<Vec<u8>> = model_range(m, as_slice(&lower), as_slice(&upper))
                .into_iter()
                .map(|(k, _)| k.to_vec())
                .collect();
            let removed = t.remove_range((lower, upper))?;
            assert_eq!(removed, gone.len() as u64);
            for k in gone {
                m.remove(&k);
            }
            assert_eq!(t.len()?, m.len() as u64);
        }
        Op::Retain {
            tree,
            modulus,
            seed,
        } => {
            let name = TREES[tree as usize];
            let m = model.entry(name.to_string()).or_default();
            let mut t = w.open_tree(name)?;
            let keep = |k: &[u8], v: &[u8]| {
                let h = k.iter().chain(v.iter().take(8)).fold(seed as u32, |h, &b| {
                    h.wrapping_mul(31).wrapping_add(b as u32)
                });
                (h.wrapping_add(v.len() as u32)) % modulus as u32 != 0
            };
            let mut seen = Vec::new();
            let removed = t.retain(|k, v| {
                assert_eq!(
                    m.get(k).map(Vec::as_slice),
                    Some(v),
                    "retain offers stored values"
                );
                seen.push(k.to_vec());
                keep(k, v)
            })?;
            assert!(
                seen.iter().eq(m.keys()),
                "retain offers each entry once, in order"
            );
            let before = m.len();
            m.retain(|k, v| keep(k, v));
            assert_eq!(removed, (before - m.len()) as u64);
            assert_eq!(t.len()?, m.len() as u64);
        }
        Op::DeleteTree { tree } => {
            let name = TREES[tree as usize];
            assert_eq!(w.delete_tree(name)?, model.remove(name).is_some());
        }
        Op::Rmw {
            tree,
            start,
            count,
            kind,
            size,
            seed,
        } => {
            let name = TREES[tree as usize];
            let mut t = w.open_tree(name)?;
            let m = model.entry(name.to_string()).or_default();
            for k in start..start.saturating_add(count.into()) {
                let key = key_bytes(k, false);
                let value = value_bytes(k, VALUE_SIZES[size as usize], seed);
                match kind {
                    0 => assert_eq!(t.replace(&key, &value)?, m.insert(key, value)),
                    1 => assert_eq!(t.take(&key)?, m.remove(&key)),
                    _ => {
                        let want_old = m.get(&key).cloned();
                        // By key: store, remove, or return what is there.
                        let new = match k % 3 {
                            0 => Some(value),
                            1 => None,
                            _ => want_old.clone(),
                        };
                        let mut seen = None;
                        t.update(&key, |old| {
                            seen = Some(old.map(<[u8]>::to_vec));
                            new.clone()
                        })?;
                        assert_eq!(seen, Some(want_old), "update saw the old value");
                        match new {
                            Some(v) => m.insert(key, v),
                            None => m.remove(&key),
                        };
                    }
                }
            }
            assert_eq!(t.len()?, m.len() as u64);
        }
        Op::Ends {
            tree,
            key,
            long_keys,
        } => {
            let name = TREES[tree as usize];
            assert_eq!(w.try_open_tree(name)?.is_some(), model.contains_key(name));
            let m = model.entry(name.to_string()).or_default();
            let t = w.open_tree(name)?;
            let pair = |e: Option<(&[u8], &[u8])>| e.map(|(k, v)| (k.to_vec(), v.to_vec()));
            let model_pair =
                |e: Option<(&Vec<u8>, &Vec<u8>)>| e.map(|(k, v)| (k.clone(), v.clone()));
            assert_eq!(pair(t.first()?), model_pair(m.first_key_value()));
            assert_eq!(pair(t.last()?), model_pair(m.last_key_value()));
            let key = key_bytes(key, long_keys);
            for len in [0, 1, key.len() / 2, key.len()] {
                let p = &key[..len];
                let want: Vec<&Vec<u8>> = m.keys().filter(|k| k.starts_with(p)).collect();
                let got: Vec<&[u8]> = t.prefix(p)?.keys().collect::<Result<_>>()?;
                assert!(got.iter().eq(want.iter()), "prefix {p:?}");
                let got_rev: Vec<&[u8]> = t.prefix(p)?.keys().rev().collect::<Result<_>>()?;
                assert!(
                    got_rev.iter().eq(want.iter().rev()),
                    "prefix {p:?} reversed"
                );
            }
        }
        Op::Interleave {
            first,
            second,
            start,
            count,
            size,
            seed,
        } => {
            let names = [TREES[first as usize], TREES[second as usize]];
            let mut a = w.open_tree(names[0])?;
            let mut b = w.open_tree(names[1])?;
            for k in start..start.saturating_add(count.into()) {
                let (key, value) = (
                    key_bytes(k, false),
                    value_bytes(k, VALUE_SIZES[size as usize], seed),
                );
                let (t, name) = match k % 2 {
                    0 => (&mut a, names[0]),
                    _ => (&mut b, names[1]),
                };
                t.insert(&key, &value)?;
                model
                    .entry(name.to_string())
                    .or_default()
                    .insert(key, value);
            }
            // What the older handle returned stays valid and unchanged after the tree is
            // opened again and changed; the older handle itself is stale.
            let key = key_bytes(start, false);
            let kept = a.get(&key)?;
            let copy = kept.map(<[u8]>::to_vec);
            let mut again = w.open_tree(names[0])?;
            let bigger = value_bytes(start, 70_000, seed.wrapping_add(1));
            again.insert(&key, &bigger)?;
            again.remove(&key)?;
            assert_eq!(kept.map(<[u8]>::to_vec), copy);
            assert!(matches!(a.get(&key), Err(Error::StaleTree(_))));
            model.entry(names[0].to_string()).or_default().remove(&key);
            for (t, name) in [(&again, names[0]), (&b, names[1])] {
                let m = model.entry(name.to_string()).or_default();
                assert_eq!(t.len()?, m.len() as u64, "tree {name}");
            }
        }
        Op::Commit { .. } | Op::Abort | Op::Reopen => unreachable!(),
    }
    Ok(())
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    b.as_ref().map(Vec::as_slice)
}

/// Whole file mapped, nothing mapped (every page read with pread), and a 96 KiB window
/// that the database outgrows within a transaction.
const WINDOWS: &[u64] = &[u64::MAX, 0, 96 << 10];

fn run_case(ops: Vec<Op>, page_size: usize, windows: &'static [u64]) -> bool {
    run_case_with(ops, Options::new().page_size(page_size), windows)
}

fn run_case_with(ops: Vec<Op>, options: Options, windows: &'static [u64]) -> bool {
    let mut h = Harness::new(options, windows);
    if let Err(e) = h.run(&ops) {
        panic!("{e}");
    }
    h.reopen();
    h.db().check().unwrap();
    h.compare_committed(h.db()).unwrap();
    true
}

/// Runs `case` on `default` random operation lists (MAPKV_MODEL_CASES overrides).
fn check_cases(default: u64, case: fn(Vec<Op>) -> bool) {
    let cases = std::env::var("MAPKV_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    QuickCheck::new().tests(cases).quickcheck(case);
}

#[test]
fn model_4k_pages() {
    check_cases(60, run_case_4k);
}

#[test]
fn model_16k_pages() {
    check_cases(20, run_case_16k);
}

#[test]
fn model_without_the_map() {
    check_cases(20, run_case_no_map);
}

fn run_case_4k(ops: Vec<Op>) -> bool {
    run_case(ops, 4096, WINDOWS)
}

fn run_case_16k(ops: Vec<Op>) -> bool {
    run_case(ops, 16384, &[96 << 10, u64::MAX, 0])
}

/// Every page read with pread, through a page cache of 16 pages: it keeps evicting,
/// and pages the writer reuses must never be served from it stale.
fn run_case_no_map(ops: Vec<Op>) -> bool {
    run_case_with(ops, Options::new().cache_size(64 << 10), &[0])
}

#[test]
fn oversized_keys_and_names_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert(&vec![1; 1024], b"1 KiB keys are fine")?;
    assert!(matches!(
        t.insert(&vec![1; 5000], b"x"),
        Err(Error::KeyTooLarge { size: 5000, .. })
    ));
    assert!(matches!(
        w.open_tree(&"n".repeat(5000)),
        Err(Error::KeyTooLarge { .. })
    ));
    Ok(())
}
