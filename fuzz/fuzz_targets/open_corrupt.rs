//! A small valid database (one of a few variants built once, together holding every page
//! kind: branches, leaves, overflow blobs, the free list, a catalog deeper than one page)
//! with fuzzer-chosen byte edits, page copies, truncations and extensions, optionally
//! resealed (every checksum on the way from the meta recomputed, so the edit reaches the
//! decoders instead of stopping at a checksum). Then: open, check, read everything, write
//! a little, close, reopen. Errors are allowed; panics, crashes, hangs and huge
//! allocations are not.

#![no_main]

#[path = "common/corrupt.rs"]
mod corrupt;
#[path = "common/mem.rs"]
mod mem;

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mapkv::testing::open_with_backend;
use mapkv::{Database, Durability, Options};

use corrupt::{Variant, build_variants, reseal};
use mem::MemFile;

#[derive(Arbitrary, Debug)]
enum Edit {
    Byte {
        page: u16,
        offset: u16,
        value: u8,
    },
    Xor {
        page: u16,
        offset: u16,
        mask: u8,
    },
    U16 {
        page: u16,
        offset: u16,
        value: u16,
    },
    U32 {
        page: u16,
        offset: u16,
        value: u32,
    },
    U64 {
        page: u16,
        offset: u16,
        value: u64,
    },
    /// Small numbers are the interesting ones for counts, lengths and page ids.
    Small {
        page: u16,
        offset: u16,
        value: u8,
        width: u8,
    },
    Fill {
        page: u16,
        offset: u16,
        len: u16,
        value: u8,
    },
    CopyPage {
        from: u16,
        to: u16,
    },
    ZeroPage {
        page: u16,
    },
    Truncate {
        pages: u16,
        bytes: u16,
    },
    Extend {
        pages: u8,
        fill: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    variant: u8,
    edits: Vec<Edit>,
    reseal: bool,
    /// A real file (read through the map) when this is 0 mod 32.
    file: u8,
    writes: Vec<(u16, u16)>,
}

fn variants() -> &'static [Variant] {
    static V: OnceLock<Vec<Variant>> = OnceLock::new();
    V.get_or_init(build_variants)
}

fn apply(img: &mut Vec<u8>, page_size: usize, edit: &Edit) {
    let pages = img.len() / page_size;
    if pages == 0 {
        return;
    }
    let len = img.len();
    let at = |page: u16, offset: u16, width: usize| -> Option<usize> {
        let start = (page as usize % pages) * page_size + (offset as usize % page_size);
        (start + width <= len).then_some(start)
    };
    let put = |img: &mut Vec<u8>, page: u16, offset: u16, bytes: &[u8]| {
        if let Some(s) = at(page, offset, bytes.len()) {
            img[s..s + bytes.len()].copy_from_slice(bytes);
        }
    };
    match *edit {
        Edit::Byte {
            page,
            offset,
            value,
        } => put(img, page, offset, &[value]),
        Edit::Xor { page, offset, mask } => {
            if let Some(s) = at(page, offset, 1) {
                img[s] ^= mask;
            }
        }
        Edit::U16 {
            page,
            offset,
            value,
        } => put(img, page, offset, &value.to_le_bytes()),
        Edit::U32 {
            page,
            offset,
            value,
        } => put(img, page, offset, &value.to_le_bytes()),
        Edit::U64 {
            page,
            offset,
            value,
        } => put(img, page, offset, &value.to_le_bytes()),
        Edit::Small {
            page,
            offset,
            value,
            width,
        } => {
            let bytes = u64::from(value).to_le_bytes();
            put(
                img,
                page,
                offset,
                &bytes[..[1, 2, 4, 8][width as usize % 4]],
            );
        }
        Edit::Fill {
            page,
            offset,
            len,
            value,
        } => {
            if let Some(s) = at(page, offset, 0) {
                let end = (s + len as usize).min(img.len());
                img[s..end].fill(value);
            }
        }
        Edit::CopyPage { from, to } => {
            let (f, t) = (from as usize % pages, to as usize % pages);
            img.copy_within(f * page_size..(f + 1) * page_size, t * page_size);
        }
        Edit::ZeroPage { page } => {
            let p = page as usize % pages;
            img[p * page_size..(p + 1) * page_size].fill(0);
        }
        Edit::Truncate { pages: keep, bytes } => {
            let len = (keep as usize % (pages + 1)) * page_size + bytes as usize % page_size;
            img.truncate(len);
        }
        Edit::Extend { pages: more, fill } => {
            let len = img.len() + (more as usize % 16) * page_size;
            img.resize(len, fill);
        }
    }
}

/// Reads everything reachable; errors end a walk, nothing else.
fn read_all(db: &Database) -> Option<Vec<String>> {
    let _ = db.stats();
    let rtx = db.begin_read().ok()?;
    let names = rtx.tree_names().ok()?;
    for name in &names {
        let Ok(tree) = rtx.open_tree(name) else {
            continue;
        };
        let _ = tree.len();
        let Ok(range) = tree.iter() else { continue };
        let mut keys = Vec::new();
        for entry in range.take(100_000) {
            match entry {
                Ok((k, _)) => keys.push(k),
                Err(_) => break,
            }
        }
        for k in keys.iter().step_by(5) {
            let _ = tree.get(k);
        }
        if let Some(mid) = keys.get(keys.len() / 2) {
            if let Ok(r) = tree.range(..*mid) {
                for e in r.rev().take(100_000) {
                    if e.is_err() {
                        break;
                    }
                }
            }
        }
    }
    Some(names)
}

fn exercise(db: &Database, writes: &[(u16, u16)], names: &[String]) {
    let _ = db.check();
    if writes.is_empty() {
        return;
    }
    let Ok(mut wtx) = db.begin_write() else {
        return;
    };
    wtx.set_durability(if writes.len() % 2 == 0 {
        Durability::Immediate
    } else {
        Durability::None
    });
    for (i, &(k, v)) in writes.iter().take(64).enumerate() {
        let name = names
            .get(k as usize % (names.len() + 1))
            .map_or("new", String::as_str);
        if k % 7 == 0 {
            if wtx.delete_tree(name).is_err() {
                return;
            }
            continue;
        }
        let Ok(mut tree) = wtx.open_tree(name) else {
            return;
        };
        let key = format!("k{:05}", k % 2000);
        let r = if v % 3 == 0 {
            tree.remove(key.as_bytes()).map(drop)
        } else {
            tree.insert(key.as_bytes(), &vec![i as u8; v as usize % 20_000])
        };
        if r.is_err() {
            return;
        }
    }
    if wtx.commit().is_ok() {
        let _ = db.check();
        read_all(db);
    }
}

fuzz_target!(|input: Input| {
    let all = variants();
    let variant = &all[input.variant as usize % all.len()];
    let mut img = variant.image.clone();
    for e in input.edits.iter().take(32) {
        apply(&mut img, variant.page_size, e);
    }
    if input.reseal {
        reseal(&mut img, variant.page_size);
    }
    if let Some(dir) = std::env::var_os("MAPKV_FUZZ_DUMP") {
        // Replaying a crash: keep the corrupted image for tests/fuzz_regressions.rs.
        std::fs::write(std::path::Path::new(&dir).join("image.mapkv"), &img).expect("dump");
    }
    if input.file % 32 == 0 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corrupt.mapkv");
        std::fs::write(&path, &img).expect("write");
        for mmap in [u64::MAX, 0] {
            let Ok(db) = Options::new().mmap_size(mmap).open(&path) else {
                return;
            };
            let names = read_all(&db).unwrap_or_default();
            exercise(&db, &input.writes, &names);
        }
        return;
    }
    if input.edits.is_empty() {
        // Unchanged, and resealed (which changes nothing): a valid database.
        let mut resealed = img.clone();
        reseal(&mut resealed, variant.page_size);
        assert!(resealed == img, "resealing an unchanged variant changed it");
        let db = open_with_backend(MemFile::new(img.clone()).backend(), Options::new())
            .expect("open an unchanged variant");
        db.check().expect("check an unchanged variant");
    }
    let file = MemFile::new(img);
    for _ in 0..2 {
        let Ok(db) = open_with_backend(file.backend(), Options::new()) else {
            return;
        };
        let names = read_all(&db).unwrap_or_default();
        exercise(&db, &input.writes, &names);
    }
});
