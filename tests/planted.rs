//! Direct tests for bugs once planted by hand in the engine that the broader tests
//! (model, crash, corruption) missed or caught on one seed only. Each builds the exact
//! case the bug breaks and asserts what the bug would change; the planted change each
//! one catches is named in its comment.

mod support;

use std::ops::Bound;

use mapkv::{Database, Options, Result};
use support::model::{Tree, Walk, check_range};

/// Every bound kind at both ends (inverted, equal and adjacent bounds included), on
/// present and absent keys at the tree's ends and inside, read forward, backward and
/// from both ends, against `BTreeMap::range`.
///
/// Catches: a reverse read that returns its excluded lower bound (`Bound::Excluded`
/// tested with `<` instead of `<=` where `next_back` checks the lower end).
#[test]
fn every_bound_kind_in_every_direction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    // Even keys only, with values large enough for several leaves at 4 KiB pages, so
    // that bounds fall at leaf edges as well as inside leaves.
    let model: Tree = (0..300u16)
        .map(|i| ((i * 2).to_be_bytes().to_vec(), vec![i as u8; 40]))
        .collect();
    let mut w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    for (k, v) in &model {
        t.insert(k, v)?;
    }
    drop(t);
    w.commit()?;
    let mut probes: Vec<Vec<u8>> = vec![Vec::new(), vec![0xFF; 3]];
    for k in [0u16, 1, 2, 3, 63, 64, 65, 300, 301, 595, 596, 597, 598, 599] {
        probes.push(k.to_be_bytes().to_vec());
    }
    let bounds = |k: &[u8]| {
        [
            Bound::Included(k.to_vec()),
            Bound::Excluded(k.to_vec()),
            Bound::Unbounded,
        ]
    };
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    let mut seed = 0;
    for lo in &probes {
        for hi in &probes {
            for lower in bounds(lo) {
                for upper in bounds(hi) {
                    seed += 1;
                    for walk in [Walk::Forward, Walk::Reverse, Walk::Mixed(seed)] {
                        let range = t.range::<Vec<u8>, _>((lower.clone(), upper.clone()))?;
                        let (l, u) = (lower.as_ref(), upper.as_ref());
                        let (l, u) = (l.map(Vec::as_slice), u.map(Vec::as_slice));
                        check_range(range, &model, l, u, walk)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Without the map every page is read with pread into a buffer the transaction keeps
/// by page id. A blob the write transaction wrote and then freed may be written again
/// in the same transaction: its buffer must not be served afterwards.
///
/// Catches: `TxnPages::free_blob` not calling `PageReader::forget` (the read after the
/// second overwrite returns the first value).
#[test]
fn overwritten_overflow_value_is_read_fresh_without_the_map() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Options::new().mmap_size(0).open(dir.path().join("db"))?;
    let values: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![i; 10_000]).collect();
    let mut w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert(b"k", &values[0])?;
    assert!(t.get(b"k")? == Some(&values[0][..]), "first value");
    // The first overwrite's blob goes to new pages (the old blob is freed after it is
    // written); the second reuses the first blob's pages.
    t.insert(b"k", &values[1])?;
    t.insert(b"k", &values[2])?;
    let got = t.get(b"k")?.map(|v| v[0]);
    assert_eq!(
        got,
        Some(3),
        "first byte of the value after two overwrites (1: the first value's)"
    );
    drop(t);
    w.commit()?;
    db.check()?;
    let r = db.begin_read()?;
    assert!(r.open_tree("t")?.get(b"k")? == Some(&values[2][..]));
    Ok(())
}
