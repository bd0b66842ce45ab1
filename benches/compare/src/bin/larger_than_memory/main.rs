//! `larger_than_memory`: reads of a database 4× larger than the memory the reader may use,
//! the question of "Are You Sure You Want to Use MMAP in Your DBMS?" (CIDR 2022) for mapkv.
//!
//! ```sh
//! cargo run --release -p compare --bin larger_than_memory -- --dir /work/ltm-run
//! ```
//!
//! The parent process builds one database per engine (mapkv, LMDB, redb, SQLite) with
//! `--data-mib` of entries (24-byte keys, 150-byte values), each with its fastest sorted
//! path, outside any limit. Then, for each engine setting and key distribution, it
//! fsyncs the engine's files and drops them from the kernel's page cache
//! (`posix_fadvise(DONTNEED)`, checked with `fincore`), makes a memory cgroup (v1) with
//! `memory.limit_in_bytes` = `--limit-mib`, and runs itself as a child (`--child`) that
//! moves into the cgroup, opens the database, reads and prints its result as JSON. Page
//! cache the child faults in is charged to the cgroup, so the limit caps the file pages
//! the child can keep as well as its own memory. The child regenerates keys and expected
//! values from the index (nothing of the dataset is held in memory).
//!
//! Needs root and the cgroup v1 memory controller at `/sys/fs/cgroup/memory`; without
//! them it says why and exits 0 without doing anything.

mod cgroup;
#[path = "../../data.rs"]
#[allow(dead_code)]
mod data;
mod readers;
#[path = "../../units.rs"]
mod units;
mod workload;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroup, memory_stat};
use crate::data::{KEY_LEN, VALUE_LEN};
use crate::readers::open_reader;
use crate::units::fmt_rate;
use crate::workload::{Entries, Workload};

const MIB: u64 = 1 << 20;
const TREE: &str = "bench";
const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(TREE);
/// Entries per write transaction of the loads that are insert loops (and of LMDB's).
const LOAD_TXN: u64 = 1_000_000;
/// The file each store keeps beside its database once its load has finished.
const LOADED: &str = "LOADED";

#[derive(Parser)]
#[command(about = "Random and Zipfian gets of a database 4x larger than a memory cgroup's limit")]
struct Args {
    /// Bytes of entries (keys + values) loaded, in MiB; N = this / 174 B.
    #[arg(long, default_value_t = 2048)]
    data_mib: u64,
    /// The memory cgroup's `memory.limit_in_bytes` for the reads, in MiB.
    #[arg(long, default_value_t = 512)]
    limit_mib: u64,
    /// Timed gets per cell.
    #[arg(long, default_value_t = 1_000_000)]
    gets: usize,
    /// Untimed gets of the same distribution before the timed ones, in the same process.
    #[arg(long, default_value_t = 200_000)]
    warmup_gets: usize,
    /// Gets per read transaction (every engine alike).
    #[arg(long, default_value_t = 1000)]
    txn_gets: usize,
    /// Stop a cell's timed gets after this many seconds (the rate is of those done).
    #[arg(long, default_value_t = 45.0)]
    max_secs: f64,
    /// Stop a cell's warm-up gets after this many seconds.
    #[arg(long, default_value_t = 15.0)]
    warmup_secs: f64,
    /// mapkv `mmap_size(0)` rows: their `cache_size`s in MiB [default: 1/8, 1/2 and 3/4
    /// of the limit].
    #[arg(long, value_delimiter = ',')]
    cache_mib: Vec<u64>,
    /// redb's cache and SQLite's `PRAGMA cache_size`, in MiB [default: half the limit].
    #[arg(long)]
    other_cache_mib: Option<u64>,
    /// Engine settings: mapkv, mapkv-random, mapkv-pread, lmdb, lmdb-nordahead, redb,
    /// sqlite, sqlite-mmap.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mapkv,mapkv-random,mapkv-pread,lmdb,lmdb-nordahead,redb,sqlite,sqlite-mmap"
    )]
    engines: Vec<String>,
    /// Key distributions: uniform, zipfian.
    #[arg(long, value_delimiter = ',', default_value = "uniform,zipfian")]
    workloads: Vec<String>,
    /// Where the databases are made (in `ltm-n<N>-s<seed>` inside it).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the databases afterwards; a later run with the same --dir, size and seed
    /// reuses them instead of loading again.
    #[arg(long)]
    keep: bool,
    /// Seed of keys, values and the gets' order.
    #[arg(long, default_value_t = 3)]
    seed: u64,
    /// Also write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the table as markdown.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Internal: run one cell as the child process (a JSON `ChildSpec`).
    #[arg(long, hide = true)]
    child: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Stores (one database each) and the settings they are read with.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Store {
    Mapkv,
    Lmdb,
    Redb,
    Sqlite,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Mapkv => "mapkv",
            Store::Lmdb => "lmdb",
            Store::Redb => "redb",
            Store::Sqlite => "sqlite",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Variant {
    /// mapkv, default `mmap_size` (the whole file mapped).
    MapkvMap,
    /// The same with `Options::read_ahead(false)`: `MADV_RANDOM` on the map, as LMDB's
    /// `MDB_NORDAHEAD`.
    MapkvMapRandom,
    /// mapkv, `mmap_size(0)`, `cache_size(cache_mib)`.
    MapkvPread { cache_mib: u64 },
    /// LMDB (heed), default flags, or with `MDB_NORDAHEAD`.
    Lmdb { no_read_ahead: bool },
    /// redb with `set_cache_size(cache_mib)`.
    Redb { cache_mib: u64 },
    /// SQLite, WAL, `PRAGMA cache_size` of `cache_mib`, `mmap_size` 0 or the whole file.
    Sqlite { cache_mib: u64, mmap: bool },
}

impl Variant {
    fn store(&self) -> Store {
        match self {
            Variant::MapkvMap | Variant::MapkvMapRandom | Variant::MapkvPread { .. } => {
                Store::Mapkv
            }
            Variant::Lmdb { .. } => Store::Lmdb,
            Variant::Redb { .. } => Store::Redb,
            Variant::Sqlite { .. } => Store::Sqlite,
        }
    }

    fn label(&self) -> String {
        match self {
            Variant::MapkvMap => "mapkv (map, default mmap_size)".into(),
            Variant::MapkvMapRandom => "mapkv (map), read_ahead(false)".into(),
            Variant::MapkvPread { cache_mib } => {
                format!("mapkv mmap_size(0), cache_size {cache_mib} MiB")
            }
            Variant::Lmdb {
                no_read_ahead: false,
            } => "lmdb (default flags)".into(),
            Variant::Lmdb {
                no_read_ahead: true,
            } => "lmdb MDB_NORDAHEAD".into(),
            Variant::Redb { cache_mib } => format!("redb, cache {cache_mib} MiB"),
            Variant::Sqlite { cache_mib, mmap } => format!(
                "sqlite WAL, cache {cache_mib} MiB, mmap_size {}",
                if *mmap { "max (2 GiB)" } else { "0" }
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading (parent, outside the cgroup).

fn load(store: Store, dir: &Path, entries: &Entries) -> Result<()> {
    match store {
        Store::Mapkv => {
            let db = mapkv::Options::new().open(dir.join("data.mapkv"))?;
            let txn = db.begin_write()?;
            txn.open_tree(TREE)?;
            txn.commit()?;
            db.bulk_load(TREE, entries.iter())?;
        }
        Store::Lmdb => {
            let env = unsafe {
                heed::EnvOpenOptions::new()
                    .map_size(lmdb_map_size(entries.n * 400))
                    .open(dir)?
            };
            let mut txn = env.write_txn()?;
            let db: heed::Database<heed::types::Bytes, heed::types::Bytes> =
                env.create_database(&mut txn, None)?;
            for (i, (k, v)) in entries.iter().enumerate() {
                db.put_with_flags(&mut txn, heed::PutFlags::APPEND, &k, &v)?;
                if (i as u64 + 1).is_multiple_of(LOAD_TXN) {
                    txn.commit()?;
                    txn = env.write_txn()?;
                }
            }
            txn.commit()?;
            env.force_sync()?;
        }
        Store::Redb => {
            let db = redb::Database::create(dir.join("data.redb"))?;
            let mut it = entries.iter().peekable();
            while it.peek().is_some() {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(TABLE)?;
                    for (k, v) in it.by_ref().take(LOAD_TXN as usize) {
                        table.insert(&k[..], &v[..])?;
                    }
                }
                txn.commit()?;
            }
        }
        Store::Sqlite => {
            let mut c = rusqlite::Connection::open(dir.join("data.sqlite"))?;
            // The load is not measured: WAL without fsyncs, a big cache.
            c.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA cache_size=-262144;
                 CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID;",
            )?;
            let mut it = entries.iter().peekable();
            while it.peek().is_some() {
                let tx = c.transaction()?;
                {
                    let mut stmt = tx.prepare_cached("INSERT INTO kv VALUES (?1, ?2)")?;
                    for (k, v) in it.by_ref().take(LOAD_TXN as usize) {
                        stmt.execute(rusqlite::params![&k[..], &v[..]])?;
                    }
                }
                tx.commit()?;
            }
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        }
    }
    Ok(())
}

/// LMDB's map size for a file of `bytes`: with room to spare, in whole 4 KiB pages.
fn lmdb_map_size(bytes: u64) -> usize {
    ((bytes + (1 << 30)).div_ceil(4096) * 4096) as usize
}

/// The regular files in `dir`, without the `LOADED` marker.
fn store_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != LOADED {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn files_size(files: &[PathBuf]) -> Result<u64> {
    files.iter().map(|f| Ok(std::fs::metadata(f)?.len())).sum()
}

/// Writes back and drops every file of the store from the kernel's page cache, and
/// returns the bytes `fincore` still finds resident (None if `fincore` is missing).
fn evict(dir: &Path) -> Result<Option<u64>> {
    let files = store_files(dir)?;
    for path in &files {
        let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
        f.sync_all()?;
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    }
    Ok(resident(&files))
}

/// Bytes of `files` in the page cache, by `fincore` (util-linux).
fn resident(files: &[PathBuf]) -> Option<u64> {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .args(files)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse::<u64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------
// The child: one cell, inside the cgroup.

#[derive(Serialize, Deserialize)]
struct ChildSpec {
    variant: Variant,
    workload: Workload,
    dir: PathBuf,
    n: u64,
    seed: u64,
    gets: usize,
    warmup_gets: usize,
    txn_gets: usize,
    max_secs: f64,
    warmup_secs: f64,
    cgroup: Option<PathBuf>,
}

#[derive(Clone, Serialize, Deserialize)]
struct ChildResult {
    /// Untimed gets done before (the warm-up may stop early at `warmup_secs`).
    warmup_gets: usize,
    gets: usize,
    secs: f64,
    /// The cgroup's `memory.stat` at the end (cache, rss, mapped_file, pgmajfault).
    memory_stat: BTreeMap<String, u64>,
    /// The child's peak resident set (`VmHWM`), bytes.
    vm_hwm: u64,
}

fn run_child(spec: &ChildSpec) -> Result<ChildResult> {
    if let Some(cg) = &spec.cgroup {
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
            .context("enter the cgroup")?;
    }
    let entries = Entries::new(spec.n, spec.seed);
    let indices = spec
        .workload
        .indices(spec.n, spec.seed, spec.warmup_gets + spec.gets);
    let (warmup, timed) = indices.split_at(spec.warmup_gets);
    let mut reader = open_reader(&spec.variant, &spec.dir)?;
    let txn_gets = spec.txn_gets.max(1);
    let start = Instant::now();
    let mut warmed = 0;
    for batch in warmup.chunks(txn_gets) {
        reader.txn(batch, &entries)?;
        warmed += batch.len();
        if start.elapsed().as_secs_f64() > spec.warmup_secs {
            break;
        }
    }
    let limit = Duration::from_secs_f64(spec.max_secs);
    let start = Instant::now();
    let mut gets = 0;
    for batch in timed.chunks(txn_gets) {
        reader.txn(batch, &entries)?;
        gets += batch.len();
        if start.elapsed() > limit {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let vm_hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    Ok(ChildResult {
        warmup_gets: warmed,
        gets,
        secs,
        memory_stat: spec.cgroup.as_deref().map(memory_stat).unwrap_or_default(),
        vm_hwm,
    })
}

// ---------------------------------------------------------------------------------------
// The parent: runs every cell.

#[derive(Clone, Serialize)]
struct Cell {
    variant: String,
    workload: Workload,
    /// "ok", "OOM-killed", or what else went wrong.
    outcome: String,
    result: Option<ChildResult>,
    gets_per_sec: Option<f64>,
    /// The cgroup's counters after the child exited.
    max_usage_bytes: Option<u64>,
    failcnt: Option<u64>,
    oom_kills: Option<u64>,
    /// Bytes of the store's files still in the page cache after the eviction.
    resident_after_evict: Option<u64>,
}

fn run_cell(
    args: &Args,
    variant: &Variant,
    workload: Workload,
    dir: &Path,
    n: u64,
) -> Result<Cell> {
    let resident_after_evict = evict(dir)?;
    let cg = Cgroup::create(args.limit_mib * MIB, "cell")?;
    let spec = ChildSpec {
        variant: variant.clone(),
        workload,
        dir: dir.to_path_buf(),
        n,
        seed: args.seed,
        gets: args.gets,
        warmup_gets: args.warmup_gets,
        txn_gets: args.txn_gets,
        max_secs: args.max_secs,
        warmup_secs: args.warmup_secs,
        cgroup: Some(cg.path.clone()),
    };
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child", &serde_json::to_string(&spec)?])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)?;
    let status = child.wait()?;
    let oom_kills = cg.oom_kills();
    let mut cell = Cell {
        variant: variant.label(),
        workload,
        outcome: "ok".into(),
        result: None,
        gets_per_sec: None,
        max_usage_bytes: cg.read("memory.max_usage_in_bytes"),
        failcnt: cg.read("memory.failcnt"),
        oom_kills,
        resident_after_evict,
    };
    drop(cg);
    if status.success() {
        let result: ChildResult = serde_json::from_str(out.trim())
            .with_context(|| format!("the child's output: {out:?}"))?;
        cell.gets_per_sec = Some(result.gets as f64 / result.secs);
        cell.result = Some(result);
    } else if status.signal() == Some(9) && oom_kills.unwrap_or(0) > 0 {
        cell.outcome = "OOM-killed".into();
    } else {
        cell.outcome = format!("failed ({status})");
    }
    Ok(cell)
}

fn variants(args: &Args) -> Result<Vec<Variant>> {
    let limit = args.limit_mib;
    let caches = if args.cache_mib.is_empty() {
        vec![limit / 8, limit / 2, limit * 3 / 4]
    } else {
        args.cache_mib.clone()
    };
    let other = args.other_cache_mib.unwrap_or(limit / 2);
    let mut out = Vec::new();
    for name in &args.engines {
        match name.as_str() {
            "mapkv" => out.push(Variant::MapkvMap),
            "mapkv-random" => out.push(Variant::MapkvMapRandom),
            "mapkv-pread" => out.extend(
                caches
                    .iter()
                    .map(|&cache_mib| Variant::MapkvPread { cache_mib }),
            ),
            "lmdb" => out.push(Variant::Lmdb {
                no_read_ahead: false,
            }),
            "lmdb-nordahead" => out.push(Variant::Lmdb {
                no_read_ahead: true,
            }),
            "redb" => out.push(Variant::Redb { cache_mib: other }),
            "sqlite" => out.push(Variant::Sqlite {
                cache_mib: other,
                mmap: false,
            }),
            "sqlite-mmap" => out.push(Variant::Sqlite {
                cache_mib: other,
                mmap: true,
            }),
            _ => bail!("unknown engine {name:?}"),
        }
    }
    Ok(out)
}

/// The `read_ahead_kb` of the block device holding `dir`: the read-around window of a
/// page fault in a file mapping without `MADV_RANDOM`.
fn read_ahead_kb(dir: &Path) -> Option<u64> {
    let dev = rustix::fs::stat(dir).ok()?.st_dev;
    let sys = format!(
        "/sys/dev/block/{}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    ["queue/read_ahead_kb", "../queue/read_ahead_kb"]
        .iter()
        .find_map(|f| std::fs::read_to_string(format!("{sys}/{f}")).ok())
        .and_then(|s| s.trim().parse().ok())
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / MIB as f64)
}

fn markdown(variants: &[Variant], workloads: &[Workload], cells: &[Cell]) -> String {
    let find = |v: &Variant, w: Workload| {
        cells
            .iter()
            .find(|c| c.variant == v.label() && c.workload == w)
    };
    // The better of LMDB's rows (with and without MDB_NORDAHEAD) in each column.
    let lmdb_best = |w: Workload| {
        cells
            .iter()
            .filter(|c| c.workload == w && c.variant.starts_with("lmdb"))
            .filter_map(|c| c.gets_per_sec)
            .reduce(f64::max)
    };
    let mut out = String::from("| engine, setting |");
    let mut rule = String::from("|---|");
    for w in workloads {
        out.push_str(&format!(" {} gets | ÷ best LMDB |", w.label()));
        rule.push_str("---:|---:|");
    }
    out.push_str(" cgroup peak MiB | failcnt |\n");
    rule.push_str("---:|---:|\n");
    out.push_str(&rule);
    for v in variants {
        out.push_str(&format!("| {} |", v.label()));
        let mut peaks = Vec::new();
        let mut fails = Vec::new();
        for &w in workloads {
            let cell = find(v, w);
            let base = lmdb_best(w);
            match cell {
                Some(c) => {
                    match c.gets_per_sec {
                        Some(r) => out.push_str(&format!(
                            " {} | {} |",
                            fmt_rate(r),
                            base.map_or("–".into(), |b| format!("{:.2}", r / b))
                        )),
                        None => out.push_str(&format!(" **{}** | – |", c.outcome)),
                    }
                    peaks.push(c.max_usage_bytes.map_or("?".into(), mib));
                    fails.push(c.failcnt.map_or("?".into(), |f| f.to_string()));
                }
                None => out.push_str(" – | – |"),
            }
        }
        out.push_str(&format!(
            " {} | {} |\n",
            peaks.join(" / "),
            fails.join(" / ")
        ));
    }
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(spec) = &args.child {
        let spec: ChildSpec = serde_json::from_str(spec)?;
        let result = run_child(&spec)?;
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    if let Some(why) = Cgroup::unavailable() {
        println!("larger_than_memory: skipped: {why}");
        return Ok(());
    }
    let variants = variants(&args)?;
    let workloads = (args.workloads.iter())
        .map(|w| Workload::parse(w))
        .collect::<Result<Vec<_>>>()?;
    let n = args.data_mib * MIB / (KEY_LEN + VALUE_LEN) as u64;
    ensure!(
        n >= 2 && n <= u32::MAX as u64,
        "--data-mib gives {n} entries"
    );
    let entries = Entries::new(n, args.seed);
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!("ltm-n{n}-s{}", args.seed));
    let mut stores: Vec<Store> = variants.iter().map(Variant::store).collect();
    stores.sort();
    stores.dedup();
    eprintln!(
        "{n} entries ({} MiB of keys and values), limit {} MiB, under {}",
        args.data_mib,
        args.limit_mib,
        root.display()
    );
    let mut sizes = BTreeMap::new();
    for &store in &stores {
        let dir = root.join(store.name());
        if !dir.join(LOADED).exists() {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            let start = Instant::now();
            load(store, &dir, &entries).with_context(|| format!("loading {}", store.name()))?;
            std::fs::write(dir.join(LOADED), format!("{n}\n"))?;
            eprintln!(
                "loaded {} in {:.1} s",
                store.name(),
                start.elapsed().as_secs_f64()
            );
        } else {
            eprintln!("reusing {}", dir.display());
        }
        let size = files_size(&store_files(&dir)?)?;
        eprintln!("  {}: {} MiB", store.name(), mib(size));
        sizes.insert(store.name(), size);
    }
    let mut cells = Vec::new();
    for &w in &workloads {
        for v in &variants {
            let dir = root.join(v.store().name());
            let cell = run_cell(&args, v, w, &dir, n)
                .with_context(|| format!("{} / {}", v.label(), w.label()))?;
            eprintln!(
                "{:<48} {:<15} {:>12}  resident after evict {} KiB, peak {} MiB, failcnt {}, oom_kill {}{}",
                v.label(),
                w.label(),
                cell.gets_per_sec.map_or(cell.outcome.clone(), fmt_rate),
                cell.resident_after_evict
                    .map_or("?".into(), |b| (b / 1024).to_string()),
                cell.max_usage_bytes.map_or("?".into(), mib),
                cell.failcnt.map_or("?".into(), |f| f.to_string()),
                cell.oom_kills.map_or("?".into(), |f| f.to_string()),
                cell.result.as_ref().map_or(String::new(), |r| format!(
                    ", end: cache {} MiB rss {} MiB, VmHWM {} MiB, majflt {}",
                    mib(r.memory_stat.get("cache").copied().unwrap_or(0)),
                    mib(r.memory_stat.get("rss").copied().unwrap_or(0)),
                    mib(r.vm_hwm),
                    r.memory_stat.get("pgmajfault").copied().unwrap_or(0)
                )),
            );
            cells.push(cell);
        }
    }
    let table = markdown(&variants, &workloads, &cells);
    let files: Vec<String> = sizes
        .iter()
        .map(|(s, b)| format!("{s} {} MiB", mib(*b)))
        .collect();
    let head = format!(
        "{n} entries ({} MiB of 24-byte keys and 150-byte values; files: {}), memory cgroup limit {} MiB; \
         per cell {} timed gets (at most {} s) after {} untimed (at most {} s), {} per read transaction; \
         the disk's read_ahead_kb: {}.\n",
        args.data_mib,
        files.join(", "),
        args.limit_mib,
        args.gets,
        args.max_secs,
        args.warmup_gets,
        args.warmup_secs,
        args.txn_gets,
        read_ahead_kb(&root).map_or("?".into(), |k| k.to_string()),
    );
    println!("{head}\n{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, format!("{head}\n{table}"))?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "n": n,
            "data_mib": args.data_mib,
            "limit_mib": args.limit_mib,
            "gets": args.gets,
            "warmup_gets": args.warmup_gets,
            "txn_gets": args.txn_gets,
            "read_ahead_kb": read_ahead_kb(&root),
            "file_bytes": sizes,
            "cells": cells,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if !args.keep {
        std::fs::remove_dir_all(&root)?;
    }
    Ok(())
}
