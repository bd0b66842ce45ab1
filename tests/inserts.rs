//! The insert path against a `BTreeMap` model, biased to its boundaries: keys at the
//! size limit and keys that are prefixes of one another (long separators, prefix skips
//! that a split or share changes), values on either side of the inline/overflow
//! boundary, overwrites that cross it, appends mixed with random inserts, at page sizes
//! other than 4096 and in aligned trees. `check` passes after every commit.

mod support;

use std::collections::BTreeMap;

use mapkv::testing::{MemFile, open_with_backend};
use mapkv::{Error, Options, Result, TreeOptions, key_len_max};
use support::model::read_all;
use support::rng::{Rng, heavy, seed};

/// One tree's shape: page size and value alignment.
#[derive(Clone, Copy, Debug)]
struct Shape {
    page: usize,
    align: usize,
}

impl Shape {
    fn key_max(self) -> usize {
        key_len_max(self.page) - 2 * (self.align - 1)
    }

    /// The largest value stored inline next to a key of `key_len` bytes
    /// (FORMAT.md#node-pages: slot and cell at most `(P − 24) / 2`).
    fn inline_max(self, key_len: usize) -> usize {
        let room = (self.page - 24) / 2;
        let pad = |at: usize| at.wrapping_neg() & (self.align - 1);
        let fits = |v: usize| {
            let before = 4 + key_len;
            let lead = pad(before);
            let tail = pad(before + lead + v);
            8 + before + lead + v + tail <= room
        };
        let mut v = room;
        while !fits(v) {
            v -= 1;
        }
        v
    }
}

/// A key drawn from families that stress splits and prefix skips.
fn key(rng: &mut Rng, s: Shape) -> Vec<u8> {
    let max = s.key_max();
    let mut k = match rng.below(7) {
        // Long shared stems: separators as long as keys, prefix skips of hundreds.
        0 | 1 => {
            let stem = max - rng.below(6) as usize - 3;
            let mut k = vec![b'S'; stem];
            k.extend(format!("{:03}", rng.below(1000)).bytes());
            k
        }
        // At the limit exactly, varying near the end.
        2 => {
            let mut k = vec![b'M'; max];
            let n = rng.below(4000) as u16;
            k[max - 2..].copy_from_slice(&n.to_be_bytes());
            k
        }
        // Zero-padded counters with a short stem.
        3 => format!("user:{:08}", rng.below(5000)).into_bytes(),
        // Short binary keys, zero and 0xFF bytes included.
        4 => {
            let len = rng.below(5) as usize;
            (0..len).map(|_| *rng.pick(&[0u8, 1, 0x7F, 0xFF])).collect()
        }
        // Keys that are prefixes of each other.
        5 => vec![b'P'; rng.below(max as u64 + 1) as usize],
        _ => (rng.next_u64() % 100_000).to_be_bytes().to_vec(),
    };
    if rng.chance(1, 10) {
        k.truncate(rng.below(k.len() as u64 + 1) as usize);
    }
    k
}

/// A value length for `key`, mostly at the inline/overflow boundary.
fn value_len(rng: &mut Rng, s: Shape, key: &[u8]) -> usize {
    let edge = s.inline_max(key.len());
    match rng.below(8) {
        0 => edge,
        1 => edge + 1,
        2 => edge.saturating_sub(rng.below(3) as usize),
        3 => edge + 1 + rng.below(s.page as u64) as usize,
        4 => 0,
        5 => rng.below(64) as usize,
        _ => rng.below(edge as u64 / 4 + 1) as usize,
    }
}

fn boundary_value(rng: &mut Rng, s: Shape, key: &[u8]) -> Vec<u8> {
    let len = value_len(rng, s, key);
    value(rng, len)
}

fn value(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    rng.fill(&mut v);
    v
}

/// The smallest key after `last` at most `max` bytes long: `last` with a byte added, or
/// failing that its last byte below 0xFF incremented (the rest dropped). `None` if
/// `last` is all 0xFF at the limit.
fn successor(last: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut k = last.to_vec();
    if k.len() < max {
        k.push(0);
        return Some(k);
    }
    while let Some(b) = k.pop() {
        if b < 0xFF {
            k.push(b + 1);
            return Some(k);
        }
    }
    None
}

fn run(shape: Shape, seed: u64, rounds: usize) -> Result<()> {
    let file = MemFile::default();
    let options = Options::new().page_size(shape.page);
    let mut db = open_with_backend(file.backend(), options.clone())?;
    let tree_options = TreeOptions::new().value_align(shape.align);
    let mut rng = Rng::new(seed);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for round in 0..rounds {
        let w = db.begin_write()?;
        let mut working = model.clone();
        {
            let mut t = w.open_tree_with("t", tree_options)?;
            for _ in 0..rng.range(20, 150) {
                // Trees of a few hundred entries: deep enough with long keys, and the
                // model's copies stay small.
                while working.len() > 500 {
                    let i = rng.below(working.len() as u64) as usize;
                    let k = working.keys().nth(i).unwrap().clone();
                    assert!(t.remove(&k)?);
                    working.remove(&k);
                }
                match rng.below(20) {
                    // A new or existing key, sized at the boundary.
                    0..=9 => {
                        let k = key(&mut rng, shape);
                        let v = boundary_value(&mut rng, shape, &k);
                        t.insert(&k, &v)?;
                        working.insert(k, v);
                    }
                    // An overwrite that crosses the inline/overflow boundary.
                    10..=12 if !working.is_empty() => {
                        let i = rng.below(working.len() as u64) as usize;
                        let k = working.keys().nth(i).unwrap().clone();
                        let old = working[&k].len();
                        let edge = shape.inline_max(k.len());
                        let len = match old <= edge {
                            true => edge + 1 + rng.below(3) as usize,
                            false => edge - rng.below(3) as usize,
                        };
                        let v = value(&mut rng, len);
                        let got = t.replace(&k, &v)?;
                        assert_eq!(got.as_ref(), working.get(&k), "replace's old value");
                        working.insert(k, v);
                    }
                    // A run of appends past the last key.
                    13..=14 => {
                        for _ in 0..rng.range(1, 60) {
                            let k = match working.keys().next_back() {
                                None => key(&mut rng, shape),
                                Some(last) => match successor(last, shape.key_max()) {
                                    Some(k) => k,
                                    None => break,
                                },
                            };
                            let v = boundary_value(&mut rng, shape, &k);
                            t.append(&k, &v)?;
                            working.insert(k, v);
                        }
                        if let Some(last) = working.keys().next_back().cloned() {
                            let r = t.append(&last, b"x");
                            assert!(matches!(r, Err(Error::Unsorted { .. })), "{r:?}");
                        }
                    }
                    // A run going down: each key just below the one before.
                    15 => {
                        let mut k = key(&mut rng, shape);
                        for _ in 0..rng.range(1, 40) {
                            let v = boundary_value(&mut rng, shape, &k);
                            t.insert(&k, &v)?;
                            working.insert(k.clone(), v);
                            match k.pop() {
                                Some(b) if b > 0 => k.push(b - 1),
                                Some(_) => {}
                                None => break,
                            }
                        }
                    }
                    // Series appended in turn (`series | counter` keys): each goes right
                    // after its series' last key, inside a leaf that holds the next
                    // series' start.
                    16 => {
                        let stem = rng.below(shape.key_max() as u64 - 4) as usize;
                        let series = rng.range(2, 6) as u8;
                        let start = rng.below(1000) as u16;
                        for n in 0..rng.range(10, 60) as u16 {
                            for id in 0..series {
                                let mut k = vec![b'T'; stem];
                                k.push(id);
                                k.extend((start + n).to_be_bytes());
                                let v = match rng.chance(1, 10) {
                                    true => boundary_value(&mut rng, shape, &k),
                                    false => {
                                        let len = rng.below(100) as usize;
                                        value(&mut rng, len)
                                    }
                                };
                                t.insert(&k, &v)?;
                                working.insert(k, v);
                            }
                        }
                    }
                    17 if !working.is_empty() => {
                        let i = rng.below(working.len() as u64) as usize;
                        let k = working.keys().nth(i).unwrap().clone();
                        assert!(t.remove(&k)?);
                        working.remove(&k);
                    }
                    _ => {
                        let k = key(&mut rng, shape);
                        assert_eq!(t.get(&k)?, working.get(&k).map(|v| &v[..]));
                    }
                }
            }
            assert_eq!(t.len()?, working.len() as u64);
            let got: Vec<(Vec<u8>, Vec<u8>)> = t
                .iter()?
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<_>>()?;
            assert!(
                got.iter().map(|(k, v)| (k, v)).eq(working.iter()),
                "{shape:?} round {round}: the transaction's view differs from the model"
            );
        }
        if rng.chance(1, 8) {
            w.abort();
            continue;
        }
        w.commit()?;
        model = working;
        let report = db.check()?;
        assert_eq!(
            report.entries,
            model.len() as u64,
            "{shape:?} round {round}"
        );
        if rng.chance(1, 6) {
            drop(db);
            db = open_with_backend(file.backend(), options.clone())?;
        }
        let all = read_all(&db)?;
        let empty = BTreeMap::new();
        assert!(
            all.get("t").unwrap_or(&empty) == &model,
            "{shape:?} round {round}: committed contents differ from the model"
        );
    }
    Ok(())
}

const SHAPES: [Shape; 6] = [
    Shape {
        page: 4096,
        align: 1,
    },
    Shape {
        page: 4096,
        align: 16,
    },
    Shape {
        page: 8192,
        align: 64,
    },
    Shape {
        page: 16384,
        align: 8,
    },
    Shape {
        page: 32768,
        align: 1,
    },
    Shape {
        page: 65536,
        align: 32,
    },
];

#[test]
fn inserts_at_the_boundaries_agree_with_a_model() -> Result<()> {
    let base = seed(1);
    let rounds = if heavy() { 400 } else { 40 };
    for (n, shape) in SHAPES.into_iter().enumerate() {
        run(shape, base.wrapping_add(n as u64), rounds)?;
    }
    Ok(())
}

/// An overwrite with a value of the same size rewrites the cell where it is: in a full
/// leaf (appended keys), removing the old cell and placing the new one needed room the
/// leaf did not have, and every other such overwrite compacted the whole page.
///
/// Catches: same-size overwrites going through a remove and an insert, which moved the
/// value (here, on the second overwrite) and rebuilt the leaf about every other time.
#[test]
fn a_same_size_overwrite_keeps_the_value_in_place() -> Result<()> {
    let file = MemFile::default();
    let db = open_with_backend(file.backend(), Options::new())?;
    let w = db.begin_write()?;
    for i in 0..1000u64 {
        w.open_tree("t")?.append(&i.to_be_bytes(), &[1; 100])?;
    }
    w.commit()?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    let key = 500u64.to_be_bytes();
    t.insert(&key, &[2; 100])?; // copies the committed leaf
    let at = t.get(&key)?.map(<[u8]>::as_ptr);
    for (k, fill) in [(500u64, 3), (501, 4), (499, 5), (500, 6)] {
        t.insert(&k.to_be_bytes(), &[fill; 100])?;
        assert_eq!(t.get(&key)?.map(<[u8]>::as_ptr), at, "after key {k}");
    }
    assert_eq!(t.get(&key)?, Some(&[6; 100][..]));
    drop(t);
    w.commit()?;
    db.check()?;
    Ok(())
}
