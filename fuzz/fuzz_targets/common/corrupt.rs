//! Valid database images to corrupt; a walker that finds every reference reachable from
//! the newest meta slot and reseals (recomputes the checksums of) what it reaches after an
//! edit; and crafted edits that need the format: trees turned into DAGs, references given
//! another writer `txn`. All of it reads the format from FORMAT.md by hand (it must not
//! trust the engine it tests) and bounds every offset.

use std::collections::HashMap;

use mapkv::testing::open_with_backend;
use mapkv::{Durability, Options};

use super::mem;

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

/// Builds the variants: each is a few commits on an in-memory file. The last has keys of
/// 900 bytes that differ only at their end, so separators are as long and branches hold
/// four or five children: trees five levels deep (for DAGs and deep descents).
pub fn build_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for (page_size, trees, keys, clean, long) in [
        (4096, 3, 400, true, false),
        (4096, 3, 400, false, false),
        (8192, 120, 30, true, false),
        (4096, 1, 40, false, false),
        (4096, 2, 600, false, true),
    ] {
        let file = mem::file(Vec::new());
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
                    let key = if long {
                        format!("{}-{k:05}", "p".repeat(900))
                    } else {
                        format!("key-{k:05}-{}", "p".repeat(k as usize % 40))
                    };
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
            file.contents()
        } else {
            let image = file.contents();
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

/// Offset of the meta slot that has the magic and the engine tries first: the newest
/// `txn`, then the larger `durable_before` (a clean close writes the newest commit again,
/// sealed, into the other slot), then slot 0.
pub fn newest_meta(img: &[u8]) -> Option<usize> {
    (0..2)
        .filter(|s| img.get(s * META_SLOT..s * META_SLOT + 8) == Some(&MAGIC[..]))
        .max_by_key(|s| {
            let at = s * META_SLOT;
            (
                u64_at(img, at + 16),
                u64_at(img, at + 24),
                std::cmp::Reverse(*s),
            )
        })
        .map(|s| s * META_SLOT)
        .filter(|m| img.len() >= m + 100)
}

/// The `txn` of the newest meta slot.
pub fn newest_txn(img: &[u8]) -> Option<u64> {
    u64_at(img, newest_meta(img)? + 16)
}

/// Recomputes the checksums of everything reachable from the newest meta slot, children
/// before parents, so that edited pages pass verification and reach the decoders. (Not
/// the older slot: pages only it reaches may have been reused since.)
pub fn reseal(img: &mut [u8], page_size: usize) {
    walk(img, page_size, true);
}

/// What a child reference points at, by where it lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum RefKind {
    /// The root of the catalog (in the meta).
    Catalog,
    /// The free-list blob (in the meta).
    FreeList,
    /// The root of a named tree (in its tree record, a catalog value).
    TreeRoot,
    /// A child of a branch (the leftmost, or a cell's).
    Branch,
    /// An overflow blob (in a leaf cell).
    Overflow,
}

/// A child reference found in the image.
#[derive(Clone, Copy, Debug)]
pub struct RefAt {
    /// Offset of the 20-byte reference; for `Catalog` and `TreeRoot`, of the whole
    /// 36-byte tree record (its depth at `at + 28`).
    pub at: usize,
    pub kind: RefKind,
    /// The tree it belongs to: 0 the catalog, then the named trees in the order found.
    pub tree: usize,
    /// Levels from the page it points to down to the leaves (1: a leaf); 0 for a blob.
    pub levels: u32,
}

/// Walks everything reachable from the newest meta slot, each page once (a page reached
/// again, as in a DAG, is not walked again; with `seal` its checksum is copied into the
/// second reference), and returns every reference met, parents before children. With
/// `seal`, recomputes the checksums children before parents. Bounded: a page budget,
/// depths at most 40, every offset checked.
pub fn walk(img: &mut [u8], page_size: usize, seal: bool) -> Vec<RefAt> {
    let mut w = Walker {
        img,
        page_size,
        seal,
        budget: 20_000,
        done: HashMap::new(),
        refs: Vec::new(),
        trees: 0,
    };
    let Some(m) = newest_meta(w.img) else {
        return w.refs;
    };
    let depth = u32_at(w.img, m + 40 + 28).unwrap_or(0).min(40);
    w.refs.push(RefAt {
        at: m + 40,
        kind: RefKind::Catalog,
        tree: 0,
        levels: depth,
    });
    w.node(m + 40, depth, true, 0);
    w.refs.push(RefAt {
        at: m + 76,
        kind: RefKind::FreeList,
        tree: 0,
        levels: 0,
    });
    w.blob(m + 76);
    if seal {
        let sum = crc32fast::hash(&w.img[m..m + 96]);
        w.img[m + 96..m + 100].copy_from_slice(&sum.to_le_bytes());
    }
    w.refs
}

struct Walker<'a> {
    img: &'a mut [u8],
    page_size: usize,
    seal: bool,
    budget: u32,
    /// Pages walked, by offset: their checksum once sealed (None while being walked, or
    /// when not sealing).
    done: HashMap<usize, Option<u32>>,
    refs: Vec<RefAt>,
    trees: usize,
}

impl Walker<'_> {
    /// True if the page at `start` is to be walked now; if it was walked already, copies
    /// its checksum into the reference at `ref_at` (when sealing).
    fn first_visit(&mut self, start: usize, ref_at: usize) -> bool {
        match self.done.get(&start) {
            None => {
                self.done.insert(start, None);
                true
            }
            Some(sum) => {
                if let (true, Some(sum)) = (self.seal, sum) {
                    self.img[ref_at + 8..ref_at + 12].copy_from_slice(&sum.to_le_bytes());
                }
                false
            }
        }
    }

    /// Seals `start..end` and stores the checksum in the reference at `ref_at`.
    fn seal(&mut self, start: usize, end: usize, ref_at: usize) {
        if !self.seal {
            return;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&self.img[start..start + 4]);
        h.update(&[0; 4]);
        h.update(&self.img[start + 8..end]);
        let sum = h.finalize();
        self.img[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
        self.img[ref_at + 8..ref_at + 12].copy_from_slice(&sum.to_le_bytes());
        self.done.insert(start, Some(sum));
    }

    fn blob(&mut self, ref_at: usize) {
        let Some((start, _)) = page_range(self.img, self.page_size, ref_at, 1) else {
            return;
        };
        let Some(len) = u64_at(self.img, start + 16) else {
            return;
        };
        let pages = (24 + u128::from(len)).div_ceil(self.page_size as u128);
        let Ok(pages) = u64::try_from(pages) else {
            return;
        };
        if let Some((start, end)) = page_range(self.img, self.page_size, ref_at, pages)
            && self.first_visit(start, ref_at)
        {
            self.seal(start, end, ref_at);
        }
    }

    /// A node at `ref_at` with `levels` levels below it (1: a leaf), in tree `tree`. In
    /// the catalog, leaf values are tree records whose trees are walked first.
    fn node(&mut self, ref_at: usize, levels: u32, catalog: bool, tree: usize) {
        if levels == 0 || self.budget == 0 {
            return;
        }
        let Some((start, end)) = page_range(self.img, self.page_size, ref_at, 1) else {
            return;
        };
        if !self.first_visit(start, ref_at) {
            return;
        }
        self.budget -= 1;
        let kind = self.img[start];
        if kind == 1 && start + 44 <= end {
            self.child(start + 24, levels - 1, catalog, tree);
        }
        let count = u16_at(self.img, start + 2).unwrap_or(0);
        let slots = if kind == 1 { start + 44 } else { start + 24 };
        for i in 0..count {
            let s = slots + i * 8;
            if s + 8 > end {
                break;
            }
            let (Some(off), Some(key_len)) = (u16_at(self.img, s + 4), u16_at(self.img, s + 6))
            else {
                break;
            };
            let cell = start + off;
            if kind == 1 {
                if cell + 20 <= end {
                    self.child(cell, levels - 1, catalog, tree);
                }
            } else if kind == 2 {
                let Some(raw) = u32_at(self.img, cell).filter(|_| cell + 4 <= end) else {
                    continue;
                };
                let value_at = cell + 4 + key_len;
                if raw & (1 << 31) != 0 {
                    if value_at + 28 <= end {
                        self.refs.push(RefAt {
                            at: value_at,
                            kind: RefKind::Overflow,
                            tree,
                            levels: 0,
                        });
                        self.blob(value_at);
                    }
                } else if catalog && raw == 36 && value_at + 36 <= end {
                    self.trees += 1;
                    let depth = u32_at(self.img, value_at + 28).unwrap_or(0).min(40);
                    self.refs.push(RefAt {
                        at: value_at,
                        kind: RefKind::TreeRoot,
                        tree: self.trees,
                        levels: depth,
                    });
                    self.node(value_at, depth, false, self.trees);
                }
            }
        }
        self.seal(start, end, ref_at);
    }

    fn child(&mut self, ref_at: usize, levels: u32, catalog: bool, tree: usize) {
        self.refs.push(RefAt {
            at: ref_at,
            kind: RefKind::Branch,
            tree,
            levels,
        });
        self.node(ref_at, levels, catalog, tree);
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

/// The tree records (the catalog's in the meta, then the named trees'), as references.
fn roots(refs: &[RefAt]) -> Vec<RefAt> {
    refs.iter()
        .filter(|r| matches!(r.kind, RefKind::Catalog | RefKind::TreeRoot))
        .copied()
        .collect()
}

/// Offsets of the child references of the branch at `start..end`: the leftmost, then
/// one per cell.
fn branch_children(img: &[u8], start: usize, end: usize) -> Vec<usize> {
    let mut out = vec![start + 24];
    let count = u16_at(img, start + 2).unwrap_or(0);
    for i in 0..count {
        let s = start + 44 + i * 8;
        match u16_at(img, s + 4) {
            Some(off) if s + 8 <= end && start + off + 20 <= end => out.push(start + off),
            _ => break,
        }
    }
    out
}

/// Rewrites every child reference of a branch to the one at index `child` (modulo), then
/// does the same in that child, `levels` levels down from the root of tree `tree` (0: the
/// catalog), and reseals. The tree keeps its shape and its page count drops, but a walk
/// that does not remember pages still takes as many steps as before.
pub fn collapse(img: &mut [u8], page_size: usize, tree: usize, levels: u32, child: usize) {
    let roots = roots(&walk(img, page_size, false));
    let Some(root) = roots.get(tree % roots.len().max(1)) else {
        return;
    };
    let (mut ref_at, mut left) = (root.at, root.levels);
    for _ in 0..levels {
        let Some((start, end)) = page_range(img, page_size, ref_at, 1) else {
            break;
        };
        if left <= 1 || img[start] != 1 {
            break;
        }
        let children = branch_children(img, start, end);
        let pick = children[child % children.len()];
        let target: [u8; 20] = img[pick..pick + 20].try_into().expect("20 bytes");
        for c in children {
            img[c..c + 20].copy_from_slice(&target);
        }
        ref_at = start + 24;
        left -= 1;
    }
    reseal(img, page_size);
}

/// Rewrites pages of tree `tree` (0: the catalog) into `levels` (1 to 8, fewer if the
/// trees have fewer pages) branches as wide as a page allows (135 children at 4 KiB),
/// every child of each the next one down, over one of the tree's leaves (emptied if
/// `empty_leaf`: a walk then finds no entry to stop at). Everything is written by the
/// newest commit's `txn`; `verify` also sets the meta's `durable_before` below it, so
/// that opening verifies the DAG. Resealed. A walk that does not remember pages takes
/// 135^levels steps.
pub fn widen(
    img: &mut [u8],
    page_size: usize,
    tree: usize,
    levels: u32,
    empty_leaf: bool,
    verify: bool,
) {
    let Some(m) = newest_meta(img) else {
        return;
    };
    let Some(txn) = u64_at(img, m + 16) else {
        return;
    };
    let refs = walk(img, page_size, false);
    let roots = roots(&refs);
    let Some(root) = roots.get(tree % roots.len().max(1)).copied() else {
        return;
    };
    // The tree's node pages, root first; then, in case it has too few, other trees' (never
    // the catalog's, which must still lead to the tree).
    let own = |r: &&RefAt| r.at == root.at || (r.tree == root.tree && r.kind == RefKind::Branch);
    let spare = |r: &&RefAt| {
        r.tree != 0 && r.tree != root.tree && matches!(r.kind, RefKind::Branch | RefKind::TreeRoot)
    };
    let mut pages: Vec<usize> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in refs.iter().filter(own).chain(refs.iter().filter(spare)) {
        if let Some((start, _)) = page_range(img, page_size, r.at, 1)
            && seen.insert(start)
        {
            pages.push(start);
        }
    }
    let Some(leaf) = pages.iter().position(|&p| img[p] == 2) else {
        return;
    };
    let leaf = pages.remove(leaf);
    let levels = (levels as usize).clamp(1, 8).min(pages.len());
    if levels == 0 {
        return;
    }
    let id = |start: usize| (start / page_size) as u64;
    for j in 0..levels {
        let below = pages.get(j + 1).filter(|_| j + 1 < levels).copied();
        let child = id(below.unwrap_or(leaf));
        wide_branch(&mut img[pages[j]..pages[j] + page_size], child, txn);
    }
    let bottom = &mut img[leaf..leaf + page_size];
    if empty_leaf {
        bottom.fill(0);
        bottom[0] = 2;
        bottom[16..20].copy_from_slice(&(page_size as u32).to_le_bytes());
    }
    bottom[8..16].copy_from_slice(&txn.to_le_bytes());
    img[root.at..root.at + 8].copy_from_slice(&id(pages[0]).to_le_bytes());
    img[root.at + 12..root.at + 20].copy_from_slice(&txn.to_le_bytes());
    img[root.at + 28..root.at + 32].copy_from_slice(&(levels as u32 + 1).to_le_bytes());
    if verify {
        img[m + 24..m + 32].copy_from_slice(&txn.saturating_sub(1).to_le_bytes());
    }
    reseal(img, page_size);
}

/// A branch page with as many cells as fit (keys: 2-byte big-endian 1, 2, ...), every
/// child reference to page `child` written by `txn` (checksums left to the resealer).
fn wide_branch(page: &mut [u8], child: u64, txn: u64) {
    const CELL: usize = 20 + 2;
    let size = page.len();
    let n = (size - 44) / (8 + CELL);
    let mut child_ref = [0u8; 20];
    child_ref[..8].copy_from_slice(&child.to_le_bytes());
    child_ref[12..].copy_from_slice(&txn.to_le_bytes());
    page.fill(0);
    page[0] = 1;
    page[2..4].copy_from_slice(&(n as u16).to_le_bytes());
    page[8..16].copy_from_slice(&txn.to_le_bytes());
    page[16..20].copy_from_slice(&((size - n * CELL) as u32).to_le_bytes());
    page[24..44].copy_from_slice(&child_ref);
    for i in 0..n {
        let key = (i as u16 + 1).to_be_bytes();
        let off = size - (i + 1) * CELL;
        page[off..off + 20].copy_from_slice(&child_ref);
        page[off + 20..off + CELL].copy_from_slice(&key);
        let slot = 44 + i * 8;
        page[slot..slot + 2].copy_from_slice(&key);
        page[slot + 4..slot + 6].copy_from_slice(&(off as u16).to_le_bytes());
        page[slot + 6..slot + 8].copy_from_slice(&2u16.to_le_bytes());
    }
}

/// Sets the writer `txn` of the `pick`-th (modulo) reference of `kind` reachable from the
/// newest meta to `to(its txn, the meta's txn)`, and the page's own header `txn` too if
/// `header_too`. Checksums are not touched (reseal after, or not).
pub fn set_ref_txn(
    img: &mut [u8],
    page_size: usize,
    kind: RefKind,
    pick: usize,
    header_too: bool,
    to: impl FnOnce(u64, u64) -> u64,
) {
    let Some(snapshot) = newest_txn(img) else {
        return;
    };
    let refs: Vec<RefAt> = walk(img, page_size, false)
        .into_iter()
        .filter(|r| r.kind == kind)
        .collect();
    let Some(r) = refs.get(pick % refs.len().max(1)) else {
        return;
    };
    let Some(now) = u64_at(img, r.at + 12) else {
        return;
    };
    let txn = to(now, snapshot).to_le_bytes();
    img[r.at + 12..r.at + 20].copy_from_slice(&txn);
    if header_too && let Some((start, _)) = page_range(img, page_size, r.at, 1) {
        img[start + 8..start + 16].copy_from_slice(&txn);
    }
}
