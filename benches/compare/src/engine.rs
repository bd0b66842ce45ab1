//! The one interface every engine adapter implements. The workload driver (`workloads.rs`)
//! is written once against it; an adapter only maps these calls onto its engine's API.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::data::Digest;

/// The name of the one tree (table, LMDB database) every engine stores the entries in.
pub const TREE: &str = "bench";

/// One open database. Every write transaction it runs is durable: `write` returns only
/// after its commit is on stable storage (fsync/fdatasync), in every engine.
pub trait Engine: Send + Sync {
    /// Runs `body` in one write transaction and commits it durably.
    fn write(&self, body: &mut dyn FnMut(&mut dyn Writer) -> Result<()>) -> Result<()>;

    /// Runs `body` in one read transaction (a consistent snapshot). Called from several
    /// threads at once by the multi-threaded read workload.
    fn read(&self, body: &mut dyn FnMut(&mut dyn Reader) -> Result<()>) -> Result<()>;

    /// Loads entries given in ascending key order into the empty tree, in one durable
    /// transaction. The default is an insert loop; engines with a faster path for sorted
    /// input (LMDB's `MDB_APPEND`, mapkv's `bulk_load`) override it.
    fn load_sorted(&self, entries: &mut dyn Iterator<Item = (&[u8], &[u8])>) -> Result<()> {
        self.write(&mut |w| {
            for (key, value) in &mut *entries {
                w.insert(key, value)?;
            }
            Ok(())
        })
    }

    /// Brings the files to their resting size before they are measured (SQLite: checkpoint
    /// and truncate the WAL). Not timed.
    fn settle(&self) -> Result<()> {
        Ok(())
    }

    /// Compacts the database, in place or as a copy into `out_dir` (an empty directory),
    /// and returns the directory whose files now hold the compacted database.
    fn compact(&mut self, out_dir: &Path) -> Result<PathBuf>;

    /// Compacts the database in place where `compact` makes a copy and the engine can do
    /// both (mapkv's `compact`); false, doing nothing, otherwise.
    fn compact_in_place(&mut self) -> Result<bool> {
        Ok(false)
    }
}

/// Reading inside one read transaction.
pub trait Reader {
    fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>>;
    /// Visits (adds to `digest`) the first `count` entries whose key is `>= start`.
    fn range_from(&mut self, start: &[u8], count: usize, digest: &mut Digest) -> Result<()>;
    /// Visits every entry in key order.
    fn scan(&mut self, digest: &mut Digest) -> Result<()>;
    fn len(&mut self) -> Result<u64>;
}

/// Writing inside one write transaction. `insert` inserts or overwrites.
pub trait Writer {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// True if the key was present.
    fn remove(&mut self, key: &[u8]) -> Result<bool>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EngineKind {
    Mapkv,
    Lmdb,
    Redb,
    /// SQLite with `PRAGMA mmap_size=0`: every page read with pread into its page cache.
    Sqlite,
    /// SQLite with `mmap_size` covering the whole file.
    SqliteMmap,
}

impl EngineKind {
    pub const ALL: [EngineKind; 5] = [
        EngineKind::Mapkv,
        EngineKind::Lmdb,
        EngineKind::Redb,
        EngineKind::Sqlite,
        EngineKind::SqliteMmap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Mapkv => "mapkv",
            EngineKind::Lmdb => "lmdb",
            EngineKind::Redb => "redb",
            EngineKind::Sqlite => "sqlite",
            EngineKind::SqliteMmap => "sqlite-mmap",
        }
    }

    pub fn from_name(name: &str) -> Option<EngineKind> {
        EngineKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// False for mapkv when this program was built without the `mapkv` feature.
    pub fn available(self) -> bool {
        self != EngineKind::Mapkv || cfg!(feature = "mapkv")
    }

    /// Opens (creating) a fresh database in the empty directory `dir`, sized for `n` entries.
    pub fn open(self, dir: &Path, n: usize) -> Result<Box<dyn Engine>> {
        std::fs::create_dir_all(dir)?;
        Ok(match self {
            #[cfg(feature = "mapkv")]
            EngineKind::Mapkv => Box::new(crate::engines::mapkv::MapkvEngine::open(dir)?),
            #[cfg(not(feature = "mapkv"))]
            EngineKind::Mapkv => anyhow::bail!("built without the `mapkv` feature"),
            EngineKind::Lmdb => Box::new(crate::engines::lmdb::LmdbEngine::open(dir, n)?),
            EngineKind::Redb => Box::new(crate::engines::redb::RedbEngine::open(dir)?),
            EngineKind::Sqlite => Box::new(crate::engines::sqlite::SqliteEngine::open(dir, false)?),
            EngineKind::SqliteMmap => {
                Box::new(crate::engines::sqlite::SqliteEngine::open(dir, true)?)
            }
        })
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The total size of the regular files under `dir`.
pub fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}
