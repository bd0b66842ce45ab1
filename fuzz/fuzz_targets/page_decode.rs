//! Arbitrary bytes straight into the page, meta, free-list and tree-record decoders: any
//! input gives `Ok` or `Error::Corrupted`, never a panic, and what decodes re-encodes to
//! the same bytes.
//!
//! Input: one selector byte (decoder and page size), then the bytes to decode.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mapkv::Error;
use mapkv::testing::{
    decode_free_list, decode_free_record, decode_meta, decode_page, decode_tree_record,
};

fn allowed<T>(r: mapkv::Result<T>) {
    match r {
        Ok(_) | Err(Error::Corrupted { .. }) => {}
        Err(e) => panic!("a decoder returned {e:?}, not Corrupted"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let page_size = 4096usize << (selector as usize >> 3 & 3);
    match selector & 7 {
        // A page as the engine reads it: exactly page-size bytes, zero-padded.
        0..=2 => {
            let mut page = bytes.to_vec();
            page.resize(page_size, 0);
            allowed(decode_page(&page));
        }
        // Any length: the decoders must not rely on it.
        3 => allowed(decode_page(bytes)),
        4 => {
            let mut slot = bytes.to_vec();
            slot.resize(slot.len().max(100), 0);
            allowed(decode_meta(&slot));
        }
        5 | 6 => {
            // Free-list bounds from the first 16 bytes, the payload after them.
            let (bounds, payload) = bytes.split_at(bytes.len().min(16));
            let mut b = [0u8; 16];
            b[..bounds.len()].copy_from_slice(bounds);
            let first = u64::from_le_bytes(b[..8].try_into().unwrap()) % 64;
            let end = u64::from_le_bytes(b[8..].try_into().unwrap());
            let end = if selector & 1 == 0 { end } else { end % 4096 };
            allowed(decode_free_list(payload, first, end));
            allowed(decode_free_record(payload));
        }
        _ => allowed(decode_tree_record(bytes)),
    }
});
