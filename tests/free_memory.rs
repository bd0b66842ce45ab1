//! Freeing a large value (an overwrite, a remove, `delete_tree`) verifies its blob's
//! checksum before the pages go back (FORMAT.md#the-write-path-trusts-nothing), and
//! compaction moves one by copying it: both in pieces, so that on the pread path
//! (`mmap_size(0)`) the write transaction's heap does not grow with the values, however
//! large (a value streamed with `insert_from` may be larger than memory). Measured with a
//! counting allocator; one test, so nothing else allocates meanwhile.

mod support;

use mapkv::{Options, Result};
use support::heap::{Counting, peak_of};

#[global_allocator]
static ALLOC: Counting = Counting;

const MIB: usize = 1 << 20;
const VALUE: usize = 24 * MIB;

#[test]
fn freeing_large_values_holds_a_piece_not_the_value() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Options::new()
        .mmap_size(0)
        .cache_size(0)
        .open(dir.path().join("db"))?;
    let value = vec![7u8; VALUE];
    let wtx = db.begin_write()?;
    let mut t = wtx.open_tree("t")?;
    for k in 0..4u8 {
        t.insert(&[k], &value)?;
    }
    drop(t);
    wtx.commit()?;
    drop(value);

    let (removed, remove) = peak_of(|| -> Result<bool> {
        let wtx = db.begin_write()?;
        let removed = wtx.open_tree("t")?.remove(&[0])?;
        wtx.commit()?;
        Ok(removed)
    });
    assert!(removed?);
    let (overwritten, overwrite) = peak_of(|| -> Result<()> {
        let wtx = db.begin_write()?;
        wtx.open_tree("t")?.insert(&[1], b"small now")?;
        wtx.commit()
    });
    overwritten?;
    let (deleted, delete) = peak_of(|| -> Result<bool> {
        let wtx = db.begin_write()?;
        let deleted = wtx.delete_tree("t")?;
        wtx.commit()?;
        Ok(deleted)
    });
    assert!(deleted?);
    eprintln!(
        "peak heap above the start: remove {} KiB, overwrite {} KiB, delete_tree of two \
         values {} KiB",
        remove >> 10,
        overwrite >> 10,
        delete >> 10
    );
    for (what, peak) in [
        ("remove", remove),
        ("overwrite", overwrite),
        ("delete_tree", delete),
    ] {
        assert!(peak < 4 * MIB, "{what} held {peak} bytes");
    }
    db.check()?;
    drop(db);
    compacting_moves_a_large_value_in_pieces(dir.path())
}

/// `compact` moving a large value down: it held the value twice (read whole, then copied
/// into a buffer to write).
fn compacting_moves_a_large_value_in_pieces(dir: &std::path::Path) -> Result<()> {
    let db = Options::new()
        .mmap_size(0)
        .cache_size(0)
        .open(dir.join("moved"))?;
    // 32 MiB of small entries, then the value past them; the small ones removed leave
    // the free pages below it that compaction moves it into.
    let small = |i: u32| (i.to_be_bytes(), [1u8; 100]);
    db.bulk_load("small", (0..320_000).map(small))?;
    let value: Vec<u8> = (0..VALUE).map(|i| (i % 251) as u8).collect();
    let wtx = db.begin_write()?;
    wtx.open_tree("big")?.insert(b"v", &value)?;
    wtx.commit()?;
    let wtx = db.begin_write()?;
    wtx.delete_tree("small")?;
    wtx.commit()?;
    let (stats, compact) = peak_of(|| db.compact());
    let stats = stats?;
    eprintln!(
        "peak heap above the start: compact {} KiB, {stats:?}",
        compact >> 10
    );
    assert!(
        stats.pages_moved as usize >= VALUE / 4096,
        "the value moved: {stats:?}"
    );
    // The copy's buffers (three chunks of 4 MiB) and a verified piece at a time.
    assert!(compact < 3 * VALUE / 4, "compact held {compact} bytes");
    db.check()?;
    let rtx = db.begin_read()?;
    assert_eq!(rtx.open_tree("big")?.get(b"v")?, Some(&value[..]));
    Ok(())
}
