//! Random operations against mapkv and a `BTreeMap` model, checked after every step.

mod support;

#[path = "model/apply.rs"]
mod apply;
#[path = "model/op.rs"]
mod op;

use mapkv::{Database, Durability, Error, Options, Result};
use quickcheck::QuickCheck;
use support::model::Trees;

use apply::apply;
use op::Op;

struct Harness {
    dir: tempfile::TempDir,
    options: Options,
    /// `mmap_size` settings used in turn at each reopen: results must not depend on them.
    windows: &'static [u64],
    opens: usize,
    db: Option<Database>,
    committed: Trees,
    working: Trees,
}

impl Harness {
    fn new(options: Options, windows: &'static [u64]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = options
            .clone()
            .mmap_size(windows[0])
            .open(dir.path().join("db"))
            .unwrap();
        Harness {
            dir,
            options,
            windows,
            opens: 1,
            db: Some(db),
            committed: Trees::new(),
            working: Trees::new(),
        }
    }

    fn db(&self) -> &Database {
        self.db.as_ref().unwrap()
    }

    /// Opens the database again with the next `mmap_size` setting.
    fn open_next(&mut self) -> Database {
        let window = self.windows[self.opens % self.windows.len()];
        self.opens += 1;
        self.options
            .clone()
            .mmap_size(window)
            .open(self.dir.path().join("db"))
            .unwrap()
    }

    fn reopen(&mut self) {
        self.db = None;
        self.db = Some(
            self.options
                .clone()
                .mmap_size(self.windows[0])
                .open(self.dir.path().join("db"))
                .unwrap(),
        );
    }

    /// Runs `ops`; a write transaction is open between commits.
    fn run(&mut self, ops: &[Op]) -> Result<()> {
        let db = self.db.take().unwrap();
        let mut txn = Some(db.begin_write()?);
        self.working = self.committed.clone();
        for op in ops {
            let w = txn.as_mut().unwrap();
            match op {
                Op::Commit { durable } => {
                    let mut w = txn.take().unwrap();
                    if !durable {
                        w.set_durability(Durability::None);
                    }
                    w.commit()?;
                    self.committed = self.working.clone();
                    let report = db.check()?;
                    let entries: usize = self.committed.values().map(|t| t.len()).sum();
                    assert_eq!(report.entries, entries as u64);
                    assert_eq!(report.trees, self.committed.len() as u64);
                    self.compare_committed(&db)?;
                    txn = Some(db.begin_write()?);
                }
                Op::Abort => {
                    txn.take().unwrap().abort();
                    self.working = self.committed.clone();
                    self.compare_committed(&db)?;
                    txn = Some(db.begin_write()?);
                }
                Op::Reopen => {
                    drop(txn.take());
                    drop(db);
                    self.working = self.committed.clone();
                    self.db = Some(self.open_next());
                    self.compare_committed(self.db())?;
                    self.db().check()?;
                    return self
                        .run(&ops[ops.iter().position(|o| std::ptr::eq(o, op)).unwrap() + 1..]);
                }
                op => apply(w, &mut self.working, op)?,
            }
        }
        drop(txn);
        self.db = Some(db);
        self.compare_committed(self.db())
    }

    fn compare_committed(&self, db: &Database) -> Result<()> {
        let r = db.begin_read()?;
        assert_eq!(
            r.tree_names()?,
            self.committed.keys().cloned().collect::<Vec<_>>()
        );
        for (name, model) in &self.committed {
            let t = r.open_tree(name)?;
            assert_eq!(t.len()?, model.len() as u64);
            let got: Vec<(Vec<u8>, Vec<u8>)> = t
                .iter()?
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<_>>()?;
            let want: Vec<(Vec<u8>, Vec<u8>)> =
                model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert!(got == want, "tree {name}: contents differ from the model");
        }
        Ok(())
    }
}
/// Whole file mapped, nothing mapped (every page read with pread), and a 96 KiB window
/// that the database outgrows within a transaction.
const WINDOWS: &[u64] = &[u64::MAX, 0, 96 << 10];

fn run_case(ops: Vec<Op>, page_size: usize, windows: &'static [u64]) -> bool {
    run_case_with(ops, Options::new().page_size(page_size), windows)
}

fn run_case_with(ops: Vec<Op>, options: Options, windows: &'static [u64]) -> bool {
    let mut h = Harness::new(options, windows);
    if let Err(e) = h.run(&ops) {
        panic!("{e}");
    }
    h.reopen();
    h.db().check().unwrap();
    h.compare_committed(h.db()).unwrap();
    true
}

/// Runs `case` on `default` random operation lists (MAPKV_MODEL_CASES overrides).
fn check_cases(default: u64, case: fn(Vec<Op>) -> bool) {
    let cases = std::env::var("MAPKV_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    QuickCheck::new().tests(cases).quickcheck(case);
}

#[test]
fn model_4k_pages() {
    check_cases(60, run_case_4k);
}

#[test]
fn model_16k_pages() {
    check_cases(20, run_case_16k);
}

#[test]
fn model_without_the_map() {
    check_cases(20, run_case_no_map);
}

fn run_case_4k(ops: Vec<Op>) -> bool {
    run_case(ops, 4096, WINDOWS)
}

fn run_case_16k(ops: Vec<Op>) -> bool {
    run_case(ops, 16384, &[96 << 10, u64::MAX, 0])
}

/// Every page read with pread, through a page cache of 16 pages: it keeps evicting,
/// and pages the writer reuses must never be served from it stale.
fn run_case_no_map(ops: Vec<Op>) -> bool {
    run_case_with(ops, Options::new().cache_size(64 << 10), &[0])
}

#[test]
fn oversized_keys_and_names_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert(&vec![1; 1024], b"1 KiB keys are fine")?;
    assert!(matches!(
        t.insert(&vec![1; 5000], b"x"),
        Err(Error::KeyTooLarge { size: 5000, .. })
    ));
    assert!(matches!(
        w.open_tree(&"n".repeat(5000)),
        Err(Error::KeyTooLarge { .. })
    ));
    Ok(())
}
