//! Writes on corrupt files that open: what the write path reads from the file (the
//! meta's transaction id, the free list, references) is untrusted, so a corrupt value
//! makes a write transaction fail with `Error::Corrupted`, never panic or write a
//! meta that no open accepts. See FORMAT.md#the-write-path-trusts-nothing.

mod support;

use mapkv::testing::{MemFile, open_with_backend};
use mapkv::{Durability, Error, Options, PAGE_SIZE_DEFAULT, Result, WriteTxn};
use support::image::{
    META_DURABLE_BEFORE, META_SLOT, META_TXN, catalog_leaf, child_refs, leaf_values,
    newest_meta_slot, put_u64, reseal_catalog, seal_meta, seal_page, target, u16_at, u32_at,
    u64_at,
};

/// The page size of every database here (all use the default).
const PS: usize = PAGE_SIZE_DEFAULT;

/// Offset of `page_count` in a meta slot (FORMAT.md#meta-page).
const META_PAGE_COUNT: usize = 32;

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

/// After an edit of tree records: reseals the catalog and the newest meta as a clean
/// close leaves them (`durable_before` is the meta's own transaction, so recovery
/// verifies no page), so that the edit is the file's only fault.
fn reseal_catalog_closed(img: &mut [u8]) {
    let txn = u64_at(img, newest_meta_slot(img) * META_SLOT + META_TXN);
    reseal_catalog(img, PS, txn);
}

/// The first tree of `img` (closed, newest meta): where its record lies, its root page.
fn first_tree_root(img: &[u8]) -> (usize, usize) {
    let (catalog, _) = catalog_leaf(img, PS);
    let (_, record) = leaf_values(img, catalog)[0].clone();
    (record, target(img, PS, record))
}

/// Changes the 8-byte key of the cell in slot `slot` of the leaf at `leaf` from `old`
/// to `new`, and the slot's key prefix with it (after the leaf's prefix skip). The
/// caller reseals the leaf and its parents.
fn rewrite_key(img: &mut [u8], leaf: usize, slot: usize, old: [u8; 8], new: [u8; 8]) {
    let (slot_at, skip) = (leaf + 24 + 8 * slot, u16_at(img, leaf + 22));
    let cell = leaf + u16_at(img, slot_at + 4);
    assert_eq!(img[cell + 4..cell + 12], old);
    img[cell + 4..cell + 12].copy_from_slice(&new);
    let mut prefix = [0u8; 4];
    for (to, from) in prefix.iter_mut().zip(&new[skip..]) {
        *to = *from;
    }
    img[slot_at..slot_at + 4].copy_from_slice(&prefix);
}

/// Opens `img`, makes `change` in a write transaction and commits it: that must fail with
/// `Error::Corrupted` whose reason contains `reason`, and leave the file as it was.
fn refused_without_a_write(
    img: &[u8],
    reason: &str,
    change: impl FnOnce(&WriteTxn) -> Result<()>,
) -> Result<()> {
    let file = MemFile::new(img.to_vec());
    let db = open_with_backend(file.backend(), Options::new())?;
    let changed = db.begin_write().and_then(|w| {
        change(&w)?;
        w.commit()
    });
    assert!(
        matches!(&changed, Err(Error::Corrupted { reason: why, .. }) if why.contains(reason)),
        "expected Corrupted naming {reason:?}, got {changed:?} (check: {:?})",
        db.check()
    );
    drop(db);
    assert!(file.contents() == img, "the refused change wrote nothing");
    Ok(())
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

/// A committed reference may not name a page that the transaction itself took: here a
/// page in the middle of a large value it just wrote, past the old end of the file or
/// into a free run. A corrupt tree record points there, with the checksum and writer of
/// a real leaf whose bytes the value holds at that page. Copying that "leaf" freed the
/// page while the value still used it: two commits later `check` found the page both
/// reached and free, and the value read back changed, with no error.
///
/// Catches: only the first page of the transaction's own blobs was refused (and pages
/// still free); the other pages it took passed as committed pages.
#[test]
fn a_reference_into_a_page_the_transaction_took_is_refused() -> Result<()> {
    const BLOB_HEADER: usize = 24; // FORMAT.md#overflow-values
    for into_free_run in [false, true] {
        let file = MemFile::default();
        let db = open_with_backend(file.backend(), Options::new())?;
        let w = db.begin_write()?;
        w.open_tree("t")?.insert(b"a", b"1")?;
        w.open_tree("x")?.insert(b"k", b"v")?;
        if into_free_run {
            // 80 pages, freed below a value that stays: a free run inside the file.
            w.open_tree("t")?
                .insert(b"gone", &vec![0xEE; 80 * PS - BLOB_HEADER])?;
            w.open_tree("t")?.insert(b"kept", &vec![1; 2 * PS])?;
        }
        w.commit()?;
        let w = db.begin_write()?;
        w.open_tree("t")?.remove(b"gone")?;
        w.commit()?;
        drop(db);
        let mut img = file.contents();
        let (leaf, slot) = catalog_leaf(&img, PS);
        let m = slot * META_SLOT;
        // Where the value will go: the old end, or the start of the free run.
        let at = match into_free_run {
            false => u64_at(&img, m + META_PAGE_COUNT),
            true => (img
                .chunks(PS)
                .position(|p| p[BLOB_HEADER..PS] == [0xEE; PS - 24]))
            .expect("the freed value's first page") as u64,
        };
        let root = (leaf_values(&img, leaf).into_iter())
            .find(|(name, _)| name == b"x")
            .expect("tree x")
            .1;
        let x_leaf = u64_at(&img, root) as usize * PS;
        let real_leaf = img[x_leaf..x_leaf + PS].to_vec();
        put_u64(&mut img, root, at + 5);
        reseal_catalog_closed(&mut img);

        let db = open_with_backend(MemFile::new(img).backend(), Options::new())?;
        let w = db.begin_write()?;
        // 64 pages (only the end, or the free run of 80, holds them), every page but the
        // first holding the real leaf's bytes.
        let mut value = vec![0u8; 64 * PS - BLOB_HEADER];
        for k in 1..64 {
            let at = k * PS - BLOB_HEADER;
            value[at..at + PS].copy_from_slice(&real_leaf);
        }
        w.open_tree("t")?.insert(b"big", &value)?;
        let changed = w.open_tree("x")?.insert(b"k2", b"w");
        assert!(
            matches!(&changed, Err(Error::Corrupted { page, .. }) if *page == at + 5),
            "into a free run: {into_free_run}: expected Corrupted, got {changed:?}"
        );
    }
    Ok(())
}

/// Two trees whose records name one leaf (a corrupt file that opens: only `check` walks
/// every tree). The first tree's change frees the leaf in a `Durability::None` commit,
/// so the leaf waits for a sync before reuse; the second tree's change frees it again in
/// the next transaction. That commit must fail, and the file must still open.
///
/// Catches: the second free was checked against the pages free now and the pages freed
/// in the same transaction, not against those still waiting. The commit went through,
/// listing the leaf as freed a second time, and the file no longer opened ("free-list
/// record: adds pages that are free already").
#[test]
fn a_page_freed_again_while_it_waits_fails_the_commit() -> Result<()> {
    let file = MemFile::default();
    let db = open_with_backend(file.backend(), Options::new())?;
    let w = db.begin_write()?;
    w.open_tree("t")?.insert(b"k", b"v")?;
    w.open_tree("x")?.insert(b"k", b"v")?;
    // Enough pages that the free list is written as changes, not folded each commit.
    for i in 0..20_000u32 {
        w.open_tree("z")?.insert(&i.to_be_bytes(), &[1; 100])?;
    }
    w.commit()?;
    drop(db);
    let mut img = file.contents();
    let (leaf, _) = catalog_leaf(&img, PS);
    let records = leaf_values(&img, leaf);
    let record = |name: &[u8]| records.iter().find(|(n, _)| n == name).expect("a tree").1;
    let (t, x) = (record(b"t"), record(b"x"));
    let t_root = img[t..t + 20].to_vec(); // page, checksum, writer
    img[x..x + 20].copy_from_slice(&t_root);
    reseal_catalog_closed(&mut img);

    let file = MemFile::new(img);
    let db = open_with_backend(file.backend(), Options::new())?;
    let mut w = db.begin_write()?;
    w.set_durability(Durability::None);
    w.open_tree("t")?.insert(b"k2", b"v")?;
    w.commit()?;
    let w = db.begin_write()?;
    w.open_tree("x")?.insert(b"k3", b"v")?;
    let committed = w.commit();
    assert!(
        matches!(committed, Err(Error::Corrupted { .. })),
        "expected Corrupted, got {committed:?}"
    );
    drop(db);
    let db = open_with_backend(file.backend(), Options::new())?;
    let r = db.begin_read()?;
    assert_eq!(r.open_tree("t")?.get(b"k2")?, Some(&b"v"[..]));
    Ok(())
}

/// A full leaf shares its cells with its right sibling (`src/tree/share.rs`) to make
/// room for a key that goes at its end. The sibling is sound alone and its keys follow
/// the full leaf's, but its first key lies below their separator, and below the new key
/// (a resealed edit, so every checksum holds; only `check`'s range walk sees it). The
/// insert must stop with `Corrupted` and write nothing.
///
/// Catches: the share checking the two leaves' order but not where the new key falls
/// between them: the new key went in before the sibling's smaller first key, and the
/// commit sealed an unsorted leaf.
#[test]
fn a_new_key_that_falls_inside_the_sibling_stops_the_share() -> Result<()> {
    let key = |i: u64| i.to_be_bytes();
    // Entries of 320 bytes: twelve fill a leaf, so the bulk loader leaves a full leaf
    // (keys 0, 2, .. 22) with a roomy one (24, .. 30) after it, separated by key 24.
    let file = MemFile::default();
    let db = open_with_backend(file.backend(), Options::new())?;
    db.bulk_load("t", (0..16u64).map(|i| (key(2 * i), vec![i as u8; 300])))?;
    drop(db);
    let mut img = file.contents();
    let (record, root) = first_tree_root(&img);
    let refs = child_refs(&img, root);
    let (full, roomy) = (target(&img, PS, refs[0]), target(&img, PS, refs[1]));
    assert_eq!(u16_at(&img, full + 2), 12, "the first leaf is full");
    // The roomy leaf's first key 24 becomes 23: still above the full leaf's keys.
    rewrite_key(&mut img, roomy, 0, key(24), key(23));
    seal_page(&mut img, roomy, PS, refs[1]);
    seal_page(&mut img, root, PS, record);
    reseal_catalog_closed(&mut img);

    // 23 then 0xFF: above 23, below the separator 24, so it goes to the full leaf's end.
    let mut new = key(23).to_vec();
    new.push(0xFF);
    refused_without_a_write(&img, "order", |w| w.open_tree("t")?.insert(&new, &[9; 300]))
}

/// A leaf whose two keys are longer than any key may be (`key_len_max`) and share all
/// but their last bytes, each cell still no larger than a leaf cell may be (a resealed
/// edit, so every checksum holds). An insert splits the leaf, and the separator between
/// the two keys, as long as they are, would make a branch cell larger than a branch
/// cell may be: a root that no later copy or `check` accepts. The insert must stop with
/// `Corrupted` and write nothing.
///
/// Catches: copying a node checked each cell's size but not its key's length; the split
/// sealed the oversized separator into a new root, and `check` refused the file the
/// insert had just committed.
#[test]
fn keys_longer_than_the_limit_stop_the_insert_that_would_split_them() -> Result<()> {
    let max = mapkv::key_len_max(PS);
    // Two cells of 2,024 bytes (two fit in a leaf: FORMAT.md#node-pages), keys at the
    // limit: a root leaf with no room for a third.
    let file = MemFile::default();
    let db = open_with_backend(file.backend(), Options::new())?;
    let w = db.begin_write()?;
    let value = vec![b'v'; 2024 - 4 - max];
    for last in [b'1', b'2'] {
        let mut k = vec![b'a'; max];
        k[max - 1] = last;
        w.open_tree("t")?.insert(&k, &value)?;
    }
    w.commit()?;
    drop(db);
    let mut img = file.contents();
    let (record, leaf) = first_tree_root(&img);
    assert_eq!(u16_at(&img, leaf + 2), 2, "a root leaf of two keys");
    // Each key takes 90 of its value's bytes: 2,010 bytes, 'a' but for the last 5, the
    // cells' sizes unchanged. No prefix skip, so the slot prefixes are "aaaa".
    for (i, last) in [b'1', b'2'].into_iter().enumerate() {
        let slot_at = leaf + 24 + 8 * i;
        let cell = leaf + u16_at(&img, slot_at + 4);
        let key_len = max + 90;
        img[cell..cell + 4].copy_from_slice(&((value.len() - 90) as u32).to_le_bytes());
        img[cell + 4..cell + 4 + key_len].fill(b'a');
        img[cell + 4 + key_len - 5] = last;
        img[slot_at..slot_at + 4].copy_from_slice(b"aaaa");
        img[slot_at + 6..slot_at + 8].copy_from_slice(&(key_len as u16).to_le_bytes());
    }
    img[leaf + 22..leaf + 24].fill(0);
    seal_page(&mut img, leaf, PS, record);
    reseal_catalog_closed(&mut img);

    refused_without_a_write(&img, "key", |w| {
        w.open_tree("t")?.insert(b"b", b"splits the leaf")
    })
}

/// A tree record (a value in the catalog, resealed so every checksum holds) whose root
/// names the next transaction and the first provisional id its copies get (2^62,
/// FORMAT.md#commit-protocol): once another tree's change made that copy, the record
/// passes for a page of the transaction's own, another tree's. Opening the tree to
/// change it, or deleting it, must stop with `Corrupted`, and the other tree must not
/// change.
///
/// Catches: the write path checking the references inside the nodes it copies
/// (`Node::verify`) but not the root reference of a tree record. The insert went into
/// the other tree's dirty leaf, in place, and the commit went through: the other tree
/// held the key, and tree x's record named page 2^62.
#[test]
fn a_tree_record_naming_the_writing_transaction_is_refused() -> Result<()> {
    let file = MemFile::default();
    let db = open_with_backend(file.backend(), Options::new())?;
    let w = db.begin_write()?;
    w.open_tree("a")?.insert(b"a1", b"v")?;
    w.open_tree("x")?.insert(b"x1", b"v")?;
    w.commit()?;
    drop(db);
    let mut img = file.contents();
    let (catalog, slot) = catalog_leaf(&img, PS);
    let txn = u64_at(&img, slot * META_SLOT + META_TXN);
    let (_, record) = (leaf_values(&img, catalog).into_iter())
        .find(|(name, _)| name == b"x")
        .expect("tree x");
    put_u64(&mut img, record, 1 << 62);
    put_u64(&mut img, record + 12, txn + 1);
    reseal_catalog_closed(&mut img);

    let file = MemFile::new(img.clone());
    let db = open_with_backend(file.backend(), Options::new())?;
    let w = db.begin_write()?;
    // Tree a's root leaf is copied first: it takes the provisional id 2^62.
    w.open_tree("a")?.insert(b"a2", b"v")?;
    let keys_of_a = || -> Result<Vec<Vec<u8>>> {
        let a = w.open_tree("a")?;
        a.iter()?.map(|e| e.map(|(k, _)| k.to_vec())).collect()
    };
    let changed = (w.open_tree("x")).and_then(|mut x| x.insert(b"x2", b"w"));
    assert_eq!(keys_of_a()?, [b"a1", b"a2"], "tree a changed with tree x");
    let deleted = w.delete_tree("x");
    assert_eq!(keys_of_a()?, [b"a1", b"a2"], "tree a changed with tree x");
    for (what, r) in [("insert", changed), ("delete", deleted.map(drop))] {
        assert!(
            matches!(&r, Err(Error::Corrupted { reason, .. }) if reason.contains("names writer")),
            "{what}: expected Corrupted, got {r:?}"
        );
    }
    Ok(())
}

/// A leaf whose last key lies above its parent's separator after it (a resealed edit:
/// the leaf is sound alone, only `check`'s range walk sees it). A run of inserts just
/// below that key cuts the leaf right before it, and the separator the cut hands to the
/// parent would lie above the parent's next key. The insert must stop with `Corrupted`
/// and write nothing.
///
/// Catches: a split's separator put into the parent unchecked. The commit sealed a
/// root with its keys out of order, and a sound key of the next leaf (24) was no longer
/// found: the misplaced key changed another entry.
#[test]
fn a_split_separator_outside_the_parents_range_stops_the_insert() -> Result<()> {
    let key = |i: u64| i.to_be_bytes();
    // Ascending inserts of 300-byte values: full leaves of twelve, 0 .. 22 first.
    let file = MemFile::default();
    let db = open_with_backend(file.backend(), Options::new())?;
    let w = db.begin_write()?;
    for i in 0..40u64 {
        w.open_tree("t")?.insert(&key(2 * i), &[1; 300])?;
    }
    w.commit()?;
    drop(db);
    let mut img = file.contents();
    let (record, root) = first_tree_root(&img);
    let refs = child_refs(&img, root);
    let leaf = target(&img, PS, refs[0]);
    let count = u16_at(&img, leaf + 2);
    assert_eq!(count, 12, "the first leaf is full");
    // Its last key 22 becomes 50: above the separator 24 and the next leaf's keys.
    rewrite_key(&mut img, leaf, count - 1, key(22), key(50));
    seal_page(&mut img, leaf, PS, refs[0]);
    seal_page(&mut img, root, PS, record);
    reseal_catalog_closed(&mut img);

    // 20 then 1, 2, ..: each right after the one before, all below 50.
    refused_without_a_write(&img, "separator", |w| {
        for j in 1..=20u8 {
            let mut k = key(20).to_vec();
            k.push(j);
            w.open_tree("t")?.insert(&k, &[2; 300])?;
        }
        Ok(())
    })
}

/// A leaf of a tree aligned to 16 whose lowest cell was cut short by a byte, the byte
/// counted as a hole (a resealed edit: the cells still tile the page, and every value
/// still starts at a multiple of 16). But a cell whose length is no multiple of 16
/// moves every cell packed after it off the alignment (FORMAT.md#aligned-values).
/// `check` must report it, and an insert that splits the leaf must stop with
/// `Corrupted` and write nothing.
///
/// Catches: `check` testing where values start but not the cells' lengths, and the copy
/// check knowing nothing of the tree's alignment: the split packed the short cell and
/// the commit left values at offsets that are no multiple of 16.
#[test]
fn a_cell_of_an_aligned_tree_cut_short_stops_the_insert() -> Result<()> {
    let key = |i: u64| i.to_be_bytes();
    let aligned = mapkv::TreeOptions::new().value_align(16);
    // Cells of 320 bytes (4 + 8 + 4 of padding + 300 + 4): full leaves of twelve.
    let file = MemFile::default();
    let db = open_with_backend(file.backend(), Options::new())?;
    let w = db.begin_write()?;
    for i in 0..40u64 {
        w.open_tree_with("t", aligned)?
            .insert(&key(2 * i), &[1; 300])?;
    }
    w.commit()?;
    drop(db);
    let mut img = file.contents();
    let (record, root) = first_tree_root(&img);
    let refs = child_refs(&img, root);
    let leaf = target(&img, PS, refs[0]);
    assert_eq!(u16_at(&img, leaf + 2), 12, "the first leaf is full");
    // Its lowest cell: 300 bytes of value become 299, and the byte after them a hole.
    let lowest = leaf + u32_at(&img, leaf + 16) as usize;
    assert_eq!(u32_at(&img, lowest) & 0xFFFF, 300);
    img[lowest] -= 1;
    img[leaf + 20..leaf + 22].copy_from_slice(&1u16.to_le_bytes());
    seal_page(&mut img, leaf, PS, refs[0]);
    seal_page(&mut img, root, PS, record);
    reseal_catalog_closed(&mut img);

    let db = open_with_backend(MemFile::new(img.clone()).backend(), Options::new())?;
    let checked = db.check();
    assert!(
        matches!(&checked, Err(Error::Corrupted { reason, .. }) if reason.contains("16")),
        "check: {checked:?}"
    );
    drop(db);
    refused_without_a_write(&img, "16", |w| {
        w.open_tree_with("t", aligned)?.insert(&key(1), &[2; 300])
    })
}
