//! Bulk loads N generated entries (24-byte keys, 150-byte values, as in the comparison
//! benchmark) without keeping them in memory, and prints what the loader reports and the
//! process's peak resident memory: the loader's memory does not grow with N.
//!
//! ```text
//! cargo run --release --example bulk_load_rss -- N DIR [direct|buffered]
//! ```

use mapkv::{BulkOptions, Database, Result};

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Peak resident set size of this process, from /proc/self/status (kB).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let direct = args.next().as_deref() != Some("buffered");
    let path = dir.join(format!("bulk-rss-{}.mapkv", std::process::id()));
    let db = Database::open(&path)?;
    let before = peak_rss_kib();
    let entries = (0..n).map(|i| {
        let mut key = [0u8; 24];
        key[..8].copy_from_slice(&i.to_be_bytes());
        key[8..16].copy_from_slice(&mix(i).to_le_bytes());
        key[16..].copy_from_slice(&mix(!i).to_le_bytes());
        let mut value = [0u8; 150];
        for (j, chunk) in value.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&mix(i * 19 + j as u64).to_le_bytes()[..chunk.len()]);
        }
        (key, value)
    });
    let stats = db.bulk_load_with("bench", entries, BulkOptions::new().direct_io(direct))?;
    let after = peak_rss_kib();
    let secs = stats.elapsed.as_secs_f64();
    println!(
        "{} entries, {} pages, {:.1} MiB in {:.3} s: {:.0} MB/s, {:.2} M entries/s, {}",
        stats.entries,
        stats.pages,
        stats.bytes_written as f64 / (1 << 20) as f64,
        secs,
        stats.bytes_written as f64 / secs / 1e6,
        stats.entries as f64 / secs / 1e6,
        match &stats.direct_io_refused {
            None if stats.direct_io => "O_DIRECT".to_string(),
            None => "buffered".to_string(),
            Some(why) => format!("buffered ({why})"),
        }
    );
    println!("peak RSS: {before} kB before the load, {after} kB after");
    drop(db);
    std::fs::remove_file(&path)?;
    Ok(())
}
