//! Readers held across many commits: random write transactions (`Immediate` and `None`),
//! aborts, compactions in place and clean reopens run on a simulated disk while read
//! transactions begun along the way stay open. After every step each held reader must
//! still read the state it began on (its pages were neither reused nor cut off the file),
//! `check` must pass, and now and then a power-loss image of the disk must recover to a
//! state the history allows. The crash and fault tests never keep a reader open across
//! commits; this is what holds pages back from reuse and truncation there.

mod support;

use mapkv::{Database, Durability, ReadTxn};
use support::model::{History, Shape, Trees, digest, random_durability, random_ops, read_all};
use support::recovery::{open, recover};
use support::rng::{Rng, heavy, seed};
use support::simdisk::{CrashImages, SimDisk};

const SHAPE: Shape = Shape {
    keys: 600,
    ops: 8,
    max_value: 20_000,
};

/// At most this many readers are held at once (the oldest goes first beyond it).
const READERS_MAX: usize = 6;

/// Everything a read transaction sees, as the model holds it.
fn snapshot_digest(txn: &ReadTxn) -> u128 {
    let mut trees = Trees::new();
    for name in txn.tree_names().unwrap() {
        let tree = txn.open_tree(&name).unwrap();
        let entries = tree.range(..).unwrap().map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        });
        trees.insert(name, entries.collect());
    }
    digest(&trees)
}

struct Workload {
    rng: Rng,
    disk: std::sync::Arc<SimDisk>,
    hist: History,
    model: Trees,
    state: usize,
    /// Each held reader with the digest of the state it began on.
    readers: Vec<(ReadTxn, u128)>,
}

impl Workload {
    fn new(seed: u64) -> (Workload, Database) {
        let disk = SimDisk::new(Vec::new());
        let mut hist = History::default();
        let model = Trees::new();
        let state = hist.push(digest(&model), 0);
        let db = open(&disk).expect("create");
        hist.durable(disk.log_len(), state);
        let workload = Workload {
            rng: Rng::new(seed),
            disk,
            hist,
            model,
            state,
            readers: Vec::new(),
        };
        (workload, db)
    }

    /// One random write transaction, committed with a random durability.
    fn commit(&mut self, db: &Database) {
        let mut txn = db.begin_write().unwrap();
        let mut next = self.model.clone();
        random_ops(&mut self.rng, &mut txn, &mut next, SHAPE).unwrap();
        let durability = random_durability(&mut self.rng);
        txn.set_durability(durability);
        let state = self.hist.push(digest(&next), self.disk.log_len());
        txn.commit().unwrap();
        (self.model, self.state) = (next, state);
        if durability == Durability::Immediate {
            self.hist.durable(self.disk.log_len(), state);
        }
    }

    fn abort(&mut self, db: &Database) {
        let mut txn = db.begin_write().unwrap();
        let mut scratch = self.model.clone();
        random_ops(&mut self.rng, &mut txn, &mut scratch, SHAPE).unwrap();
    }

    /// Compaction in place commits durably (and moves pages, and truncates the file).
    fn compact(&mut self, db: &Database) {
        db.compact().unwrap();
        self.hist.durable(self.disk.log_len(), self.state);
    }

    fn begin_reader(&mut self, db: &Database) {
        if self.readers.len() == READERS_MAX {
            self.readers.remove(0);
        }
        self.readers
            .push((db.begin_read().unwrap(), digest(&self.model)));
    }

    fn end_a_reader(&mut self) {
        if !self.readers.is_empty() {
            let i = self.rng.below(self.readers.len() as u64) as usize;
            self.readers.swap_remove(i);
        }
    }

    /// A clean close (readers end first: they hold the handle open) and a reopen, which
    /// must find the newest state.
    fn reopen(&mut self, db: Database) -> Database {
        self.readers.clear();
        drop(db);
        self.hist.durable(self.disk.log_len(), self.state);
        let db = open(&self.disk).expect("reopen");
        assert!(
            read_all(&db).unwrap() == self.model,
            "reopened content differs"
        );
        db
    }

    /// What must hold after every step.
    fn verify(&mut self, db: &Database, step: usize) {
        db.check()
            .unwrap_or_else(|e| panic!("step {step}: check: {e}"));
        for (i, (txn, began_on)) in self.readers.iter().enumerate() {
            assert_eq!(
                snapshot_digest(txn),
                *began_on,
                "step {step}: held reader {i} no longer reads its snapshot"
            );
        }
        if self.rng.chance(1, 6) {
            let at = self.disk.log_len();
            let image = CrashImages::new(&self.disk).image(at, &mut self.rng);
            let (_, _, content) =
                recover(image).unwrap_or_else(|e| panic!("step {step}: power loss: {e}"));
            self.hist
                .check(at, digest(&content))
                .unwrap_or_else(|e| panic!("step {step}: power loss: {e}"));
        }
    }
}

fn run(seed: u64, steps: usize) {
    let (mut w, mut db) = Workload::new(seed);
    for step in 0..steps {
        match w.rng.below(30) {
            0 => w.compact(&db),
            1 => db = w.reopen(db),
            2..=6 => w.begin_reader(&db),
            7..=8 => w.end_a_reader(),
            9..=10 => w.abort(&db),
            _ => w.commit(&db),
        }
        w.verify(&db, step);
    }
}

#[test]
fn held_readers_keep_their_snapshots_through_commits_and_compaction() {
    let base = seed(11);
    let seeds = if heavy() { 40 } else { 4 };
    for s in base..base + seeds {
        let outcome = std::panic::catch_unwind(|| run(s, 300));
        assert!(
            outcome.is_ok(),
            "seed {s} failed (MAPKV_SEED={s} reruns it)"
        );
    }
}
