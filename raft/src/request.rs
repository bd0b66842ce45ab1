//! The size limits of requests, checked before proposing and again at apply.
//!
//! The state machine stores keys and values in mapkv, which refuses a key or value over
//! its limits. A write that reaches the log must still be applied on every replica,
//! identically and without an error: openraft treats an apply error as fatal (the node
//! stops), and a committed entry is applied again at every restart, so one oversized
//! write would stop every replica for good. So the limits are fixed here, from mapkv's
//! at the page size `sm.mapkv` is created with (every node's, and an installed snapshot
//! keeps its sender's), rather than read from the local file, and a request over them
//! is refused, not failed: [`Batcher::write`](crate::Batcher::write) does not propose
//! it, and the state machine answers one that was proposed anyway (through
//! `Raft::client_write`) with [`Response::refused`] and changes nothing.

use crate::{Request, Response};

impl Request {
    /// The longest key a request may hold: mapkv's limit at its default page size,
    /// which `sm.mapkv` is created with.
    pub const KEY_LEN_MAX: usize = mapkv::key_len_max(mapkv::PAGE_SIZE_DEFAULT);

    /// The longest value a request may store: mapkv's.
    pub const VALUE_LEN_MAX: u64 = mapkv::VALUE_LEN_MAX;

    /// Checks every key, and every value it would store, against [`Self::KEY_LEN_MAX`]
    /// and [`Self::VALUE_LEN_MAX`] (each command of a batch); the first over them is the
    /// error (`KeyTooLarge` or `ValueTooLarge`). A compare-and-swap's `expected` value is
    /// not stored and has no limit (one too large never matches).
    pub fn validate(&self) -> mapkv::Result<()> {
        match self {
            Request::Set { key, value } => check_key(key).and(check_value(value)),
            Request::Delete { key } => check_key(key),
            Request::CompareAndSwap { key, new, .. } => {
                check_key(key).and(new.as_deref().map_or(Ok(()), check_value))
            }
            Request::Batch(requests) => requests.iter().try_for_each(Request::validate),
        }
    }
}

fn check_key(key: &[u8]) -> mapkv::Result<()> {
    if key.len() > Request::KEY_LEN_MAX {
        return Err(mapkv::Error::KeyTooLarge {
            size: key.len(),
            max: Request::KEY_LEN_MAX,
        });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> mapkv::Result<()> {
    let size = value.len() as u64;
    if size > Request::VALUE_LEN_MAX {
        return Err(mapkv::Error::ValueTooLarge {
            size,
            max: Request::VALUE_LEN_MAX,
        });
    }
    Ok(())
}

impl Response {
    /// The answer to a command the state machine did not apply because of `why` (its
    /// size, see the module's documentation): `ok` false and `refused` set.
    pub fn refused(why: &mapkv::Error) -> Response {
        Response {
            previous: None,
            ok: false,
            batch: Vec::new(),
            refused: Some(why.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key_len: usize) -> Request {
        Request::Set {
            key: vec![b'k'; key_len],
            value: b"v".to_vec(),
        }
    }

    #[test]
    fn keys_over_the_limit_are_refused_in_every_command() {
        let max = Request::KEY_LEN_MAX;
        assert_eq!(max, 1920, "mapkv's limit at 4 KiB pages (its README)");
        assert!(set(max).validate().is_ok());
        let long = vec![b'k'; max + 1];
        for request in [
            set(max + 1),
            Request::Delete { key: long.clone() },
            Request::CompareAndSwap {
                key: long,
                expected: None,
                new: None,
            },
            Request::Batch(vec![set(1), set(max + 1)]),
        ] {
            assert!(
                matches!(request.validate(), Err(mapkv::Error::KeyTooLarge { size, max: m })
                    if size == max + 1 && m == max),
                "{request:?}"
            );
        }
    }
}
