//! redb, with its default cache size and `Durability::Immediate` set on every write.

use std::path::{Path, PathBuf};

use anyhow::Result;
use redb::{
    AccessGuard, Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition,
};

use crate::data::Digest;
use crate::engine::{Engine, Reader, TREE, Writer};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new(TREE);

pub struct RedbEngine {
    db: Database,
    dir: PathBuf,
}

impl RedbEngine {
    pub fn open(dir: &Path) -> Result<RedbEngine> {
        let db = Database::create(dir.join("data.redb"))?;
        // Create the table, so that reads before the first load find it.
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?;
        txn.commit()?;
        Ok(RedbEngine {
            db,
            dir: dir.to_path_buf(),
        })
    }
}

impl Engine for RedbEngine {
    fn write(&self, body: &mut dyn FnMut(&mut dyn Writer) -> Result<()>) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let table = txn.open_table(TABLE)?;
            body(&mut RedbWriter { table })?;
        }
        txn.commit()?;
        Ok(())
    }

    fn read(&self, body: &mut dyn FnMut(&mut dyn Reader) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        body(&mut RedbReader { table, last: None })
    }

    fn compact(&mut self, _out_dir: &Path) -> Result<PathBuf> {
        self.db.compact()?;
        Ok(self.dir.clone())
    }
}

struct RedbReader {
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// The guard of the last value read, which `get` lends out.
    last: Option<AccessGuard<'static, &'static [u8]>>,
}

impl Reader for RedbReader {
    fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.last = self.table.get(key)?;
        Ok(self.last.as_ref().map(|guard| guard.value()))
    }

    fn range_from(&mut self, start: &[u8], count: usize, digest: &mut Digest) -> Result<()> {
        for entry in self.table.range(start..)?.take(count) {
            let (key, value) = entry?;
            digest.add(key.value(), value.value());
        }
        Ok(())
    }

    fn scan(&mut self, digest: &mut Digest) -> Result<()> {
        for entry in self.table.iter()? {
            let (key, value) = entry?;
            digest.add(key.value(), value.value());
        }
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        Ok(self.table.len()?)
    }
}

struct RedbWriter<'t> {
    table: Table<'t, &'static [u8], &'static [u8]>,
}

impl Writer for RedbWriter<'_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.table.insert(key, value)?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.table.remove(key)?.is_some())
    }
}
