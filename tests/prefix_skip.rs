//! Keys with long shared prefixes (the format-4 prefix skip) through inserts,
//! removes, range removes, retains, reserved values, merges and compaction, at the
//! smallest and largest page sizes: every read agrees with a model, `check` passes.

mod support;

use std::collections::BTreeMap;

use mapkv::{Options, Result};
use support::model::read_all;
use support::rng::Rng;

fn key(rng: &mut Rng) -> Vec<u8> {
    let stems: [&[u8]; 4] = [b"", b"user:", b"user:0000000000", b"tenant/42/objects/0000"];
    let mut k = rng.pick(&stems).to_vec();
    let n = rng.below(3000);
    let digits = rng.range(1, 8) as usize;
    k.extend(format!("{n:0digits$}").bytes());
    if rng.chance(1, 5) {
        k.truncate(rng.below(k.len() as u64 + 1) as usize);
    }
    k
}

#[test]
fn shared_prefix_keys_survive_every_edit_path() -> Result<()> {
    for page_size in [4096usize, 65536] {
        let dir = tempfile::tempdir()?;
        let db = Options::new()
            .page_size(page_size)
            .open(dir.path().join("db"))?;
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut rng = Rng::new(page_size as u64);
        for round in 0..60 {
            let w = db.begin_write()?;
            let mut t = w.open_tree("t")?;
            for _ in 0..400 {
                let k = key(&mut rng);
                match rng.below(10) {
                    0..=4 => {
                        let v =
                            vec![rng.below(256) as u8; rng.below(page_size as u64 / 8) as usize];
                        t.insert(&k, &v)?;
                        model.insert(k, v);
                    }
                    5 => {
                        let len = rng.below(page_size as u64 / 4) as usize;
                        t.insert_reserve(&k, len)?.fill(9);
                        model.insert(k, vec![9; len]);
                    }
                    6..=7 => {
                        assert_eq!(t.remove(&k)?, model.remove(&k).is_some());
                    }
                    8 => {
                        let k2 = key(&mut rng);
                        let (lo, hi) = if k <= k2 { (k, k2) } else { (k2, k) };
                        let n = t.remove_range(lo.clone()..hi.clone())?;
                        let gone: Vec<Vec<u8>> =
                            model.range(lo..hi).map(|(k, _)| k.clone()).collect();
                        assert_eq!(n, gone.len() as u64);
                        for g in gone {
                            model.remove(&g);
                        }
                    }
                    _ => {
                        assert_eq!(t.get(&k)?, model.get(&k).map(|v| &v[..]));
                    }
                }
            }
            if round % 7 == 3 {
                let cut = rng.below(256) as u8;
                t.retain(|k, _| k.last().is_none_or(|&b| b != cut))?;
                model.retain(|k, _| k.last().is_none_or(|&b| b != cut));
            }
            drop(t);
            w.commit()?;
            if round % 10 == 9 {
                db.compact()?;
            }
            db.check()?;
            let r = db.begin_read()?;
            let t = r.open_tree("t")?;
            let got = read_all(&db)?.remove("t").unwrap_or_default();
            assert_eq!(got.len(), model.len(), "round {round}, page {page_size}");
            assert!(got == model, "round {round}, page {page_size}");
            for _ in 0..200 {
                let k = key(&mut rng);
                assert_eq!(t.get(&k)?, model.get(&k).map(|v| &v[..]));
            }
        }
        // Bulk load the same keys into a fresh tree.
        db.bulk_load("b", model.iter().map(|(k, v)| (k.clone(), v.clone())))?;
        db.check()?;
        let r = db.begin_read()?;
        let b = r.open_tree("b")?;
        for (k, v) in &model {
            assert_eq!(b.get(k)?, Some(&v[..]));
        }
    }
    Ok(())
}
