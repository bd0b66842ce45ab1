//! A small valid database (one of a few variants built once, together holding every page
//! kind: branches, leaves, overflow blobs, the free list, a catalog deeper than one page,
//! a tree five levels deep) with fuzzer-chosen byte edits, page copies, truncations and
//! extensions, optionally resealed (every checksum on the way from the meta recomputed,
//! so the edit reaches the decoders instead of stopping at a checksum), and crafted edits:
//! trees turned into DAGs (resealed), references given another writer `txn`. Then: open,
//! check, compact (one input in eight), read everything, write (inserts, removes, range
//! removes, `retain`, a tree deleted), commit, close, reopen. Errors are allowed; panics, crashes, hangs and huge
//! allocations are not.
//!
//! When the only edits are `txn` changes, the pages, the references between them and the
//! free list are intact, so more must hold: a commit leaves no page reached twice, never
//! changes what a reader of the snapshot before it sees, and if the database passed
//! `check` before, it passes it after the commit and after a reopen.

#![no_main]

#[path = "common/corrupt.rs"]
mod corrupt;
#[path = "common/mem.rs"]
mod mem;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mapkv::testing::open_with_backend;
use mapkv::{Database, Durability, Error, Options, ReadTxn, Result};

use corrupt::{RefKind, Variant, build_variants, collapse, reseal, set_ref_txn, widen};

/// A writer `txn` for a reference, relative to the newest commit (the snapshot) or to the
/// reference's own.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum TxnTo {
    /// The snapshot's: newer than the page really is, unless it is the snapshot's.
    Snapshot,
    /// The snapshot's plus one: the id of the next write transaction.
    Next,
    /// Further in the future.
    Above(u8),
    /// Older than the reference says.
    Below(u8),
    Zero,
}

#[derive(Arbitrary, Debug)]
enum Edit {
    Byte {
        page: u16,
        offset: u16,
        value: u8,
    },
    Xor {
        page: u16,
        offset: u16,
        mask: u8,
    },
    U16 {
        page: u16,
        offset: u16,
        value: u16,
    },
    U32 {
        page: u16,
        offset: u16,
        value: u32,
    },
    U64 {
        page: u16,
        offset: u16,
        value: u64,
    },
    /// Small numbers are the interesting ones for counts, lengths and page ids.
    Small {
        page: u16,
        offset: u16,
        value: u8,
        width: u8,
    },
    Fill {
        page: u16,
        offset: u16,
        len: u16,
        value: u8,
    },
    CopyPage {
        from: u16,
        to: u16,
    },
    ZeroPage {
        page: u16,
    },
    Truncate {
        pages: u16,
        bytes: u16,
    },
    Extend {
        pages: u8,
        fill: u8,
    },
    /// Turns tree `tree` (0: the catalog) into a DAG and reseals: `levels` levels of
    /// branches whose child references all point at one child (the `child`-th), or with
    /// `wide`, the tree's pages rewritten as branches as wide as a page, each pointing only
    /// at the next, over one leaf (emptied with `empty_leaf`), written by the newest
    /// commit (`verify`: which the open then verifies). Without remembering pages a walk
    /// takes fan-out^levels steps.
    Dag {
        tree: u8,
        levels: u8,
        child: u8,
        wide: bool,
        empty_leaf: bool,
        verify: bool,
    },
    /// Gives the `pick`-th reference of `kind` another writer `txn` (and its page's
    /// header too with `header_too`); resealed only if the input says so.
    RefTxn {
        kind: RefKind,
        pick: u16,
        to: TxnTo,
        header_too: bool,
    },
}

impl Edit {
    /// Whether the pages, the references between them and the free list stay as they
    /// were: only writer ids change.
    fn keeps_graph(&self) -> bool {
        matches!(self, Edit::RefTxn { .. })
    }
}

/// Edits applied at most.
const EDITS_MAX: usize = 32;

#[derive(Arbitrary, Debug)]
struct Input {
    variant: u8,
    edits: Vec<Edit>,
    reseal: bool,
    /// A real file (read through the map) when this is 0 mod 32.
    file: u8,
    writes: Vec<(u16, u16)>,
}

fn variants() -> &'static [Variant] {
    static V: OnceLock<Vec<Variant>> = OnceLock::new();
    V.get_or_init(build_variants)
}

fn apply(img: &mut Vec<u8>, page_size: usize, edit: &Edit) {
    let pages = img.len() / page_size;
    if pages == 0 {
        return;
    }
    let len = img.len();
    let at = |page: u16, offset: u16, width: usize| -> Option<usize> {
        let start = (page as usize % pages) * page_size + (offset as usize % page_size);
        (start + width <= len).then_some(start)
    };
    let put = |img: &mut Vec<u8>, page: u16, offset: u16, bytes: &[u8]| {
        if let Some(s) = at(page, offset, bytes.len()) {
            img[s..s + bytes.len()].copy_from_slice(bytes);
        }
    };
    match *edit {
        Edit::Byte {
            page,
            offset,
            value,
        } => put(img, page, offset, &[value]),
        Edit::Xor { page, offset, mask } => {
            if let Some(s) = at(page, offset, 1) {
                img[s] ^= mask;
            }
        }
        Edit::U16 {
            page,
            offset,
            value,
        } => put(img, page, offset, &value.to_le_bytes()),
        Edit::U32 {
            page,
            offset,
            value,
        } => put(img, page, offset, &value.to_le_bytes()),
        Edit::U64 {
            page,
            offset,
            value,
        } => put(img, page, offset, &value.to_le_bytes()),
        Edit::Small {
            page,
            offset,
            value,
            width,
        } => {
            let bytes = u64::from(value).to_le_bytes();
            put(
                img,
                page,
                offset,
                &bytes[..[1, 2, 4, 8][width as usize % 4]],
            );
        }
        Edit::Fill {
            page,
            offset,
            len,
            value,
        } => {
            if let Some(s) = at(page, offset, 0) {
                let end = (s + len as usize).min(img.len());
                img[s..end].fill(value);
            }
        }
        Edit::CopyPage { from, to } => {
            let (f, t) = (from as usize % pages, to as usize % pages);
            img.copy_within(f * page_size..(f + 1) * page_size, t * page_size);
        }
        Edit::ZeroPage { page } => {
            let p = page as usize % pages;
            img[p * page_size..(p + 1) * page_size].fill(0);
        }
        Edit::Truncate { pages: keep, bytes } => {
            let len = (keep as usize % (pages + 1)) * page_size + bytes as usize % page_size;
            img.truncate(len);
        }
        Edit::Extend { pages: more, fill } => {
            let len = img.len() + (more as usize % 16) * page_size;
            img.resize(len, fill);
        }
        Edit::Dag {
            tree,
            levels,
            child,
            wide,
            empty_leaf,
            verify,
        } => {
            let levels = u32::from(levels % 8) + 1;
            if wide {
                widen(img, page_size, tree.into(), levels, empty_leaf, verify);
            } else {
                collapse(img, page_size, tree.into(), levels, child.into());
            }
        }
        Edit::RefTxn {
            kind,
            pick,
            to,
            header_too,
        } => set_ref_txn(
            img,
            page_size,
            kind,
            pick.into(),
            header_too,
            |now, snapshot| match to {
                TxnTo::Snapshot => snapshot,
                TxnTo::Next => snapshot + 1,
                TxnTo::Above(n) => snapshot + 2 + u64::from(n),
                TxnTo::Below(n) => now.saturating_sub(1 + u64::from(n)),
                TxnTo::Zero => 0,
            },
        ),
    }
}

/// What reading a database found: each tree and a few of its keys.
#[derive(Default)]
struct Found {
    trees: Vec<(String, Vec<Vec<u8>>)>,
}

/// Reads everything reachable; errors end a walk, nothing else.
fn read_all(db: &Database) -> Found {
    let _ = db.stats();
    let mut found = Found::default();
    let Ok(rtx) = db.begin_read() else {
        return found;
    };
    let Ok(names) = rtx.tree_names() else {
        return found;
    };
    for name in names {
        let keys = read_tree(&rtx, &name);
        found.trees.push((name, keys));
    }
    found
}

/// Reads a tree forwards, looks some keys up, reads half of it backwards; returns a few
/// of its keys.
fn read_tree(rtx: &ReadTxn, name: &str) -> Vec<Vec<u8>> {
    let Ok(tree) = rtx.open_tree(name) else {
        return Vec::new();
    };
    let _ = tree.len();
    let Ok(range) = tree.iter() else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for entry in range.take(100_000) {
        match entry {
            Ok((k, _)) => keys.push(k),
            Err(_) => break,
        }
    }
    for k in keys.iter().step_by(5) {
        let _ = tree.get(k);
    }
    if let Some(mid) = keys.get(keys.len() / 2)
        && let Ok(r) = tree.range(..*mid)
    {
        for e in r.rev().take(100_000) {
            if e.is_err() {
                break;
            }
        }
    }
    let sample = keys.iter().step_by(keys.len() / 16 + 1);
    sample.map(|k| k.to_vec()).collect()
}

/// A digest of everything a reader sees (bounded like `read_all`), or the first error.
fn view(rtx: &ReadTxn) -> Result<u64> {
    let mut h = DefaultHasher::new();
    for name in rtx.tree_names()? {
        name.hash(&mut h);
        for entry in rtx.open_tree(&name)?.iter()?.take(100_000) {
            let (k, v) = entry?;
            (k, v).hash(&mut h);
        }
    }
    Ok(h.finish())
}

/// Writes a compacted copy to a new file; if that works, the copy must pass `check`.
fn compact(db: &Database) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("compact.mapkv");
    if db.compact_to(&path).is_ok() {
        let copy = Database::open(&path).expect("open a compacted copy");
        copy.check().expect("check a compacted copy");
    }
}

/// True if `check` found a page reached twice (or both reached and free).
fn reached_twice(r: &Result<mapkv::CheckReport>) -> bool {
    matches!(r, Err(Error::Corrupted { reason, .. }) if reason.contains("reached twice"))
}

/// Checks, then writes a little and commits. With `intact` (only `txn`s were edited),
/// the commit must not change what a reader of the snapshot before it sees, and if the
/// database passed `check`, it must pass it after. Returns whether it passed `check`
/// before, if the commit went through.
fn exercise(db: &Database, writes: &[(u16, u16)], found: &Found, intact: bool) -> Option<bool> {
    let checked = db.check().is_ok();
    if writes.is_empty() {
        return None;
    }
    // What the snapshot holds, and a reader of it that reads nothing before the commit:
    // a page the writer wrongly reuses would show through it.
    let before = db
        .begin_read()
        .ok()
        .filter(|_| intact)
        .map(|r| view(&r).ok());
    let reader = db.begin_read().ok();
    let Ok(mut wtx) = db.begin_write() else {
        return None;
    };
    wtx.set_durability(if writes.len().is_multiple_of(2) {
        Durability::Immediate
    } else {
        Durability::None
    });
    for (i, &(k, v)) in writes.iter().take(64).enumerate() {
        let (name, keys) = found
            .trees
            .get(k as usize % (found.trees.len() + 1))
            .map_or(("new", &[][..]), |(n, keys)| (n.as_str(), &keys[..]));
        if k % 7 == 0 {
            if wtx.delete_tree(name).is_err() {
                return None;
            }
            continue;
        }
        let Ok(mut tree) = wtx.open_tree(name) else {
            return None;
        };
        let key = format!("k{:05}", k % 2000).into_bytes();
        let r = match v % 8 {
            0 | 1 if !keys.is_empty() => tree.remove(&keys[v as usize / 6 % keys.len()]).map(drop),
            0 => tree.remove(&key).map(drop),
            // Overflow blobs of up to five pages.
            2 => tree.insert(&key, &vec![i as u8; 3000 + usize::from(v) % 17_000]),
            // Range removes walk and free whole subtrees, and `retain` reads every entry.
            6 if !keys.is_empty() => {
                let from = &keys[v as usize / 8 % keys.len()];
                tree.remove_range(&from[..]..=&key[..]).map(drop)
            }
            6 => tree.remove_range::<&[u8], _>(..).map(drop),
            7 => tree
                .retain(|k, value| (k.len() + value.len() + i) % 3 != 0)
                .map(drop),
            _ => tree.insert(&key, &vec![i as u8; usize::from(v) % 400]),
        };
        if r.is_err() {
            return None;
        }
    }
    if wtx.commit().is_err() {
        return None;
    }
    if intact {
        if let (Some(before), Some(reader)) = (before, reader) {
            assert_eq!(
                view(&reader).ok(),
                before,
                "a reader's snapshot changed under a commit"
            );
        }
        let after = db.check();
        assert!(!reached_twice(&after), "a commit left {after:?}");
        assert!(!checked || after.is_ok(), "check after a commit: {after:?}");
    } else {
        let _ = db.check();
    }
    read_all(db);
    Some(checked)
}

/// Opens twice (the second time after the first handle's writes and clean close) and
/// exercises each handle.
fn open_twice(mut open: impl FnMut(u32) -> Result<Database>, input: &Input, intact: bool) {
    let mut committed = None;
    for round in 0..2 {
        let db = match open(round) {
            Ok(db) => db,
            Err(e) => {
                // It opened before, passed check, was written to and closed cleanly.
                assert!(
                    !(intact && committed == Some(true)),
                    "reopen after a commit: {e}"
                );
                return;
            }
        };
        if let (true, Some(checked)) = (intact, committed) {
            let r = db.check();
            assert!(!reached_twice(&r), "after a commit and a reopen: {r:?}");
            assert!(
                !checked || r.is_ok(),
                "check after a commit and a reopen: {r:?}"
            );
        }
        if round == 0 && input.file % 8 == 1 {
            compact(&db);
        }
        let found = read_all(&db);
        committed = exercise(&db, &input.writes, &found, intact);
    }
}

fuzz_target!(|input: Input| {
    let all = variants();
    let variant = &all[input.variant as usize % all.len()];
    let mut img = variant.image.clone();
    for e in input.edits.iter().take(EDITS_MAX) {
        apply(&mut img, variant.page_size, e);
    }
    if input.reseal {
        reseal(&mut img, variant.page_size);
    }
    if let Some(dir) = std::env::var_os("MAPKV_FUZZ_DUMP") {
        // Replaying a crash: keep the corrupted image for tests/fuzz_regressions.rs.
        std::fs::write(std::path::Path::new(&dir).join("image.mapkv"), &img).expect("dump");
    }
    let intact = input.edits.iter().take(EDITS_MAX).all(Edit::keeps_graph);
    if input.file.is_multiple_of(32) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corrupt.mapkv");
        std::fs::write(&path, &img).expect("write");
        let mmap = [u64::MAX, 0];
        open_twice(
            |round| Options::new().mmap_size(mmap[round as usize]).open(&path),
            &input,
            intact,
        );
        return;
    }
    if input.edits.is_empty() {
        // Unchanged, and resealed (which changes nothing): a valid database.
        let mut resealed = img.clone();
        reseal(&mut resealed, variant.page_size);
        assert!(resealed == img, "resealing an unchanged variant changed it");
        let db = open_with_backend(mem::file(img.clone()).backend(), Options::new())
            .expect("open an unchanged variant");
        db.check().expect("check an unchanged variant");
    }
    let file = mem::file(img);
    open_twice(
        |_| open_with_backend(file.backend(), Options::new()),
        &input,
        intact,
    );
});
