//! Writes on files whose node pages were edited and resealed: a byte of a header, a slot
//! or a cell changed, slots or child references swapped, a first or last key moved out
//! of the range its parent gives it (the page still sound alone), and every checksum on
//! the way to the meta recomputed, so that the edit reaches the write path instead of
//! stopping at a checksum. Then inserts (inline and overflow values), appends and
//! removes, and a commit. See FORMAT.md#the-write-path-trusts-nothing.
//!
//! A change may fail with `Corrupted`; it must not panic. A commit that goes through must
//! keep every entry a `get` found before (unless the writes removed or replaced it) and
//! every entry the writes stored, and a file that passed `check` must still pass it.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use mapkv::testing::{MemFile, open_with_backend};
use mapkv::{Database, Error, Options, Result, TreeOptions};
use support::image::{
    META_CATALOG, META_SLOT, newest_meta_slot, seal_meta, seal_page, u16_at, u32_at, u64_at,
};
use support::rng::{Rng, heavy, seed};

const PS: usize = 4096;
/// Node page kinds (FORMAT.md#page-header).
const BRANCH: u8 = 1;
const LEAF: u8 = 2;

/// The trees and how each is opened: short keys with a shared prefix, long keys with
/// values aligned to 16, and big-endian integers appended.
const TREES: [&str; 3] = ["user", "long", "log"];

fn open_tree<'t>(w: &'t mapkv::WriteTxn, name: &str) -> Result<mapkv::WriteTree<'t>> {
    match name {
        "long" => w.open_tree_with(name, TreeOptions::new().value_align(16)),
        _ => w.open_tree(name),
    }
}

fn long_key(i: u64) -> Vec<u8> {
    let mut k = vec![b'S'; 1500];
    k.extend(format!("{i:05}").bytes());
    k
}

/// A database of a few hundred node pages, two commits (the second removes keys, so
/// that leaves have holes).
fn build() -> Result<Vec<u8>> {
    let file = MemFile::default();
    let db = open_with_backend(file.backend(), Options::new())?;
    let mut rng = Rng::new(7);
    let w = db.begin_write()?;
    for i in 0..3000u64 {
        let len = rng.below(200) as usize;
        let key = format!("user:{:08}", i * 3);
        open_tree(&w, "user")?.insert(key.as_bytes(), &vec![i as u8; len])?;
    }
    for i in 0..20 {
        open_tree(&w, "user")?.insert(format!("big:{i}").as_bytes(), &[1; 5000])?;
    }
    for i in 0..300 {
        let len = rng.below(300) as usize;
        open_tree(&w, "long")?.insert(&long_key(i * 2), &vec![2; len])?;
    }
    for i in 0..2000u64 {
        open_tree(&w, "log")?.append(&(i * 2).to_be_bytes(), &[3; 40])?;
    }
    w.commit()?;
    let w = db.begin_write()?;
    for i in 0..300 {
        open_tree(&w, "user")?.remove(format!("user:{:08}", i * 7).as_bytes())?;
    }
    w.commit()?;
    drop(db);
    Ok(file.contents())
}

/// Where each node page of the intact image is referenced from: page offset → (offset
/// of the reference, offset of the page holding it; `None` for the meta).
type Parents = HashMap<usize, (usize, Option<usize>)>;

/// The tree each node page belongs to (`None`: the catalog).
type Owners = HashMap<usize, Option<&'static str>>;

/// Walks the node pages below the reference at `ref_at` (in `parent`) of the tree
/// `tree`; in the catalog (`None`), each leaf value is a tree record whose root
/// reference starts a tree.
fn walk(
    img: &[u8],
    ref_at: usize,
    parent: Option<usize>,
    tree: Option<&'static str>,
    out: &mut (Parents, Owners),
) {
    let page = u64_at(img, ref_at) as usize * PS;
    out.0.insert(page, (ref_at, parent));
    out.1.insert(page, tree);
    let count = u16_at(img, page + 2);
    if img[page] == BRANCH {
        walk(img, page + 24, Some(page), tree, out);
        for i in 0..count {
            let cell = page + u16_at(img, page + 44 + 8 * i + 4);
            walk(img, cell, Some(page), tree, out);
        }
    } else if tree.is_none() {
        for i in 0..count {
            let slot = page + 24 + 8 * i;
            let (cell, key_len) = (page + u16_at(img, slot + 4), u16_at(img, slot + 6));
            let name = &img[cell + 4..cell + 4 + key_len];
            let name = TREES.into_iter().find(|t| t.as_bytes() == name);
            let lead = (u32_at(img, cell) >> 16 & 0x3f) as usize;
            let record = cell + 4 + key_len + lead;
            if u64_at(img, record) != 0 {
                walk(img, record, Some(page), name, out);
            }
        }
    }
}

/// The keys of the node at `page`, as far as its slots say (an edited page may lie).
fn keys_of(img: &[u8], page: usize) -> Vec<Vec<u8>> {
    let (slots, cell_head) = match img[page] {
        BRANCH => (44, 20),
        _ => (24, 4),
    };
    let count = u16_at(img, page + 2).min((PS - slots) / 8);
    (0..count)
        .filter_map(|i| {
            let s = page + slots + 8 * i;
            let at = page + u16_at(img, s + 4) + cell_head;
            Some(img.get(at..at + u16_at(img, s + 6))?.to_vec())
        })
        .collect()
}

/// Reseals `page` and the pages above it up to the newest meta (in `slot`), and copies
/// that meta into the other slot, so that recovery has nothing older to fall back to.
fn reseal_up(img: &mut [u8], parents: &Parents, page: usize, slot: usize) {
    let mut at = Some(page);
    while let Some(page) = at {
        let (ref_at, parent) = parents[&page];
        seal_page(img, page, PS, ref_at);
        at = parent;
    }
    seal_meta(img, slot);
    let m = slot * META_SLOT;
    let meta = img[m..m + META_SLOT].to_vec();
    let other = (1 - slot) * META_SLOT;
    img[other..other + META_SLOT].copy_from_slice(&meta);
}

/// One to three edits of the node `page`.
fn edit(rng: &mut Rng, page: &mut [u8]) {
    let count = u16_at(page, 2);
    let kind = page[0];
    let (slots, cell_head) = match kind {
        BRANCH => (44, 20),
        _ => (24, 4),
    };
    let slot = |rng: &mut Rng| slots + 8 * rng.below(count as u64) as usize;
    let nudge =
        |b: &mut u8, rng: &mut Rng| *b = b.wrapping_add(rng.range(1, 4) as u8).wrapping_sub(2);
    for _ in 0..rng.range(1, 4) {
        match rng.below(12) {
            // A bit of the header.
            0 => page[rng.below(24) as usize] ^= 1 << rng.below(8),
            // A slot's prefix, offset or key length nudged.
            1 | 2 if count > 0 => {
                let at = slot(rng) + rng.below(8) as usize;
                nudge(&mut page[at], rng);
            }
            3 if count > 1 => {
                let (a, b) = (slot(rng), slot(rng));
                let first = page[a..a + 8].to_vec();
                page.copy_within(b..b + 8, a);
                page[b..b + 8].copy_from_slice(&first);
            }
            // A byte of a key, or of a leaf cell's head.
            4 | 5 if count > 0 => {
                let s = slot(rng);
                let cell = u16_at(page, s + 4);
                let (key_at, key_len) = (cell + cell_head, u16_at(page, s + 6));
                let at = match kind == LEAF && rng.chance(1, 2) {
                    true => cell + rng.below(4) as usize,
                    false if key_len > 0 => key_at + rng.below(key_len as u64) as usize,
                    false => continue,
                };
                if let Some(b) = page.get_mut(at) {
                    nudge(b, rng);
                }
            }
            // The first key lowered or the last raised past its neighbours in the
            // parent, the page still sound alone: no prefix skip, prefixes rewritten.
            6 | 7 if count > 1 => misplace(rng, page, count, slots, cell_head),
            // Two child references of a branch swapped (its keys stay).
            8 | 9 if kind == BRANCH => {
                let child = |i: u64| match i {
                    0 => 24,
                    _ => u16_at(page, slots + 8 * (i as usize - 1) + 4),
                };
                let a = child(rng.below(count as u64 + 1));
                let b = child(rng.below(count as u64 + 1));
                if a != b && a.max(b) + 20 <= page.len() {
                    let first = page[a..a + 20].to_vec();
                    page.copy_within(b..b + 20, a);
                    page[b..b + 20].copy_from_slice(&first);
                }
            }
            _ => page[rng.below(PS as u64) as usize] ^= 1 << rng.below(8),
        }
    }
}

/// Moves the first key down or the last key up (its last byte by one, or the bytes from
/// a random point on set to 0x00 or 0xFF), and rewrites the slot prefixes for no prefix
/// skip.
fn misplace(rng: &mut Rng, page: &mut [u8], count: usize, slots: usize, cell_head: usize) {
    let key_range = |page: &[u8], i: usize| {
        let s = slots + 8 * i;
        let at = u16_at(page, s + 4) + cell_head;
        at..(at + u16_at(page, s + 6)).min(PS)
    };
    let (i, fill) = match rng.chance(1, 2) {
        true => (0, 0x00),
        false => (count - 1, 0xFF),
    };
    let key = key_range(page, i);
    if !key.is_empty() && key.start < PS {
        let from = match rng.chance(1, 2) {
            true => key.start + rng.below(key.len() as u64) as usize,
            false => key.end - 1,
        };
        match from + 1 == key.end && page[from] != fill {
            true if fill == 0 => page[from] -= 1,
            true => page[from] += 1,
            false => page[from..key.end].fill(fill),
        }
    }
    page[22..24].fill(0);
    for i in 0..count {
        let key = key_range(page, i);
        let mut prefix = [0; 4];
        for (to, from) in prefix.iter_mut().zip(page.get(key).unwrap_or_default()) {
            *to = *from;
        }
        let s = slots + 8 * i;
        page[s..s + 4].copy_from_slice(&prefix);
    }
}

/// (tree, key) → value.
type Entries = BTreeMap<(&'static str, Vec<u8>), Vec<u8>>;

/// The entries a `get` finds (a key that iteration shows but a lookup does not reach is
/// already lost).
fn found(db: &Database) -> Result<Entries> {
    let r = db.begin_read()?;
    let mut out = Entries::new();
    for name in TREES {
        let Ok(tree) = r.open_tree(name) else {
            continue;
        };
        for entry in tree.iter()? {
            let Ok((key, _)) = entry else { break };
            if let Ok(Some(value)) = tree.get(key) {
                out.insert((name, key.to_vec()), value.to_vec());
            }
        }
    }
    Ok(out)
}

/// `page` and the pages next to it under its parent (those it may share cells with).
fn neighbours(img: &[u8], parents: &Parents, page: usize) -> Vec<usize> {
    let Some(parent) = parents[&page].1.filter(|&p| img[p] == BRANCH) else {
        return vec![page];
    };
    let children: Vec<usize> = (0..=u16_at(img, parent + 2))
        .map(|i| match i {
            0 => parent + 24,
            _ => parent + u16_at(img, parent + 44 + 8 * (i - 1) + 4),
        })
        .map(|r| u64_at(img, r) as usize * PS)
        .collect();
    let i = children.iter().position(|&c| c == page).expect("a child");
    children[i.saturating_sub(1)..(i + 2).min(children.len())].to_vec()
}

/// A key to write: mostly one just after a key of the edited node (`near`), so that
/// runs of them fill and cut it, else any.
fn key(rng: &mut Rng, near: &[(&'static str, Vec<u8>)]) -> (&'static str, Vec<u8>) {
    if !near.is_empty() && rng.chance(2, 3) {
        let (name, key) = rng.pick(near);
        let mut key = key.clone();
        key.push(rng.below(4) as u8);
        return (name, key);
    }
    match rng.below(3) {
        0 => ("user", format!("user:{:08}", rng.below(9500)).into_bytes()),
        1 => ("long", long_key(rng.below(700))),
        _ => ("log", rng.below(4200).to_be_bytes().to_vec()),
    }
}

/// Opens `img`, writes to it (near the keys `near`) and commits; checks what a commit
/// that went through kept.
fn write_to(img: Vec<u8>, rng: &mut Rng, near: &[(&'static str, Vec<u8>)]) -> Result<()> {
    let file = MemFile::new(img);
    let db = open_with_backend(file.backend(), Options::new())?;
    let passed = db.check().is_ok();
    let mut model = found(&db)?;
    let w = db.begin_write()?;
    let mut run: Option<(&str, Vec<u8>)> = None;
    for _ in 0..200 {
        // Half the time the next key of a run: each right after the one before.
        let next = run.take().filter(|(_, key)| key.len() < 1800);
        let (name, key) = match next.filter(|_| rng.chance(1, 2)) {
            Some((name, mut key)) => {
                key.push(1);
                (name, key)
            }
            None => key(rng, near),
        };
        run = Some((name, key.clone()));
        let mut tree = open_tree(&w, name)?;
        let len = match rng.below(4) {
            0 => 5000,
            1 => rng.below(2100) as usize,
            _ => rng.below(200) as usize,
        };
        let value = vec![rng.below(256) as u8; len];
        match rng.below(6) {
            0 => {
                tree.remove(&key)?;
                model.remove(&(name, key));
            }
            1 => {
                let mut key = tree.last()?.map_or_else(Vec::new, |(k, _)| k.to_vec());
                key.push(1);
                tree.append(&key, &value)?;
                model.insert((name, key), value);
            }
            _ => {
                tree.insert(&key, &value)?;
                model.insert((name, key), value);
            }
        }
    }
    w.commit()?;
    let r = db.begin_read()?;
    for ((name, key), value) in &model {
        let got = r.open_tree(name)?.get(key).map(|v| v.map(<[u8]>::to_vec));
        assert!(
            matches!(&got, Ok(Some(v)) if v == value),
            "tree {name}, key {key:?}: {got:?}, not the {} bytes stored",
            value.len()
        );
    }
    let after = db.check();
    assert!(
        !passed || after.is_ok(),
        "check passed before, now {after:?}"
    );
    Ok(())
}

/// Catches: a split handing its parent a separator taken from a key outside the range
/// the parent gives the leaf (the parent left unsorted, keys of another leaf lost: most
/// seeds); a share putting a new key among its sibling's keys out of order (with
/// `MAPKV_HEAVY=1`). Each has its own test in tests/corrupt_writes.rs too.
#[test]
fn writes_on_resealed_edits_keep_what_was_found() -> Result<()> {
    let img = build()?;
    let slot = newest_meta_slot(&img);
    let mut walked = (Parents::new(), Owners::new());
    walk(
        &img,
        slot * META_SLOT + META_CATALOG,
        None,
        None,
        &mut walked,
    );
    let (parents, owners) = walked;
    let mut pages: Vec<usize> = parents.keys().copied().collect();
    pages.sort_unstable();
    let mut rng = Rng::new(seed(1));
    let cases = if heavy() { 20_000 } else { 1000 };
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for case in 0..cases {
        let page = *rng.pick(&pages);
        let mut img = img.clone();
        edit(&mut rng, &mut img[page..page + PS]);
        reseal_up(&mut img, &parents, page, slot);
        let near: Vec<(&str, Vec<u8>)> = match owners[&page] {
            // Short enough for any tree, with room for runs to grow them.
            Some(name) => (neighbours(&img, &parents, page).into_iter())
                .flat_map(|p| keys_of(&img, p))
                .filter(|k| k.len() < 1600)
                .map(|k| (name, k))
                .collect(),
            None => Vec::new(),
        };
        let mut writes = Rng::new(rng.next_u64());
        let outcome = catch_unwind(AssertUnwindSafe(|| write_to(img, &mut writes, &near)));
        let outcome = match outcome {
            Ok(Ok(())) => "committed",
            Ok(Err(Error::Corrupted { .. })) => "corrupted",
            Ok(Err(e)) => panic!("case {case} (page {}): {e}", page / PS),
            Err(_) => panic!("case {case} (page {}): panicked", page / PS),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("{outcomes:?}");
    assert!(outcomes.len() == 2, "both outcomes come up: {outcomes:?}");
    Ok(())
}
