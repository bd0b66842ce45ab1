//! Files of the on-disk format's version 1 (FORMAT.md#versions) must keep opening: `tests/data/format-v1.mapkv`
//! was written by this crate when the format was fixed. If this test fails, the format
//! changed: bump `FORMAT_VERSION`, document the change in FORMAT.md, and decide how old
//! files are handled — never just regenerate the file.

use mapkv::{Database, Options, Result};

/// What the checked-in file holds: built by `write_fixture` (kept so the file can be
/// rebuilt deliberately with `MAPKV_WRITE_FIXTURE=1` when the format version changes).
fn expected(tree: &str, i: u32) -> Option<Vec<u8>> {
    match tree {
        "numbers" if !i.is_multiple_of(3) => Some(format!("value {i}").into_bytes()),
        "blobs" if i < 3 => Some(vec![i as u8; 9000 + i as usize]),
        _ => None,
    }
}

fn write_fixture(path: &std::path::Path) -> Result<()> {
    let db = Options::new().page_size(4096).open(path)?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("numbers")?;
        for i in 0..600u32 {
            t.insert(&i.to_be_bytes(), format!("value {i}").as_bytes())?;
        }
    }
    {
        let mut t = w.open_tree("blobs")?;
        for i in 0..3u32 {
            t.insert(&i.to_be_bytes(), &vec![i as u8; 9000 + i as usize])?;
        }
    }
    w.commit()?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("numbers")?;
        for i in (0..600u32).step_by(3) {
            t.remove(&i.to_be_bytes())?;
        }
    }
    w.commit()?; // leaves freed pages: the free list is not empty
    Ok(())
}

/// A copy of the checked-in file of format `version`, in a fresh directory.
fn fixture_copy(version: u32) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/format-v{version}.mapkv"));
    if std::env::var_os("MAPKV_WRITE_FIXTURE").is_some_and(|v| v == *version.to_string()) {
        let _ = std::fs::remove_file(&fixture);
        write_fixture(&fixture)?;
    }
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("db");
    std::fs::copy(&fixture, &copy)?;
    Ok((dir, copy))
}

/// Everything `write_fixture` wrote reads back.
fn check_contents(db: &Database) -> Result<()> {
    let report = db.check()?;
    assert_eq!(report.trees, 2);
    assert!(report.free_pages > 0, "the fixture has a free list");
    let r = db.begin_read()?;
    assert_eq!(r.tree_names()?, ["blobs", "numbers"]);
    for tree in ["numbers", "blobs"] {
        let t = r.open_tree(tree)?;
        let mut n = 0;
        for i in 0..600u32 {
            let got = t.get(&i.to_be_bytes())?;
            assert_eq!(got.map(<[u8]>::to_vec), expected(tree, i), "{tree} key {i}");
            n += u64::from(got.is_some());
        }
        assert_eq!(t.len()?, n);
    }
    Ok(())
}

/// Files of versions 2 and 3, written when each was current (`MAPKV_WRITE_FIXTURE=2`
/// rebuilds the first). Version 3's leaves have holes (`frag_bytes`, whose high half is
/// version 4's `prefix_skip`, zero in older files), and its keys share leading bytes, so
/// the first commit's pages skip them.
#[test]
fn format_v2_and_v3_files_still_open() -> Result<()> {
    for version in [2, 3] {
        let (_dir, copy) = fixture_copy(version)?;
        let db = Database::open(&copy)?;
        check_contents(&db)?;
        let w = db.begin_write()?;
        {
            let mut numbers = w.open_tree("numbers")?;
            numbers.insert(b"new", b"write")?;
            for i in (0..600u32).step_by(7) {
                numbers.insert(&i.to_be_bytes(), b"rewritten")?;
            }
        }
        w.commit()?;
        db.check()?;
        let r = db.begin_read()?;
        let numbers = r.open_tree("numbers")?;
        for i in 0..600u32 {
            let want = match i % 7 {
                0 => Some(b"rewritten".to_vec()),
                _ => expected("numbers", i),
            };
            assert_eq!(numbers.get(&i.to_be_bytes())?.map(<[u8]>::to_vec), want);
        }
    }
    Ok(())
}

#[test]
fn format_v1_files_still_open() -> Result<()> {
    let (_dir, copy) = fixture_copy(1)?;
    let db = Database::open(&copy)?;
    check_contents(&db)?;
    // And it takes new writes: the first commit writes a version-4 meta and a
    // version-2 free list (FORMAT.md#versions), which opens again.
    let versions = |path: &std::path::Path| -> Result<Vec<u32>> {
        let bytes = std::fs::read(path)?;
        Ok([8, 4096 + 8]
            .iter()
            .map(|&at| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()))
            .collect())
    };
    assert_eq!(versions(&copy)?, [1, 1], "the fixture is version 1");
    let w = db.begin_write()?;
    w.open_tree("numbers")?.insert(b"new", b"write")?;
    w.commit()?;
    db.check()?;
    let mut now = versions(&copy)?;
    now.sort();
    assert_eq!(
        now,
        [1, 4],
        "the first commit writes version 4 beside the fallback"
    );
    drop(db);
    let db = Database::open(&copy)?;
    let report = db.check()?;
    assert!(report.free_pages > 0, "the free list survived the upgrade");
    let r = db.begin_read()?;
    assert_eq!(r.open_tree("numbers")?.get(b"new")?, Some(&b"write"[..]));
    Ok(())
}
