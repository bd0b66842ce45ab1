//! Power loss at a fuzzer-chosen point: write transactions (commits with either
//! durability, aborts, clean reopens, kill -9) run on the simulated disk of
//! `tests/support/simdisk.rs`, which records every write, size change and sync. A crash
//! image is made at a chosen point of that log (writes since the last sync each kept,
//! dropped or torn at 512-byte sectors, by a fuzzer-chosen seed). The image must open,
//! pass `check`, and hold exactly one committed state no older than the last
//! acknowledged `Immediate` commit (or clean close). Optionally recovery is crashed too.

#![no_main]

// The simulated disk, its RNG and the history model of the crash tests.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mapkv::testing::open_with_backend;
use mapkv::{Database, Durability, Options, WriteTxn};

use support::model::{History, Trees, digest, read_all};
use support::rng::Rng;
use support::simdisk::{CrashImages, SimDisk};

const TREES: [&str; 3] = ["apple", "birch", "cedar"];

#[derive(Arbitrary, Debug)]
enum WriteOp {
    Insert {
        tree: u8,
        key: u16,
        value_len: u16,
    },
    InsertRun {
        tree: u8,
        start: u16,
        count: u8,
        value_len: u8,
    },
    Remove {
        tree: u8,
        key: u16,
    },
    RemoveRun {
        tree: u8,
        start: u16,
        count: u8,
    },
    DeleteTree {
        tree: u8,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum End {
    Commit,
    Abort,
    /// Commit, then close cleanly and reopen.
    CommitReopen,
    /// kill -9 in the middle of this transaction, then reopen.
    Kill,
}

#[derive(Arbitrary, Debug)]
struct Txn {
    ops: Vec<WriteOp>,
    immediate: bool,
    end: End,
}

#[derive(Arbitrary, Debug)]
struct Input {
    page_size: u8,
    txns: Vec<Txn>,
    crash_at: u32,
    fate: u64,
    /// Crash the recovery too (a commit after it, then a second power loss).
    second: Option<(u32, Vec<WriteOp>, bool)>,
}

fn key(k: u16) -> Vec<u8> {
    format!("k{:04}", k % 600).into_bytes()
}

fn value(k: u16, len: usize) -> Vec<u8> {
    (0..len).map(|i| (k as usize + i / 13) as u8).collect()
}

fn apply(ops: &[WriteOp], wtx: &mut WriteTxn, model: &mut Trees) -> mapkv::Result<()> {
    for op in ops.iter().take(32) {
        match *op {
            WriteOp::Insert {
                tree,
                key: k,
                value_len,
            } => {
                let name = TREES[tree as usize % 3];
                let (k, v) = (key(k), value(k, value_len as usize % 20_000));
                wtx.open_tree(name)?.insert(&k, &v)?;
                model.entry(name.to_string()).or_default().insert(k, v);
            }
            WriteOp::InsertRun {
                tree,
                start,
                count,
                value_len,
            } => {
                let name = TREES[tree as usize % 3];
                let mut t = wtx.open_tree(name)?;
                let m = model.entry(name.to_string()).or_default();
                for i in 0..count as u16 % 80 {
                    let k = start.wrapping_add(i);
                    let (k, v) = (key(k), value(k, value_len as usize * 3));
                    t.insert(&k, &v)?;
                    m.insert(k, v);
                }
            }
            WriteOp::Remove { tree, key: k } => {
                let name = TREES[tree as usize % 3];
                let was = wtx.open_tree(name)?.remove(&key(k))?;
                let m = model.entry(name.to_string()).or_default();
                assert_eq!(was, m.remove(&key(k)).is_some(), "remove");
            }
            WriteOp::RemoveRun { tree, start, count } => {
                let name = TREES[tree as usize % 3];
                let mut t = wtx.open_tree(name)?;
                let m = model.entry(name.to_string()).or_default();
                for i in 0..count as u16 % 80 {
                    let k = key(start.wrapping_add(i));
                    assert_eq!(t.remove(&k)?, m.remove(&k).is_some(), "remove");
                }
            }
            WriteOp::DeleteTree { tree } => {
                let name = TREES[tree as usize % 3];
                let existed = wtx.delete_tree(name)?;
                assert_eq!(existed, model.remove(name).is_some(), "delete_tree");
            }
        }
    }
    Ok(())
}

fn open(disk: &Arc<SimDisk>, page_size: usize) -> mapkv::Result<Database> {
    open_with_backend(disk.backend(), Options::new().page_size(page_size))
}

/// Opens a crash image, checks it, and returns the disk, the database and the digest.
fn recover(image: Vec<u8>, page_size: usize) -> (Arc<SimDisk>, Database, u128) {
    if let Some(dir) = std::env::var_os("MAPKV_FUZZ_DUMP") {
        // Replaying a crash: keep the image for tests/fuzz_regressions.rs.
        std::fs::write(std::path::Path::new(&dir).join("image.mapkv"), &image).expect("dump");
    }
    let disk = SimDisk::new(image);
    let db = open(&disk, page_size).expect("open a crash image");
    db.check().expect("check a crash image");
    let d = digest(&read_all(&db).expect("read a crash image"));
    (disk, db, d)
}

fuzz_target!(|input: Input| {
    let page_size = 4096 << (input.page_size % 3);
    let disk = SimDisk::new(Vec::new());
    let mut hist = History::default();
    let mut model = Trees::new();
    let mut state = hist.push(digest(&model), 0);
    let mut db = Some(open(&disk, page_size).expect("create"));
    hist.durable(disk.log_len(), state);
    for txn in input.txns.iter().take(24) {
        let d = db.as_ref().expect("open");
        if txn.end == End::Kill {
            disk.kill();
            if let Ok(mut wtx) = d.begin_write() {
                // Fails at its first write, if it writes: the process is dead.
                let _ = apply(&txn.ops, &mut wtx, &mut model.clone());
            }
            drop(db.take());
            let d = open(&disk, page_size).expect("reopen after kill");
            let content = read_all(&d).expect("read after kill");
            hist.check(disk.log_len(), digest(&content))
                .unwrap_or_else(|e| panic!("after kill -9: {e}"));
            model = content;
            state = hist.push(digest(&model), disk.log_len());
            hist.durable(disk.log_len(), state);
            db = Some(d);
            continue;
        }
        let mut wtx = d.begin_write().expect("begin_write");
        let mut next = model.clone();
        apply(&txn.ops, &mut wtx, &mut next).expect("ops");
        if txn.end == End::Abort {
            wtx.abort();
            continue;
        }
        let durability = if txn.immediate {
            Durability::Immediate
        } else {
            Durability::None
        };
        wtx.set_durability(durability);
        let idx = hist.push(digest(&next), disk.log_len());
        wtx.commit().expect("commit");
        model = next;
        state = idx;
        if durability == Durability::Immediate {
            hist.durable(disk.log_len(), state);
        }
        if txn.end == End::CommitReopen {
            drop(db.take());
            hist.durable(disk.log_len(), state);
            db = Some(open(&disk, page_size).expect("reopen"));
            hist.durable(disk.log_len(), state);
        }
    }
    drop(db);
    hist.durable(disk.log_len(), state);

    let mut images = CrashImages::new(&disk);
    let at = input.crash_at as usize % (images.log_len() + 1);
    let mut rng = Rng::new(input.fate);
    if std::env::var_os("MAPKV_FUZZ_DEBUG").is_some() {
        support::simdisk::print_log(&disk);
        eprintln!("crash at {at} of {}", images.log_len());
    }
    let (disk2, db2, got) = recover(images.image(at, &mut rng), page_size);
    hist.check(at, got).unwrap_or_else(|e| panic!("{e}"));

    let Some((at2, ops, immediate)) = &input.second else {
        return;
    };
    // Second life: a commit after recovery, then a power loss during it or the close.
    let mut hist2 = History::default();
    hist2.push(got, 0);
    hist2.durable(0, 0);
    let mut model2 = read_all(&db2).expect("read");
    let mut wtx = db2.begin_write().expect("begin_write after recovery");
    apply(ops, &mut wtx, &mut model2).expect("ops after recovery");
    let durability = if *immediate {
        Durability::Immediate
    } else {
        Durability::None
    };
    wtx.set_durability(durability);
    let idx = hist2.push(digest(&model2), disk2.log_len());
    wtx.commit().expect("commit after recovery");
    if durability == Durability::Immediate {
        hist2.durable(disk2.log_len(), idx);
    }
    drop(db2);
    hist2.durable(disk2.log_len(), idx);
    let mut images2 = CrashImages::new(&disk2);
    let at2 = *at2 as usize % (images2.log_len() + 1);
    let (_, _, got2) = recover(images2.image(at2, &mut rng), page_size);
    hist2
        .check(at2, got2)
        .unwrap_or_else(|e| panic!("after a crash during recovery: {e}"));
});
