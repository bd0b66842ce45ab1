//! Slot prefixes and the bytes they skip (FORMAT.md#node-pages).
//!
//! Each slot holds four bytes of its key, so that most probes of a binary search compare
//! two integers and never touch a cell. Keys that share a long prefix (zero-padded
//! counters, paths, URLs) would all have the same first four bytes, and every probe
//! would then read a cell; so a node's slot prefixes start `skip` bytes into the keys,
//! `skip` being (at most) the length of the prefix every key of the node shares. It is
//! kept in the node header. A node skips only when its keys share at least four bytes,
//! when slot prefixes taken from the start would all be equal: below that they still
//! tell most keys apart, and a search of a node that skips first reads slot 0's key (to
//! check that the key sought begins with the skipped bytes), a cell it would mostly
//! not have read.
//!
//! The rule that searches rely on: every key of the node is at least `skip` bytes long
//! and begins with the first `skip` bytes of slot 0's key, and each slot's prefix is
//! `prefix_bytes(&key[skip..])`. `skip = 0` always satisfies it (files before version 4
//! have it everywhere). Edits keep it cheaply: a key about to join a node lowers the
//! node's `skip` if it does not share those bytes (`admit`), and a page about to be
//! written raises it to the longest shared prefix (`tighten`). Both rewrite every slot
//! prefix when `skip` changes, which is rare.

use std::cmp::Ordering;

use zerocopy::FromBytes;
use zerocopy::little_endian::U16;

use super::edit::node_header_mut;
use super::{NodeHeader, SLOT_BYTES, Slot, cell_header_bytes, slots_start};
use crate::page::PageKind;

/// The first four bytes of `key`, zero-padded. (A variable-length `copy_from_slice`
/// here compiled to a call to memcpy, a tenth of the time of a lookup in profiles.)
#[inline]
pub(super) fn prefix_bytes(key: &[u8]) -> [u8; 4] {
    if let Some(p) = key.first_chunk::<4>() {
        return *p;
    }
    let mut p = [0; 4];
    for (to, from) in p.iter_mut().zip(key) {
        *to = *from;
    }
    p
}

/// Compares a slot's prefix with a key's (as big-endian integers). Equal prefixes do not
/// mean equal keys ("a" and "a\0" pad alike).
#[inline]
pub(super) fn compare_prefix(slot_prefix: [u8; 4], key_prefix: u32) -> Ordering {
    u32::from_be_bytes(slot_prefix).cmp(&key_prefix)
}

/// Where `key` stands against `shared`, the bytes every key of a node begins with:
/// `Equal` if it begins with them too (its slot prefix comes after them), else `Less` or
/// `Greater` (it sorts before or after every key of the node).
#[inline]
pub(super) fn against_shared(key: &[u8], shared: &[u8]) -> Ordering {
    match key.get(..shared.len()) {
        Some(head) => head.cmp(shared),
        // Shorter than the shared bytes: before every key unless it differs earlier.
        None => key.cmp(shared),
    }
}

/// The `skip` of a dirty node's header.
#[inline]
pub(super) fn skip_of(page: &[u8]) -> usize {
    header_of(page).prefix_skip.get() as usize
}

/// Lowers the `skip` of the dirty node `page`, if needed, so that `key` (about to join
/// it) shares the bytes skipped. An empty node skips nothing.
pub(super) fn admit(page: &mut [u8], kind: PageKind, key: &[u8]) {
    let skip = skip_of(page);
    if skip == 0 {
        return;
    }
    let keep = match slot_count(page) {
        0 => 0,
        _ => common_len(&key_of(page, kind, 0)[..skip], key),
    };
    if keep < skip {
        set_skip(page, kind, worth_skipping(keep));
    }
}

/// The bytes to skip when keys share `shared` leading bytes: all of them if that leaves
/// the slot prefixes taken from the start all equal, else none.
fn worth_skipping(shared: usize) -> usize {
    match shared >= size_of::<[u8; 4]>() {
        true => shared.min(u16::MAX as usize),
        false => 0,
    }
}

/// Sets the `skip` of the dirty node `page` for the longest prefix its keys share (that
/// of its first and last keys, which are sorted), for a page about to be sealed.
pub(crate) fn tighten(page: &mut [u8], kind: PageKind) {
    let count = slot_count(page);
    let shared = match count {
        0 => 0,
        _ => common_len(key_of(page, kind, 0), key_of(page, kind, count - 1)),
    };
    let skip = worth_skipping(shared);
    if skip != skip_of(page) {
        set_skip(page, kind, skip);
    }
}

/// Sets `skip` and rewrites every slot prefix for it.
fn set_skip(page: &mut [u8], kind: PageKind, skip: usize) {
    node_header_mut(page).prefix_skip = U16::new(skip as u16);
    for i in 0..slot_count(page) {
        let prefix = prefix_bytes(past_skip(key_of(page, kind, i), skip));
        slot_mut(page, kind, i).prefix = prefix;
    }
}

/// `key` without its first `skip` bytes. A key shorter than that is in a page whose keys
/// are out of order, which only corrupt input can make (`siblings` refuses to join
/// pages out of order): its slot then reads as corrupt later instead of panicking now.
pub(super) fn past_skip(key: &[u8], skip: usize) -> &[u8] {
    key.get(skip..).unwrap_or_default()
}

fn common_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn header_of(page: &[u8]) -> &NodeHeader {
    NodeHeader::ref_from_prefix(page).expect("page size").0
}

fn slot_count(page: &[u8]) -> usize {
    header_of(page).page.count.get() as usize
}

fn slot_mut(page: &mut [u8], kind: PageKind, i: usize) -> &mut Slot {
    let at = slots_start(kind) + i * SLOT_BYTES;
    Slot::mut_from_bytes(&mut page[at..at + SLOT_BYTES]).expect("slot size")
}

/// The key of slot `i` of a dirty node: its slots and cells are consistent (the page was
/// checked before it was copied, or built here), so the offsets are in bounds.
fn key_of(page: &[u8], kind: PageKind, i: usize) -> &[u8] {
    let at = slots_start(kind) + i * SLOT_BYTES;
    let slot = Slot::ref_from_bytes(&page[at..at + SLOT_BYTES]).expect("slot size");
    let at = slot.offset.get() as usize + cell_header_bytes(kind);
    &page[at..at + slot.key_len.get() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{
        Cell, LeafValue, Node, ValueAlign, encode_leaf_cell, init, insert_cell, remove_cell,
    };
    use crate::page::{PageId, TxnId};
    use std::collections::BTreeSet;

    const ID: PageId = PageId(7);

    fn skip(page: &[u8]) -> usize {
        skip_of(page)
    }

    /// Inserts `key` where a search puts it; false if the page is full.
    fn insert(page: &mut [u8], key: &[u8]) -> bool {
        let i = Node::parse(page, ID)
            .unwrap()
            .search(key)
            .unwrap()
            .unwrap_err();
        let mut cell = Vec::new();
        encode_leaf_cell(&mut cell, key, &LeafValue::Inline(b"v"), ValueAlign::NONE);
        let cell = Cell { key, bytes: &cell };
        insert_cell(page, ID, PageKind::Leaf, i, cell).unwrap()
    }

    /// Every probe is found where the model puts it, and the page passes the checks.
    fn agrees(page: &[u8], model: &BTreeSet<Vec<u8>>, probes: &[Vec<u8>]) {
        let node = Node::parse(page, ID).unwrap();
        node.verify(None).unwrap();
        let keys: Vec<&Vec<u8>> = model.iter().collect();
        for p in probes.iter().chain(model.iter()) {
            let want = keys.binary_search(&p);
            assert_eq!(
                node.search(p).unwrap(),
                want,
                "key {p:?}, skip {}",
                skip(page)
            );
        }
    }

    #[test]
    fn nodes_skip_the_bytes_all_their_keys_share_and_search_past_them() {
        let mut page = vec![0; 4096];
        init(&mut page, PageKind::Leaf, TxnId(1));
        let mut model = BTreeSet::new();
        for i in (100..200u32).step_by(2) {
            let key = format!("user:{i:06}").into_bytes();
            assert!(insert(&mut page, &key));
            model.insert(key);
        }
        assert_eq!(skip(&page), 0, "inserts into an empty node skip nothing");
        tighten(&mut page, PageKind::Leaf);
        assert_eq!(
            skip(&page),
            "user:0001".len(),
            "tightened to the shared bytes"
        );
        let probes: Vec<Vec<u8>> = [
            &b""[..],
            b"a",
            b"user:",
            b"user:000",
            b"user:0000",
            b"user:000101",
            b"user:000150x",
            b"user:0001999",
            b"user:0002",
            b"user:001",
            b"user;",
            b"z",
        ]
        .iter()
        .map(|p| p.to_vec())
        .collect();
        agrees(&page, &model, &probes);
        // A key that shares fewer bytes lowers the skip: below four, to nothing.
        let key = b"user:1".to_vec();
        assert!(insert(&mut page, &key));
        model.insert(key);
        assert_eq!(skip(&page), "user:".len());
        agrees(&page, &model, &probes);
        let key = b"us".to_vec();
        assert!(insert(&mut page, &key));
        model.insert(key);
        assert_eq!(skip(&page), 0, "two shared bytes are not worth skipping");
        agrees(&page, &model, &probes);
    }

    /// Random keys over a small alphabet with long shared runs, inserted and removed in
    /// random order, tightened now and then: searches agree with a sorted model.
    #[test]
    fn random_edits_keep_searches_right() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut skipped = 0;
        for round in 0..200 {
            let mut page = vec![0; 4096];
            init(&mut page, PageKind::Leaf, TxnId(1));
            let mut model: BTreeSet<Vec<u8>> = BTreeSet::new();
            let stem: Vec<u8> = (0..next(12)).map(|_| b"ab"[next(2) as usize]).collect();
            let key = |next: &mut dyn FnMut(u64) -> u64| {
                // Mostly the whole stem or nearly: long shared runs, and some that part.
                let cut = next(stem.len().min(3) as u64 + 1) as usize;
                let mut k = stem[..stem.len() - cut].to_vec();
                k.extend((0..next(6)).map(|_| b"abc"[next(3) as usize]));
                k
            };
            let probes: Vec<Vec<u8>> = (0..40).map(|_| key(&mut next)).collect();
            for _ in 0..150 {
                match next(5) {
                    0 if !model.is_empty() => {
                        let i = next(model.len() as u64) as usize;
                        let k = model.iter().nth(i).unwrap().clone();
                        remove_cell(&mut page, ID, i).unwrap();
                        model.remove(&k);
                    }
                    1 => {
                        tighten(&mut page, PageKind::Leaf);
                        skipped += (skip(&page) > 0) as u32;
                    }
                    _ => {
                        let k = key(&mut next);
                        if !model.contains(&k) && insert(&mut page, &k) {
                            model.insert(k);
                        }
                    }
                }
                agrees(&page, &model, &probes);
            }
            assert!(round > 0 || !model.is_empty());
        }
        assert!(skipped > 500, "nodes skipped bytes {skipped} times");
    }

    /// A page that claims to skip more bytes than its first key has is corrupt: searches
    /// and checks say so rather than panic.
    #[test]
    fn a_skip_longer_than_the_keys_is_corruption() {
        let mut page = vec![0; 4096];
        init(&mut page, PageKind::Leaf, TxnId(1));
        for k in [&b"abcdefgh1"[..], b"abcdefgh2"] {
            assert!(insert(&mut page, k));
        }
        node_header_mut(&mut page).prefix_skip = U16::new(12);
        let node = Node::parse(&page, ID).unwrap();
        assert!(matches!(
            node.search(b"abcdefgh1"),
            Err(crate::Error::Corrupted { .. })
        ));
        assert!(node.verify(None).is_err());
        node_header_mut(&mut page).prefix_skip = U16::new(4);
        let node = Node::parse(&page, ID).unwrap();
        assert!(
            node.verify(None).is_err(),
            "slot prefixes written for no skip"
        );
    }
}
