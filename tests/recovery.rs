//! Recovery in the cases the random crash and fault tests reach rarely or not at all,
//! each built step by step on the simulated disk: what an open serves must be what the
//! disk holds (a power loss right after the open leaves the same state).

mod support;

use std::sync::Arc;

use mapkv::testing::open_with_backend;
use mapkv::{Database, Durability, Error, Options, Result};
use support::image::{self, META_VERSION};
use support::model::{Trees, read_all};
use support::rng::Rng;
use support::simdisk::{CrashImages, Event, Fault, OpKind, SimDisk, Unsynced};

fn open(disk: &Arc<SimDisk>) -> Result<Database> {
    open_with_backend(disk.backend(), Options::new())
}

/// Commits `value` under key `k` in `tree`.
fn put(db: &Database, tree: &str, value: &[u8], durability: Durability) -> Result<()> {
    let mut w = db.begin_write()?;
    w.set_durability(durability);
    w.open_tree(tree)?.insert(b"k", value)?;
    w.commit()
}

/// Each tree's value under `k`, in tree-name order.
fn values(content: &Trees) -> Vec<(&str, &[u8])> {
    content
        .iter()
        .map(|(name, t)| (name.as_str(), t.get(&b"k"[..]).map_or(&[][..], |v| &v[..])))
        .collect()
}

/// The content the disk holds if the power fails now (no write may follow the last sync,
/// so that the content is certain), checked.
fn after_power_loss(disk: &SimDisk) -> Trees {
    let log = disk.log();
    let unsynced = log.iter().rev().take_while(|e| !matches!(e, Event::Sync));
    assert!(
        unsynced.clone().all(|e| matches!(e, Event::SetLen(_))),
        "unsynced writes: {:?}",
        unsynced.collect::<Vec<_>>()
    );
    let image = CrashImages::new(disk).image(disk.log_len(), &mut Rng::new(1));
    let db = open(&SimDisk::new(image)).expect("open after the power loss");
    db.check().expect("check after the power loss");
    read_all(&db).expect("read after the power loss")
}

/// Fails the next sync (counted from now).
fn fail_next_sync(disk: &SimDisk) {
    disk.set_fault(Some(Fault {
        kind: OpKind::Sync,
        nth: 1,
        persistent: false,
    }));
}

/// A commit whose fdatasync failed is not on the disk, but Linux may still serve its pages
/// from the page cache (marked clean, so the reopened descriptor's sync writes nothing).
/// Recovery must read what the disk holds and fall back to the last good commit; opening
/// the failed one would make every later commit build on pages that are not there.
#[test]
fn a_commit_whose_sync_failed_is_not_reopened_from_the_page_cache() -> Result<()> {
    let disk = SimDisk::new(Vec::new());
    let db = open(&disk)?;
    put(&db, "a", b"a1", Durability::Immediate)?;
    put(&db, "b", b"b1", Durability::Immediate)?;
    fail_next_sync(&disk);
    assert!(matches!(
        put(&db, "b", b"b2", Durability::Immediate),
        Err(Error::Io(_))
    ));
    drop(db); // poisoned: the close writes nothing
    disk.set_fault(None);

    let db = open(&disk)?;
    let served = read_all(&db)?;
    assert_eq!(
        values(&served),
        [("a", &b"a1"[..]), ("b", &b"b1"[..])],
        "the reopen served the commit whose sync failed"
    );
    assert_eq!(
        after_power_loss(&disk),
        served,
        "served state not on the disk"
    );
    // The verification read the disk: the whole file's cached pages were dropped.
    assert!(
        disk.cache_drops().contains(&(0, 0)),
        "{:?}",
        disk.cache_drops()
    );

    // Later commits build on what is on the disk.
    put(&db, "a", b"a3", Durability::Immediate)?;
    drop(db);
    assert_eq!(
        values(&after_power_loss(&disk)),
        [("a", &b"a3"[..]), ("b", &b"b1"[..])]
    );
    Ok(())
}

/// A clean close syncs, writes a meta that needs no verification, and syncs again. If the
/// second sync fails, that meta is in the page cache but not on the disk: the reopen must
/// not take it from the cache (it would become the fallback that recovery cannot find).
#[test]
fn a_close_whose_last_sync_failed_is_not_reopened_from_the_page_cache() -> Result<()> {
    let disk = SimDisk::new(Vec::new());
    let db = open(&disk)?;
    put(&db, "a", b"a1", Durability::Immediate)?;
    put(&db, "a", b"a2", Durability::None)?;
    disk.set_fault(Some(Fault {
        kind: OpKind::Sync,
        nth: 2, // the close's second sync, after its meta
        persistent: false,
    }));
    drop(db);
    assert_eq!(
        disk.faults_fired(),
        1,
        "the close's second sync did not fail"
    );
    disk.set_fault(None);

    let db = open(&disk)?;
    let served = read_all(&db)?;
    assert_eq!(
        after_power_loss(&disk),
        served,
        "served state not on the disk"
    );
    assert_eq!(values(&served), [("a", &b"a1"[..])]);
    Ok(())
}

/// A clean close leaves nothing to verify: the open drops only the meta area's cached
/// pages (to read the metas from the disk), not the whole file's.
#[test]
fn a_clean_reopen_keeps_the_page_cache() -> Result<()> {
    let disk = SimDisk::new(Vec::new());
    let db = open(&disk)?;
    put(&db, "a", b"a1", Durability::Immediate)?;
    drop(db);
    let before = disk.cache_drops().len();
    let db = open(&disk)?;
    assert_eq!(disk.cache_drops()[before..], [(0, 65536)]);
    assert_eq!(values(&read_all(&db)?), [("a", &b"a1"[..])]);
    Ok(())
}

/// Creating a file used to set its length, write slot 0's meta, then sync once. A power
/// loss before the sync could keep the write and lose the length (the disk model allows
/// any order): a file of 100 bytes holding a valid meta that needs 8 KiB or more.
/// Creations now sync the length before writing the meta (FORMAT.md#recovery), so the
/// first sync point of a creation leaves no meta at all; but a file an earlier version
/// left so must still open: nothing was ever committed in it, so the open finishes the
/// creation instead of refusing the file.
#[test]
fn a_creation_whose_size_change_was_lost_is_finished() -> Result<()> {
    for page_size in [4096, 16384, 65536] {
        let disk = SimDisk::new(Vec::new());
        drop(open_with_backend(
            disk.backend(),
            Options::new().page_size(page_size),
        )?);
        let syncs = disk.sync_points();
        let first =
            CrashImages::new(&disk).image_with(syncs[0], Unsynced::OnlyWrites, &mut Rng::new(1));
        assert!(
            first.iter().all(|&b| b == 0),
            "the length alone is synced first"
        );
        // The earlier versions' state: the creation's meta, the length lost. Those
        // versions wrote their own format version into it (1 to 3), and the same fields.
        let created =
            CrashImages::new(&disk).image_with(syncs[1], Unsynced::OnlyWrites, &mut Rng::new(1));
        for version in 1..=4u32 {
            let mut image = created[..100].to_vec();
            image[META_VERSION..META_VERSION + 4].copy_from_slice(&version.to_le_bytes());
            image::seal_meta(&mut image, 0);
            let disk = SimDisk::new(image);
            let db = open(&disk).map_err(|e| {
                println!("page size {page_size}, version {version}: {e}");
                e
            })?;
            assert_eq!(db.stats()?.page_size, page_size, "the creation's page size");
            db.check()?;
            assert!(read_all(&db)?.is_empty());
            put(&db, "a", b"a1", Durability::Immediate)?;
            drop(db);
            assert_eq!(values(&after_power_loss(&disk)), [("a", &b"a1"[..])]);
        }
    }
    Ok(())
}

/// The creation writes its first meta (100 bytes) into the first 512-byte sector, and a
/// torn write garbles at most that sector: a short file with a non-zero byte past byte 512
/// is not an unfinished creation, even with our magic at its start, and is left alone.
#[test]
fn only_the_first_sector_of_an_unfinished_creation_may_hold_anything() -> Result<()> {
    for (len, at) in [(8192, 512), (8192, 4095), (100_000 % 65536, 600)] {
        let mut image = vec![0u8; len];
        image[..8].copy_from_slice(b"mapkv\0db");
        image[at] = 1;
        let disk = SimDisk::new(image.clone());
        match open(&disk) {
            Err(Error::Corrupted { .. }) => {}
            Err(e) => panic!("{len} bytes, byte {at} set: {e}"),
            Ok(_) => panic!("{len} bytes, byte {at} set: initialised as a new database"),
        }
        assert!(
            disk.contents() == image,
            "{len} bytes, byte {at} set: changed"
        );
    }
    // Within the first sector, anything: a torn write of the first meta.
    let mut image = vec![0u8; 8192];
    image[..8].copy_from_slice(b"mapkv\0db");
    image[511] = 1;
    open(&SimDisk::new(image))?.check()?;
    Ok(())
}

/// A torn write garbles whole sectors: a creation cut short can leave garbage in all of
/// slot 0's first sector, and the open that initialises the file again writes only the
/// meta's 100 bytes over it. So the rest of a meta slot is not checked (FORMAT.md#meta-page):
/// a later commit into slot 0 must still be found.
#[test]
fn garbage_a_torn_creation_left_in_slot_0_does_not_hide_later_commits() -> Result<()> {
    let mut image = vec![0u8; 8192];
    Rng::new(7).fill(&mut image[..512]);
    let disk = SimDisk::new(image);
    let db = open(&disk)?;
    put(&db, "a", b"a1", Durability::Immediate)?; // slot 1
    put(&db, "a", b"a2", Durability::Immediate)?; // slot 0
    disk.kill(); // no clean close: it would write the newest meta again, into slot 1
    drop(db);
    assert!(disk.contents()[100..512].iter().any(|&b| b != 0));
    let db = open(&disk)?;
    assert_eq!(values(&read_all(&db)?), [("a", &b"a2"[..])]);
    Ok(())
}
