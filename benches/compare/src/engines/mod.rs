//! One adapter per engine, each mapping the `Engine`/`Reader`/`Writer` calls onto that
//! engine's own API and nothing more.

pub mod lmdb;
#[cfg(feature = "mapkv")]
pub mod mapkv;
pub mod redb;
pub mod sqlite;
