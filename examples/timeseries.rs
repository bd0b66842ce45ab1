//! A time-series log: composite big-endian keys (`series | timestamp`), points arriving
//! in time order for several series at once, the latest value of each series kept in a
//! second tree in the same transaction, windows, the last N points, and retention.
//!
//! ```sh
//! cargo run --release --example timeseries
//! ```

use mapkv::{Database, Result};

const SERIES: u32 = 8;
const POINTS: u64 = 25_000;

/// `series` then `timestamp`, both big-endian, so keys sort by series, then by time.
fn point_key(series: u32, timestamp: u64) -> [u8; 12] {
    let mut key = [0; 12];
    key[..4].copy_from_slice(&series.to_be_bytes());
    key[4..].copy_from_slice(&timestamp.to_be_bytes());
    key
}

fn timestamp_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[4..12].try_into().expect("a 12-byte key"))
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("metrics.mapkv"))?;

    // Points arrive in time order, every series in turn; a commit every 1000 rounds.
    for batch in (0..POINTS).step_by(1000) {
        let wtx = db.begin_write()?;
        let mut points = wtx.open_tree("points")?;
        let mut latest = wtx.open_tree("latest")?;
        for t in batch..batch + 1000 {
            for s in 0..SERIES {
                let value = (t as f64 * 0.1 + f64::from(s)).to_le_bytes();
                points.insert(&point_key(s, t), &value)?;
                latest.insert(&s.to_be_bytes(), &value)?;
            }
        }
        wtx.commit()?;
    }

    let rtx = db.begin_read()?;
    let points = rtx.open_tree("points")?;
    println!("{} points in {} series", points.len()?, SERIES);

    // A window of one series: timestamps 1000..1010.
    let window = points.range(point_key(3, 1000)..point_key(3, 1010))?;
    assert_eq!(window.count(), 10);

    // The last five points of series 5, newest first.
    let last: Vec<u64> = points
        .prefix(&5u32.to_be_bytes())?
        .rev()
        .take(5)
        .map(|e| e.map(|(k, _)| timestamp_of(k)))
        .collect::<Result<_>>()?;
    assert_eq!(
        last,
        [POINTS - 1, POINTS - 2, POINTS - 3, POINTS - 4, POINTS - 5]
    );

    // The newest point overall, and the latest value of a series from the other tree.
    let (newest, _) = points.last()?.expect("points");
    assert_eq!(timestamp_of(newest), POINTS - 1);
    let latest = rtx.open_tree("latest")?;
    assert_eq!(latest.get(&7u32.to_be_bytes())?.map(<[u8]>::len), Some(8));

    // Appends filled their pages: about as few as a bulk load of the same points.
    let appended_pages = db.check()?.node_pages;
    let copy = Database::open(dir.path().join("bulk.mapkv"))?;
    let sorted = (0..SERIES).flat_map(|s| (0..POINTS).map(move |t| (point_key(s, t), [0u8; 8])));
    copy.bulk_load("points", sorted)?;
    let bulk_pages = copy.check()?.node_pages;
    println!(
        "pages: {appended_pages} after appends, {bulk_pages} for a bulk load of the same \
         points ({:.2}x)",
        appended_pages as f64 / bulk_pages as f64
    );

    // Retention: drop everything older than timestamp 20,000, series by series.
    let wtx = db.begin_write()?;
    let mut points = wtx.open_tree("points")?;
    let mut removed = 0;
    for s in 0..SERIES {
        removed += points.remove_range(point_key(s, 0)..point_key(s, 20_000))?;
    }
    wtx.commit()?;
    println!("retention removed {removed} points");
    assert_eq!(removed, u64::from(SERIES) * 20_000);
    db.check()?;
    Ok(())
}
