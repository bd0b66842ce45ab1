//! Every `Error` variant that the public API can produce here, and the limits.

use std::io::{Seek, SeekFrom, Write};

mod support;

use mapkv::{Database, Error, Options, Result};
use support::simdisk::{Fault, OpKind, SimDisk};

fn db_in(dir: &tempfile::TempDir) -> Result<Database> {
    Database::open(dir.path().join("db"))
}

#[test]
fn tree_not_found() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = db_in(&dir)?;
    let r = db.begin_read()?;
    match r.open_tree("nope") {
        Err(Error::TreeNotFound(name)) => assert_eq!(name, "nope"),
        other => panic!("expected TreeNotFound, got {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn locked_from_this_process() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let _db = db_in(&dir)?;
    assert!(matches!(db_in(&dir), Err(Error::Locked)));
    assert!(matches!(
        Options::new().read_only(true).open(dir.path().join("db")),
        Err(Error::Locked)
    ));
    Ok(())
}

#[test]
fn read_only_refuses_writes_and_shares_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let db = db_in(&dir)?;
        let w = db.begin_write()?;
        w.open_tree("t")?.insert(b"a", b"1")?;
        w.commit()?;
    }
    let ro = Options::new().read_only(true);
    let a = ro.clone().open(dir.path().join("db"))?;
    let b = ro.open(dir.path().join("db"))?;
    assert!(matches!(a.begin_write(), Err(Error::ReadOnly)));
    assert!(matches!(
        a.bulk_load("u", [(b"k", b"v")]),
        Err(Error::ReadOnly)
    ));
    assert_eq!(b.begin_read()?.open_tree("t")?.get(b"a")?, Some(&b"1"[..]));
    assert!(
        matches!(db_in(&dir), Err(Error::Locked)),
        "a writer is kept out"
    );
    Ok(())
}

#[test]
fn read_only_open_of_a_missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = Options::new()
        .read_only(true)
        .open(dir.path().join("missing"));
    match r {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected Io(NotFound), got {:?}", other.err()),
    }
}

#[test]
fn invalid_page_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 1000, 2048, 4095, 131072] {
        let r = Options::new().page_size(size).open(dir.path().join("db"));
        assert!(
            matches!(r, Err(Error::InvalidOptions(_))),
            "page size {size}"
        );
    }
}

#[test]
fn a_cache_beyond_any_memory_is_an_invalid_option() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for size in [1 << 50, 1 << 62, u64::MAX] {
        let r = Options::new().cache_size(size).open(dir.path().join("db"));
        assert!(
            matches!(r, Err(Error::InvalidOptions(_))),
            "cache_size {size}: {:?}",
            r.err()
        );
    }
    // And the file is left usable.
    Options::new().open(dir.path().join("db"))?.check()?;
    Ok(())
}

#[test]
fn page_size_is_fixed_at_creation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    drop(
        Options::new()
            .page_size(16384)
            .open(dir.path().join("db"))?,
    );
    let db = Options::new().page_size(4096).open(dir.path().join("db"))?;
    assert_eq!(db.stats()?.page_size, 16384);
    Ok(())
}

#[test]
fn key_and_value_limits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = db_in(&dir)?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert(b"", b"")?;
    t.insert(&[7; 1920], b"the longest key at 4 KiB pages")?;
    match t.insert(&[7; 1921], b"") {
        Err(Error::KeyTooLarge {
            size: 1921,
            max: 1920,
        }) => {}
        other => panic!("expected KeyTooLarge, got {other:?}"),
    }
    // 1 TiB + 1: anonymous memory mapped without reserving swap, never touched, refused
    // before it is read. (Where even that much address space cannot be had, the limit is
    // still checked by `insert_from`, tests/insert_from.rs.)
    match memmap2::MmapOptions::new()
        .len((1 << 40) + 1)
        .no_reserve_swap()
        .map_anon()
    {
        Ok(huge) => match t.insert(b"big", &huge) {
            Err(Error::ValueTooLarge { size, max }) => {
                assert_eq!((size, max), ((1 << 40) + 1, 1 << 40))
            }
            other => panic!("expected ValueTooLarge, got {other:?}"),
        },
        Err(e) => println!("no 1 TiB of address space ({e}): the slice limit is not tried"),
    }
    assert_eq!(t.get(b"")?, Some(&b""[..]));
    w.commit()?;
    db.check()?;
    Ok(())
}

#[test]
fn unsorted_and_not_empty_bulk_loads_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = db_in(&dir)?;
    let entries = [
        (b"a".to_vec(), b"1".to_vec()),
        (b"c".to_vec(), b"2".to_vec()),
        (b"b".to_vec(), b"3".to_vec()),
    ];
    match db.bulk_load("t", entries.clone()) {
        Err(Error::Unsorted { index: 2 }) => {}
        other => panic!("expected Unsorted at 2, got {other:?}"),
    }
    assert!(db.begin_read()?.tree_names()?.is_empty());
    assert!(matches!(
        db.bulk_load("t", [(b"a", b"1"), (b"a", b"2")]),
        Err(Error::Unsorted { index: 1 })
    ));
    db.bulk_load("t", [(b"a", b"1"), (b"b", b"2")])?;
    match db.bulk_load("t", [(b"x", b"1")]) {
        Err(Error::TreeNotEmpty(name)) => assert_eq!(name, "t"),
        other => panic!("expected TreeNotEmpty, got {other:?}"),
    }
    db.check()?;
    Ok(())
}

#[test]
fn garbage_file_is_corrupted_not_a_panic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    std::fs::write(&path, vec![0xAB; 100_000])?;
    match Database::open(&path) {
        Err(Error::Corrupted { page: 0, reason }) => assert!(reason.contains("meta")),
        other => panic!("expected Corrupted, got {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn damaged_newest_meta_slot_falls_back_to_the_other_slot() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    {
        let db = Database::open(&path)?;
        for i in 0..3u8 {
            let w = db.begin_write()?;
            w.open_tree("t")?.insert(b"k", &[i])?;
            w.commit()?;
        }
    }
    // The clean close sealed generation 2 in one slot; the other holds an older meta.
    // Damage the newest slot: the older commit must open.
    let slots = std::fs::read(&path)?;
    let txn =
        |s: usize| u64::from_le_bytes(slots[s * 4096 + 16..s * 4096 + 24].try_into().unwrap());
    let newest = if txn(0) >= txn(1) { 0 } else { 1 };
    let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
    f.seek(SeekFrom::Start(newest as u64 * 4096 + 50))?;
    f.write_all(&[0xFF; 8])?;
    drop(f);
    let db = Database::open(&path)?;
    db.check()?;
    let value = db
        .begin_read()?
        .open_tree("t")?
        .get(b"k")?
        .map(<[u8]>::to_vec);
    assert_eq!(
        value,
        Some(vec![2]),
        "the close wrote the same commit into both slots"
    );
    Ok(())
}

#[test]
fn errors_display_and_are_send_sync() {
    fn assert_traits<T: std::error::Error + Send + Sync + 'static>() {}
    assert_traits::<Error>();
    let e = Error::KeyTooLarge {
        size: 5000,
        max: 1920,
    };
    assert_eq!(
        e.to_string(),
        "key of 5000 bytes is larger than the limit of 1920 bytes"
    );
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Database>();
    fn assert_send<T: Send>() {}
    assert_send::<mapkv::ReadTxn>();
}

#[test]
fn a_file_that_is_not_a_database_is_left_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"my notes\n")?;
    match Database::open(&path) {
        Err(Error::Corrupted { reason, .. }) => assert!(reason.contains("not a mapkv database")),
        other => panic!("expected Corrupted, got {:?}", other.err()),
    }
    assert_eq!(std::fs::read(&path)?, b"my notes\n");
    // An empty or all-zero file is a creation that never finished: it is initialised.
    std::fs::write(&path, [0u8; 3000])?;
    Database::open(&path)?.check()?;
    Ok(())
}

#[test]
fn durability_none_commits_reuse_pages_without_an_immediate_commit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Options::new()
        .durability(mapkv::Durability::None)
        .open(dir.path().join("db"))?;
    for i in 0..2000u32 {
        let w = db.begin_write()?;
        w.open_tree("t")?
            .insert(&(i % 100).to_be_bytes(), &i.to_le_bytes())?;
        w.commit()?;
    }
    let stats = db.stats()?;
    assert!(
        stats.page_count < 50,
        "pages freed by None commits were not reused: {stats:?}"
    );
    db.check()?;
    Ok(())
}

#[test]
fn a_transaction_whose_change_failed_half_way_refuses_to_commit() -> Result<()> {
    let disk = SimDisk::new(Vec::new());
    let db = mapkv::testing::open_with_backend(disk.backend(), Options::new())?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert(b"small", b"fine")?;
    assert!(
        matches!(t.insert(&[1; 3000], b""), Err(Error::KeyTooLarge { .. })),
        "size errors change nothing"
    );
    disk.set_fault(Some(Fault {
        kind: OpKind::Write,
        nth: 1, // counted from now: the next write fails
        persistent: true,
    }));
    // A large value is written at once: the write fails half-way through the insert.
    assert!(matches!(t.insert(b"big", &[7; 100_000]), Err(Error::Io(_))));
    match w.commit() {
        Err(Error::Io(e)) => assert!(e.to_string().contains("earlier change")),
        other => panic!("expected the commit to be refused, got {other:?}"),
    }
    Ok(())
}

/// `r` is `Error::Io` of `kind` whose message names `path`, and whose `io::Error` still
/// leads to the operating system's error as its source.
fn assert_io_names_path<T>(r: Result<T>, kind: std::io::ErrorKind, path: &std::path::Path) {
    match r {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), kind, "{e}");
            let path = path.display().to_string();
            assert!(e.to_string().contains(&path), "{e} does not name {path}");
            assert!(Error::Io(e).to_string().contains(&path));
        }
        Err(other) => panic!("expected Io({kind:?}), got {other:?}"),
        Ok(_) => panic!("expected Io({kind:?}), got Ok"),
    }
}

#[test]
fn opening_in_a_missing_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("db");
    let kind = std::io::ErrorKind::NotFound;
    assert_io_names_path(Database::open(&path), kind, &path);
    let read_only = Options::new().read_only(true).open(&path);
    assert_io_names_path(read_only, kind, &path);
    // The OS error stays reachable: Error -> io::Error (with the path) -> the OS's.
    let e = Database::open(&path).err().unwrap();
    let with_path = std::error::Error::source(&e).unwrap();
    let os = with_path.source().unwrap();
    let os = os.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(os.kind(), kind);
    assert!(os.raw_os_error().is_some());
    assert!(!os.to_string().contains("missing"), "{os}");
}

#[test]
fn a_directory_as_the_database_path_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let kind = std::io::ErrorKind::IsADirectory;
    assert_io_names_path(Database::open(dir.path()), kind, dir.path());
    let read_only = Options::new().read_only(true).open(dir.path());
    assert_io_names_path(read_only, kind, dir.path());
}

#[test]
fn permission_denied_names_the_path() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if rustix::process::geteuid().is_root() {
        eprintln!("skipped: root is never denied");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let kind = std::io::ErrorKind::PermissionDenied;
    // A file that may only be read: a read-write open is refused, a read-only one works.
    let path = dir.path().join("db");
    drop(Database::open(&path)?);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
    assert_io_names_path(Database::open(&path), kind, &path);
    Options::new().read_only(true).open(&path)?.check()?;
    // A directory that may not be written: the file cannot be created.
    let locked_dir = dir.path().join("ro");
    std::fs::create_dir(&locked_dir)?;
    std::fs::set_permissions(&locked_dir, std::fs::Permissions::from_mode(0o500))?;
    let path = locked_dir.join("db");
    assert_io_names_path(Database::open(&path), kind, &path);
    std::fs::set_permissions(&locked_dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// A `compact_to` that fails leaves nothing at its path (a half-written copy would
/// open as an empty database, or not at all, and block a retry), early in the copy or
/// after some of it was written; a successful one leaves no temporary file.
#[test]
fn a_failed_compact_to_leaves_nothing_behind() -> Result<()> {
    const MARK: &[u8] = b"VALUE-MARKER-0123456789";
    for large in [false, true] {
        let dir = tempfile::tempdir()?;
        let source = dir.path().join("db");
        {
            let db = Database::open(&source)?;
            let w = db.begin_write()?;
            if large {
                // Trees copied before the corrupt one: chunks of the copy get written.
                let mut a = w.open_tree("a")?;
                for i in 0u32..20_000 {
                    a.insert(&i.to_be_bytes(), &[i as u8; 200])?;
                }
            }
            w.open_tree("z")?.insert(b"key", MARK)?;
            w.commit()?;
        } // A clean close: the next open verifies nothing, so the damage opens.
        let mut bytes = std::fs::read(&source)?;
        let at = bytes.windows(MARK.len()).position(|w| w == MARK).unwrap();
        bytes[at] ^= 0xff;
        std::fs::write(&source, bytes)?;
        let db = Database::open(&source)?;
        let copy = dir.path().join("copy");
        for attempt in 0..2 {
            let failed = db.compact_to(&copy);
            assert!(
                matches!(failed, Err(Error::Corrupted { .. })),
                "large {large}, attempt {attempt}: {failed:?}"
            );
            let left: Vec<_> = std::fs::read_dir(dir.path())?
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, ["db"], "large {large}: left behind");
        }
    }
    let dir = tempfile::tempdir()?;
    let db = db_in(&dir)?;
    db.compact_to(dir.path().join("copy"))?;
    let mut names: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["copy", "db"]);
    Database::open(dir.path().join("copy"))?.check()?;
    Ok(())
}

#[test]
fn compact_to_names_the_destination() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = db_in(&dir)?;
    let w = db.begin_write()?;
    w.open_tree("t")?.insert(b"k", b"v")?;
    w.commit()?;
    let missing = dir.path().join("missing").join("copy");
    let kind = std::io::ErrorKind::NotFound;
    assert_io_names_path(db.compact_to(&missing), kind, &missing);
    let existing = dir.path().join("db");
    let kind = std::io::ErrorKind::AlreadyExists;
    assert_io_names_path(db.compact_to(&existing), kind, &existing);
    Ok(())
}
