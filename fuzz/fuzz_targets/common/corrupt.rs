//! Valid database images to corrupt, and a resealer that recomputes every checksum
//! reachable from the meta slots after an edit. The resealer reads the format from
//! FORMAT.md by hand (it must not trust the engine it tests) and bounds every offset.

use mapkv::testing::open_with_backend;
use mapkv::{Durability, Options};

use super::mem::MemFile;

pub struct Variant {
    pub page_size: usize,
    pub image: Vec<u8>,
}

const META_SLOT: usize = 4096;
const MAGIC: &[u8; 8] = b"mapkv\0db";

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The file cut to the largest `page_count` its meta slots name (growth steps dropped).
fn trimmed(mut image: Vec<u8>, page_size: usize) -> Vec<u8> {
    let end = (0..2)
        .filter_map(|s| u64_at(&image, s * META_SLOT + 32))
        .max()
        .unwrap_or(0) as usize
        * page_size;
    image.truncate(end.max(2 * META_SLOT));
    image
}

fn value(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j / 7) as u8).collect()
}

/// Builds the variants: each is a few commits on an in-memory file.
pub fn build_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for (page_size, trees, keys, clean) in [
        (4096, 3, 400, true),
        (4096, 3, 400, false),
        (8192, 120, 30, true),
        (4096, 1, 40, false),
    ] {
        let file = MemFile::default();
        let db =
            open_with_backend(file.backend(), Options::new().page_size(page_size)).expect("create");
        for round in 0..3u32 {
            let mut wtx = db.begin_write().expect("begin_write");
            if round == 2 && !clean {
                wtx.set_durability(Durability::None);
            }
            for t in 0..trees {
                let mut tree = wtx.open_tree(&format!("tree-{t:03}")).expect("open_tree");
                for k in 0..keys {
                    let key = format!("key-{k:05}-{}", "p".repeat(k as usize % 40));
                    match (k + round) % 5 {
                        0 if round > 0 => {
                            tree.remove(key.as_bytes()).expect("remove");
                        }
                        1 if k % 50 == 1 => {
                            // Overflow blobs of one to three pages.
                            let len = page_size / 2 + (k as usize * 997) % (2 * page_size);
                            tree.insert(key.as_bytes(), &value(k, len)).expect("insert");
                        }
                        _ => tree
                            .insert(key.as_bytes(), &value(k, (k as usize) % 90))
                            .expect("insert"),
                    }
                }
            }
            if round == 1 {
                wtx.delete_tree(&format!("tree-{:03}", trees - 1))
                    .expect("delete_tree");
            }
            wtx.commit().expect("commit");
        }
        // A reader-free handle: later commits have freed pages, so the free list is not
        // empty. `clean` closes the file; otherwise the image is what a kill -9 leaves
        // (recovery then verifies the newest commit's pages).
        let image = if clean {
            drop(db);
            file.0.lock().clone()
        } else {
            let image = file.0.lock().clone();
            drop(db);
            image
        };
        out.push(Variant {
            page_size,
            image: trimmed(image, page_size),
        });
    }
    out
}

/// Recomputes the checksums of everything reachable from the newest meta slot, children
/// before parents, so that edited pages pass verification and reach the decoders. (Not
/// the older slot: pages only it reaches may have been reused since.)
pub fn reseal(img: &mut [u8], page_size: usize) {
    let mut budget = 20_000u32;
    // The slot the engine tries first: the newest `txn`, then the larger `durable_before`
    // (a clean close writes the newest commit again, sealed, into the other slot), then
    // slot 0.
    let newest = (0..2)
        .filter(|s| img.get(s * META_SLOT..s * META_SLOT + 8) == Some(&MAGIC[..]))
        .max_by_key(|s| {
            let at = s * META_SLOT;
            (
                u64_at(img, at + 16),
                u64_at(img, at + 24),
                std::cmp::Reverse(*s),
            )
        });
    if let Some(slot) = newest {
        let m = slot * META_SLOT;
        if img.len() < m + 100 {
            return;
        }
        let depth = u32_at(img, m + 40 + 28).unwrap_or(0);
        reseal_node(img, page_size, m + 40, depth.min(40), true, &mut budget);
        reseal_blob(img, page_size, m + 76);
        let sum = crc32fast::hash(&img[m..m + 96]);
        img[m + 96..m + 100].copy_from_slice(&sum.to_le_bytes());
    }
}

fn page_range(img: &[u8], page_size: usize, ref_at: usize, pages: u64) -> Option<(usize, usize)> {
    let id = u64_at(img, ref_at)?;
    if id == 0 {
        return None;
    }
    let start = usize::try_from(id.checked_mul(page_size as u64)?).ok()?;
    let end = start.checked_add(usize::try_from(pages).ok()?.checked_mul(page_size)?)?;
    (end <= img.len() && start >= 2 * META_SLOT).then_some((start, end))
}

/// Seals `start..end` and stores the checksum in the reference at `ref_at`.
fn seal(img: &mut [u8], start: usize, end: usize, ref_at: usize) {
    let mut h = crc32fast::Hasher::new();
    h.update(&img[start..start + 4]);
    h.update(&[0; 4]);
    h.update(&img[start + 8..end]);
    let sum = h.finalize().to_le_bytes();
    img[start + 4..start + 8].copy_from_slice(&sum);
    img[ref_at + 8..ref_at + 12].copy_from_slice(&sum);
}

fn reseal_blob(img: &mut [u8], page_size: usize, ref_at: usize) {
    let Some((start, _)) = page_range(img, page_size, ref_at, 1) else {
        return;
    };
    let Some(len) = u64_at(img, start + 16) else {
        return;
    };
    let pages = (24 + u128::from(len)).div_ceil(page_size as u128);
    let Ok(pages) = u64::try_from(pages) else {
        return;
    };
    if let Some((start, end)) = page_range(img, page_size, ref_at, pages) {
        seal(img, start, end, ref_at);
    }
}

/// A node at `ref_at` with `levels` levels below it (1: a leaf). In the catalog, leaf
/// values are tree records whose trees are resealed first.
fn reseal_node(
    img: &mut [u8],
    page_size: usize,
    ref_at: usize,
    levels: u32,
    catalog: bool,
    budget: &mut u32,
) {
    if levels == 0 || *budget == 0 {
        return;
    }
    *budget -= 1;
    let Some((start, end)) = page_range(img, page_size, ref_at, 1) else {
        return;
    };
    let kind = img[start];
    let count = u16_at(img, start + 2).unwrap_or(0);
    let slots = if kind == 1 { start + 44 } else { start + 24 };
    for i in 0..count {
        let s = slots + i * 8;
        if s + 8 > end {
            break;
        }
        let (Some(off), Some(key_len)) = (u16_at(img, s + 4), u16_at(img, s + 6)) else {
            break;
        };
        let cell = start + off;
        if kind == 1 {
            if cell + 20 <= end {
                reseal_node(img, page_size, cell, levels - 1, catalog, budget);
            }
        } else if kind == 2 {
            let Some(raw) = u32_at(img, cell).filter(|_| cell + 4 <= end) else {
                continue;
            };
            let value_at = cell + 4 + key_len;
            if raw & (1 << 31) != 0 {
                if value_at + 28 <= end {
                    reseal_blob(img, page_size, value_at);
                }
            } else if catalog && raw == 36 && value_at + 36 <= end {
                let depth = u32_at(img, value_at + 28).unwrap_or(0);
                reseal_node(img, page_size, value_at, depth.min(40), false, budget);
            }
        }
    }
    if kind == 1 && start + 44 <= end {
        reseal_node(img, page_size, start + 24, levels - 1, catalog, budget);
    }
    seal(img, start, end, ref_at);
}
