//! Pages are never lost or handed out twice, whatever a write transaction does with them:
//! large values written, streamed in (`insert_from`, also with a source that fails or
//! panics half-way), reserved, replaced and removed, trees opened again while an older
//! handle lives (its slices pinned) and deleted, transactions aborted, commits of either
//! durability, compactions, held readers and reopens. After every step `check` (every
//! page reachable or free exactly once) and the content must agree with a model.

mod support;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use mapkv::{Durability, Error, Options, ReadTxn, Result, WriteTxn};
use support::rng::{Rng, seed};

type Model = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

const NAMES: [&str; 2] = ["a", "b"];

/// A source that yields `data`, then fails (or panics) after `fail_at` bytes if set.
struct Source<'a> {
    data: &'a [u8],
    at: usize,
    fail_at: Option<(usize, bool)>,
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((n, panics)) = self.fail_at
            && self.at >= n
        {
            match panics {
                true => panic!("the source panics"),
                false => return Err(io::Error::other("the source fails")),
            }
        }
        let end = (self.at + buf.len().min(5000)).min(self.data.len());
        let k = end - self.at;
        buf[..k].copy_from_slice(&self.data[self.at..end]);
        self.at = end;
        Ok(k)
    }
}

fn value(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => rng.below(100) as usize,
        1 => rng.range(3000, 9000) as usize,
        _ => rng.range(9000, 70_000) as usize,
    };
    let mut v = vec![0; len];
    rng.fill(&mut v);
    v
}

fn key(rng: &mut Rng) -> Vec<u8> {
    format!("k{:03}", rng.below(120)).into_bytes()
}

/// One random change to `w` and `model`.
fn change(rng: &mut Rng, w: &WriteTxn, model: &mut Model) -> Result<()> {
    let name = *rng.pick(&NAMES);
    let m = model.entry(name.to_string()).or_default();
    let mut t = w.open_tree(name)?;
    match rng.below(10) {
        0 | 1 => {
            let (k, v) = (key(rng), value(rng));
            t.insert(&k, &v)?;
            m.insert(k, v);
        }
        2 => {
            let (k, v) = (key(rng), value(rng));
            let fail_at = match rng.below(3) {
                0 => None,
                _ => Some((rng.below(v.len() as u64 + 1) as usize, rng.chance(1, 2))),
            };
            let mut source = Source {
                data: &v,
                at: 0,
                fail_at,
            };
            let len = v.len() as u64;
            let done = catch_unwind(AssertUnwindSafe(|| t.insert_from(&k, len, &mut source)));
            match (done, fail_at) {
                (Ok(Ok(())), _) => drop(m.insert(k, v)),
                (Ok(Err(Error::Io(_))), Some(_)) | (Err(_), Some((_, true))) => {}
                (Ok(r), _) => panic!("insert_from: {r:?} with {fail_at:?}"),
                (Err(_), _) => panic!("insert_from panicked with {fail_at:?}"),
            }
        }
        3 => {
            let (k, v) = (key(rng), value(rng));
            t.insert_reserve(&k, v.len())?.copy_from_slice(&v);
            m.insert(k, v);
        }
        4 | 5 => {
            let k = key(rng);
            assert_eq!(t.remove(&k)?, m.remove(&k).is_some());
        }
        6 => {
            // Opened again while this handle holds a slice: the pages are pinned.
            let k = key(rng);
            let held = t.get(&k)?.map(<[u8]>::to_vec);
            let mut again = w.open_tree(name)?;
            assert_eq!(held.as_ref(), m.get(&k));
            assert_eq!(again.remove(&k)?, m.remove(&k).is_some());
            let (k, v) = (key(rng), value(rng));
            again.insert(&k, &v)?;
            m.insert(k, v);
        }
        7 => {
            drop(t);
            w.delete_tree(name)?;
            model.remove(name);
        }
        _ => {
            for _ in 0..rng.range(1, 30) {
                let (k, v) = (key(rng), value(rng));
                t.insert(&k, &v)?;
                m.insert(k, v);
            }
        }
    }
    Ok(())
}

fn content(r: &ReadTxn) -> Result<Model> {
    let mut out = Model::new();
    for name in r.tree_names()? {
        let t = r.open_tree(&name)?;
        let entries = t.iter()?.map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())));
        out.insert(name, entries.collect::<Result<_>>()?);
    }
    Ok(out)
}

fn run(seed: u64, options: Options, steps: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    let mut rng = Rng::new(seed);
    let mut db = options.clone().open(&path)?;
    let mut model = Model::new();
    let mut readers: Vec<(ReadTxn, Model)> = Vec::new();
    for step in 0..steps {
        match rng.below(20) {
            0 => {
                db.compact()?;
            }
            1 => {
                readers.clear();
                drop(db);
                db = options.clone().open(&path)?;
            }
            2 | 3 => {
                let r = db.begin_read()?;
                readers.push((r, model.clone()));
                if readers.len() > 3 {
                    readers.remove(0);
                }
            }
            4 => drop(readers.pop()),
            _ => {
                let mut w = db.begin_write()?;
                let mut next = model.clone();
                for _ in 0..rng.range(1, 6) {
                    change(&mut rng, &w, &mut next)?;
                }
                match rng.below(8) {
                    0 => w.abort(),
                    d => {
                        if d < 3 {
                            w.set_durability(Durability::None);
                        }
                        w.commit()?;
                        model = next;
                    }
                }
            }
        }
        db.check()
            .unwrap_or_else(|e| panic!("seed {seed} step {step}: check: {e}"));
        let now = content(&db.begin_read()?)?;
        assert!(now == model, "seed {seed} step {step}: content differs");
        for (r, began) in &readers {
            assert!(
                content(r)? == *began,
                "seed {seed} step {step}: a reader's snapshot"
            );
        }
    }
    Ok(())
}

#[test]
fn no_page_is_lost_or_given_twice() -> Result<()> {
    let base = seed(21);
    for s in base..base + 3 {
        run(s, Options::new(), 150)?;
        run(s, Options::new().mmap_size(0), 150)?;
    }
    Ok(())
}
