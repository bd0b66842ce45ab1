//! I/O errors: a backend that fails the Nth read, write, sync or file-size change (once,
//! or from then on), for N = 1, 2, … until the workload runs through. Every failure
//! must surface as an `Error` (never a panic); after a failed write, sync or size change
//! the handle refuses write transactions; reopening the data as it is, or as a power loss
//! right then could leave it, gives a consistent database holding a committed state.
//! The same sweep with full-disk errors (`ErrorKind::StorageFull`): a failed write of
//! pages nothing durable references, or a failed growth, fails only its transaction, and
//! the handle goes on; a failed meta write, sync or shortening still refuses writes.

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use mapkv::{Database, Durability, Error};
use support::model::{History, Shape, Trees, digest, random_durability, random_ops, read_all};
use support::recovery::{open, recover};
use support::rng::{Rng, heavy, seed};
use support::simdisk::{CrashImages, Failed, Fault, OP_KINDS, OpKind, SimDisk};

const SHAPE: Shape = Shape {
    keys: 400,
    ops: 6,
    max_value: 12_000,
};

fn expect_io(e: &Error, what: &str, fault: &Fault) {
    assert!(
        matches!(e, Error::Io(_)),
        "{fault:?}: {what} failed with {e:?}, expected Error::Io"
    );
}

/// Runs the workload with `fault` armed; returns the disk and the history of states.
fn run(seed: u64, txns: usize, fault: Fault) -> (Arc<SimDisk>, History) {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::new(Vec::new());
    disk.set_fault(Some(fault));
    let mut hist = History::default();
    let mut model = Trees::new();
    let mut state = hist.push(digest(&model), 0);
    let mut db = match open(&disk) {
        Ok(db) => db,
        Err(e) => {
            expect_io(&e, "create", &fault);
            return (disk, hist);
        }
    };
    hist.durable(disk.log_len(), state);
    let poisons = fault.kind != OpKind::Read;
    for t in 0..txns {
        if t == txns / 2 {
            drop(db);
            if disk.faults_fired() == 0 {
                hist.durable(disk.log_len(), state);
            }
            db = match open(&disk) {
                Ok(db) => db,
                Err(e) => {
                    expect_io(&e, "reopen", &fault);
                    return (disk, hist);
                }
            };
            // A clean close that failed loses the `None` commits since the last durable
            // one: continue from whatever the reopened database holds.
            match read_all(&db) {
                Ok(content) => {
                    state = hist
                        .check(disk.log_len(), digest(&content))
                        .unwrap_or_else(|e| panic!("{fault:?}: after reopening: {e}"));
                    model = content;
                }
                Err(e) => {
                    expect_io(&e, "read after reopening", &fault);
                    return (disk, hist);
                }
            }
        }
        match commit_random_txn(&db, &disk, &mut rng, &mut hist, &mut model, &mut state) {
            Ok(()) => match read_all(&db) {
                Ok(content) => assert!(content == model, "{fault:?}: live content differs"),
                Err(e) => expect_io(&e, "read", &fault),
            },
            Err(e) => {
                expect_io(&e, "a write transaction", &fault);
                if poisons {
                    assert!(
                        db.begin_write().is_err(),
                        "{fault:?}: begin_write after a failed write or sync"
                    );
                    match read_all(&db) {
                        Ok(content) => assert!(content == model, "{fault:?}: reads go on, differ"),
                        Err(e) => expect_io(&e, "read after the failure", &fault),
                    }
                    break;
                }
                if fault.persistent {
                    break;
                }
            }
        }
    }
    drop(db);
    if disk.faults_fired() == 0 || !poisons {
        hist.durable(disk.log_len(), state);
    }
    (disk, hist)
}

/// Commits a transaction of random operations on a copy of `model`, with a random
/// durability; its state joins `hist` just before the commit is called. If the commit
/// goes through, `model` and `state` become the new ones, durable at once if the commit
/// was `Durability::Immediate`.
fn commit_random_txn(
    db: &Database,
    disk: &SimDisk,
    rng: &mut Rng,
    hist: &mut History,
    model: &mut Trees,
    state: &mut usize,
) -> mapkv::Result<()> {
    let mut next = model.clone();
    let durability = random_durability(rng);
    let mut ops_rng = rng.clone();
    rng.next_u64();
    let result = (|| {
        let mut wtx = db.begin_write()?;
        random_ops(&mut ops_rng, &mut wtx, &mut next, SHAPE)?;
        wtx.set_durability(durability);
        hist.push(digest(&next), disk.log_len());
        wtx.commit()
    })();
    if result.is_ok() {
        *model = next;
        *state = hist.states.len() - 1;
        if durability == Durability::Immediate {
            hist.durable(disk.log_len(), *state);
        }
    }
    result
}

/// Opens `image` without faults: it must hold a state `hist` allows at `at`.
fn reopen(image: Vec<u8>, hist: &History, at: usize) -> Result<(), String> {
    let (_, _, content) = recover(image)?;
    hist.check(at, digest(&content)).map(|_| ())
}

/// Reopens the disk itself, as the program does after the error (after a failed sync, the
/// page cache may still hold pages that never reached the disk): the state served must be
/// one `hist` allows at `at`, and the one a power loss right after the open leaves.
fn reopen_in_place(
    disk: &Arc<SimDisk>,
    hist: &History,
    at: usize,
    rng: &mut Rng,
) -> Result<(), String> {
    let db = open(disk).map_err(|e| format!("reopen failed: {e}"))?;
    db.check().map_err(|e| format!("check failed: {e}"))?;
    let content = read_all(&db).map_err(|e| format!("read failed: {e}"))?;
    hist.check(at, digest(&content))?;
    let image = CrashImages::new(disk).image(disk.log_len(), rng);
    let after = open(&SimDisk::new(image)).map_err(|e| format!("power loss, open: {e}"))?;
    after
        .check()
        .map_err(|e| format!("power loss, check: {e}"))?;
    match read_all(&after) {
        Ok(c) if c == content => Ok(()),
        Ok(_) => Err("a power loss right after the open leaves another state".into()),
        Err(e) => Err(format!("power loss, read: {e}")),
    }
}

/// Runs `attempt` with each kind of operation failing at its Nth call, once and from
/// then on, for N = 1, 2, … until an attempt fires no fault (N is past the workload's
/// last operation of that kind). `attempt` returns the faults that fired. Reads are
/// many: past `every_read_up_to` (None: never), N steps by a random 1 to 40.
fn for_every_fault(
    rng: &mut Rng,
    every_read_up_to: Option<u64>,
    mut attempt: impl FnMut(Fault, &mut Rng) -> u64,
) {
    for kind in OP_KINDS {
        for persistent in [false, true] {
            let mut nth = 1;
            loop {
                let fault = Fault {
                    kind,
                    nth,
                    persistent,
                };
                if attempt(fault, rng) == 0 {
                    break;
                }
                let sampled = kind == OpKind::Read && every_read_up_to.is_some_and(|n| nth > n);
                nth += if sampled { 1 + rng.below(40) } else { 1 };
            }
            eprintln!("{kind:?} persistent={persistent}: up to N={nth}");
        }
    }
}

#[test]
fn every_nth_operation_fails() {
    let base = seed(3);
    let txns = if heavy() { 24 } else { 12 };
    let started = Instant::now();
    let mut runs = 0u64;
    let mut injected = 0u64;
    let mut rng = Rng::new(base ^ 0xFA);
    let every_read_up_to = (!heavy()).then_some(300);
    for_every_fault(&mut rng, every_read_up_to, |fault, rng| {
        let (disk, hist) = catch_unwind(AssertUnwindSafe(|| run(base, txns, fault)))
            .unwrap_or_else(|_| panic!("panic with {fault:?} (seed {base})"));
        runs += 1;
        let fired = disk.faults_fired();
        injected += fired;
        disk.set_fault(None);
        let at = disk.log_len();
        reopen(disk.contents(), &hist, at)
            .unwrap_or_else(|e| panic!("{fault:?} (seed {base}), data as written: {e}"));
        if std::env::var("MAPKV_DEBUG_FAULT").is_ok_and(|v| v == format!("{fault:?}")) {
            support::simdisk::print_log(&disk);
        }
        let mut images = CrashImages::new(&disk);
        for _ in 0..2 {
            reopen(images.image(at, rng), &hist, at).unwrap_or_else(|e| {
                panic!("{fault:?} (seed {base}), power loss after the failure: {e}")
            });
        }
        reopen_in_place(&disk, &hist, at, rng)
            .unwrap_or_else(|e| panic!("{fault:?} (seed {base}), reopened in place: {e}"));
        fired
    });
    eprintln!(
        "fault runs: {runs}, faults injected: {injected}, {:.1?}",
        started.elapsed()
    );
}

/// A durable commit is published before it shortens the file (when its end is free), so
/// a failed truncation must not fail it: its caller would retry a transaction that took
/// effect. The failure still stops later writes, as any I/O error does.
#[test]
fn a_failed_truncation_does_not_fail_the_commit_before_it() {
    let disk = SimDisk::new(Vec::new());
    let db = open(&disk).unwrap();
    // A large tree, then its deletion: the next commits find the end of the file free
    // and cut it off.
    let txn = db.begin_write().unwrap();
    {
        let mut big = txn.open_tree("big").unwrap();
        for i in 0u32..3000 {
            big.insert(&i.to_be_bytes(), &[7; 3000]).unwrap();
        }
    }
    txn.commit().unwrap();
    let txn = db.begin_write().unwrap();
    txn.delete_tree("big").unwrap();
    txn.commit().unwrap();
    let mut failed_truncation = None;
    for n in 1u32..=4 {
        disk.set_fault(Some(Fault {
            kind: OpKind::SetLen,
            nth: 1,
            persistent: false,
        }));
        let txn = db.begin_write().unwrap();
        txn.open_tree("counter")
            .unwrap()
            .insert(b"n", &n.to_be_bytes())
            .unwrap();
        let committed = txn.commit();
        if disk.faults_fired() > 0 {
            failed_truncation = Some((n, committed));
            break;
        }
        committed.unwrap();
    }
    disk.set_fault(None);
    let (n, committed) = failed_truncation.expect("a commit shortened the file");
    committed.expect("the commit took effect before its truncation failed");
    let counter = |db: &mapkv::Database| {
        let txn = db.begin_read().unwrap();
        let tree = txn.open_tree("counter").unwrap();
        tree.get(b"n").unwrap().map(<[u8]>::to_vec)
    };
    assert_eq!(counter(&db), Some(n.to_be_bytes().to_vec()));
    let refused = db
        .begin_write()
        .err()
        .expect("writes stop after the failure");
    assert!(matches!(refused, Error::Io(_)), "{refused:?}");
    drop(db);
    let db = open(&disk).unwrap();
    assert_eq!(counter(&db), Some(n.to_be_bytes().to_vec()), "durable");
    db.check().unwrap();
}

/// `compact` with the Nth read, write, sync or size change failing: it returns an error
/// (never panics), and the data as written, a power loss right after, and the disk
/// reopened in place all hold the content it began with (compaction changes no entry).
#[test]
fn compaction_with_every_nth_operation_failing() {
    let base = seed(5);
    let mut rng = Rng::new(base);
    let disk = SimDisk::new(Vec::new());
    let db = open(&disk).unwrap();
    let mut model = Trees::new();
    // Small and large values (blobs of up to 5 pages) in two trees, then two keys of
    // three removed: free pages all over the file.
    let wtx = db.begin_write().unwrap();
    for name in ["apple", "birch"] {
        let mut t = wtx.open_tree(name).unwrap();
        let tree = model.entry(name.to_string()).or_default();
        for i in 0..1500u64 {
            let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes().to_vec();
            let v = vec![
                i as u8;
                if i % 50 == 0 {
                    1 + rng.below(20_000) as usize
                } else {
                    60
                }
            ];
            t.insert(&k, &v).unwrap();
            tree.insert(k, v);
        }
    }
    wtx.commit().unwrap();
    let wtx = db.begin_write().unwrap();
    for (name, tree) in &mut model {
        let mut t = wtx.open_tree(name).unwrap();
        let keys: Vec<Vec<u8>> = tree.keys().cloned().collect();
        for k in keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, k)| k)
        {
            assert!(t.remove(k).unwrap());
            tree.remove(k);
        }
    }
    wtx.commit().unwrap();
    drop(db);
    let image = disk.contents();
    let want = digest(&model);
    let one = |what: &str, image: Vec<u8>| {
        let (_, _, content) = recover(image).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(digest(&content) == want, "{what}: the content changed");
    };
    for_every_fault(&mut rng, Some(100), |fault, rng| {
        let disk = SimDisk::new(image.clone());
        let db = open(&disk).unwrap();
        disk.set_fault(Some(fault));
        let compacted = catch_unwind(AssertUnwindSafe(|| db.compact()))
            .unwrap_or_else(|_| panic!("compact panicked with {fault:?}"));
        if let Err(e) = &compacted {
            expect_io(e, "compact", &fault);
        }
        drop(db);
        let fired = disk.faults_fired();
        disk.set_fault(None);
        let what = format!("{fault:?} (seed {base})");
        one(&format!("{what}, as written"), disk.contents());
        let crash = CrashImages::new(&disk).image(disk.log_len(), rng);
        one(&format!("{what}, power loss"), crash);
        let reopened = open(&disk).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        reopened
            .check()
            .unwrap_or_else(|e| panic!("{what}: check: {e}"));
        let content = read_all(&reopened).unwrap();
        assert!(digest(&content) == want, "{what}: reopened in place");
        fired
    });
}

/// Whether an operation that failed with a full disk must refuse later writes: the
/// meta's write (its slot's bytes are unknown now), a sync (fsyncgate: what it failed
/// to write may be marked clean), and shortening the file. A write of data pages, or
/// growth, changed nothing that a durable meta references.
fn full_disk_poisons(failed: Failed) -> bool {
    const DATA_START: u64 = 8192; // the two meta slots come first
    match failed {
        Failed::Write { offset, .. } => offset < DATA_START,
        Failed::Sync => true,
        Failed::SetLen { from, to } => to < from,
        Failed::Read => false,
    }
}

fn expect_full(e: &Error, what: &str, fault: &Fault) {
    assert!(
        matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull),
        "{fault:?}: {what} failed with {e:?}, expected Error::Io of kind StorageFull"
    );
}

/// `run` with the fault failing its operation as a full disk does (ENOSPC).
fn run_full_disk(seed: u64, txns: usize, fault: Fault) -> (Arc<SimDisk>, History) {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::new(Vec::new());
    disk.set_fault_error(std::io::ErrorKind::StorageFull);
    disk.set_fault(Some(fault));
    let mut hist = History::default();
    let mut model = Trees::new();
    let mut state = hist.push(digest(&model), 0);
    let db = match open(&disk) {
        Ok(db) => db,
        Err(e) => {
            expect_full(&e, "create", &fault);
            return (disk, hist);
        }
    };
    hist.durable(disk.log_len(), state);
    let mut poisoned = false;
    for _ in 0..txns {
        match commit_random_txn(&db, &disk, &mut rng, &mut hist, &mut model, &mut state) {
            Ok(()) => {
                assert!(read_all(&db).unwrap() == model, "{fault:?}: content");
            }
            Err(e) => {
                expect_full(&e, "a write transaction", &fault);
                let failed = *disk.failed_ops().last().expect("a fault fired");
                poisoned = db.begin_write().is_err();
                assert_eq!(
                    poisoned,
                    full_disk_poisons(failed),
                    "{fault:?}: refuses writes after {failed:?}"
                );
                if hist.states.len() - 1 > state {
                    // Called, and failed before its meta: no crash image may hold it.
                    if !poisoned {
                        hist.states.pop();
                        hist.call_pos.pop();
                    }
                }
                assert!(read_all(&db).unwrap() == model, "{fault:?}: reads go on");
                if poisoned {
                    break;
                }
                db.check()
                    .unwrap_or_else(|e| panic!("{fault:?}: check after {failed:?}: {e}"));
            }
        }
    }
    close(db, &disk, &mut hist, state, poisoned);
    (disk, hist)
}

/// Drops `db`: a clean close that fires no fault makes the newest commit durable.
fn close(db: Database, disk: &SimDisk, hist: &mut History, state: usize, poisoned: bool) {
    let fired = disk.faults_fired();
    drop(db);
    if !poisoned && disk.faults_fired() == fired {
        hist.durable(disk.log_len(), state);
    }
}

/// The sweep of `every_nth_operation_fails` with full-disk errors: writes, syncs and
/// size changes (reads do not fail so).
#[test]
fn every_nth_operation_fails_with_a_full_disk() {
    let base = seed(7);
    let txns = if heavy() { 24 } else { 12 };
    let mut rng = Rng::new(base ^ 0xF0);
    for_every_fault(&mut rng, None, |fault, rng| {
        if fault.kind == OpKind::Read {
            return 0;
        }
        let (disk, hist) = catch_unwind(AssertUnwindSafe(|| run_full_disk(base, txns, fault)))
            .unwrap_or_else(|_| panic!("panic with {fault:?} (seed {base})"));
        let fired = disk.faults_fired();
        disk.set_fault(None);
        let at = disk.log_len();
        reopen(disk.contents(), &hist, at)
            .unwrap_or_else(|e| panic!("{fault:?} (seed {base}), data as written: {e}"));
        reopen(CrashImages::new(&disk).image(at, rng), &hist, at)
            .unwrap_or_else(|e| panic!("{fault:?} (seed {base}), power loss: {e}"));
        reopen_in_place(&disk, &hist, at, rng)
            .unwrap_or_else(|e| panic!("{fault:?} (seed {base}), reopened in place: {e}"));
        fired
    });
}
