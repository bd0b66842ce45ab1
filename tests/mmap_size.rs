//! `mmap_size`: the same answers from every setting, whichever setting wrote the data.

use mapkv::{Database, Options, Result};

const SETTINGS: [u64; 5] = [0, 4096, 96 << 10, 1 << 20, u64::MAX];

fn value(i: u32) -> Vec<u8> {
    // Every 50th value is large enough for overflow pages.
    let len = if i.is_multiple_of(50) {
        9000 + i as usize % 7
    } else {
        20 + i as usize % 200
    };
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// A digest of everything the read API can say about tree "t".
fn everything(db: &Database) -> Result<Vec<Vec<u8>>> {
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    let mut out = vec![t.len()?.to_le_bytes().to_vec()];
    for e in t.iter()? {
        let (k, v) = e?;
        out.push([k, v].concat());
    }
    for e in t.iter()?.rev().step_by(7) {
        out.push(e?.0.to_vec());
    }
    for i in (0..5000u32).step_by(97) {
        out.push(
            t.get(&i.to_be_bytes())?
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        );
        for e in t.range(i.to_be_bytes()..(i + 40).to_be_bytes())? {
            out.push(e?.1.to_vec());
        }
    }
    out.push(r.tree_names()?.join(",").into_bytes());
    Ok(out)
}

#[test]
fn every_setting_reads_what_every_setting_wrote() -> Result<()> {
    let mut digests = Vec::new();
    for writer in SETTINGS {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        {
            let db = Options::new().mmap_size(writer).open(&path)?;
            for batch in 0..5u32 {
                let w = db.begin_write()?;
                let mut t = w.open_tree("t")?;
                for i in (batch..5000).step_by(5) {
                    t.insert(&i.to_be_bytes(), &value(i))?;
                }
                for i in (batch * 3..5000).step_by(11) {
                    t.remove(&i.to_be_bytes())?;
                }
                w.commit()?;
            }
            db.check()?;
        }
        for reader in SETTINGS {
            let db = Options::new()
                .mmap_size(reader)
                .read_only(true)
                .open(&path)?;
            db.check()?;
            digests.push((writer, reader, everything(&db)?));
        }
    }
    let first = &digests[0].2;
    for (writer, reader, d) in &digests {
        assert!(
            d == first,
            "written with mmap_size {writer}, read with {reader}: different answers"
        );
    }
    Ok(())
}

#[test]
fn a_write_transaction_outgrows_a_small_window() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Options::new()
        .mmap_size(64 << 10)
        .open(dir.path().join("db"))?;
    let before = db.begin_read()?; // a snapshot of the empty file, kept across the growth
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..20_000u32 {
            t.insert(&i.to_be_bytes(), &value(i))?;
            if i % 1000 == 999 {
                // Reads inside the transaction see its own pages, in and beyond the window.
                assert_eq!(t.get(&(i / 2).to_be_bytes())?, Some(&value(i / 2)[..]));
            }
        }
        assert_eq!(t.iter()?.count(), 20_000);
    }
    w.commit()?;
    assert!(before.tree_names()?.is_empty());
    assert!(
        db.stats()?.file_size_bytes > 1 << 20,
        "the file grew far past the window"
    );
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    for i in (0..20_000u32).step_by(13) {
        assert_eq!(t.get(&i.to_be_bytes())?, Some(&value(i)[..]));
    }
    db.check()?;
    Ok(())
}

#[test]
fn slices_from_pread_buffers_live_as_long_as_the_transaction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Options::new().mmap_size(0).open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..3000u32 {
            t.insert(&i.to_be_bytes(), &value(i))?;
        }
    }
    w.commit()?;
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    // Hold many borrowed values at once (each from a pread buffer), then check them all.
    let held: Vec<&[u8]> = (0..3000u32)
        .map(|i| t.get(&i.to_be_bytes()).map(Option::unwrap))
        .collect::<Result<_>>()?;
    for (i, v) in held.iter().enumerate() {
        assert_eq!(*v, &value(i as u32)[..]);
    }
    Ok(())
}

/// Slices found in the shared page cache stay whole while their transaction lives, though
/// other readers evict them many times over and the writer commits meanwhile: the cache
/// frees what it evicted only once no transaction that may hold it is left.
#[test]
fn slices_found_in_the_page_cache_outlive_their_eviction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Options::new()
        .mmap_size(0)
        .cache_size(256 << 10)
        .open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..3000u32 {
            t.insert(&i.to_be_bytes(), &value(i))?;
        }
    }
    w.commit()?;
    let read = |range: std::ops::Range<u32>| -> Result<()> {
        let r = db.begin_read()?;
        let t = r.open_tree("t")?;
        for i in range {
            assert_eq!(t.get(&i.to_be_bytes())?, Some(&value(i)[..]));
        }
        Ok(())
    };
    read(0..200)?; // into the cache
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    let held: Vec<&[u8]> = (0..200u32)
        .map(|i| t.get(&i.to_be_bytes()).map(Option::unwrap))
        .collect::<Result<_>>()?;
    std::thread::scope(|s| {
        let churn = s.spawn(|| (0..4).try_for_each(|_| read(0..3000)));
        for round in 0..20u32 {
            let w = db.begin_write()?;
            w.open_tree("t")?
                .insert(&(5000 + round).to_be_bytes(), b"x")?;
            w.commit()?;
            read(1000..1100)?;
        }
        churn.join().expect("churn thread")
    })?;
    for (i, v) in held.iter().enumerate() {
        assert!(
            *v == value(i as u32),
            "value {i} changed under its transaction"
        );
    }
    drop(r);
    db.check()?;
    Ok(())
}

/// `read_ahead(false)` reaches the kernel: the map of the file carries the random-read
/// flag (`rr` in /proc/self/smaps), and the default does not.
#[test]
fn read_ahead_false_advises_random_access_on_the_map() -> Result<()> {
    for (read_ahead, want) in [(false, true), (true, false)] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(format!("ahead-{read_ahead}"));
        let db = Options::new().read_ahead(read_ahead).open(&path)?;
        let w = db.begin_write()?;
        w.open_tree("t")?.insert(b"k", b"v")?;
        w.commit()?;
        assert_eq!(
            map_flags(&path).contains(&"rr".to_string()),
            want,
            "read_ahead({read_ahead})"
        );
    }
    Ok(())
}

/// The VmFlags of the first mapping of `path` in /proc/self/smaps.
fn map_flags(path: &std::path::Path) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let name = path.to_str().expect("utf-8 path");
    let mut lines = smaps.lines().skip_while(|l| !l.ends_with(name));
    assert!(lines.next().is_some(), "{name} is not mapped");
    let flags = lines
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .expect("VmFlags line");
    flags.split_whitespace().map(str::to_string).collect()
}
