//! Corrupt files: small databases holding every page kind (branch, leaf, overflow blob,
//! free list, catalog, both metas) with bytes flipped one at a time, truncated at random
//! lengths, and with garbage metas (random bytes, or well-formed metas with wrong fields).
//! `open`, `check`, `get` and `range` must return Ok or `Error::Corrupted`, never panic,
//! hang or allocate hugely; whatever opens and passes `check` must hold a committed state.
//! Run on in-memory images through the backend hook, and a sample through real files
//! with the default memory map.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mapkv::testing::open_with_backend;
use mapkv::{Database, Error, Options, Result};
use support::model::{Trees, digest, key};
use support::rng::{Rng, heavy, seed};
use support::simdisk::SimDisk;

/// Records the largest single allocation, to catch sizes taken from corrupt bytes.
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

const ALLOC_LIMIT: usize = 64 << 20;

/// A database image and the digests of every state committed in it.
struct Sample {
    name: &'static str,
    image: Vec<u8>,
    states: Vec<u128>,
}

/// Builds a database with every page kind: a three-level tree, overflow values, several
/// trees in the catalog, removes and overwrites (so there is a free list).
fn build(sealed: bool) -> Sample {
    let disk = SimDisk::new(Vec::new());
    let db = open_with_backend(disk.backend(), Options::new()).expect("create");
    let mut model = Trees::new();
    let mut states = vec![digest(&model)];
    let mut rng = Rng::new(7);
    let mut commit = |f: &mut dyn FnMut(&mut mapkv::WriteTxn, &mut Trees)| {
        let mut wtx = db.begin_write().expect("begin_write");
        f(&mut wtx, &mut model);
        wtx.commit().expect("commit");
        states.push(digest(&model));
    };
    commit(&mut |w, m| {
        let mut t = w.open_tree("big").unwrap();
        let mm = m.entry("big".into()).or_default();
        for i in 0..1500 {
            let (k, v) = (key(i, i % 3 == 0), vec![i as u8; (i % 40) as usize]);
            t.insert(&k, &v).unwrap();
            mm.insert(k, v);
        }
    });
    commit(&mut |w, m| {
        let mut t = w.open_tree("blobs").unwrap();
        let mm = m.entry("blobs".into()).or_default();
        for i in 0..4 {
            let mut v = vec![0; 5000 + 3000 * i as usize];
            rng.fill(&mut v);
            t.insert(&key(i, false), &v).unwrap();
            mm.insert(key(i, false), v);
        }
        w.open_tree("empty").unwrap();
        m.entry("empty".into()).or_default();
    });
    commit(&mut |w, m| {
        let mut t = w.open_tree("big").unwrap();
        let mm = m.get_mut("big").unwrap();
        for i in (0..1500).step_by(5) {
            let k = key(i, i % 3 == 0);
            t.remove(&k).unwrap();
            mm.remove(&k);
        }
        let mut t = w.open_tree("blobs").unwrap();
        let v = vec![9; 7000];
        t.insert(&key(1, false), &v).unwrap();
        m.get_mut("blobs").unwrap().insert(key(1, false), v);
    });
    if !sealed {
        disk.kill(); // no clean close: the newest commit is verified at open
    }
    drop(db);
    Sample {
        name: if sealed { "sealed" } else { "unsealed" },
        image: disk.contents(),
        states,
    }
}

/// Reads everything, tolerating `Corrupted`; Ok(content) only if every read succeeded.
fn read_everything(db: &Database) -> Result<Trees> {
    let rtx = db.begin_read()?;
    let mut out = BTreeMap::new();
    for name in rtx.tree_names()? {
        // Reads do not verify checksums (check and recovery do): a corrupt catalog can
        // misdirect a lookup, which is a wrong answer, not unsafety. `check` catches it.
        let tree = match rtx.open_tree(&name) {
            Err(Error::TreeNotFound(_)) => {
                return Err(Error::Corrupted {
                    page: 0,
                    reason: "a listed tree is not found".into(),
                });
            }
            r => r?,
        };
        let mut map = BTreeMap::new();
        for entry in tree.iter()? {
            let (k, v) = entry?;
            map.insert(k.to_vec(), v.to_vec());
        }
        let mut back = 0;
        for entry in tree.range(..)?.rev() {
            entry?;
            back += 1;
        }
        let mut found = 0;
        for k in map.keys() {
            found += usize::from(tree.get(k)?.is_some());
        }
        tree.get(b"no such key")?;
        tree.range(&b"k00100"[..]..&b"k00200"[..])?
            .try_for_each(|e| e.map(|_| ()))?;
        if back != map.len() || found != map.len() || tree.len()? != map.len() as u64 {
            return Err(Error::Corrupted {
                page: 0,
                reason: "counts disagree".into(),
            });
        }
        out.insert(name, map);
    }
    Ok(out)
}

/// What a probe saw: "rejected at open", "check failed", or the committed state.
#[derive(Debug, PartialEq)]
enum Outcome {
    Rejected,
    CheckFailed,
    State(usize),
}

fn corrupted_or_ok<T>(r: Result<T>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(Error::Corrupted { .. }) => None,
        Err(e) => panic!("{what}: expected Ok or Error::Corrupted, got {e:?}"),
    }
}

fn probe_db(db: Result<Database>, states: &[u128]) -> Outcome {
    let Some(db) = corrupted_or_ok(db, "open") else {
        return Outcome::Rejected;
    };
    let checked = corrupted_or_ok(db.check(), "check").is_some();
    let _ = corrupted_or_ok(db.stats(), "stats");
    let content = corrupted_or_ok(read_everything(&db), "read");
    if !checked {
        return Outcome::CheckFailed;
    }
    let content = content.expect("check passed, so every read must succeed");
    let d = digest(&content);
    let state = states
        .iter()
        .rposition(|&s| s == d)
        .expect("check passed but the content is no committed state");
    Outcome::State(state)
}

fn probe_memory(image: Vec<u8>, states: &[u128]) -> Outcome {
    let disk = SimDisk::new(image);
    probe_db(open_with_backend(disk.backend(), Options::new()), states)
}

fn probe_file(image: &[u8], states: &[u128], dir: &std::path::Path, n: u64) -> Outcome {
    let path = dir.join(format!("variant-{n}.mapkv"));
    std::fs::write(&path, image).expect("write variant");
    let outcome = probe_db(Database::open(&path), states);
    let _ = std::fs::remove_file(&path);
    outcome
}

/// Aborts the process if one probe takes longer than a minute (a hang).
fn watchdog(progress: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut last = u64::MAX;
        loop {
            std::thread::sleep(Duration::from_secs(60));
            let now = progress.load(Ordering::Relaxed);
            if now == last {
                eprintln!("a probe hangs (variant {now})");
                std::process::abort();
            }
            last = now;
        }
    });
}

#[derive(Default, Debug)]
struct Tally {
    variants: u64,
    through_files: u64,
    rejected: u64,
    check_failed: u64,
    older_state: u64,
    newest_state: u64,
}

impl Tally {
    fn add(&mut self, o: &Outcome, newest: usize) {
        self.variants += 1;
        match o {
            Outcome::Rejected => self.rejected += 1,
            Outcome::CheckFailed => self.check_failed += 1,
            Outcome::State(s) if *s == newest => self.newest_state += 1,
            Outcome::State(_) => self.older_state += 1,
        }
    }
}

fn run_probe(
    what: &str,
    image: Vec<u8>,
    sample: &Sample,
    file: Option<(&std::path::Path, u64)>,
    tally: &mut Tally,
) -> Outcome {
    let newest = sample.states.len() - 1;
    let outcome = catch_unwind(AssertUnwindSafe(|| match file {
        Some((dir, n)) => probe_file(&image, &sample.states, dir, n),
        None => probe_memory(image.clone(), &sample.states),
    }))
    .unwrap_or_else(|_| panic!("{} image, {what}: panicked", sample.name));
    if file.is_some() {
        tally.through_files += 1;
    }
    tally.add(&outcome, newest);
    outcome
}

#[test]
fn flipped_bytes_truncations_and_garbage_metas() {
    let base = seed(5);
    let mut rng = Rng::new(base);
    let progress = Arc::new(AtomicU64::new(0));
    watchdog(Arc::clone(&progress));
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut tally = Tally::default();
    for sample in [build(true), build(false)] {
        let len = sample.image.len();
        let page = 4096;
        let newest = sample.states.len() - 1;
        eprintln!("{} image: {} pages", sample.name, len / page);
        assert_eq!(
            probe_memory(sample.image.clone(), &sample.states),
            Outcome::State(newest)
        );
        // Byte flips: every byte of every page header and meta, and a random sample (all
        // bytes with MAPKV_HEAVY).
        let mut positions: Vec<usize> = if heavy() {
            (0..len).collect()
        } else {
            // Metas: every byte; other pages: 6 random bytes of the first 48 (header,
            // node header, first slots); and random bytes anywhere.
            let mut p: Vec<usize> = (0..8192).filter(|i| i % page < 100).collect();
            for start in (8192..len).step_by(page) {
                p.extend((0..6).map(|_| start + rng.below(48) as usize));
            }
            p.extend((0..600).map(|_| rng.below(len as u64) as usize));
            p
        };
        positions.sort_unstable();
        positions.dedup();
        for (n, &at) in positions.iter().enumerate() {
            let mut image = sample.image.clone();
            image[at] ^= 1 << rng.below(8) | (rng.below(256) as u8 & 0xF0);
            progress.fetch_add(1, Ordering::Relaxed);
            let file = (n % 25 == 0).then_some((dir.path(), n as u64));
            run_probe(
                &format!("byte {at} flipped"),
                image,
                &sample,
                file,
                &mut tally,
            );
        }
        // Truncations: random lengths and page boundaries. Shorter than the metas say
        // (both hold the same page count here): rejected at open.
        let needed = len; // the file is trimmed to its page count at close or by growth
        let mut lengths: Vec<usize> = (0..150).map(|_| rng.below(len as u64) as usize).collect();
        lengths.extend((0..len / page).map(|p| p * page));
        for (n, cut) in lengths.into_iter().enumerate() {
            progress.fetch_add(1, Ordering::Relaxed);
            let file = (n % 10 == 0).then_some((dir.path(), 100_000 + n as u64));
            let outcome = run_probe(
                &format!("truncated to {cut}"),
                sample.image[..cut].to_vec(),
                &sample,
                file,
                &mut tally,
            );
            if sample.name == "sealed" && cut >= 8192 && cut < needed {
                assert_eq!(outcome, Outcome::Rejected, "truncated to {cut} of {needed}");
            }
        }
        // Garbage metas: random bytes in one or both slots; well-formed metas (valid
        // checksum) with one field set to a wrong value.
        for n in 0..300u64 {
            let mut image = sample.image.clone();
            let slots: &[usize] = match n % 3 {
                0 => &[0],
                1 => &[1],
                _ => &[0, 1],
            };
            for &slot in slots {
                let meta = &mut image[slot * 4096..slot * 4096 + 100];
                if n % 2 == 0 {
                    rng.fill(meta);
                    if rng.chance(1, 2) {
                        meta[..8].copy_from_slice(b"mapkv\0db");
                    }
                } else {
                    // A field: txn, durable_before, page_count, catalog (page, checksum,
                    // txn, entries, depth), free list (page, checksum, txn).
                    let fields = [16, 24, 32, 40, 48, 52, 60, 68, 76, 84, 88];
                    let at = *rng.pick(&fields);
                    let width = if [48, 68, 84].contains(&at) { 4 } else { 8 };
                    let values = [
                        0,
                        1,
                        2,
                        3,
                        40,
                        41,
                        u64::MAX,
                        u64::MAX / 4096,
                        1 << 40,
                        rng.next_u64(),
                    ];
                    let v = *rng.pick(&values);
                    meta[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                    let crc = crc32fast::hash(&meta[..96]);
                    meta[96..100].copy_from_slice(&crc.to_le_bytes());
                }
            }
            progress.fetch_add(1, Ordering::Relaxed);
            let file = (n % 10 == 0).then_some((dir.path(), 200_000 + n));
            run_probe(
                &format!("garbage meta {n}"),
                image,
                &sample,
                file,
                &mut tally,
            );
        }
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < ALLOC_LIMIT, "an allocation of {largest} bytes");
    eprintln!(
        "corrupt variants: {tally:?}, largest allocation {} KiB, {:.1?}",
        largest >> 10,
        started.elapsed()
    );
}

// ---- crafted files: well sealed, but not trees ------------------------------------------

/// Runs `f` on a thread of its own and fails the test if it has not returned within a
/// minute: a walk of a crafted file that went exponential would hang here.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match result.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // It panicked: pass the panic on.
            std::panic::resume_unwind(thread.join().expect_err("no result, so a panic"))
        }
        Err(_) => panic!("the walk neither finished nor failed within a minute"),
    }
}

fn expect_corrupted<T: std::fmt::Debug>(r: Result<T>, what: &str) -> String {
    match r {
        Err(Error::Corrupted { reason, .. }) => reason,
        other => panic!("{what}: expected Error::Corrupted, got {other:?}"),
    }
}

/// Points every child reference of the branch that `ref_at` points to at its first
/// child, and so on down to the leaves, resealing bottom-up (the reference at `ref_at`
/// gets the new checksum): every page checks out against its parent, but a walk that
/// follows every reference reaches the one leaf 3^(depth-1) times.
fn point_every_child_at_the_first(img: &mut [u8], page_size: usize, ref_at: usize) {
    use support::image::{REF_BYTES, child_refs, is_branch, seal_page, target};
    let page = target(img, page_size, ref_at);
    if is_branch(img, page) {
        let refs = child_refs(img, page);
        point_every_child_at_the_first(img, page_size, refs[0]);
        let first = img[refs[0]..refs[0] + REF_BYTES].to_vec();
        for &r in &refs[1..] {
            img[r..r + REF_BYTES].copy_from_slice(&first);
        }
    }
    seal_page(img, page, page_size, ref_at);
}

#[test]
fn references_that_all_lead_to_one_child_are_corrupt_and_walked_once() -> Result<()> {
    use support::image::{META_SLOT, META_TXN, catalog_leaf, leaf_values, newest_meta_slot};
    use support::image::{reseal_catalog, u64_at};
    use support::simdisk::OpKind;
    const PAGE: usize = 4096;
    // Keys of 1808 bytes that differ only in their last 8: two fill a leaf and their
    // separators are as long, so a branch has three children and 2200 keys make a tree
    // eight levels deep.
    let disk = SimDisk::new(Vec::new());
    let db = open_with_backend(disk.backend(), Options::new())?;
    let prefix = vec![b'p'; 1800];
    let keys = (0..2200u64).map(|i| ([&prefix[..], &i.to_be_bytes()].concat(), b""));
    db.bulk_load("deep", keys)?;
    let depth = db.stats()?.trees[0].depth;
    assert!(depth >= 8, "depth {depth}");
    drop(db);
    let mut img = disk.contents();
    let (leaf, _) = catalog_leaf(&img, PAGE);
    let (_, record) = leaf_values(&img, leaf)[0].clone();
    point_every_child_at_the_first(&mut img, PAGE, record);
    let txn = u64_at(&img, newest_meta_slot(&img) * META_SLOT + META_TXN);
    let pages = img.len() / PAGE;
    let dir = tempfile::tempdir()?;
    for sealed in [false, true] {
        // Unsealed: the commit's pages are verified at open. Sealed: they are not, so the
        // database opens, and `check` and `compact_to` meet the crafted tree.
        let mut img = img.clone();
        reseal_catalog(&mut img, PAGE, if sealed { txn } else { txn - 1 });
        let copy = dir.path().join(format!("copy-{sealed}"));
        let (reasons, reads) = within_a_minute(move || {
            let disk = SimDisk::new(img);
            let db = open_with_backend(disk.backend(), Options::new().cache_size(0));
            let mut reasons = Vec::new();
            if sealed {
                let db = db.expect("a sealed meta opens without verification");
                reasons.push(expect_corrupted(db.check(), "check"));
                reasons.push(expect_corrupted(db.compact_to(&copy), "compact_to"));
                // Iterating the crafted tree (either way) and deleting it also stop.
                let rtx = db.begin_read().expect("begin_read");
                let tree = rtx.open_tree("deep").expect("open_tree");
                let forward = tree.iter().expect("iter").find_map(|e| e.err());
                let backward = tree.iter().expect("iter").rev().find_map(|e| e.err());
                for (walk, err) in [("iter", forward), ("iter().rev()", backward)] {
                    let err = err.unwrap_or_else(|| panic!("{walk} ended without an error"));
                    let r = expect_corrupted(Err::<(), _>(err), walk);
                    assert!(r.contains("references share pages"), "{walk}: {r}");
                }
                let w = db.begin_write().expect("begin_write");
                let r = expect_corrupted(w.delete_tree("deep").map(|_| ()), "delete_tree");
                assert!(r.contains("freed twice"), "delete_tree: {r}");
            } else {
                reasons.push(expect_corrupted(db.map(|_| ()), "open"));
            }
            (reasons, disk.count(OpKind::Read))
        });
        for r in &reasons {
            assert!(r.contains("reached twice"), "sealed {sealed}: {r}");
        }
        // Each walk reads each page at most once.
        assert!(reads <= 3 * pages as u64, "{reads} reads of {pages} pages");
    }
    Ok(())
}

#[test]
fn entry_counts_near_u64_max_are_corrupt_not_overflows() -> Result<()> {
    use support::image::{META_SLOT, META_TXN, RECORD_ENTRIES, catalog_leaf, leaf_values};
    use support::image::{newest_meta_slot, put_u64, reseal_catalog, u64_at};
    const PAGE: usize = 4096;
    let disk = SimDisk::new(Vec::new());
    let db = open_with_backend(disk.backend(), Options::new())?;
    let w = db.begin_write()?;
    for name in ["a", "b"] {
        w.open_tree(name)?.insert(b"k", b"v")?;
    }
    w.commit()?;
    drop(db);
    let mut img = disk.contents();
    let (leaf, _) = catalog_leaf(&img, PAGE);
    for (_, record) in leaf_values(&img, leaf) {
        put_u64(&mut img, record + RECORD_ENTRIES, u64::MAX);
    }
    let txn = u64_at(&img, newest_meta_slot(&img) * META_SLOT + META_TXN);
    for sealed in [false, true] {
        let mut img = img.clone();
        reseal_catalog(&mut img, PAGE, if sealed { txn } else { txn - 1 });
        let disk = SimDisk::new(img);
        // Recovery need not add the counts up; if it does, an overflow is corruption.
        let Some(db) = corrupted_or_ok(open_with_backend(disk.backend(), Options::new()), "open")
        else {
            continue;
        };
        expect_corrupted(db.check(), "check");
        let w = db.begin_write()?;
        let mut t = w.open_tree("a")?;
        expect_corrupted(
            t.insert(b"k2", b"v"),
            "an insert that would count past u64::MAX",
        );
    }
    Ok(())
}

/// A full leaf shares its cells with a sibling before it splits (`src/tree/share.rs`):
/// a committed sibling whose cells overlap (resealed, so every checksum holds, and a
/// meta that skips the open's check) must stop the insert with `Corrupted` before any
/// cell moves, and leave the file as it was.
///
/// Catches: the share copying the sibling without checking it (its overlapping cells
/// then move into the full leaf and the insert succeeds).
#[test]
fn a_sibling_with_overlapping_cells_stops_the_insert_that_would_share_with_it() -> Result<()> {
    use support::image::{META_SLOT, META_TXN, catalog_leaf, child_refs, leaf_values};
    use support::image::{newest_meta_slot, reseal_catalog, seal_page, target, u16_at, u64_at};
    const PAGE: usize = 4096;
    let even = |i: u64| (2 * i).to_be_bytes();
    // Entries of 320 bytes: twelve fill a leaf, so the bulk loader leaves a full leaf
    // with a roomy one after it.
    let disk = SimDisk::new(Vec::new());
    let db = open_with_backend(disk.backend(), Options::new())?;
    db.bulk_load("t", (0..16u64).map(|i| (even(i), vec![i as u8; 300])))?;
    drop(db);
    let mut img = disk.contents();
    let (leaf, _) = catalog_leaf(&img, PAGE);
    let (_, record) = leaf_values(&img, leaf)[0].clone();
    let root = target(&img, PAGE, record);
    let refs = child_refs(&img, root);
    let (full, roomy) = (target(&img, PAGE, refs[0]), target(&img, PAGE, refs[1]));
    assert_eq!(u16_at(&img, full + 2), 12, "the first leaf is full");
    assert!(
        u16_at(&img, roomy + 2) >= 2,
        "the second leaf holds two cells or more"
    );
    // The second leaf's slot 1 points at slot 0's cell.
    let cell0 = u16_at(&img, roomy + 24 + 4);
    img[roomy + 32 + 4..roomy + 32 + 6].copy_from_slice(&(cell0 as u16).to_le_bytes());
    seal_page(&mut img, roomy, PAGE, refs[1]);
    seal_page(&mut img, root, PAGE, record);
    let txn = u64_at(&img, newest_meta_slot(&img) * META_SLOT + META_TXN);
    reseal_catalog(&mut img, PAGE, txn);

    let disk = SimDisk::new(img.clone());
    let db = open_with_backend(disk.backend(), Options::new())?;
    let w = db.begin_write()?;
    let r = w
        .open_tree("t")?
        .insert(&(2 * 3 + 1u64).to_be_bytes(), &[9; 300]);
    let reason = expect_corrupted(r, "insert into the full leaf");
    assert!(reason.contains("overlap"), "{reason}");
    drop(w);
    drop(db);
    assert!(disk.contents() == img, "the failed insert wrote nothing");
    Ok(())
}

/// A free-list record that lists its own pages as free (resealed, so every checksum
/// holds): the free set then holds pages the chain still uses, and a commit would write
/// over the record. Opening must refuse it.
///
/// Catches: `free_chain::load` trusting that no record lies in the set it describes.
#[test]
fn a_free_list_record_listing_its_own_pages_is_corrupt() -> Result<()> {
    use support::image::{META_SLOT, newest_meta_slot, put_u64, seal_meta, u32_at, u64_at};
    const PAGE: usize = 4096;
    /// The meta's free-list reference (FORMAT.md#meta-page), and in it the checksum.
    const META_FREE_LIST: usize = 76;
    const REF_CHECKSUM: usize = 8;
    /// The blob header, then the record's header: `added` at 36, `removed` at 44.
    const PAYLOAD: usize = 24;
    let disk = SimDisk::new(Vec::new());
    let db = open_with_backend(disk.backend(), Options::new())?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0u32..2000 {
            t.insert(&i.to_be_bytes(), &[1; 100])?;
        }
    }
    w.commit()?;
    // Free every other leaf's worth of keys, so the newest record adds runs.
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in (0u32..2000).filter(|i| i % 200 < 100) {
            t.remove(&i.to_be_bytes())?;
        }
    }
    w.commit()?;
    drop(db);
    let mut img = disk.contents();
    let meta = newest_meta_slot(&img) * META_SLOT;
    let blob_page = u64_at(&img, meta + META_FREE_LIST);
    let blob = blob_page as usize * PAGE;
    let pages = (PAYLOAD as u64 + u64_at(&img, blob + 8)).div_ceil(PAGE as u64);
    let (added, removed) = (
        u64_at(&img, blob + PAYLOAD + 36),
        u64_at(&img, blob + PAYLOAD + 44),
    );
    assert_eq!(removed, 0, "a record that only frees");
    // The record's own run, put among the added runs in order (touching none).
    let runs_at = blob + PAYLOAD + 52;
    let mut runs: Vec<(u64, u64)> = (0..added as usize)
        .map(|i| {
            (
                u64_at(&img, runs_at + 16 * i),
                u64_at(&img, runs_at + 16 * i + 8),
            )
        })
        .collect();
    runs.push((blob_page, pages));
    runs.sort();
    assert!(
        runs.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0),
        "the record's run touches a freed run: {runs:?}"
    );
    let payload_len = 52 + 16 * runs.len();
    assert!(
        PAYLOAD + payload_len <= pages as usize * PAGE,
        "room in the blob"
    );
    put_u64(&mut img, blob + PAYLOAD + 36, runs.len() as u64);
    for (i, (s, n)) in runs.iter().enumerate() {
        put_u64(&mut img, runs_at + 16 * i, *s);
        put_u64(&mut img, runs_at + 16 * i + 8, *n);
    }
    // The blob's crc32 covers its whole run with the checksum field read as zero.
    let mut run = img[blob..blob + pages as usize * PAGE].to_vec();
    run[4..8].fill(0);
    let sum = crc32fast::hash(&run);
    img[blob + 4..blob + 8].copy_from_slice(&sum.to_le_bytes());
    let at = meta + META_FREE_LIST + REF_CHECKSUM;
    img[at..at + 4].copy_from_slice(&sum.to_le_bytes());
    seal_meta(&mut img, meta / META_SLOT);
    assert_eq!(u32_at(&img, at), sum);
    let disk = SimDisk::new(img);
    let opened = open_with_backend(disk.backend(), Options::new()).map(|_| ());
    let reason = expect_corrupted(opened, "open");
    assert!(reason.contains("its own pages as free"), "{reason}");
    Ok(())
}

/// Swaps the two children of the root of the only tree of `img` and reseals the pages
/// above them, so that every checksum holds.
fn swap_the_roots_two_children(img: &mut [u8]) {
    use support::image::{META_SLOT, META_TXN, REF_BYTES, catalog_leaf, child_refs, is_branch};
    use support::image::{leaf_values, newest_meta_slot, reseal_catalog, seal_page, target};
    const PAGE: usize = 4096;
    let (leaf, _) = catalog_leaf(img, PAGE);
    let (_, record) = leaf_values(img, leaf)[0].clone();
    let root = target(img, PAGE, record);
    assert!(is_branch(img, root));
    let refs = child_refs(img, root);
    assert_eq!(refs.len(), 2, "two leaves");
    let (a, b) = (refs[0], refs[1]);
    let first = img[a..a + REF_BYTES].to_vec();
    img.copy_within(b..b + REF_BYTES, a);
    img[b..b + REF_BYTES].copy_from_slice(&first);
    seal_page(img, root, PAGE, record);
    let txn = support::image::u64_at(img, newest_meta_slot(img) * META_SLOT + META_TXN);
    reseal_catalog(img, PAGE, txn);
}

/// Runs `change` in a write transaction on `img` and commits: it must fail with
/// `Corrupted` for `reason`, without a panic, and write nothing.
fn expect_refused(
    img: &[u8],
    what: &str,
    reason: &str,
    change: impl FnOnce(&mut mapkv::WriteTree) -> Result<()>,
) -> Result<()> {
    let disk = SimDisk::new(img.to_vec());
    let db = open_with_backend(disk.backend(), Options::new())?;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let w = db.begin_write()?;
        change(&mut w.open_tree("t")?)?;
        w.commit()
    }));
    let r = outcome.unwrap_or_else(|_| panic!("{what}: panicked"));
    let got = expect_corrupted(r, what);
    assert!(got.contains(reason), "{what}: {got}");
    drop(db);
    assert!(disk.contents() == img, "{what}: wrote to the file");
    Ok(())
}

/// Two leaves, [q, zzzzzz0, zzzzzz1] and [zzzzzz2, zzzzzz3] (keys that share 6 bytes,
/// but for "q"), with their parent's references swapped and every checksum resealed:
/// each leaf is sound alone, but the first one's keys now lie above the separator.
fn two_swapped_leaves() -> Result<Vec<u8>> {
    let disk = SimDisk::new(Vec::new());
    let db = open_with_backend(disk.backend(), Options::new())?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        t.insert(b"q", &[1; 1000])?;
        for (k, len) in [("zzzzzz0", 1000), ("zzzzzz1", 1000), ("zzzzzz2", 1500)] {
            t.insert(k.as_bytes(), &vec![2; len])?;
        }
        t.insert(b"zzzzzz3", &[2; 10])?;
    }
    w.commit()?;
    drop(db);
    let mut img = disk.contents();
    swap_the_roots_two_children(&mut img);
    Ok(img)
}

/// The walks over a key range on a parent whose leaves are swapped: each must stop with
/// `Corrupted` and write nothing.
///
/// Catches: `remove_range` and `retain` trusting the parent's keys. `remove_range`
/// freed the whole second leaf, whose keys its separator puts inside `zzzzzz2..`, and
/// deleted q, zzzzzz0 and zzzzzz1; `retain` stepped past the second leaf by the fence
/// of the first and never offered its keys to the predicate; a `retain` that removed
/// zzzzzz2 merged the leaves out of order.
#[test]
fn swapped_leaves_stop_range_removals_and_retain() -> Result<()> {
    let img = two_swapped_leaves()?;
    let outside = "outside its parent's range";
    expect_refused(
        &img,
        "a range removal that frees a leaf whole",
        outside,
        |t| t.remove_range(&b"zzzzzz2"[..]..).map(drop),
    )?;
    expect_refused(&img, "a range removal in a leaf", outside, |t| {
        t.remove_range(..=&b"q"[..]).map(drop)
    })?;
    expect_refused(&img, "a retain that keeps everything", outside, |t| {
        t.retain(|_, _| true).map(drop)
    })?;
    expect_refused(
        &img,
        "a retain whose removal merges the leaves",
        outside,
        |t| t.retain(|k, _| k != b"zzzzzz2").map(drop),
    )
}

/// Swapped leaves (resealed, so every checksum holds) that an insert would share cells
/// between: it must stop with `Corrupted` and write nothing.
///
/// Catches: `siblings::Pair` joining two pages without checking their order: the share
/// wrote an unsorted leaf. (A merge, which sealing made panic on a key shorter than the
/// bytes its slots skip, is covered by the unit tests of `node::siblings`.)
#[test]
fn siblings_out_of_order_stop_the_share() -> Result<()> {
    // A full leaf of twelve 300-byte entries, then a roomy one of four (the bulk
    // loader fills leaves): swapped, an insert into the full one shares with the roomy.
    let disk = SimDisk::new(Vec::new());
    let db = open_with_backend(disk.backend(), Options::new())?;
    let even = |i: u64| (2 * i).to_be_bytes();
    db.bulk_load("t", (0..16u64).map(|i| (even(i), vec![i as u8; 300])))?;
    drop(db);
    let mut img = disk.contents();
    swap_the_roots_two_children(&mut img);
    let what = "an insert that shares cells with the sibling";
    expect_refused(&img, what, "out of order", |t| {
        t.insert(&(2 * 13 + 1u64).to_be_bytes(), &[9; 300])
    })
}
