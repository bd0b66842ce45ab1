//! Peak resident memory of the whole-file walks on the pread path: a child process bulk
//! loads about `MIB` MiB (24-byte keys, 150-byte values, and a 32 MiB value every
//! 2 million entries) and exits without closing the database, as a crash right after the
//! load would; then this process opens the file at `mmap_size(0)` (recovery), runs
//! `check()` and `compact_to()`, and prints the peak RSS of each step. With `unsealed`,
//! the meta slot that says "nothing to verify" is wiped before the open, so recovery
//! verifies the whole load (what it must do when that slot is torn).
//!
//! ```text
//! cargo run --release --example check_rss -- MIB DIR [unsealed]
//! ```
//!
//! Each step's peak is measured from the RSS before it (the peak is reset through
//! `/proc/self/clear_refs`), so the numbers are what the step itself adds. The page cache
//! of the pread path (`cache_size`, 64 MiB by default) is part of what a step may use.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mapkv::{Database, Options, Result};

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A field of /proc/self/status in kB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS (VmHWM) to the current RSS.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs `step`, then prints its time and how far its peak RSS rose above the RSS
/// before it.
fn measure<T>(what: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
    reset_peak();
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let out = step()?;
    let peak = status_kib("VmHWM:");
    println!(
        "{what:<28} {:>7.1} s   peak RSS {:>8} kB = {:>6} kB above the {} kB before it",
        started.elapsed().as_secs_f64(),
        peak,
        peak.saturating_sub(before),
        before
    );
    Ok(out)
}

const SMALL_VALUE: usize = 150;
const BIG_VALUE: usize = 32 << 20;
const BIG_EVERY: u64 = 2_000_000;

/// Entries for about `mib` MiB of file: a full 4 KiB leaf holds 22 small entries (24 +
/// 150 bytes, plus slot and cell headers); the big values take about a tenth.
fn entry_count(mib: u64) -> u64 {
    mib * 22 * 256 * 9 / 10
}

fn entries(n: u64) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    (0..n).map(|i| {
        let mut key = vec![0u8; 24];
        key[..8].copy_from_slice(&i.to_be_bytes());
        key[8..16].copy_from_slice(&mix(i).to_le_bytes());
        key[16..].copy_from_slice(&mix(!i).to_le_bytes());
        let len = if i % BIG_EVERY == BIG_EVERY / 2 {
            BIG_VALUE
        } else {
            SMALL_VALUE
        };
        let mut value = vec![0u8; len];
        for (j, chunk) in value.chunks_mut(8).take(32).enumerate() {
            chunk.copy_from_slice(&mix(i * 19 + j as u64).to_le_bytes()[..chunk.len()]);
        }
        (key, value)
    })
}

/// The child: loads and exits without closing (no clean close runs).
fn load(path: &Path, mib: u64) -> Result<()> {
    let db = Database::open(path)?;
    let n = entry_count(mib);
    let stats = db.bulk_load("load", entries(n))?;
    println!(
        "loaded {} entries, {} pages ({:.0} MiB) in {:.1} s",
        stats.entries,
        stats.pages,
        stats.pages as f64 * 4096.0 / (1 << 20) as f64,
        stats.elapsed.as_secs_f64()
    );
    std::io::stdout().flush()?;
    std::process::exit(0);
}

/// Wipes the meta slot that records "nothing to verify" for the newest commit, if the
/// other slot holds the same commit.
fn wipe_sealed_slot(path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut metas = [[0u8; 32]; 2];
    for (slot, m) in metas.iter_mut().enumerate() {
        f.seek(SeekFrom::Start(slot as u64 * 4096))?;
        f.read_exact(m)?;
    }
    let field = |m: &[u8; 32], at: usize| u64::from_le_bytes(m[at..at + 8].try_into().unwrap());
    let (txn, durable_before) = (
        |s: usize| field(&metas[s], 16),
        |s: usize| field(&metas[s], 24),
    );
    for slot in 0..2 {
        if txn(slot) == txn(1 - slot) && durable_before(slot) == txn(slot) {
            f.seek(SeekFrom::Start(slot as u64 * 4096))?;
            f.write_all(&[0; 100])?;
            f.sync_all()?;
            println!("wiped the sealed copy in meta slot {slot}");
        }
    }
    Ok(())
}

/// One step in a process of its own, so that no step inherits the heap of another.
fn step(what: &str, path: &Path, copy: &Path) -> Result<()> {
    let options = Options::new().mmap_size(0);
    match what {
        "open" => {
            let db = measure("open (recovery)", || options.open(path))?;
            drop(db); // a clean close: later opens verify nothing
        }
        "check" => {
            let db = options.open(path)?;
            let report = measure("check", || db.check())?;
            println!(
                "  {} entries, {} node pages, {} overflow pages",
                report.entries, report.node_pages, report.overflow_pages
            );
        }
        "compact" => {
            let db = options.open(path)?;
            measure("compact_to", || db.compact_to(copy))?;
            let entries = db.check()?.entries;
            drop(db);
            let again = Database::open(copy)?.check()?;
            assert_eq!(again.entries, entries, "the copy holds every entry");
        }
        _ => panic!("unknown step {what}"),
    }
    Ok(())
}

fn run_child(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Result<()> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    for a in args {
        command.arg(a);
    }
    let status = command.status()?;
    assert!(status.success(), "a step failed");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("load") => {
            let mib = arg(2).and_then(|a| a.parse().ok()).expect("MiB");
            return load(Path::new(arg(1).expect("path")), mib);
        }
        Some("step") => {
            let (what, path, copy) = (arg(1).expect("step"), arg(2).expect("path"), arg(3));
            return step(what, Path::new(path), Path::new(copy.expect("copy")));
        }
        _ => {}
    }
    let mib: u64 = arg(0).unwrap_or("2048").parse().expect("MiB");
    let dir = PathBuf::from(arg(1).unwrap_or("."));
    let unsealed = arg(2) == Some("unsealed");
    let path = dir.join(format!("check-rss-{}.mapkv", std::process::id()));
    let copy = dir.join(format!("check-rss-{}.compact", std::process::id()));
    let result = (|| {
        run_child(&[&"load", &path, &mib.to_string()])?;
        if unsealed {
            wipe_sealed_slot(&path)?;
        }
        println!(
            "file {:.0} MiB",
            std::fs::metadata(&path)?.len() as f64 / (1 << 20) as f64
        );
        for what in ["open", "check", "compact"] {
            run_child(&[&"step", &what, &path, &copy])?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&copy);
    result
}
