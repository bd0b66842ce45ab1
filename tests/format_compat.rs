//! The on-disk format (FORMAT.md, version 1) must keep opening: `tests/data/format-v1.mapkv`
//! was written by this crate when the format was fixed. If this test fails, the format
//! changed: bump `FORMAT_VERSION`, document the change in FORMAT.md, and decide how old
//! files are handled — never just regenerate the file.

use mapkv::{Database, Options, Result};

/// What the checked-in file holds: built by `write_fixture` (kept so the file can be
/// rebuilt deliberately with `MAPKV_WRITE_FIXTURE=1` when the format version changes).
fn expected(tree: &str, i: u32) -> Option<Vec<u8>> {
    match tree {
        "numbers" if i % 3 != 0 => Some(format!("value {i}").into_bytes()),
        "blobs" if i < 3 => Some(vec![i as u8; 9000 + i as usize]),
        _ => None,
    }
}

fn write_fixture(path: &std::path::Path) -> Result<()> {
    let db = Options::new().page_size(4096).open(path)?;
    let mut w = db.begin_write()?;
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
    let mut w = db.begin_write()?;
    {
        let mut t = w.open_tree("numbers")?;
        for i in (0..600u32).step_by(3) {
            t.remove(&i.to_be_bytes())?;
        }
    }
    w.commit()?; // leaves freed pages: the free list is not empty
    Ok(())
}

#[test]
fn format_v1_files_still_open() -> Result<()> {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v1.mapkv");
    if std::env::var_os("MAPKV_WRITE_FIXTURE").is_some() {
        let _ = std::fs::remove_file(&fixture);
        write_fixture(&fixture)?;
    }
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("db");
    std::fs::copy(&fixture, &copy)?;
    let db = Database::open(&copy)?;
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
    drop(r);
    // And it takes new writes.
    let mut w = db.begin_write()?;
    w.open_tree("numbers")?.insert(b"new", b"write")?;
    w.commit()?;
    db.check()?;
    Ok(())
}
