//! A full disk (ENOSPC; EDQUOT and EFBIG too) while a commit writes pages that no
//! durable meta references: the commit, or the change that was writing, fails with the
//! error's own kind, nothing is committed, and the handle goes on: it reads everything
//! committed, commits that fit in the free pages go through, and once there is room
//! again everything does; the writer's state is what it was before the failure, no page
//! leaks, and the file reopens with the last commit's content. The disk is
//! `mapkv::testing::MemFile` with a `Space`: blocks allocated at their first write, and a
//! capacity past which a write writes what fits and then fails, as on a real file system.

mod support;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::Command;

use mapkv::testing::{self, MemFile, Space, WriterState, open_with_backend};
use mapkv::{Database, Durability, Error, Options, ReadTxn};
use support::model::{Shape, Trees, random_durability, random_ops, read_all};
use support::rng::{Rng, heavy, seed};

const PAGE: u64 = 4096;
const KIB: u64 = 1024;

const SHAPE: Shape = Shape {
    keys: 400,
    ops: 6,
    max_value: 12_000,
};

fn open(file: &MemFile) -> Database {
    open_with_backend(file.backend(), Options::new()).expect("open")
}

/// The kind of `e`, which must be a full disk's error.
fn full_kind(e: &Error) -> io::ErrorKind {
    match e {
        Error::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::StorageFull
                    | io::ErrorKind::QuotaExceeded
                    | io::ErrorKind::FileTooLarge
            ) =>
        {
            io.kind()
        }
        other => panic!("expected a full disk's error, got {other:?}"),
    }
}

fn random_bytes(rng: &mut Rng, len: u64) -> Vec<u8> {
    let mut v = vec![0; len as usize];
    rng.fill(&mut v);
    v
}

/// Everything a read transaction sees.
fn snapshot(rtx: &ReadTxn) -> Trees {
    let mut out = Trees::new();
    for name in rtx.tree_names().unwrap() {
        let tree = rtx.open_tree(&name).unwrap();
        let entries = tree.range(..).unwrap().map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        });
        out.insert(name, entries.collect());
    }
    out
}

/// Begins and drops a write transaction: the pages that no reader or fallback holds
/// any more become free, so that the writer's state before a transaction is the state
/// that transaction starts from.
fn settle(db: &Database) -> WriterState {
    drop(
        db.begin_write()
            .expect("the handle takes write transactions"),
    );
    testing::writer_state(db)
}

/// The file opened as a crash would leave it now (every write made, no clean close): it
/// must be sound and hold one of `states`.
fn check_crash_image(file: &MemFile, states: &[Trees], what: &str) {
    let image = MemFile::new(file.contents());
    let db = open(&image);
    db.check()
        .unwrap_or_else(|e| panic!("{what}: crash image: {e}"));
    let got = read_all(&db).unwrap();
    assert!(
        states.contains(&got),
        "{what}: the crash image holds none of the {} states since the last durable commit",
        states.len()
    );
}

/// The random workload with the model beside it.
struct Run {
    rng: Rng,
    file: MemFile,
    db: Database,
    /// What the handle shows: the last commit.
    model: Trees,
    /// The states a crash may leave: the last durable commit's, and each since.
    since_durable: Vec<Trees>,
    /// Read transactions held across commits, with what they saw.
    readers: Vec<(ReadTxn, Trees)>,
    /// Transactions that failed with a full disk (whole), and `insert_from`s that did
    /// while their transaction went on.
    failed: u64,
    streams_failed: u64,
    /// Commits made into free pages right after a failure, and those that did not fit.
    fitted: u64,
    bulk_loads: u64,
}

impl Run {
    fn new(seed: u64) -> Run {
        let file = MemFile::default();
        let db = open(&file);
        Run {
            rng: Rng::new(seed),
            file,
            db,
            model: Trees::new(),
            since_durable: vec![Trees::new()],
            readers: Vec::new(),
            failed: 0,
            streams_failed: 0,
            fitted: 0,
            bulk_loads: 0,
        }
    }

    fn committed(&mut self, next: Trees, durability: Durability) {
        self.model = next;
        match durability {
            Durability::Immediate => self.since_durable = vec![self.model.clone()],
            _ => self.since_durable.push(self.model.clone()),
        }
    }

    /// One random write transaction; `Err` (checked to be a full disk's) if it failed.
    fn step(&mut self) -> Result<(), Error> {
        if self.rng.chance(1, 10) && self.readers.len() < 3 {
            let rtx = self.db.begin_read().unwrap();
            self.readers.push((rtx, self.model.clone()));
        }
        if self.rng.chance(1, 8) && !self.readers.is_empty() {
            let i = self.rng.below(self.readers.len() as u64) as usize;
            self.readers.swap_remove(i);
        }
        let before = settle(&self.db);
        let kind = self.rng.below(14);
        if kind == 13 {
            return self.bulk_load(before);
        }
        let mut next = self.model.clone();
        let durability = random_durability(&mut self.rng);
        let (rng, db, streams_failed) = (&mut self.rng, &self.db, &mut self.streams_failed);
        let result = (|| {
            let mut wtx = db.begin_write()?;
            wtx.set_durability(durability);
            match kind {
                // Large values: written at once, reserved (written at the commit), and
                // streamed (a failure leaves the tree unchanged and the transaction
                // usable).
                5..=7 => {
                    let mut tree = wtx.open_tree("big")?;
                    let big = next.entry("big".into()).or_default();
                    let key = format!("v{:03}", rng.below(40)).into_bytes();
                    let len = rng.range(5 * KIB, 400 * KIB);
                    let value = random_bytes(rng, len);
                    match kind {
                        5 => tree.insert(&key, &value)?,
                        6 => tree
                            .insert_reserve(&key, value.len())?
                            .copy_from_slice(&value),
                        _ => {
                            let len = value.len() as u64;
                            if let Err(e) = tree.insert_from(&key, len, &mut &value[..]) {
                                full_kind(&e);
                                *streams_failed += 1;
                                let after = b"after a failed stream";
                                tree.insert(b"note", after)?;
                                big.insert(b"note".to_vec(), after.to_vec());
                                drop(tree);
                                return wtx.commit();
                            }
                        }
                    }
                    big.insert(key, value);
                }
                // Removes: free pages for later commits.
                8 | 9 => {
                    let mut tree = wtx.open_tree("big")?;
                    let big = next.entry("big".into()).or_default();
                    let keys: Vec<Vec<u8>> = big.keys().cloned().collect();
                    for key in keys.iter().filter(|_| rng.chance(1, 3)) {
                        assert!(tree.remove(key)?);
                        big.remove(key);
                    }
                    drop(tree);
                    random_ops(rng, &mut wtx, &mut next, SHAPE)?;
                }
                _ => random_ops(rng, &mut wtx, &mut next, SHAPE)?,
            }
            wtx.commit()
        })();
        match result {
            Ok(()) => {
                self.committed(next, durability);
                Ok(())
            }
            Err(e) => {
                full_kind(&e);
                self.failed += 1;
                self.after_failure(&before, "a write transaction");
                Err(e)
            }
        }
    }

    /// A bulk load of a new tree (its pages go past the end of the file).
    fn bulk_load(&mut self, before: WriterState) -> Result<(), Error> {
        self.bulk_loads += 1;
        let name = format!("bulk{}", self.bulk_loads);
        let count = self.rng.range(100, 3000);
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
            .map(|i| {
                let len = self.rng.range(10, 200);
                (
                    format!("{i:08}").into_bytes(),
                    random_bytes(&mut self.rng, len),
                )
            })
            .collect();
        match self.db.bulk_load(&name, entries.iter().cloned()) {
            Ok(_) => {
                let mut next = self.model.clone();
                next.insert(name, entries.into_iter().collect());
                self.committed(next, Durability::Immediate);
                Ok(())
            }
            Err(e) => {
                full_kind(&e);
                self.failed += 1;
                self.after_failure(&before, "a bulk load");
                Err(e)
            }
        }
    }

    /// After a transaction failed with a full disk: nothing changed, and the handle
    /// reads on.
    fn after_failure(&self, before: &WriterState, what: &str) {
        assert_eq!(
            &testing::writer_state(&self.db),
            before,
            "{what} failed with a full disk and changed the writer's state"
        );
        assert_eq!(
            testing::file_len(&self.db),
            self.file.contents().len() as u64,
            "{what}: the handle's idea of the file's length"
        );
        assert!(read_all(&self.db).unwrap() == self.model, "{what}: reads");
        for (rtx, seen) in &self.readers {
            assert!(snapshot(rtx) == *seen, "{what}: a held read transaction");
        }
        self.db
            .check()
            .unwrap_or_else(|e| panic!("{what}: check: {e}"));
        check_crash_image(&self.file, &self.since_durable, what);
    }

    /// A one-key commit right after a failure: it must go through when the free pages
    /// hold it (every one of them backed by blocks the file has, a run for its free-list
    /// record among them).
    fn small_commit(&mut self) {
        if self.rng.chance(1, 2) {
            // The readers end: the pages they held become free.
            self.readers.clear();
        }
        let before = settle(&self.db);
        let free = testing::free_runs(&self.db);
        let total: u64 = free.iter().map(|&(_, n)| n).sum();
        let backed = (free.iter()).all(|&(s, n)| self.file.is_allocated(s * PAGE, n * PAGE));
        let fits = backed && total >= 32 && free.iter().any(|&(_, n)| n >= 8);
        let mut next = self.model.clone();
        let durability = random_durability(&mut self.rng);
        let key = format!("k{:05}", self.rng.below(SHAPE.keys)).into_bytes();
        let value = random_bytes(&mut self.rng, 40);
        let result = (|| {
            let mut wtx = self.db.begin_write()?;
            wtx.set_durability(durability);
            wtx.open_tree("apple")?.insert(&key, &value)?;
            wtx.commit()
        })();
        match result {
            Ok(()) => {
                next.entry("apple".into()).or_default().insert(key, value);
                self.committed(next, durability);
                self.fitted += u64::from(fits);
            }
            Err(e) => {
                full_kind(&e);
                assert!(
                    !fits,
                    "a commit that fits in {total} free pages failed: {e}"
                );
                self.after_failure(&before, "a one-key commit");
            }
        }
    }

    /// `compact`: it changes no entry, whether it finishes or a full disk stops it.
    fn compact(&mut self) {
        if let Err(e) = self.db.compact() {
            full_kind(&e);
        }
        assert!(read_all(&self.db).unwrap() == self.model, "after compact");
        self.db.check().unwrap();
    }
}

/// Fills the disk until commits fail, again and again, with every kind of write: the
/// model test the module describes.
#[test]
fn a_full_disk_fails_the_commit_and_nothing_else() {
    let seed = seed(41);
    let mut run = Run::new(seed);
    // Room at first: a database of a few MiB, with free pages from its removes.
    for _ in 0..40 {
        run.step()
            .unwrap_or_else(|e| panic!("(seed {seed}) without a limit: {e}"));
    }
    run.db.check().unwrap();
    let wanted = if heavy() { 60 } else { 15 };
    let mut steps = 0;
    let extra = 512 * KIB;
    run.file
        .set_space(Space::with_capacity(run.file.allocated() + extra));
    while run.failed < wanted {
        steps += 1;
        assert!(steps < 3000, "(seed {seed}) the disk never filled up");
        if run.step().is_err() {
            run.small_commit();
            match run.failed % 5 {
                // Some room comes back now and then (another program deleted a file).
                0 => {
                    let more = run.file.allocated() + extra;
                    run.file.set_space(Space::with_capacity(more));
                }
                3 => run.compact(),
                _ => {}
            }
        }
        if steps % 10 == 0 {
            run.db.check().unwrap();
        }
    }
    eprintln!(
        "(seed {seed}) {steps} steps on a full disk: {} transactions failed, {} streams \
         failed inside transactions that went on, {} one-key commits fitted into free pages",
        run.failed, run.streams_failed, run.fitted
    );
    assert!(run.fitted > 0, "no commit was shown to fit into free pages");
    // Room again: everything goes on.
    run.file.set_space(Space::default());
    for _ in 0..30 {
        run.step()
            .unwrap_or_else(|e| panic!("(seed {seed}) after room came back: {e}"));
    }
    run.compact();
    run.readers.clear();
    let Run {
        file, db, model, ..
    } = run;
    drop(db);
    let db = open(&MemFile::new(file.contents()));
    db.check().unwrap();
    assert!(read_all(&db).unwrap() == model, "(seed {seed}) reopened");
}

/// Commits `value` under `key` in tree "t".
fn put(db: &Database, key: &[u8], value: &[u8]) -> mapkv::Result<()> {
    let wtx = db.begin_write()?;
    wtx.open_tree("t")?.insert(key, value)?;
    wtx.commit()
}

fn get(db: &Database, key: &[u8]) -> Option<Vec<u8>> {
    let rtx = db.begin_read().unwrap();
    let tree = rtx.open_tree("t").unwrap();
    tree.get(key).unwrap().map(<[u8]>::to_vec)
}

/// A database of 10 MiB (growth steps of more than 1 MiB from there on).
fn ten_mib() -> (MemFile, Database) {
    let file = MemFile::default();
    let db = open(&file);
    for i in 0u32..40 {
        put(&db, &i.to_be_bytes(), &[i as u8; 256 << 10]).unwrap();
    }
    (file, db)
}

/// The zeros written ahead of a commit's end (up to 2 MiB, FORMAT.md#commit-protocol)
/// are an optimisation: a commit whose own pages fit goes through when they do not.
#[test]
fn a_commit_that_fits_does_not_need_the_zeros_ahead() {
    let (file, db) = ten_mib();
    // Commits of 24 KiB until the next one or two grow the file: growing, a commit
    // writes zeros over the next 1 to 2 MiB.
    let mut i = 1000u32; // past the keys of `ten_mib`
    let end = |db: &Database| db.stats().unwrap().page_count * PAGE;
    while testing::file_len(&db) - end(&db) > 48 * KIB {
        put(&db, &i.to_be_bytes(), &[1; 24 << 10]).unwrap();
        i += 1;
    }
    let capacity = file.allocated() + 400 * KIB;
    file.set_space(Space::with_capacity(capacity));
    let len_before = testing::file_len(&db);
    let mut grew = false;
    loop {
        let room = capacity - file.allocated();
        match put(&db, &i.to_be_bytes(), &[2; 24 << 10]) {
            Ok(()) => grew |= testing::file_len(&db) > len_before,
            Err(e) => {
                assert_eq!(full_kind(&e), io::ErrorKind::StorageFull);
                assert!(
                    room < 64 * KIB,
                    "a commit of 24 KiB failed with {} KiB of room: {e}",
                    room / KIB
                );
                break;
            }
        }
        i += 1;
    }
    assert!(grew, "the file grew on the full disk");
    // The handle goes on: it reads, and writes once there is room.
    assert_eq!(get(&db, &7u32.to_be_bytes()), Some(vec![7; 256 << 10]));
    file.set_space(Space::default());
    put(&db, b"more", b"room again").unwrap();
    db.check().unwrap();
    drop(db);
    let db = open(&MemFile::new(file.contents()));
    assert_eq!(get(&db, b"more"), Some(b"room again".to_vec()));
    db.check().unwrap();
}

/// A file system without holes (growth allocates), a quota, and a largest file: the
/// growth of the file itself fails (EDQUOT, EFBIG). Nothing is committed, the handle
/// stays usable, and commits that need no growth go through.
#[test]
fn growth_refused_by_the_file_system_fails_only_the_commit() {
    let (file, db) = ten_mib();
    // Free pages inside the file, for commits that need no growth.
    for i in 0u32..8 {
        put(&db, &i.to_be_bytes(), b"small").unwrap();
    }
    let file_len = testing::file_len(&db);
    let limits = [
        (
            Space {
                sparse: false,
                full: io::ErrorKind::QuotaExceeded,
                ..Space::with_capacity(file.allocated() + 64 * KIB)
            },
            io::ErrorKind::QuotaExceeded,
        ),
        (
            Space {
                max_len: Some(file_len),
                ..Space::default()
            },
            io::ErrorKind::FileTooLarge,
        ),
    ];
    for (space, kind) in limits {
        file.set_space(space);
        drop(db.begin_write().unwrap());
        let before = testing::writer_state(&db);
        // More than the room left past the end: the file must grow.
        let e = put(&db, b"big", &vec![3; 12 << 20]).unwrap_err();
        assert_eq!(full_kind(&e), kind, "{e}");
        assert_eq!(testing::writer_state(&db), before, "{kind:?}");
        assert_eq!(testing::file_len(&db), file_len, "{kind:?}: no growth");
        assert_eq!(get(&db, b"big"), None);
        put(&db, b"fits", format!("{kind:?}").as_bytes()).unwrap();
        db.check().unwrap();
    }
    file.set_space(Space::default());
    put(&db, b"big", &vec![3; 12 << 20]).unwrap();
    drop(db);
    let db = open(&MemFile::new(file.contents()));
    assert_eq!(get(&db, b"fits"), Some(b"FileTooLarge".to_vec()));
    assert_eq!(get(&db, b"big").map(|v| v.len()), Some(12 << 20));
    db.check().unwrap();
}

/// A reserved large value is written when the commit ends the reservation: a full disk
/// then fails the commit with the disk's own error (`ErrorKind::StorageFull`, not a
/// message wrapped in `Other`), and nothing is committed.
#[test]
fn a_reserved_value_that_does_not_fit_fails_the_commit_with_the_disks_error() {
    let file = MemFile::default();
    let db = open(&file);
    put(&db, b"before", b"1").unwrap();
    // Past what the file has written, zeros included.
    file.set_space(Space::with_capacity(file.allocated()));
    let wtx = db.begin_write().unwrap();
    wtx.open_tree("t")
        .unwrap()
        .insert_reserve(b"reserved", 3 << 20)
        .unwrap()
        .fill(9);
    let e = wtx.commit().unwrap_err();
    assert_eq!(full_kind(&e), io::ErrorKind::StorageFull, "{e}");
    assert_eq!(get(&db, b"reserved"), None);
    file.set_space(Space::default());
    put(&db, b"after", b"2").unwrap();
    db.check().unwrap();
}

/// A real file system that fills up: a tmpfs of 4 MiB, mounted in a mount namespace of
/// a user namespace of its own (`unshare -Urm`: no root needed where the kernel allows
/// unprivileged user namespaces), where this test runs again. Skipped, saying why,
/// where that is not possible. On tmpfs, as on ext4, growing a file leaves a hole, and
/// a write into it that finds no room writes what fits and fails with ENOSPC.
#[test]
fn a_real_full_file_system() {
    if let Ok(dir) = std::env::var("MAPKV_FULL_TMPFS") {
        return on_a_full_file_system(Path::new(&dir));
    }
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Exit status 77: the namespace or the mount was refused (skip).
    let script = r#"mount -t tmpfs -o size=4m mapkv-full "$0" || exit 77
exec "$1" --exact a_real_full_file_system --nocapture"#;
    let out = Command::new("unshare")
        .args(["-Urm", "sh", "-c", script])
        .arg(dir.path())
        .arg(&exe)
        .env("MAPKV_FULL_TMPFS", dir.path())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return eprintln!("skipped: no unshare ({e})"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => eprintln!("{text}"),
        Some(101) => panic!("on a full tmpfs:\n{text}"),
        _ => eprintln!("skipped: no tmpfs of our own ({}): {text}", out.status),
    }
}

fn on_a_full_file_system(dir: &Path) {
    let path = dir.join("db");
    let db = Database::open(&path).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng::new(5);
    let read = |db: &Database| {
        let rtx = db.begin_read().unwrap();
        let tree = rtx.open_tree("t").unwrap();
        let got: BTreeMap<Vec<u8>, Vec<u8>> = (tree.range(..).unwrap())
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        got
    };
    let mut fills = 0;
    let mut i = 0u32;
    while fills < 3 {
        let len = rng.range(16 * KIB, 128 * KIB);
        let value = random_bytes(&mut rng, len);
        match put(&db, &i.to_be_bytes(), &value) {
            Ok(()) => {
                model.insert(i.to_be_bytes().to_vec(), value);
                i += 1;
                continue;
            }
            Err(e) => assert_eq!(full_kind(&e), io::ErrorKind::StorageFull, "{e}"),
        }
        fills += 1;
        assert!(read(&db) == model, "reads after a full disk");
        db.check().unwrap();
        // A stream that does not fit leaves the tree as it was.
        let wtx = db.begin_write().unwrap();
        let big = vec![7; 1 << 20];
        let streamed =
            wtx.open_tree("t")
                .unwrap()
                .insert_from(b"stream", big.len() as u64, &mut &big[..]);
        assert_eq!(
            full_kind(&streamed.unwrap_err()),
            io::ErrorKind::StorageFull
        );
        drop(wtx);
        // Removes fit in the free pages, and give room to the next round.
        let wtx = db.begin_write().unwrap();
        let mut tree = wtx.open_tree("t").unwrap();
        let keys: Vec<Vec<u8>> = model.keys().step_by(3).cloned().collect();
        for k in keys {
            assert!(tree.remove(&k).unwrap());
            model.remove(&k);
        }
        drop(tree);
        wtx.commit().expect("removes commit on a full disk");
        assert!(read(&db) == model, "after the removes");
    }
    eprintln!("{fills} times full, {} entries", model.len());
    drop(db);
    let db = Database::open(&path).unwrap();
    db.check().unwrap();
    assert!(read(&db) == model, "reopened");
}

/// Once a write found the disk full, a commit goes into the free pages, scattered over
/// as many runs as it takes, before it grows the file: free pages were written before
/// and need no room, and this one fits in them, though in no single run of them, and
/// though they are too few a share of the file for the allocator to scatter otherwise.
#[test]
fn after_a_full_disk_commits_fill_scattered_free_pages() {
    let file = MemFile::default();
    let db = open(&file);
    // 400 one-page values, written one after the other, then every other one removed:
    // 200 free runs of one page, in a file of 3,000 pages (a 10 MiB value).
    let wtx = db.begin_write().unwrap();
    let mut tree = wtx.open_tree("t").unwrap();
    for i in 0u32..400 {
        tree.insert(&i.to_be_bytes(), &[i as u8; 3000]).unwrap();
    }
    tree.insert(b"large", &vec![1; 10 << 20]).unwrap();
    drop(tree);
    wtx.commit().unwrap();
    let wtx = db.begin_write().unwrap();
    let mut tree = wtx.open_tree("t").unwrap();
    for i in (0u32..400).step_by(2) {
        assert!(tree.remove(&i.to_be_bytes()).unwrap());
    }
    drop(tree);
    wtx.commit().unwrap();
    // No room for a block more: values appended past the end fill the zeros written
    // ahead, then fail.
    file.set_space(Space::with_capacity(file.allocated()));
    let mut appended = 0u32;
    let e = loop {
        match put(&db, format!("append{appended}").as_bytes(), &[2; 64 << 10]) {
            Ok(()) => appended += 1,
            Err(e) => break e,
        }
        assert!(appended < 100, "the disk never filled up");
    };
    assert_eq!(full_kind(&e), io::ErrorKind::StorageFull);
    drop(db.begin_write().unwrap());
    let free = testing::free_runs(&db);
    let longest = free.iter().map(|&(_, n)| n).max().unwrap();
    let total: u64 = free.iter().map(|&(_, n)| n).sum();
    assert!(longest < 16 && total > 200, "free runs: {free:?}");
    // About 35 pages: in no free run, and in the free pages.
    let wtx = db.begin_write().unwrap();
    let mut other = wtx.open_tree("other").unwrap();
    for i in 0u32..120 {
        other.insert(&i.to_be_bytes(), &[3; 1000]).unwrap();
    }
    drop(other);
    wtx.commit()
        .expect("a commit that fits in scattered free pages");
    db.check().unwrap();
    drop(db);
    let db = open(&MemFile::new(file.contents()));
    let rtx = db.begin_read().unwrap();
    assert_eq!(rtx.open_tree("other").unwrap().len().unwrap(), 120);
    assert_eq!(
        rtx.open_tree("t").unwrap().len().unwrap(),
        201 + u64::from(appended)
    );
}

/// Growth goes in steps of at least 1 MiB, but a step is room the commit does not need:
/// where the file system has room for what the commit needs and not for a whole step
/// (a largest file, a quota on a file system without holes), the file grows by what the
/// commit needs, and the commit goes through.
#[test]
fn growth_short_of_a_step_is_enough_for_a_commit_that_fits() {
    let file = MemFile::default();
    let db = open(&file);
    put(&db, b"first", &[1; 100 << 10]).unwrap();
    // A clean close cuts the file to its last page: the next commit that needs a page
    // past it grows the file.
    drop(db);
    let len = file.contents().len() as u64;
    let room = 256 * KIB;
    let limits = [
        Space {
            max_len: Some(len + room),
            ..Space::default()
        },
        Space {
            sparse: false,
            full: io::ErrorKind::QuotaExceeded,
            ..Space::with_capacity(file.allocated() + room)
        },
    ];
    for (i, space) in limits.into_iter().enumerate() {
        let file = MemFile::new(file.contents());
        file.set_space(space);
        let db = open(&file);
        assert_eq!(testing::file_len(&db), len);
        // 160 KiB: in no free run, and well inside the room left.
        let key = format!("second{i}");
        put(&db, key.as_bytes(), &[2; 160 << 10])
            .unwrap_or_else(|e| panic!("{space:?}: a commit of 160 KiB with 256 KiB of room: {e}"));
        assert!(testing::file_len(&db) <= len + room);
        db.check().unwrap();
        drop(db);
        let db = open(&MemFile::new(file.contents()));
        assert_eq!(get(&db, key.as_bytes()), Some(vec![2; 160 << 10]));
        db.check().unwrap();
    }
}

/// `insert_from` that finds no room for its value, whether growing the file for the
/// value's pages or writing them, fails with the disk's error and leaves the tree
/// unchanged and the transaction usable, as its documentation says.
#[test]
fn insert_from_without_room_leaves_the_transaction_usable() {
    let value = vec![5u8; 4 << 20];
    for kind in [io::ErrorKind::FileTooLarge, io::ErrorKind::StorageFull] {
        let file = MemFile::default();
        let db = open(&file);
        put(&db, b"first", b"1").unwrap();
        file.set_space(match kind {
            // No growth at all: the value's pages past the end cannot be had.
            io::ErrorKind::FileTooLarge => Space {
                max_len: Some(file.contents().len() as u64),
                ..Space::default()
            },
            // Room for a small commit, not for the value.
            _ => Space::with_capacity(file.allocated() + 64 * KIB),
        });
        let wtx = db.begin_write().unwrap();
        let mut tree = wtx.open_tree("t").unwrap();
        let e = tree
            .insert_from(b"big", value.len() as u64, &mut &value[..])
            .unwrap_err();
        assert_eq!(full_kind(&e), kind, "{e}");
        assert_eq!(tree.get(b"big").unwrap(), None, "{kind:?}");
        tree.insert(b"small", b"2")
            .unwrap_or_else(|e| panic!("{kind:?}: the transaction is not usable: {e}"));
        drop(tree);
        wtx.commit()
            .unwrap_or_else(|e| panic!("{kind:?}: the commit failed: {e}"));
        assert_eq!(get(&db, b"small"), Some(b"2".to_vec()));
        db.check().unwrap();
        file.set_space(Space::default());
        drop(db);
        let db = open(&MemFile::new(file.contents()));
        assert_eq!(get(&db, b"small"), Some(b"2".to_vec()));
        assert_eq!(get(&db, b"big"), None);
        db.check().unwrap();
    }
}
