//! Databases on a simulated disk, and crash images opened, checked and read back.

use std::sync::Arc;

use mapkv::testing::open_with_backend;
use mapkv::{Database, Options};

use super::model::{Trees, read_all};
use super::simdisk::SimDisk;

/// Opens (or creates) the database on `disk` with default options.
pub fn open(disk: &Arc<SimDisk>) -> mapkv::Result<Database> {
    open_with_backend(disk.backend(), Options::new())
}

/// Length and non-zero extent of an image, for failure messages.
pub fn describe(image: &[u8]) -> String {
    let nonzero: Vec<usize> = image
        .iter()
        .enumerate()
        .filter(|(_, b)| **b != 0)
        .map(|(i, _)| i)
        .collect();
    format!(
        "image of {} bytes, non-zero bytes {} in {:?}..={:?}",
        image.len(),
        nonzero.len(),
        nonzero.first(),
        nonzero.last()
    )
}

/// Opens `image` on a disk of its own, checks it and reads everything back; or says
/// which step failed.
pub fn recover(image: Vec<u8>) -> Result<(Arc<SimDisk>, Database, Trees), String> {
    let summary = describe(&image);
    let disk = SimDisk::new(image);
    let db = open(&disk).map_err(|e| format!("open failed: {e} ({summary})"))?;
    db.check().map_err(|e| format!("check failed: {e}"))?;
    let content = read_all(&db).map_err(|e| format!("read failed: {e}"))?;
    Ok((disk, db, content))
}
