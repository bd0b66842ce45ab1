//! Reads and edits database images by hand, from FORMAT.md rather than through the engine
//! the tests check: meta fields, node slots and child references, and resealing an edited
//! page into the reference that points at it (children before parents, up to the meta).
//! For well-formed images only: it indexes without bounds checks and panics on garbage.

/// Each meta slot is 4096 bytes at `slot × 4096`.
pub const META_SLOT: usize = 4096;
/// Offsets in a meta slot (FORMAT.md#meta-page).
pub const META_VERSION: usize = 8;
pub const META_TXN: usize = 16;
pub const META_DURABLE_BEFORE: usize = 24;
pub const META_CATALOG: usize = 40;
const META_CHECKSUM: usize = 96;
/// Offsets in a tree record (FORMAT.md#tree-record), which starts with the root's
/// reference.
pub const RECORD_ENTRIES: usize = 20;
/// Bytes of a child reference: page u64, checksum u32, txn u64.
pub const REF_BYTES: usize = 20;

const BRANCH: u8 = 1;
const LEAF: u8 = 2;

pub fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The slot whose meta has the highest (txn, durable_before), as recovery orders them.
pub fn newest_meta_slot(img: &[u8]) -> usize {
    (0..2)
        .max_by_key(|s| {
            let m = s * META_SLOT;
            (
                u64_at(img, m + META_TXN),
                u64_at(img, m + META_DURABLE_BEFORE),
            )
        })
        .unwrap()
}

/// Recomputes the checksum of the meta in `slot`.
pub fn seal_meta(img: &mut [u8], slot: usize) {
    let m = slot * META_SLOT;
    let sum = crc32fast::hash(&img[m..m + META_CHECKSUM]);
    img[m + META_CHECKSUM..m + META_CHECKSUM + 4].copy_from_slice(&sum.to_le_bytes());
}

/// Byte offset of the page the reference at `ref_at` points to.
pub fn target(img: &[u8], page_size: usize, ref_at: usize) -> usize {
    u64_at(img, ref_at) as usize * page_size
}

/// Offsets of the child references of the branch page at `page`, leftmost first.
pub fn child_refs(img: &[u8], page: usize) -> Vec<usize> {
    assert_eq!(img[page], BRANCH, "a branch page at {page}");
    let count = u16_at(img, page + 2);
    let mut refs = vec![page + 24];
    for i in 0..count {
        let slot = page + 44 + 8 * i;
        refs.push(page + u16_at(img, slot + 4)); // the cell starts with the reference
    }
    refs
}

/// The inline values of the leaf page at `page`: (key, offset of the value).
pub fn leaf_values(img: &[u8], page: usize) -> Vec<(Vec<u8>, usize)> {
    assert_eq!(img[page], LEAF, "a leaf page at {page}");
    let count = u16_at(img, page + 2);
    (0..count)
        .map(|i| {
            let slot = page + 24 + 8 * i;
            let cell = page + u16_at(img, slot + 4);
            let key_len = u16_at(img, slot + 6);
            assert_eq!(u32_at(img, cell) & (1 << 31), 0, "an inline value");
            let key = img[cell + 4..cell + 4 + key_len].to_vec();
            (key, cell + 4 + key_len)
        })
        .collect()
}

pub fn is_branch(img: &[u8], page: usize) -> bool {
    img[page] == BRANCH
}

/// Seals the page at `page` (one page of `page_size` bytes) and stores its checksum in
/// the reference at `ref_at`.
pub fn seal_page(img: &mut [u8], page: usize, page_size: usize, ref_at: usize) {
    let mut h = crc32fast::Hasher::new();
    h.update(&img[page..page + 4]);
    h.update(&[0; 4]);
    h.update(&img[page + 8..page + page_size]);
    let sum = h.finalize().to_le_bytes();
    img[page + 4..page + 8].copy_from_slice(&sum);
    img[ref_at + 8..ref_at + 12].copy_from_slice(&sum);
}

/// The catalog leaf of the newest meta (a catalog of one page) and that meta's slot.
pub fn catalog_leaf(img: &[u8], page_size: usize) -> (usize, usize) {
    let slot = newest_meta_slot(img);
    let page = target(img, page_size, slot * META_SLOT + META_CATALOG);
    assert!(!is_branch(img, page), "a catalog of one leaf");
    (page, slot)
}

/// After editing tree records in the catalog leaf: reseals it and the newest meta, and
/// copies that meta into the other slot too (so recovery has no older commit to fall
/// back to), with `durable_before` set as given.
pub fn reseal_catalog(img: &mut [u8], page_size: usize, durable_before: u64) {
    let (page, slot) = catalog_leaf(img, page_size);
    let m = slot * META_SLOT;
    seal_page(img, page, page_size, m + META_CATALOG);
    put_u64(img, m + META_DURABLE_BEFORE, durable_before);
    seal_meta(img, slot);
    let meta = img[m..m + META_SLOT].to_vec();
    let other = (1 - slot) * META_SLOT;
    img[other..other + META_SLOT].copy_from_slice(&meta);
}
