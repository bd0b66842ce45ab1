//! One operation applied to a write transaction and to the model of what it holds,
//! each result checked against the model (commits, aborts and reopens are the harness's).

use std::ops::Bound;

use mapkv::{Error, Result, WriteTxn};

use crate::op::{Op, TREES, VALUE_SIZES, key_bytes, value_bytes};
use crate::support::model::{Trees, Walk, check_range, model_range};

pub fn apply(w: &mut WriteTxn, model: &mut Trees, op: &Op) -> Result<()> {
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
