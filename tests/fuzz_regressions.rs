//! Replays what the fuzz targets (fuzz/) found, without libFuzzer:
//!
//! - `fuzz/regressions/images/*.mapkv`: database files (a corrupted variant from
//!   `open_corrupt`, a crash image from `crash`). Each is opened through the in-memory
//!   backend and as a real file (mapped, and with `mmap_size(0)`), checked, read, and
//!   written to: errors are allowed, panics are not. A name ending in `.must-open.mapkv`
//!   must also open and pass `check` (a crash image recovery has to accept).
//! - `fuzz/regressions/pages/*`: bytes for the page, meta, free-list and tree-record
//!   decoders: `Ok` or `Error::Corrupted`, never a panic.
//!
//! The libFuzzer inputs that produced them are in `fuzz/regressions/<target>/`, replayed
//! by `fuzz/ci.sh`.

mod support;

use std::path::{Path, PathBuf};

use mapkv::testing::{decode_free_list, decode_meta, decode_page, decode_tree_record};
use mapkv::{Database, Error, Options};
use support::simdisk::SimDisk;

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(dir);
    let mut out: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Reads everything, then writes a little; every error is tolerated.
fn exercise(db: &Database) {
    let _ = db.check();
    let _ = db.stats();
    if let Ok(rtx) = db.begin_read() {
        for name in rtx.tree_names().unwrap_or_default() {
            let Ok(tree) = rtx.open_tree(&name) else {
                continue;
            };
            let _ = tree.len();
            let keys: Vec<&[u8]> = match tree.iter() {
                Ok(r) => r
                    .take(100_000)
                    .map_while(|e| e.ok().map(|(k, _)| k))
                    .collect(),
                Err(_) => Vec::new(),
            };
            for k in &keys {
                let _ = tree.get(k);
            }
            if let Ok(r) = tree.iter() {
                r.rev()
                    .take(100_000)
                    .take_while(|e| e.is_ok())
                    .for_each(drop);
            }
        }
    }
    if let Ok(wtx) = db.begin_write() {
        let ok = (|| -> mapkv::Result<()> {
            let mut t = wtx.open_tree("fuzz-regression")?;
            for i in 0..50u32 {
                t.insert(
                    format!("k{i}").as_bytes(),
                    &vec![7; (i as usize * 97) % 9000],
                )?;
            }
            t.remove(b"k3")?;
            Ok(())
        })();
        if ok.is_ok() {
            let _ = wtx.commit();
            let _ = db.check();
        }
    }
    // Range removes walk and free whole subtrees; `retain` reads every entry.
    if let (Ok(rtx), Ok(wtx)) = (db.begin_read(), db.begin_write()) {
        let ok = rtx
            .tree_names()
            .unwrap_or_default()
            .iter()
            .try_for_each(|name| {
                let mut t = wtx.open_tree(name)?;
                t.remove_range(&b"k1"[..]..&b"k4"[..])?;
                t.retain(|k, v| (k.len() + v.len()) % 3 != 0).map(drop)
            });
        if ok.is_ok() {
            let _ = wtx.commit();
            let _ = db.check();
        }
    }
    // Deleting a tree frees every page and blob it reaches.
    if let (Ok(rtx), Ok(wtx)) = (db.begin_read(), db.begin_write()) {
        for name in rtx.tree_names().unwrap_or_default() {
            if wtx.delete_tree(&name).is_err() {
                return;
            }
        }
        let _ = wtx.commit();
        let _ = db.check();
    }
}

#[test]
fn images_open_or_fail_cleanly() {
    for path in files("images") {
        let image = std::fs::read(&path).expect("read image");
        let must_open = path.to_string_lossy().ends_with(".must-open.mapkv");
        // Through the backend (no map), twice: the second open sees what the first wrote.
        let disk = SimDisk::new(image.clone());
        for round in 0..2 {
            match mapkv::testing::open_with_backend(disk.backend(), Options::new()) {
                Ok(db) => {
                    if must_open {
                        db.check()
                            .unwrap_or_else(|e| panic!("{}: check: {e}", path.display()));
                    }
                    exercise(&db);
                }
                Err(e) if must_open && round == 0 => panic!("{}: open: {e}", path.display()),
                Err(_) => {}
            }
        }
        // As a file, through the map and without it (Miri can do neither).
        for mmap_size in [u64::MAX, 0] {
            if cfg!(miri) {
                break;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("image.mapkv");
            std::fs::write(&file, &image).expect("write image");
            match Options::new().mmap_size(mmap_size).open(&file) {
                Ok(db) => exercise(&db),
                Err(e) if must_open => panic!("{}: open as a file: {e}", path.display()),
                Err(_) => {}
            }
        }
    }
}

#[test]
fn page_bytes_decode_or_fail_cleanly() {
    for path in files("pages") {
        let bytes = std::fs::read(&path).expect("read page");
        let ok = |r: mapkv::Result<u64>| match r {
            Ok(_) | Err(Error::Corrupted { .. }) => {}
            Err(e) => panic!("{}: {e:?}", path.display()),
        };
        ok(decode_page(&bytes).map(|n| n as u64));
        for page_size in [4096, 8192, 65536] {
            let mut page = bytes.clone();
            page.resize(page_size, 0);
            ok(decode_page(&page).map(|n| n as u64));
        }
        let mut slot = bytes.clone();
        slot.resize(slot.len().max(100), 0);
        ok(decode_meta(&slot));
        ok(decode_free_list(&bytes, 2, 1 << 20));
        ok(decode_tree_record(&bytes));
    }
}
