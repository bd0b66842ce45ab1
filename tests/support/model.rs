//! The model side: committed states as `BTreeMap`s, their digests, which states a crash
//! at a given point may leave, and a random workload applied to a database and the
//! model together.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Bound;

use mapkv::{Database, Durability, Range, Result, WriteTxn};

use super::rng::Rng;

/// Key → value: one tree.
pub type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// Tree name → key → value.
pub type Trees = BTreeMap<String, Tree>;

pub const TREE_NAMES: [&str; 3] = ["apple", "birch", "cedar"];

/// "birch" keeps its values at file offsets that are multiples of 32
/// (FORMAT.md#aligned-values; large values get a padded blob); the others are plain.
/// `Database::check`, which the crash tests run on every image, verifies it.
const ALIGNED: (&str, usize) = ("birch", 32);

fn open<'t>(wtx: &'t WriteTxn, name: &str) -> Result<mapkv::WriteTree<'t>> {
    let options = match name == ALIGNED.0 {
        true => mapkv::TreeOptions::new().value_align(ALIGNED.1),
        false => mapkv::TreeOptions::new(),
    };
    wtx.open_tree_with(name, options)
}

/// A 128-bit digest of a whole state (empty trees included).
pub fn digest(trees: &Trees) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        trees.hash(&mut h);
        h.finish() as u128
    };
    (half(1) << 64) | half(2)
}

/// Everything the database holds, read through `range` (forward) and `len`, with `get`
/// on a sample of keys.
pub fn read_all(db: &Database) -> Result<Trees> {
    let rtx = db.begin_read()?;
    let mut out = Trees::new();
    for name in rtx.tree_names()? {
        let tree = rtx.open_tree(&name)?;
        let mut map = BTreeMap::new();
        for entry in tree.range(..)? {
            let (k, v) = entry?;
            map.insert(k.to_vec(), v.to_vec());
        }
        assert_eq!(tree.len()?, map.len() as u64, "len of tree {name}");
        for (k, v) in map.iter().step_by(7) {
            assert_eq!(tree.get(k)?, Some(&v[..]), "get in tree {name}");
        }
        out.insert(name, map);
    }
    Ok(out)
}

/// Which committed states a crash at a point of the disk log may leave.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Digest of each state a commit may have made (in commit-call order).
    pub states: Vec<u128>,
    /// Log position when the commit making each state was called: its meta cannot be on
    /// disk in a crash image taken before that.
    pub call_pos: Vec<usize>,
    /// (log position, state index): an image taken at or after that position must hold
    /// that state or a later one (an `Immediate` commit, open or clean close returned).
    pub floors: Vec<(usize, usize)>,
}

impl History {
    /// Records a state whose commit is being called at log position `pos`; its index.
    pub fn push(&mut self, digest: u128, pos: usize) -> usize {
        self.states.push(digest);
        self.call_pos.push(pos);
        self.states.len() - 1
    }

    pub fn durable(&mut self, pos: usize, state: usize) {
        self.floors.push((pos, state));
    }

    /// The indexes of the states allowed at crash point `at`.
    pub fn allowed(&self, at: usize) -> std::ops::RangeInclusive<usize> {
        let floor = self
            .floors
            .iter()
            .filter(|(p, _)| *p <= at)
            .map(|&(_, s)| s)
            .max()
            .unwrap_or(0);
        let upper = (0..self.states.len())
            .rev()
            .find(|&i| self.call_pos[i] < at || i == 0)
            .unwrap_or(0);
        floor..=upper.max(floor)
    }

    /// Ok(index of the matching state) or a description of the mismatch.
    pub fn check(&self, at: usize, got: u128) -> std::result::Result<usize, String> {
        let allowed = self.allowed(at);
        if let Some(i) = allowed.clone().rev().find(|&i| self.states[i] == got) {
            return Ok(i);
        }
        let elsewhere: Vec<usize> = (0..self.states.len())
            .filter(|&i| self.states[i] == got)
            .collect();
        Err(format!(
            "crash at {at}: content matches no allowed state {allowed:?} (matches states {elsewhere:?} of {})",
            self.states.len()
        ))
    }
}

/// The sizes of the random workload.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Keys are drawn from `0..keys`.
    pub keys: u64,
    /// Operations per write transaction: `1..=ops`.
    pub ops: u64,
    /// Largest value (values above the page size go to overflow blobs).
    pub max_value: usize,
}

pub fn key(i: u64, long: bool) -> Vec<u8> {
    if long {
        format!("long-key-{i:06}-{}", "x".repeat((i % 97) as usize)).into_bytes()
    } else {
        format!("k{i:05}").into_bytes()
    }
}

fn value(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1..=5 => rng.range(1, 64) as usize,
        6 | 7 => rng.range(64, 1200) as usize,
        // (Clamped: batches ask for at most 300 bytes; the lengths are the same as the
        // unclamped range gave in release builds, which wrapped and were cut to `max`.)
        _ => rng.range(1200.min(max as u64), max as u64 + 1) as usize,
    };
    let mut v = vec![0; len.min(max)];
    rng.fill(&mut v);
    v
}

/// One random write transaction's operations, applied to `wtx` and `model`. Errors come
/// from the database (the caller decides what they mean).
pub fn random_ops(
    rng: &mut Rng,
    wtx: &mut WriteTxn,
    model: &mut Trees,
    shape: Shape,
) -> Result<()> {
    let n = rng.range(1, shape.ops + 1);
    for _ in 0..n {
        let name = *rng.pick(&TREE_NAMES);
        match rng.below(20) {
            0 => {
                let existed = wtx.delete_tree(name)?;
                assert_eq!(existed, model.remove(name).is_some(), "delete_tree {name}");
            }
            1 | 2 => {
                // A batch of inserts, to grow the tree by more than a page.
                let mut tree = open(wtx, name)?;
                let m = model.entry(name.to_string()).or_default();
                let start = rng.below(shape.keys);
                let long = rng.chance(1, 4);
                for i in start..start + rng.range(10, 80) {
                    let (k, v) = (key(i % shape.keys, long), value(rng, 300));
                    tree.insert(&k, &v)?;
                    m.insert(k, v);
                }
            }
            3..=5 => {
                let mut tree = open(wtx, name)?;
                let m = model.entry(name.to_string()).or_default();
                let start = rng.below(shape.keys);
                for i in (start..start + rng.range(1, 60)).step_by(rng.range(1, 4) as usize) {
                    for long in [false, true] {
                        let k = key(i % shape.keys, long);
                        let was = tree.remove(&k)?;
                        assert_eq!(was, m.remove(&k).is_some(), "remove");
                    }
                }
            }
            6 | 7 => {
                let mut tree = open(wtx, name)?;
                let m = model.entry(name.to_string()).or_default();
                let k = key(rng.below(shape.keys), rng.chance(1, 4));
                let was = tree.remove(&k)?;
                assert_eq!(was, m.remove(&k).is_some(), "remove");
            }
            _ => {
                let mut tree = open(wtx, name)?;
                let m = model.entry(name.to_string()).or_default();
                let k = key(rng.below(shape.keys), rng.chance(1, 4));
                let v = value(rng, shape.max_value);
                // A third of the values are written in place (chosen without a draw, so
                // the random sequence stays what it was).
                match v.len() % 3 == 1 {
                    true => tree.insert_reserve(&k, v.len())?.copy_from_slice(&v),
                    false => tree.insert(&k, &v)?,
                }
                m.insert(k, v);
            }
        }
    }
    Ok(())
}

pub fn random_durability(rng: &mut Rng) -> Durability {
    if rng.chance(2, 5) {
        Durability::None
    } else {
        Durability::Immediate
    }
}

/// The entries of `model` between `lower` and `upper`, in key order. A range whose lower
/// bound lies above its upper bound, or two equal bounds not both included, holds no key:
/// mapkv returns it empty, while `BTreeMap::range` panics on it (start > end, or
/// start == end with both excluded), so such ranges are answered here without asking it.
pub fn model_range<'m>(
    model: &'m Tree,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
) -> Vec<(&'m [u8], &'m [u8])> {
    let empty = match (lower, upper) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    };
    if empty {
        return Vec::new();
    }
    model
        .range::<[u8], _>((lower, upper))
        .map(|(k, v)| (&k[..], &v[..]))
        .collect()
}

/// How a range is read: from the front (`next`), from the back (`next_back`), or from
/// both ends in an order drawn from a seed.
#[derive(Clone, Copy, Debug)]
pub enum Walk {
    Forward,
    Reverse,
    Mixed(u64),
}

/// Reads `range` by `walk` until it ends and asserts that it yields exactly
/// `model_range(model, lower, upper)`: the front in ascending order, the back in
/// descending order, together every entry once, and nothing from either end once it
/// has ended. Panics with the bounds and the walk on a difference.
pub fn check_range(
    mut range: Range<'_>,
    model: &Tree,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
    walk: Walk,
) -> Result<()> {
    let want = model_range(model, lower, upper);
    let what = || {
        format!(
            "range {}..{} ({walk:?})",
            show_bound(lower),
            show_bound(upper)
        )
    };
    let mut rng = Rng::new(match walk {
        Walk::Mixed(seed) => seed,
        _ => 0,
    });
    let (mut front, mut back) = (Vec::new(), Vec::new());
    // Entries from both ends, at most one more than the model holds.
    while front.len() + back.len() <= want.len() {
        let from_front = match walk {
            Walk::Forward => true,
            Walk::Reverse => false,
            Walk::Mixed(_) => rng.chance(1, 2),
        };
        let (entry, side) = if from_front {
            (range.next(), &mut front)
        } else {
            (range.next_back(), &mut back)
        };
        match entry {
            Some(e) => side.push(e?),
            None => break,
        }
    }
    let want_back: Vec<_> = want.iter().rev().copied().collect();
    for (end, got, want) in [("front", &front, &want), ("back", &back, &want_back)] {
        if let Some(i) = got.iter().zip(want.iter()).position(|(g, w)| g != w) {
            panic!(
                "{}: entry {i} from the {end} is {}, the model's is {}",
                what(),
                show_entry(got[i]),
                show_entry(want[i])
            );
        }
        if let Some(extra) = got.get(want.len()) {
            panic!(
                "{}: entry {} from the {end} is {}, beyond the model's {} entries",
                what(),
                want.len(),
                show_entry(*extra),
                want.len()
            );
        }
    }
    assert_eq!(
        front.len() + back.len(),
        want.len(),
        "{}: {} entries from the front and {} from the back, the model has {}",
        what(),
        front.len(),
        back.len(),
        want.len()
    );
    assert!(
        range.next().is_none() && range.next_back().is_none(),
        "{}: an entry after the end",
        what()
    );
    Ok(())
}

/// A key for messages: long keys (700 bytes in the model test) shortened.
fn show(key: &[u8]) -> String {
    match key.len() {
        0..=8 => format!("{key:02x?}"),
        n => format!("({n} bytes ..{:02x?})", &key[n - 4..]),
    }
}

fn show_bound(b: Bound<&[u8]>) -> String {
    match b {
        Bound::Included(k) => format!("Included({})", show(k)),
        Bound::Excluded(k) => format!("Excluded({})", show(k)),
        Bound::Unbounded => "Unbounded".to_string(),
    }
}

fn show_entry((key, value): (&[u8], &[u8])) -> String {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    format!(
        "{} -> {} bytes (hash {:016x})",
        show(key),
        value.len(),
        h.finish()
    )
}
