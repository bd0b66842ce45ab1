use mapkv::{Database, Result};

#[test]
fn insert_get_remove_reopen() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    {
        let db = Database::open(&path)?;
        let w = db.begin_write()?;
        {
            let mut t = w.open_tree("t")?;
            for i in 0..20000u32 {
                t.insert(&i.to_be_bytes(), format!("value {i}").as_bytes())?;
            }
        }
        w.commit()?;
        db.check()?;
        let r = db.begin_read()?;
        let t = r.open_tree("t")?;
        assert_eq!(t.len()?, 20000);
        assert_eq!(t.get(&7u32.to_be_bytes())?, Some(&b"value 7"[..]));
        assert_eq!(t.iter()?.count(), 20000);
        assert_eq!(t.iter()?.rev().count(), 20000);
        let w = db.begin_write()?;
        {
            let mut t = w.open_tree("t")?;
            for i in (0..20000u32).step_by(2) {
                assert!(t.remove(&i.to_be_bytes())?);
            }
        }
        w.commit()?;
        db.check()?;
    }
    let db = Database::open(&path)?;
    db.check()?;
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    assert_eq!(t.len()?, 10000);
    assert_eq!(t.get(&7u32.to_be_bytes())?, Some(&b"value 7"[..]));
    assert_eq!(t.get(&8u32.to_be_bytes())?, None);
    let keys: Vec<u32> = t
        .range(5u32.to_be_bytes()..15u32.to_be_bytes())?
        .map(|e| e.map(|(k, _)| u32::from_be_bytes(k.try_into().unwrap())))
        .collect::<Result<_>>()?;
    assert_eq!(keys, [5, 7, 9, 11, 13]);
    Ok(())
}
