//! The workload driver: written once, against `Engine`, for every engine.
//!
//! One round builds a fresh database for every engine and runs every selected workload on
//! each of them, engine after engine within a workload, so slow drift of the machine hits
//! every engine alike; the engine order rotates from round to round. `--repeat` rounds are
//! run and the report takes the median of each cell.
//!
//! The steady update workload runs last in a round, after the other databases are gone,
//! on a database of its own per engine (see `Bench::steady`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::data::{Dataset, Digest, Expected, SteadyPlan};
use crate::engine::{Engine, EngineKind, Reader, dir_size};

/// Entries each range read visits.
pub const SCAN_LEN: usize = 10;

/// The workloads, in the order a round runs them (which is also the table's row order).
/// The load in random order is run whenever a workload other than `SteadyUpdates` and
/// `SortedLoadMethods` (which make their own databases) is selected, since those need its
/// database; it is reported only when selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    BulkLoad,
    SortedBulkLoad,
    IndividualWrites,
    BatchWrites,
    Len,
    RandomReads,
    RandomReadsThreads,
    RangeReads,
    FullScan,
    Removals,
    Compaction,
    /// Durable commits that each overwrite a random share of the keys, on a freshly loaded
    /// database of its own; then its file size, before and after compaction.
    SteadyUpdates,
    /// Not part of a round: `sorted_load::run` after the rounds, with its own table.
    SortedLoadMethods,
}

impl Workload {
    pub const ALL: [Workload; 13] = [
        Workload::BulkLoad,
        Workload::SortedBulkLoad,
        Workload::IndividualWrites,
        Workload::BatchWrites,
        Workload::Len,
        Workload::RandomReads,
        Workload::RandomReadsThreads,
        Workload::RangeReads,
        Workload::FullScan,
        Workload::Removals,
        Workload::Compaction,
        Workload::SteadyUpdates,
        Workload::SortedLoadMethods,
    ];

    /// The name `--workloads` takes.
    pub fn name(self) -> &'static str {
        match self {
            Workload::BulkLoad => "bulk-load",
            Workload::SortedBulkLoad => "sorted-bulk-load",
            Workload::IndividualWrites => "individual-writes",
            Workload::BatchWrites => "batch-writes",
            Workload::Len => "len",
            Workload::RandomReads => "random-reads",
            Workload::RandomReadsThreads => "random-reads-threads",
            Workload::RangeReads => "range-reads",
            Workload::FullScan => "full-scan",
            Workload::Removals => "removals",
            Workload::Compaction => "compaction",
            Workload::SteadyUpdates => "steady-updates",
            Workload::SortedLoadMethods => "sorted-load-methods",
        }
    }

    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    fn is_read(self) -> bool {
        matches!(
            self,
            Workload::Len
                | Workload::RandomReads
                | Workload::RandomReadsThreads
                | Workload::RangeReads
                | Workload::FullScan
        )
    }
}

/// A row of the report: a timed workload, a file size, or a ratio of two sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Row {
    Time(Workload),
    SizeAfterLoad,
    SizeAfterSortedLoad,
    SizeAfterRemovals,
    SizeAfterCompaction,
    /// After the engine's in-place compaction, where `compact` made a copy (mapkv).
    SizeAfterCompactInPlace,
    /// The steady update workload's database after its load, before the updates.
    SizeBeforeSteadyUpdates,
    SizeAfterSteadyUpdates,
    SizeAfterSteadyCompaction,
    /// `SizeAfterSteadyUpdates ÷ SizeAfterSteadyCompaction`, per round.
    SteadyGrowth,
}

impl Row {
    /// The row's name in the JSON file.
    pub fn id(self) -> &'static str {
        match self {
            Row::Time(w) => w.name(),
            Row::SizeAfterLoad => "size-after-load",
            Row::SizeAfterSortedLoad => "size-after-sorted-load",
            Row::SizeAfterRemovals => "size-after-removals",
            Row::SizeAfterCompaction => "size-after-compaction",
            Row::SizeAfterCompactInPlace => "size-after-compact-in-place",
            Row::SizeBeforeSteadyUpdates => "size-before-steady-updates",
            Row::SizeAfterSteadyUpdates => "size-after-steady-updates",
            Row::SizeAfterSteadyCompaction => "size-after-steady-compaction",
            Row::SteadyGrowth => "steady-file-over-compacted",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Sample {
    /// Wall-clock seconds for `ops` operations (`ops` is None where a rate means nothing).
    Time {
        secs: f64,
        ops: Option<u64>,
    },
    Bytes(u64),
    /// A dimensionless ratio (smaller is better, as for sizes).
    Ratio(f64),
}

/// Every sample, by row and engine.
pub type Results = BTreeMap<Row, BTreeMap<EngineKind, Vec<Sample>>>;

pub struct Config {
    pub n: usize,
    pub threads: usize,
    pub repeat: usize,
    pub individual_writes: usize,
    pub batches: usize,
    pub batch_size: usize,
    /// Commits of the steady update workload.
    pub steady_commits: usize,
    /// Share of the loaded keys each steady commit overwrites (0.01: 1 %).
    pub steady_fraction: f64,
    /// Seed of the data and of the steady updates' plan.
    pub seed: u64,
    pub workloads: BTreeSet<Workload>,
    /// Where each round's databases are made (one subdirectory per engine).
    pub root: PathBuf,
    pub keep_files: bool,
}

impl Config {
    pub fn extras(&self) -> usize {
        self.individual_writes + self.batches * self.batch_size
    }

    /// Keys each steady commit overwrites: the fraction of `n`, rounded, at least one.
    pub fn steady_per_commit(&self) -> usize {
        ((self.n as f64 * self.steady_fraction).round() as usize).clamp(1, self.n)
    }

    fn has(&self, w: Workload) -> bool {
        self.workloads.contains(&w)
    }

    /// Whether a round needs the main databases (the random-order load and what follows):
    /// not when the steady updates (which load their own) and the sorted-load comparison
    /// (run apart) are all that was asked for.
    fn needs_main(&self) -> bool {
        self.workloads
            .iter()
            .any(|w| !matches!(w, Workload::SteadyUpdates | Workload::SortedLoadMethods))
    }
}

struct Bench<'a> {
    cfg: &'a Config,
    data: &'a Dataset,
    /// The loaded keys in ascending order, for the sorted load.
    sorted_base: &'a [usize],
    /// The steady update workload's plan, when it is selected.
    steady_plan: Option<&'a SteadyPlan>,
    results: &'a mut Results,
    round: usize,
}

/// One engine's database for the round.
struct Open {
    kind: EngineKind,
    engine: Box<dyn Engine>,
    /// Holds `db/` (the database) and `compacted/` (a compacted copy, for engines that copy).
    dir: PathBuf,
}

pub fn run(cfg: &Config, data: &Dataset, engines: &[EngineKind]) -> Result<Results> {
    let sorted_base = data.sorted((0..data.n).collect());
    let steady = cfg
        .has(Workload::SteadyUpdates)
        .then(|| SteadyPlan::new(data, cfg.steady_commits, cfg.steady_per_commit(), cfg.seed));
    let mut results = Results::new();
    for round in 0..cfg.repeat {
        let mut order = engines.to_vec();
        order.rotate_left(round % engines.len());
        let mut bench = Bench {
            cfg,
            data,
            sorted_base: &sorted_base,
            steady_plan: steady.as_ref(),
            results: &mut results,
            round,
        };
        bench.round(&order)?;
    }
    Ok(results)
}

impl Bench<'_> {
    fn record(&mut self, row: Row, kind: EngineKind, sample: Sample) {
        let label = row.id();
        match sample {
            Sample::Time { secs, ops } => {
                let rate = ops.map_or(String::new(), |ops| {
                    format!("  {:>12.0} ops/s", ops as f64 / secs)
                });
                eprintln!(
                    "[round {}] {kind:<12} {label:<28} {secs:>10.4} s{rate}",
                    self.round + 1
                );
            }
            Sample::Bytes(bytes) => eprintln!(
                "[round {}] {kind:<12} {label:<28} {:>10.1} MiB",
                self.round + 1,
                bytes as f64 / (1 << 20) as f64
            ),
            Sample::Ratio(r) => eprintln!(
                "[round {}] {kind:<12} {label:<28} {r:>10.3} ×",
                self.round + 1
            ),
        }
        self.results
            .entry(row)
            .or_default()
            .entry(kind)
            .or_default()
            .push(sample);
    }

    fn time(
        &mut self,
        w: Workload,
        kind: EngineKind,
        ops: Option<u64>,
        f: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let start = Instant::now();
        f().with_context(|| format!("{kind}: {}", w.name()))?;
        let secs = start.elapsed().as_secs_f64();
        if self.cfg.has(w) {
            self.record(Row::Time(w), kind, Sample::Time { secs, ops });
        }
        Ok(())
    }

    /// Records (and returns) the size of the files under `dir`, once `engine` has settled.
    fn record_size(
        &mut self,
        row: Row,
        kind: EngineKind,
        engine: &dyn Engine,
        dir: &Path,
    ) -> Result<u64> {
        engine.settle()?;
        let bytes = dir_size(dir)?;
        self.record(row, kind, Sample::Bytes(bytes));
        Ok(bytes)
    }

    fn round(&mut self, order: &[EngineKind]) -> Result<()> {
        if self.cfg.needs_main() {
            self.main(order)?;
        }
        if let Some(plan) = self.steady_plan {
            self.steady(order, plan)?;
        }
        Ok(())
    }

    /// The random-order load and every workload on its database, then their removal.
    fn main(&mut self, order: &[EngineKind]) -> Result<()> {
        let (cfg, data) = (self.cfg, self.data);
        let n = data.n;

        // Load in random order (the order the keys were generated in).
        let mut open = Vec::new();
        for &kind in order {
            let dir = cfg.root.join(format!("{kind}-{}", self.round + 1));
            let engine = kind
                .open(&dir.join("db"), n)
                .with_context(|| format!("open {kind}"))?;
            self.time(Workload::BulkLoad, kind, Some(n as u64), || {
                engine.write(&mut |w| {
                    for i in 0..n {
                        w.insert(data.key(i), data.value(i))?;
                    }
                    Ok(())
                })
            })?;
            self.record_size(Row::SizeAfterLoad, kind, &*engine, &dir.join("db"))?;
            open.push(Open { kind, engine, dir });
        }

        if cfg.has(Workload::SortedBulkLoad) {
            for &kind in order {
                let dir = cfg.root.join(format!("{kind}-{}-sorted", self.round + 1));
                let engine = kind.open(&dir, n).with_context(|| format!("open {kind}"))?;
                self.time(Workload::SortedBulkLoad, kind, Some(n as u64), || {
                    let mut entries = self
                        .sorted_base
                        .iter()
                        .map(|&i| (data.key(i), data.value(i)));
                    engine.load_sorted(&mut entries)
                })?;
                self.record_size(Row::SizeAfterSortedLoad, kind, &*engine, &dir)?;
                drop(engine);
                if !cfg.keep_files {
                    std::fs::remove_dir_all(&dir)?;
                }
            }
        }

        // Fresh keys, after the loaded ones: first the individual writes, then the batches.
        let mut written: Vec<Range<usize>> = Vec::new();
        if cfg.has(Workload::IndividualWrites) {
            let keys = n..n + cfg.individual_writes;
            for o in &open {
                self.time(
                    Workload::IndividualWrites,
                    o.kind,
                    Some(keys.len() as u64),
                    || {
                        for i in keys.clone() {
                            o.engine
                                .write(&mut |w| w.insert(data.key(i), data.value(i)))?;
                        }
                        Ok(())
                    },
                )?;
            }
            written.push(keys);
        }
        if cfg.has(Workload::BatchWrites) {
            let first = n + cfg.individual_writes;
            let keys = first..first + cfg.batches * cfg.batch_size;
            for o in &open {
                self.time(
                    Workload::BatchWrites,
                    o.kind,
                    Some(keys.len() as u64),
                    || {
                        for batch in 0..cfg.batches {
                            let start = first + batch * cfg.batch_size;
                            o.engine.write(&mut |w| {
                                for i in start..start + cfg.batch_size {
                                    w.insert(data.key(i), data.value(i))?;
                                }
                                Ok(())
                            })?;
                        }
                        Ok(())
                    },
                )?;
            }
            written.push(keys);
        }

        if cfg.workloads.iter().any(|w| w.is_read()) {
            self.reads(&open, &written)?;
        }

        if cfg.has(Workload::Removals) {
            for o in &open {
                self.time(Workload::Removals, o.kind, Some((n / 2) as u64), || {
                    o.engine.write(&mut |w| {
                        for i in 0..n / 2 {
                            ensure!(
                                w.remove(data.key(i))?,
                                "entry {i} was not present to remove"
                            );
                        }
                        Ok(())
                    })
                })?;
                self.record_size(
                    Row::SizeAfterRemovals,
                    o.kind,
                    &*o.engine,
                    &o.dir.join("db"),
                )?;
            }
        }

        if cfg.has(Workload::Compaction) {
            for o in &mut open {
                let out = o.dir.join("compacted");
                std::fs::create_dir_all(&out)?;
                let start = Instant::now();
                let compacted = o
                    .engine
                    .compact(&out)
                    .with_context(|| format!("{}: compaction", o.kind))?;
                let secs = start.elapsed().as_secs_f64();
                self.record(
                    Row::Time(Workload::Compaction),
                    o.kind,
                    Sample::Time { secs, ops: None },
                );
                self.record_size(Row::SizeAfterCompaction, o.kind, &*o.engine, &compacted)?;
                if o.engine.compact_in_place()? {
                    let db = o.dir.join("db");
                    self.record_size(Row::SizeAfterCompactInPlace, o.kind, &*o.engine, &db)?;
                }
            }
        }

        for o in open {
            drop(o.engine);
            if !cfg.keep_files {
                std::fs::remove_dir_all(&o.dir)?;
            }
        }
        Ok(())
    }

    /// The steady update workload, engine after engine, each on a database of its own made
    /// for it, so that no other row sees its writes and it sees none of theirs (the removals
    /// would leave half the file free): the N entries loaded in random order in one durable
    /// transaction (as the main load, not timed), then the plan's commits, each durable and
    /// each overwriting its share of the loaded keys with fresh values. The commits are
    /// timed (the making of each commit's values is not); ops = keys overwritten. The file
    /// is measured after the load; an untimed full scan then checks every entry, and the
    /// file is measured before and after the
    /// engine's `compact` (the same as the compaction row's: a copy for LMDB and mapkv, in
    /// place for redb and SQLite). It runs after the main databases are removed, and each
    /// engine's database is removed before the next engine's is made.
    fn steady(&mut self, order: &[EngineKind], plan: &SteadyPlan) -> Result<()> {
        let (cfg, data) = (self.cfg, self.data);
        let n = data.n;
        for &kind in order {
            let dir = cfg.root.join(format!("{kind}-{}-steady", self.round + 1));
            let db = dir.join("db");
            let mut engine = kind.open(&db, n).with_context(|| format!("open {kind}"))?;
            engine
                .write(&mut |w| {
                    for i in 0..n {
                        w.insert(data.key(i), data.value(i))?;
                    }
                    Ok(())
                })
                .with_context(|| format!("{kind}: the load for steady-updates"))?;
            self.record_size(Row::SizeBeforeSteadyUpdates, kind, &*engine, &db)?;

            let mut secs = 0.0;
            let mut ops = 0;
            for commit in 0..plan.commits.len() {
                let writes = plan.writes(commit);
                let start = Instant::now();
                engine
                    .write(&mut |w| {
                        for (i, value) in &writes {
                            w.insert(data.key(*i as usize), value)?;
                        }
                        Ok(())
                    })
                    .with_context(|| format!("{kind}: steady-updates, commit {commit}"))?;
                secs += start.elapsed().as_secs_f64();
                ops += writes.len() as u64;
            }
            self.record(
                Row::Time(Workload::SteadyUpdates),
                kind,
                Sample::Time {
                    secs,
                    ops: Some(ops),
                },
            );

            let mut digest = Digest::default();
            engine.read(&mut |r| r.scan(&mut digest))?;
            ensure!(
                digest == plan.expected,
                "{kind}: after steady-updates a full scan returned wrong entries"
            );

            let after = self.record_size(Row::SizeAfterSteadyUpdates, kind, &*engine, &db)?;
            let out = dir.join("compacted");
            std::fs::create_dir_all(&out)?;
            let compacted_dir = engine
                .compact(&out)
                .with_context(|| format!("{kind}: compaction after steady-updates"))?;
            let compacted = self.record_size(
                Row::SizeAfterSteadyCompaction,
                kind,
                &*engine,
                &compacted_dir,
            )?;
            self.record(
                Row::SteadyGrowth,
                kind,
                Sample::Ratio(after as f64 / compacted as f64),
            );

            drop(engine);
            if !cfg.keep_files {
                std::fs::remove_dir_all(&dir)?;
            }
        }
        Ok(())
    }

    /// The read workloads, on the databases as the loads and writes left them.
    ///
    /// Warm-up, the same for every engine: one untimed full scan right before the first
    /// read workload (it also checks the scan's result). It maps the whole file in the
    /// mmap engines and fills what page cache each engine has, so the reads measure
    /// warm lookups rather than the first touch of each page.
    fn reads(&mut self, open: &[Open], written: &[Range<usize>]) -> Result<()> {
        let (cfg, data) = (self.cfg, self.data);
        let n = data.n;
        let expected = Expected::compute(data, written, SCAN_LEN);

        for o in open {
            let mut digest = Digest::default();
            o.engine.read(&mut |r| r.scan(&mut digest))?;
            ensure!(
                digest == expected.full_scan,
                "{}: warm-up scan returned wrong entries",
                o.kind
            );
        }

        if cfg.has(Workload::Len) {
            for o in open {
                self.time(Workload::Len, o.kind, None, || {
                    o.engine.read(&mut |r| {
                        let len = r.len()?;
                        ensure!(
                            len == expected.len,
                            "len() is {len}, expected {}",
                            expected.len
                        );
                        Ok(())
                    })
                })?;
            }
        }

        if cfg.has(Workload::RandomReads) {
            for o in open {
                self.time(Workload::RandomReads, o.kind, Some(n as u64), || {
                    o.engine
                        .read(&mut |r| check_gets(r, data, &data.read_order))
                })?;
            }
        }

        if cfg.has(Workload::RandomReadsThreads) {
            let chunk = n.div_ceil(cfg.threads).max(1);
            for o in open {
                let engine: &dyn Engine = &*o.engine;
                self.time(Workload::RandomReadsThreads, o.kind, Some(n as u64), || {
                    std::thread::scope(|s| {
                        let threads: Vec<_> = data
                            .read_order
                            .chunks(chunk)
                            .map(|part| {
                                s.spawn(move || engine.read(&mut |r| check_gets(r, data, part)))
                            })
                            .collect();
                        threads
                            .into_iter()
                            .try_for_each(|t| t.join().expect("reader thread panicked"))
                    })
                })?;
            }
        }

        if cfg.has(Workload::RangeReads) {
            for o in open {
                self.time(
                    Workload::RangeReads,
                    o.kind,
                    Some(data.range_starts.len() as u64),
                    || {
                        let mut digest = Digest::default();
                        o.engine.read(&mut |r| {
                            for &start in &data.range_starts {
                                r.range_from(data.key(start as usize), SCAN_LEN, &mut digest)?;
                            }
                            Ok(())
                        })?;
                        ensure!(
                            digest == expected.range_reads,
                            "range reads returned wrong entries"
                        );
                        Ok(())
                    },
                )?;
            }
        }

        if cfg.has(Workload::FullScan) {
            for o in open {
                self.time(Workload::FullScan, o.kind, Some(expected.len), || {
                    let mut digest = Digest::default();
                    o.engine.read(&mut |r| r.scan(&mut digest))?;
                    ensure!(
                        digest == expected.full_scan,
                        "full scan returned wrong entries"
                    );
                    Ok(())
                })?;
            }
        }
        Ok(())
    }
}

/// Gets each entry in `order` and compares the value read with the one written.
fn check_gets(r: &mut dyn Reader, data: &Dataset, order: &[u32]) -> Result<()> {
    for &i in order {
        let i = i as usize;
        match r.get(data.key(i))? {
            Some(value) if value == data.value(i) => {}
            Some(_) => bail!("entry {i}: wrong value"),
            None => bail!("entry {i}: missing"),
        }
    }
    Ok(())
}
