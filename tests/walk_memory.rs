//! The whole-file walks (recovery's verification, `check`, `compact_to`) on the pread
//! path (`mmap_size(0)`, no page cache) hold one root-to-leaf path and a bounded piece
//! of each large value, not every page they read: their peak heap stays far below the
//! file's size. Measured with a counting allocator; one test, so nothing else allocates
//! meanwhile.

mod support;

use mapkv::testing::open_with_backend;
use mapkv::{Options, Result};
use support::heap::{Counting, peak_of};
use support::image::{META_SLOT, META_TXN, newest_meta_slot, reseal_catalog, u64_at};
use support::simdisk::SimDisk;

#[global_allocator]
static ALLOC: Counting = Counting;

const MIB: usize = 1 << 20;
const BIG_VALUE: usize = 8 * MIB;

#[test]
fn walks_of_a_file_hold_a_path_not_the_file() -> Result<()> {
    // About 40 MiB of small entries and two 8 MiB values.
    let disk = SimDisk::new(Vec::new());
    let db = open_with_backend(disk.backend(), Options::new())?;
    let entries = (0..200_000u64).map(|i| {
        let len = if i % 100_000 == 50_000 {
            BIG_VALUE
        } else {
            150
        };
        (i.to_be_bytes(), vec![i as u8; len])
    });
    db.bulk_load("t", entries)?;
    drop(db);
    let image = disk.contents();
    let file = image.len();
    assert!(file > 48 * MIB, "{file} bytes");
    let options = Options::new().mmap_size(0).cache_size(0);

    // Recovery verifies everything the load wrote when the newest meta says so.
    let mut unsealed = image.clone();
    let txn = u64_at(
        &unsealed,
        newest_meta_slot(&unsealed) * META_SLOT + META_TXN,
    );
    reseal_catalog(&mut unsealed, 4096, txn - 1);
    let disk = SimDisk::new(unsealed);
    let (db, open) = peak_of(|| open_with_backend(disk.backend(), options.clone()));
    drop(db?);
    drop(disk);

    let disk = SimDisk::new(image);
    let db = open_with_backend(disk.backend(), options)?;
    let (report, check) = peak_of(|| db.check());
    assert_eq!(report?.entries, 200_000);
    let dir = tempfile::tempdir()?;
    let (copied, compact) = peak_of(|| db.compact_to(dir.path().join("copy")));
    copied?;

    eprintln!(
        "file {} MiB; peak heap above the start: open {} KiB, check {} KiB, compact_to {} KiB",
        file / MIB,
        open >> 10,
        check >> 10,
        compact >> 10
    );
    // A path of pages and one piece of a large value being verified.
    assert!(open < 4 * MIB, "open's verification held {open} bytes");
    assert!(check < 4 * MIB, "check held {check} bytes");
    // Plus the one value being copied and the writer's buffers (8 MiB of chunks, at
    // most 256 pages in flight, blob pieces of 1 MiB).
    assert!(
        compact < BIG_VALUE + 24 * MIB,
        "compact_to held {compact} bytes"
    );
    Ok(())
}
