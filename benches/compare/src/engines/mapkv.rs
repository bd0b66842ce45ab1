//! mapkv: every call this program makes into the mapkv library is in this file.
//! Opened with `Durability::Immediate` (each commit fdatasyncs) and the default `mmap_size`
//! (the whole file), or the bytes in `COMPARE_MAPKV_MMAP_SIZE` if set (0: no map), for
//! comparing the two read paths under the same workloads.

use std::path::{Path, PathBuf};

use anyhow::Result;
use mapkv::{BulkOptions, BulkStats, Database, Durability, Options, ReadTree, WriteTree};

use crate::data::Digest;
use crate::engine::{Engine, Reader, TREE, Writer};

pub struct MapkvEngine {
    db: Database,
}

impl MapkvEngine {
    pub fn open(dir: &Path) -> Result<MapkvEngine> {
        let mmap_size = match std::env::var("COMPARE_MAPKV_MMAP_SIZE") {
            Ok(v) => v.parse()?,
            Err(_) => u64::MAX,
        };
        let db = Options::new()
            .durability(Durability::Immediate)
            .mmap_size(mmap_size)
            .open(dir.join("data.mapkv"))?;
        // Create the tree, so that reads before the first load find it.
        let txn = db.begin_write()?;
        txn.open_tree(TREE)?;
        txn.commit()?;
        Ok(MapkvEngine { db })
    }

    /// `bulk_load` into the (empty) tree, with O_DIRECT or forced buffered writes.
    pub fn bulk_load(
        &self,
        entries: &mut dyn Iterator<Item = (&[u8], &[u8])>,
        direct: bool,
    ) -> Result<BulkStats> {
        let options = BulkOptions::new().direct_io(direct);
        Ok(self.db.bulk_load_with(TREE, entries, options)?)
    }
}

impl Engine for MapkvEngine {
    fn write(&self, body: &mut dyn FnMut(&mut dyn Writer) -> Result<()>) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let tree = txn.open_tree(TREE)?;
            body(&mut MapkvWriter { tree })?;
        }
        txn.commit()?;
        Ok(())
    }

    fn read(&self, body: &mut dyn FnMut(&mut dyn Reader) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_read()?;
        let tree = txn.open_tree(TREE)?;
        body(&mut MapkvReader { tree })
    }

    fn load_sorted(&self, entries: &mut dyn Iterator<Item = (&[u8], &[u8])>) -> Result<()> {
        self.db.bulk_load(TREE, entries)?;
        Ok(())
    }

    fn compact(&mut self, out_dir: &Path) -> Result<PathBuf> {
        self.db.compact_to(out_dir.join("data.mapkv"))?;
        Ok(out_dir.to_path_buf())
    }

    fn compact_in_place(&mut self) -> Result<bool> {
        self.db.compact()?;
        Ok(true)
    }
}

struct MapkvReader<'t> {
    tree: ReadTree<'t>,
}

impl Reader for MapkvReader<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>> {
        Ok(self.tree.get(key)?)
    }

    fn range_from(&mut self, start: &[u8], count: usize, digest: &mut Digest) -> Result<()> {
        for entry in self.tree.range(start..)?.take(count) {
            let (key, value) = entry?;
            digest.add(key, value);
        }
        Ok(())
    }

    fn scan(&mut self, digest: &mut Digest) -> Result<()> {
        for entry in self.tree.iter()? {
            let (key, value) = entry?;
            digest.add(key, value);
        }
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        Ok(self.tree.len()?)
    }
}

struct MapkvWriter<'t> {
    tree: WriteTree<'t>,
}

impl Writer for MapkvWriter<'_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.tree.insert(key, value)?)
    }

    fn remove(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.tree.remove(key)?)
    }
}
