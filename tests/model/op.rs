//! The operations the model test runs, and how quickcheck draws them: their arguments
//! index into a few trees, keys and value sizes, so that operations meet.

use std::ops::Bound;

use quickcheck::{Arbitrary, Gen};

use crate::support::model::Tree;

pub const TREES: [&str; 3] = ["alpha", "beta", "gamma"];
pub const VALUE_SIZES: [usize; 7] = [0, 3, 150, 900, 1700, 5000, 70_000];

#[derive(Clone, Debug)]
pub enum Op {
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
pub enum BoundKey {
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

    pub fn resolve(self, model: &Tree) -> Vec<u8> {
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

pub fn key_bytes(k: u16, long: bool) -> Vec<u8> {
    let mut key = if long { vec![b'L'; 700] } else { Vec::new() };
    key.extend_from_slice(&k.to_be_bytes());
    key
}

pub fn value_bytes(k: u16, size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ k as u8)
        .collect()
}
