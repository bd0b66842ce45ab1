//! Writes on corrupt files that open: what the write path reads from the file (the
//! meta's transaction id, the free list, references) is untrusted, so a corrupt value
//! makes a write transaction fail with `Error::Corrupted`, never panic or write a
//! meta that no open accepts. See FORMAT.md#the-write-path-trusts-nothing.

mod support;

use mapkv::testing::{MemFile, open_with_backend};
use mapkv::{Error, Options, Result};
use support::image::{
    META_DURABLE_BEFORE, META_SLOT, META_TXN, newest_meta_slot, put_u64, seal_meta,
};

/// A small database, cleanly closed, as bytes.
fn image() -> Result<Vec<u8>> {
    let file = MemFile::default();
    let db = open_with_backend(file.backend(), Options::new())?;
    let w = db.begin_write()?;
    w.open_tree("t")?.insert(b"k", b"v")?;
    w.commit()?;
    drop(db);
    Ok(file.contents())
}

/// The newest meta names the last transaction id there is: no next transaction can be
/// numbered. Reads still work; a write is `Corrupted`.
///
/// Catches: the next transaction numbered `txn + 1` unchecked, which panics (overflow
/// checks) or wraps to 0 and then panics in `Meta::encode`, poisoning the handle.
#[test]
fn a_meta_with_the_last_transaction_id_refuses_writes() -> Result<()> {
    let mut img = image()?;
    let slot = newest_meta_slot(&img);
    put_u64(&mut img, slot * META_SLOT + META_TXN, u64::MAX);
    put_u64(&mut img, slot * META_SLOT + META_DURABLE_BEFORE, u64::MAX);
    seal_meta(&mut img, slot);
    let db = open_with_backend(MemFile::new(img).backend(), Options::new())?;
    let r = db.begin_read()?;
    assert_eq!(r.open_tree("t")?.get(b"k")?, Some(&b"v"[..]));
    drop(r);
    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
        let w = db.begin_write()?;
        w.open_tree("t")?.insert(b"k2", b"v2")?;
        w.commit()
    }));
    match written {
        Ok(Err(Error::Corrupted { .. })) => {}
        Ok(other) => panic!("expected Corrupted, got {other:?}"),
        Err(_) => panic!("a write panicked"),
    }
    Ok(())
}
