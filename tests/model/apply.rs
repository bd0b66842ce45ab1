//! One operation applied to a write transaction and to the model of what it holds,
//! each result checked against the model (commits, aborts and reopens are the harness's).

use std::ops::{Bound, Range};

use mapkv::{Error, Result, WriteTree, WriteTxn};

use crate::op::{BoundKey, Op, TREES, VALUE_SIZES, key_bytes, value_bytes};
use crate::support::model::{Tree, Trees, Walk, check_range, model_range};

pub fn apply(w: &mut WriteTxn, model: &mut Trees, op: &Op) -> Result<()> {
    let mut on = InStep { w, model };
    match *op {
        Op::Insert {
            tree,
            start,
            count,
            long_keys,
            size,
            seed,
        } => on.insert(tree, span(start, count), long_keys, values(size, seed)),
        Op::Remove {
            tree,
            start,
            count,
            stride,
            long_keys,
        } => on.remove(tree, span(start, count), stride, long_keys),
        Op::Overwrite {
            tree,
            start,
            count,
            size,
            rounds,
            seed,
        } => on.overwrite(tree, span(start, count.into()), rounds, values(size, seed)),
        Op::InsertFrom {
            tree,
            key,
            size,
            seed,
            short,
        } => on.insert_from(tree, key, values(size, seed), short),
        Op::InsertReserve {
            tree,
            key,
            size,
            seed,
            filled,
            freeze,
        } => on.insert_reserve(tree, key, values(size, seed), filled, freeze),
        Op::Append {
            tree,
            count,
            stride,
            long_keys,
            size,
            seed,
        } => on.append(tree, count, stride, long_keys, values(size, seed)),
        Op::Get {
            tree,
            key,
            long_keys,
        } => on.get(tree, key_bytes(key, long_keys)),
        Op::Range {
            tree,
            lower,
            upper,
            seed,
        } => on.range(tree, (lower, upper), seed),
        Op::RemoveRange { tree, lower, upper } => on.remove_range(tree, (lower, upper)),
        Op::Retain {
            tree,
            modulus,
            seed,
        } => on.retain(tree, modulus, seed),
        Op::DeleteTree { tree } => on.delete_tree(tree),
        Op::Rmw {
            tree,
            start,
            count,
            kind,
            size,
            seed,
        } => on.read_modify_write(tree, span(start, count.into()), kind, values(size, seed)),
        Op::Ends {
            tree,
            key,
            long_keys,
        } => on.ends(tree, key_bytes(key, long_keys)),
        Op::Interleave {
            first,
            second,
            start,
            count,
            size,
            seed,
        } => on.interleave(
            [first, second],
            span(start, count.into()),
            values(size, seed),
        ),
        Op::Commit { .. } | Op::Abort | Op::Reopen => unreachable!(),
    }
}

/// The values of one size class, varied by `seed` and by key.
#[derive(Clone, Copy)]
struct ValueClass {
    size: u8,
    seed: u8,
}

fn values(size: u8, seed: u8) -> ValueClass {
    ValueClass { size, seed }
}

impl ValueClass {
    fn value(self, k: u16) -> Vec<u8> {
        value_bytes(k, VALUE_SIZES[self.size as usize], self.seed)
    }
}

/// Keys `start..start + count`, cut short at `u16::MAX`.
fn span(start: u16, count: u16) -> Range<u16> {
    start..start.saturating_add(count)
}

type BoundKeys = (Bound<BoundKey>, Bound<BoundKey>);

/// A write transaction and the model of what it holds, changed in step.
struct InStep<'a> {
    w: &'a WriteTxn,
    model: &'a mut Trees,
}

impl<'a> InStep<'a> {
    /// The tree `tree` indexes, opened, and its model: empty if the tree is new, as
    /// opening creates it.
    fn open(&mut self, tree: u8) -> Result<(WriteTree<'a>, &mut Tree)> {
        let name = TREES[tree as usize];
        let t = self.w.open_tree(name)?;
        Ok((t, self.model.entry(name.to_string()).or_default()))
    }

    fn delete_tree(&mut self, tree: u8) -> Result<()> {
        let name = TREES[tree as usize];
        assert_eq!(self.w.delete_tree(name)?, self.model.remove(name).is_some());
        Ok(())
    }

    fn insert(
        &mut self,
        tree: u8,
        keys: Range<u16>,
        long_keys: bool,
        values: ValueClass,
    ) -> Result<()> {
        let (mut t, m) = self.open(tree)?;
        for k in keys {
            let (key, value) = (key_bytes(k, long_keys), values.value(k));
            t.insert(&key, &value)?;
            m.insert(key, value);
        }
        assert_eq!(t.len()?, m.len() as u64);
        Ok(())
    }

    fn remove(&mut self, tree: u8, keys: Range<u16>, stride: u8, long_keys: bool) -> Result<()> {
        let (mut t, m) = self.open(tree)?;
        for k in keys.step_by(stride as usize) {
            let key = key_bytes(k, long_keys);
            assert_eq!(t.remove(&key)?, m.remove(&key).is_some());
        }
        assert_eq!(t.len()?, m.len() as u64);
        Ok(())
    }

    fn overwrite(
        &mut self,
        tree: u8,
        keys: Range<u16>,
        rounds: u8,
        values: ValueClass,
    ) -> Result<()> {
        let (mut t, m) = self.open(tree)?;
        for round in 0..rounds {
            let values = ValueClass {
                seed: values.seed.wrapping_add(round.wrapping_mul(101)),
                ..values
            };
            for k in keys.clone() {
                let (key, value) = (key_bytes(k, false), values.value(k));
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
        Ok(())
    }

    fn insert_from(&mut self, tree: u8, k: u16, values: ValueClass, short: bool) -> Result<()> {
        let (mut t, m) = self.open(tree)?;
        let (key, value) = (key_bytes(k, false), values.value(k));
        if short {
            let given = &value[..value.len().saturating_sub(1)];
            let r = t.insert_from(&key, value.len() as u64 + 1, &mut &given[..]);
            assert!(matches!(r, Err(Error::Io(_))), "short reader: {r:?}");
            assert!(t.get(&key)? == m.get(&key).map(|v| &v[..]), "changed");
        } else {
            t.insert_from(&key, value.len() as u64, &mut &value[..])?;
            m.insert(key, value);
        }
        Ok(())
    }

    /// Works on two trees, so it opens them itself rather than through `Self::open`.
    fn insert_reserve(
        &mut self,
        tree: u8,
        k: u16,
        values: ValueClass,
        filled: u8,
        freeze: bool,
    ) -> Result<()> {
        let name = TREES[tree as usize];
        let mut t = self.w.open_tree(name)?;
        let mut value = values.value(k);
        let filled = value.len() * filled as usize / 256;
        value[filled..].fill(0);
        let key = key_bytes(k, false);
        let reserved = t.insert_reserve(&key, value.len())?;
        let half = filled / 2;
        reserved[..half].copy_from_slice(&value[..half]);
        if freeze {
            let other = TREES[(tree as usize + 1) % TREES.len()];
            self.insert_through_second_handle(other, key_bytes(k ^ 1, false))?;
        }
        reserved[half..filled].copy_from_slice(&value[half..filled]);
        assert!(
            t.get(&key)? == Some(&value[..]),
            "reserved value reads back"
        );
        self.model
            .entry(name.to_string())
            .or_default()
            .insert(key, value);
        Ok(())
    }

    /// Opens tree `name` twice and inserts `key` with an empty value through the newer
    /// handle: opening a tree again freezes the transaction's dirty pages.
    fn insert_through_second_handle(&mut self, name: &str, key: Vec<u8>) -> Result<()> {
        let older = self.w.open_tree(name)?;
        let mut newer = self.w.open_tree(name)?;
        newer.insert(&key, b"")?;
        self.model
            .entry(name.to_string())
            .or_default()
            .insert(key, Vec::new());
        drop((older, newer));
        Ok(())
    }

    fn append(
        &mut self,
        tree: u8,
        count: u16,
        stride: u8,
        long_keys: bool,
        values: ValueClass,
    ) -> Result<()> {
        let (mut t, m) = self.open(tree)?;
        let (first, long) = first_to_append(m, long_keys);
        let keys = (first..=u16::MAX as u32).step_by(stride as usize);
        for k in keys.take(count as usize).map(|k| k as u16) {
            let (key, value) = (key_bytes(k, long), values.value(k));
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
        Ok(())
    }

    fn get(&mut self, tree: u8, key: Vec<u8>) -> Result<()> {
        let (t, m) = self.open(tree)?;
        assert_eq!(t.get(&key)?, m.get(&key).map(|v| &v[..]));
        Ok(())
    }

    fn range(&mut self, tree: u8, bounds: BoundKeys, seed: u64) -> Result<()> {
        let (t, m) = self.open(tree)?;
        let (lower, upper) = resolve(m, bounds);
        for walk in [Walk::Forward, Walk::Reverse, Walk::Mixed(seed)] {
            let range = t.range((lower.clone(), upper.clone()))?;
            check_range(range, m, as_slice(&lower), as_slice(&upper), walk)?;
        }
        Ok(())
    }

    fn remove_range(&mut self, tree: u8, bounds: BoundKeys) -> Result<()> {
        let (mut t, m) = self.open(tree)?;
        let (lower, upper) = resolve(m, bounds);
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
        Ok(())
    }

    fn retain(&mut self, tree: u8, modulus: u8, seed: u8) -> Result<()> {
        let (mut t, m) = self.open(tree)?;
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
        Ok(())
    }

    /// `kind` 0: `replace`, 1: `take`, else `update`.
    fn read_modify_write(
        &mut self,
        tree: u8,
        keys: Range<u16>,
        kind: u8,
        values: ValueClass,
    ) -> Result<()> {
        let (mut t, m) = self.open(tree)?;
        for k in keys {
            let key = key_bytes(k, false);
            let value = values.value(k);
            match kind {
                0 => assert_eq!(t.replace(&key, &value)?, m.insert(key, value)),
                1 => assert_eq!(t.take(&key)?, m.remove(&key)),
                _ => update(&mut t, m, k, key, value)?,
            }
        }
        assert_eq!(t.len()?, m.len() as u64);
        Ok(())
    }

    fn ends(&mut self, tree: u8, key: Vec<u8>) -> Result<()> {
        let name = TREES[tree as usize];
        assert_eq!(
            self.w.try_open_tree(name)?.is_some(),
            self.model.contains_key(name)
        );
        let (t, m) = self.open(tree)?;
        let pair = |e: Option<(&[u8], &[u8])>| e.map(|(k, v)| (k.to_vec(), v.to_vec()));
        let model_pair = |e: Option<(&Vec<u8>, &Vec<u8>)>| e.map(|(k, v)| (k.clone(), v.clone()));
        assert_eq!(pair(t.first()?), model_pair(m.first_key_value()));
        assert_eq!(pair(t.last()?), model_pair(m.last_key_value()));
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
        Ok(())
    }

    /// Works on two trees, so it opens them itself rather than through `Self::open`.
    fn interleave(&mut self, trees: [u8; 2], keys: Range<u16>, values: ValueClass) -> Result<()> {
        let names = trees.map(|tree| TREES[tree as usize]);
        let mut a = self.w.open_tree(names[0])?;
        let mut b = self.w.open_tree(names[1])?;
        let start = keys.start;
        for k in keys {
            let (key, value) = (key_bytes(k, false), values.value(k));
            let (t, name) = match k % 2 {
                0 => (&mut a, names[0]),
                _ => (&mut b, names[1]),
            };
            t.insert(&key, &value)?;
            self.model
                .entry(name.to_string())
                .or_default()
                .insert(key, value);
        }
        // What the older handle returned stays valid and unchanged after the tree is
        // opened again and changed; the older handle itself is stale.
        let key = key_bytes(start, false);
        let kept = a.get(&key)?;
        let copy = kept.map(<[u8]>::to_vec);
        let mut again = self.w.open_tree(names[0])?;
        let bigger = value_bytes(start, 70_000, values.seed.wrapping_add(1));
        again.insert(&key, &bigger)?;
        again.remove(&key)?;
        assert_eq!(kept.map(<[u8]>::to_vec), copy);
        assert!(matches!(a.get(&key), Err(Error::StaleTree(_))));
        self.model
            .entry(names[0].to_string())
            .or_default()
            .remove(&key);
        for (t, name) in [(&again, names[0]), (&b, names[1])] {
            let m = self.model.entry(name.to_string()).or_default();
            assert_eq!(t.len()?, m.len() as u64, "tree {name}");
        }
        Ok(())
    }
}

/// The first key number past the model's last key, and whether keys from there are
/// long: model keys are `key_bytes(k, long)`, and long ones sort after short ones.
fn first_to_append(m: &Tree, long_keys: bool) -> (u32, bool) {
    match m.keys().next_back() {
        None => (0, long_keys),
        Some(last) => {
            let k = u16::from_be_bytes(last[last.len() - 2..].try_into().unwrap());
            match (last.len() > 2, long_keys) {
                (false, true) => (0, true),
                (long, _) => (k as u32 + 1, long),
            }
        }
    }
}

/// `update` of `key` that stores `value`, removes the key or returns what is there,
/// chosen by key number `k`.
fn update(t: &mut WriteTree, m: &mut Tree, k: u16, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
    let want_old = m.get(&key).cloned();
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
    Ok(())
}

/// The bounds' keys, resolved against the model.
fn resolve(m: &Tree, (lower, upper): BoundKeys) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (lower.map(|k| k.resolve(m)), upper.map(|k| k.resolve(m)))
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    b.as_ref().map(Vec::as_slice)
}
