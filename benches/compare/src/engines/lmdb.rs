//! LMDB through `heed`, with LMDB's default flags: every commit is synced (no `MDB_NOSYNC`,
//! `MDB_NOMETASYNC` or `MDB_WRITEMAP`).

use std::ops::Bound;
use std::path::{Path, PathBuf};

use anyhow::Result;
use heed::types::Bytes;
use heed::{CompactionOption, Database, Env, EnvOpenOptions, PutFlags, RoTxn, RwTxn};

use crate::data::Digest;
use crate::engine::{Engine, Reader, Writer};

type Db = Database<Bytes, Bytes>;

pub struct LmdbEngine {
    env: Env,
    db: Db,
}

impl LmdbEngine {
    pub fn open(dir: &Path, n: usize) -> Result<LmdbEngine> {
        // The map is only address space: the file grows with the data. 4 KiB an entry
        // leaves room for the free pages that copy-on-write leaves behind.
        let map_size = (n.saturating_mul(4096)).max(1 << 30);
        let env = unsafe { EnvOpenOptions::new().map_size(map_size).open(dir)? };
        let mut txn = env.write_txn()?;
        let db: Db = env.create_database(&mut txn, None)?;
        txn.commit()?;
        Ok(LmdbEngine { env, db })
    }
}

impl Engine for LmdbEngine {
    fn write(&self, body: &mut dyn FnMut(&mut dyn Writer) -> Result<()>) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        body(&mut LmdbWriter {
            txn: &mut txn,
            db: self.db,
        })?;
        txn.commit()?;
        Ok(())
    }

    fn read(&self, body: &mut dyn FnMut(&mut dyn Reader) -> Result<()>) -> Result<()> {
        let txn = self.env.read_txn()?;
        body(&mut LmdbReader {
            txn: &txn,
            db: self.db,
        })
    }

    fn load_sorted(&self, entries: &mut dyn Iterator<Item = (&[u8], &[u8])>) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        for (key, value) in entries {
            self.db
                .put_with_flags(&mut txn, PutFlags::APPEND, key, value)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn compact(&mut self, out_dir: &Path) -> Result<PathBuf> {
        self.env
            .copy_to_path(out_dir.join("data.mdb"), CompactionOption::Enabled)?;
        Ok(out_dir.to_path_buf())
    }
}

struct LmdbReader<'t> {
    txn: &'t RoTxn<'t>,
    db: Db,
}

impl Reader for LmdbReader<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>> {
        Ok(self.db.get(self.txn, key)?)
    }

    fn range_from(&mut self, start: &[u8], count: usize, digest: &mut Digest) -> Result<()> {
        let bounds = (Bound::Included(start), Bound::Unbounded);
        for entry in self.db.range(self.txn, &bounds)?.take(count) {
            let (key, value) = entry?;
            digest.add(key, value);
        }
        Ok(())
    }

    fn scan(&mut self, digest: &mut Digest) -> Result<()> {
        for entry in self.db.iter(self.txn)? {
            let (key, value) = entry?;
            digest.add(key, value);
        }
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        Ok(self.db.len(self.txn)?)
    }
}

struct LmdbWriter<'t, 'e> {
    txn: &'t mut RwTxn<'e>,
    db: Db,
}

impl Writer for LmdbWriter<'_, '_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.db.put(self.txn, key, value)?)
    }

    fn remove(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.db.delete(self.txn, key)?)
    }
}
