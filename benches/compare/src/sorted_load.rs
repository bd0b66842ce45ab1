//! The sorted-load comparison (`--workloads sorted-load-methods`): the N entries in
//! ascending key order, loaded by each method into a fresh database, against the disk's
//! ceiling — the time to write the bytes of mapkv's bulk load sequentially with O_DIRECT
//! and fdatasync them — so each method's distance from the physical limit is visible.
//!
//! | method | what it times |
//! |---|---|
//! | `O_DIRECT ceiling` | writing as many bytes as mapkv's bulk load wrote, in 4 MiB aligned O_DIRECT writes to a new file, then fdatasync |
//! | `mapkv bulk_load (O_DIRECT)` | `Database::bulk_load` (direct I/O; its BulkStats must say so) |
//! | `mapkv bulk_load (buffered)` | `bulk_load_with(.., BulkOptions::new().direct_io(false))`: pwrite + fdatasync |
//! | `mapkv insert loop` | N ascending inserts in one write transaction |
//! | `lmdb MDB_APPEND` | `put` with `MDB_APPEND` in one write transaction |
//! | `redb insert loop` | N ascending inserts in one write transaction |
//!
//! Every load ends with its durable commit; times are wall clock from opening the
//! (already created, empty) database's load to the commit's return.
//!
//! The input (`--sorted-input`) is by default a stream: the entries back to back in key
//! order in one buffer, as they arrive from a sorted file. `scattered` reads them from
//! the dataset's arrays in key order instead, every entry somewhere else in memory: at
//! 10M entries that gather alone takes about as long as the disk's ceiling, and every
//! method pays it.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::data::{Dataset, KEY_LEN, VALUE_LEN};
use crate::engine::{EngineKind, dir_size};
use crate::report;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Ceiling,
    MapkvDirect,
    MapkvBuffered,
    MapkvInsert,
    LmdbAppend,
    Redb,
}

impl Method {
    const ALL: [Method; 6] = [
        Method::MapkvDirect,
        Method::MapkvBuffered,
        Method::MapkvInsert,
        Method::LmdbAppend,
        Method::Redb,
        Method::Ceiling,
    ];

    fn label(self) -> &'static str {
        match self {
            Method::Ceiling => "O_DIRECT sequential write (disk ceiling)",
            Method::MapkvDirect => "mapkv bulk_load (O_DIRECT)",
            Method::MapkvBuffered => "mapkv bulk_load (buffered)",
            Method::MapkvInsert => "mapkv insert loop",
            Method::LmdbAppend => "lmdb MDB_APPEND",
            Method::Redb => "redb insert loop",
        }
    }

    fn engine(self) -> Option<EngineKind> {
        match self {
            Method::Ceiling => None,
            Method::MapkvDirect | Method::MapkvBuffered | Method::MapkvInsert => {
                Some(EngineKind::Mapkv)
            }
            Method::LmdbAppend => Some(EngineKind::Lmdb),
            Method::Redb => Some(EngineKind::Redb),
        }
    }
}

/// How the sorted entries lie in memory when a load reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputLayout {
    /// One buffer of records in key order, as read from a sorted file.
    Stream,
    /// The dataset's arrays read in key order: a gather from all over memory.
    Scattered,
}

/// The N entries in key order, laid out as `InputLayout` says.
struct SortedInput<'a> {
    data: &'a Dataset,
    order: Vec<usize>,
    /// `Stream`: key and value of each entry, back to back.
    stream: Option<Vec<u8>>,
}

impl<'a> SortedInput<'a> {
    fn new(data: &'a Dataset, layout: InputLayout) -> SortedInput<'a> {
        let order = data.sorted((0..data.n).collect());
        let stream = (layout == InputLayout::Stream).then(|| {
            let mut bytes = Vec::with_capacity(data.n * (KEY_LEN + VALUE_LEN));
            for &i in &order {
                bytes.extend_from_slice(data.key(i));
                bytes.extend_from_slice(data.value(i));
            }
            bytes
        });
        SortedInput {
            data,
            order,
            stream,
        }
    }

    fn entries(&self) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        match &self.stream {
            Some(bytes) => Box::new(
                bytes
                    .chunks_exact(KEY_LEN + VALUE_LEN)
                    .map(|r| r.split_at(KEY_LEN)),
            ),
            None => Box::new((self.order.iter()).map(|&i| (self.data.key(i), self.data.value(i)))),
        }
    }
}

/// One method's samples: seconds, and the bytes of its files after the load.
#[derive(Serialize)]
pub struct MethodRow {
    pub method: &'static str,
    pub median_secs: f64,
    pub samples_secs: Vec<f64>,
    pub file_bytes: u64,
    /// File bytes ÷ median seconds.
    pub mb_per_sec: f64,
    pub entries_per_sec: f64,
    /// The ceiling's median ÷ this median: the share of the disk's sequential bandwidth.
    pub share_of_ceiling: Option<f64>,
    /// LMDB MDB_APPEND's median ÷ this median: > 1 means faster than LMDB.
    pub speedup_vs_lmdb_append: Option<f64>,
}

#[derive(Serialize)]
pub struct SortedLoadReport {
    pub n: usize,
    pub input: InputLayout,
    /// Bytes the ceiling wrote (those of mapkv's bulk load).
    pub ceiling_bytes: u64,
    pub rows: Vec<MethodRow>,
}

/// Runs every method whose engine is among `engines` (and the ceiling) `repeat` times
/// under `root`; the order rotates from round to round, except that mapkv's direct load
/// comes first (the ceiling writes as many bytes as it did).
pub fn run(
    data: &Dataset,
    engines: &[EngineKind],
    repeat: usize,
    root: &Path,
    layout: InputLayout,
) -> Result<SortedLoadReport> {
    let sorted = SortedInput::new(data, layout);
    let methods: Vec<Method> = Method::ALL
        .into_iter()
        .filter(|m| {
            m.engine()
                .is_none_or(|e| engines.contains(&e) && e.available())
        })
        .collect();
    ensure!(
        methods.contains(&Method::MapkvDirect),
        "the sorted-load comparison needs the mapkv engine"
    );
    let mut samples: Vec<(Method, Vec<f64>, u64)> =
        methods.iter().map(|&m| (m, Vec::new(), 0)).collect();
    let mut ceiling_bytes = 0;
    for round in 0..repeat {
        let mut order: Vec<Method> = methods[1..].to_vec();
        let others = order.len();
        order.rotate_left(round % others);
        order.insert(0, Method::MapkvDirect);
        for method in order {
            let dir = root.join(format!("sorted-{method:?}-{round}"));
            std::fs::create_dir_all(&dir)?;
            let (secs, bytes) = run_one(method, data, &sorted, &dir, ceiling_bytes)
                .with_context(|| format!("sorted load: {}", method.label()))?;
            if method == Method::MapkvDirect {
                ceiling_bytes = bytes;
            }
            eprintln!(
                "[round {}] {:<42} {secs:>9.3} s  {:>8.1} MiB",
                round + 1,
                method.label(),
                bytes as f64 / (1 << 20) as f64
            );
            let slot = samples.iter_mut().find(|s| s.0 == method).expect("method");
            slot.1.push(secs);
            slot.2 = bytes;
            std::fs::remove_dir_all(&dir)?;
        }
    }
    let median_of = |m: Method| {
        samples
            .iter()
            .find(|s| s.0 == m)
            .map(|s| report::median(&s.1))
    };
    let (ceiling, lmdb) = (median_of(Method::Ceiling), median_of(Method::LmdbAppend));
    let rows = samples
        .iter()
        .map(|(m, secs, bytes)| {
            let median = report::median(secs);
            MethodRow {
                method: m.label(),
                median_secs: median,
                samples_secs: secs.clone(),
                file_bytes: *bytes,
                mb_per_sec: *bytes as f64 / median / 1e6,
                entries_per_sec: data.n as f64 / median,
                share_of_ceiling: ceiling.map(|c| c / median),
                speedup_vs_lmdb_append: lmdb.map(|l| l / median),
            }
        })
        .collect();
    Ok(SortedLoadReport {
        n: data.n,
        input: layout,
        ceiling_bytes,
        rows,
    })
}

/// Times one load into a fresh database in `dir`; returns (seconds, bytes on disk after).
/// For mapkv's bulk loads the bytes are those the load wrote (`BulkStats`).
fn run_one(
    method: Method,
    data: &Dataset,
    sorted: &SortedInput,
    dir: &Path,
    ceiling_bytes: u64,
) -> Result<(f64, u64)> {
    let mut entries = sorted.entries();
    match method {
        Method::Ceiling => {
            let secs = direct_write(&dir.join("ceiling"), ceiling_bytes)?;
            Ok((secs, ceiling_bytes))
        }
        #[cfg(feature = "mapkv")]
        Method::MapkvDirect | Method::MapkvBuffered => {
            let engine = crate::engines::mapkv::MapkvEngine::open(dir)?;
            let direct = method == Method::MapkvDirect;
            let start = Instant::now();
            let stats = engine.bulk_load(&mut *entries, direct)?;
            let secs = start.elapsed().as_secs_f64();
            ensure!(
                stats.direct_io == direct,
                "bulk_load used direct I/O: {} (refused: {:?})",
                stats.direct_io,
                stats.direct_io_refused
            );
            Ok((secs, stats.bytes_written))
        }
        _ => {
            let kind = method.engine().expect("an engine");
            let engine = kind.open(dir, data.n)?;
            let start = Instant::now();
            match method {
                Method::LmdbAppend => engine.load_sorted(&mut *entries)?,
                _ => engine.write(&mut |w| {
                    for (k, v) in &mut *entries {
                        w.insert(k, v)?;
                    }
                    Ok(())
                })?,
            }
            let secs = start.elapsed().as_secs_f64();
            drop(engine);
            Ok((secs, dir_size(dir)?))
        }
    }
}

/// Linux's O_DIRECT (it differs between architectures).
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const O_DIRECT: i32 = 0o200000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
const O_DIRECT: i32 = 0o40000;

/// Writes `bytes` (rounded up to 4 KiB) to a new file with O_DIRECT, 4 MiB a write from
/// one aligned buffer, then fdatasync: the disk's sequential write ceiling. Seconds.
fn direct_write(path: &Path, bytes: u64) -> Result<f64> {
    const CHUNK: usize = 4 << 20;
    const ALIGN: usize = 4096;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(O_DIRECT)
        .open(path)
        .with_context(|| format!("open {} with O_DIRECT", path.display()))?;
    let mut backing = vec![0xA5u8; CHUNK + ALIGN];
    let at = backing.as_ptr().align_offset(ALIGN);
    let buf = &mut backing[at..at + CHUNK];
    let total = bytes.div_ceil(ALIGN as u64) * ALIGN as u64;
    let start = Instant::now();
    let mut offset = 0;
    while offset < total {
        let len = (total - offset).min(CHUNK as u64) as usize;
        file.write_all_at(&buf[..len], offset)?;
        offset += len as u64;
    }
    file.sync_data()?;
    Ok(start.elapsed().as_secs_f64())
}

/// The table: one row per method.
pub fn markdown(r: &SortedLoadReport) -> String {
    let mut out = format!(
        "Sorted load of {} entries (input: {}); the ceiling writes {:.1} MiB (mapkv's bulk load) with O_DIRECT.\n\n\
         | method | time | entries/s | MB/s (file bytes) | share of O_DIRECT ceiling | × faster than LMDB MDB_APPEND |\n\
         |---|---:|---:|---:|---:|---:|\n",
        r.n,
        match r.input {
            InputLayout::Stream => "one buffer in key order",
            InputLayout::Scattered => "gathered from the dataset's arrays in key order",
        },
        r.ceiling_bytes as f64 / (1 << 20) as f64
    );
    for row in &r.rows {
        let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.0} %", v * 100.0));
        let times = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}×"));
        out.push_str(&format!(
            "| {} | {:.3} s | {:.2}M/s | {:.0} | {} | {} |\n",
            row.method,
            row.median_secs,
            row.entries_per_sec / 1e6,
            row.mb_per_sec,
            pct(row.share_of_ceiling),
            times(row.speedup_vs_lmdb_append),
        ));
    }
    out
}
