//! Reading one engine, in the child: each engine opened with the variant's setting, and
//! gets in read transactions of a fixed length, every value checked.

use std::path::Path;

use anyhow::{Context, Result, ensure};

use crate::workload::Entries;
use crate::{MIB, TABLE, TREE, Variant, lmdb_map_size};

/// Reads one transaction's gets of the entries at `batch`, checking every value.
pub(crate) trait Reader {
    fn txn(&mut self, batch: &[u32], entries: &Entries) -> Result<()>;
}

struct MapkvReader(mapkv::Database);

impl Reader for MapkvReader {
    fn txn(&mut self, batch: &[u32], entries: &Entries) -> Result<()> {
        let r = self.0.begin_read()?;
        let t = r.open_tree(TREE)?;
        for &i in batch {
            entries.check(i as u64, t.get(&entries.key(i as u64))?)?;
        }
        Ok(())
    }
}

struct LmdbReader {
    env: heed::Env,
    db: heed::Database<heed::types::Bytes, heed::types::Bytes>,
}

impl Reader for LmdbReader {
    fn txn(&mut self, batch: &[u32], entries: &Entries) -> Result<()> {
        let r = self.env.read_txn()?;
        for &i in batch {
            entries.check(i as u64, self.db.get(&r, &entries.key(i as u64))?)?;
        }
        Ok(())
    }
}

struct RedbReader(redb::Database);

impl Reader for RedbReader {
    fn txn(&mut self, batch: &[u32], entries: &Entries) -> Result<()> {
        use redb::ReadableDatabase;
        let r = self.0.begin_read()?;
        let t = r.open_table(TABLE)?;
        for &i in batch {
            let got = t.get(&entries.key(i as u64)[..])?;
            entries.check(i as u64, got.as_ref().map(|g| g.value()))?;
        }
        Ok(())
    }
}

struct SqliteReader(rusqlite::Connection);

impl Reader for SqliteReader {
    fn txn(&mut self, batch: &[u32], entries: &Entries) -> Result<()> {
        let tx = self.0.transaction()?;
        {
            let mut stmt = tx.prepare_cached("SELECT v FROM kv WHERE k = ?1")?;
            for &i in batch {
                let mut rows = stmt.query([&entries.key(i as u64)[..]])?;
                let row = rows.next()?;
                let got = match row {
                    Some(row) => Some(row.get_ref(0)?.as_blob()?),
                    None => None,
                };
                entries.check(i as u64, got)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

pub(crate) fn open_reader(variant: &Variant, dir: &Path) -> Result<Box<dyn Reader>> {
    Ok(match variant {
        Variant::MapkvMap => Box::new(MapkvReader(
            mapkv::Options::new().open(dir.join("data.mapkv"))?,
        )),
        Variant::MapkvMapRandom => Box::new(MapkvReader(
            mapkv::Options::new()
                .read_ahead(false)
                .open(dir.join("data.mapkv"))?,
        )),
        Variant::MapkvPread { cache_mib } => Box::new(MapkvReader(
            mapkv::Options::new()
                .mmap_size(0)
                .cache_size(cache_mib * MIB)
                .open(dir.join("data.mapkv"))?,
        )),
        Variant::Lmdb { no_read_ahead } => {
            let size = std::fs::metadata(dir.join("data.mdb"))?.len();
            let mut options = heed::EnvOpenOptions::new();
            options.map_size(lmdb_map_size(size));
            if *no_read_ahead {
                unsafe { options.flags(heed::EnvFlags::NO_READ_AHEAD) };
            }
            let env = unsafe { options.open(dir)? };
            let r = env.read_txn()?;
            let db = env
                .open_database(&r, None)?
                .context("LMDB's unnamed database is missing")?;
            r.commit()?;
            Box::new(LmdbReader { env, db })
        }
        Variant::Redb { cache_mib } => Box::new(RedbReader(
            redb::Builder::new()
                .set_cache_size((cache_mib * MIB) as usize)
                .open(dir.join("data.redb"))?,
        )),
        Variant::Sqlite { cache_mib, mmap } => {
            let c = rusqlite::Connection::open(dir.join("data.sqlite"))?;
            let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            ensure!(mode.eq_ignore_ascii_case("wal"), "journal_mode is {mode}");
            c.execute_batch(&format!(
                "PRAGMA cache_size=-{}; PRAGMA mmap_size={};",
                cache_mib * 1024,
                if *mmap { 1u64 << 40 } else { 0 }
            ))?;
            Box::new(SqliteReader(c))
        }
    })
}
