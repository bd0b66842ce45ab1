//! SQLite through `rusqlite` (bundled): table `kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID`,
//! `journal_mode=WAL`, `synchronous=FULL` (each commit fsyncs the WAL), and `mmap_size` either
//! 0 or large enough for the whole file. Other settings (page cache size, page size) are
//! SQLite's defaults.
//!
//! A `Connection` is not `Sync`, so the writer has its own, and each reading thread takes
//! one from a pool (opening one the first time), keeping its page cache between workloads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, ensure};
use rusqlite::{CachedStatement, Connection, params};

use crate::data::Digest;
use crate::engine::{Engine, Reader, Writer};

/// What `mmap_size` is set to for "the whole file"; SQLite clamps it to its compile-time
/// maximum (`SQLITE_MAX_MMAP_SIZE`, 2 GiB - 64 KiB in the bundled build), and `settle` warns
/// if a file outgrows what is mapped (not before some 7 million entries).
const MMAP_ALL: i64 = 1 << 40;

pub struct SqliteEngine {
    path: PathBuf,
    dir: PathBuf,
    mmap: bool,
    /// The `mmap_size` SQLite accepted (after clamping).
    mmap_limit: u64,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteEngine {
    pub fn open(dir: &Path, mmap: bool) -> Result<SqliteEngine> {
        let path = dir.join("data.sqlite");
        let (writer, mmap_limit) = connect(&path, mmap)?;
        writer.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID",
        )?;
        Ok(SqliteEngine {
            path,
            dir: dir.to_path_buf(),
            mmap,
            mmap_limit,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }
}

/// Opens a connection with the settings above; returns it and its effective `mmap_size`.
fn connect(path: &Path, mmap: bool) -> Result<(Connection, u64)> {
    let conn = Connection::open(path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    ensure!(mode.eq_ignore_ascii_case("wal"), "journal_mode is {mode}");
    conn.pragma_update(None, "synchronous", "FULL")?;
    let want = if mmap { MMAP_ALL } else { 0 };
    let got: i64 = conn.query_row(&format!("PRAGMA mmap_size={want}"), [], |row| row.get(0))?;
    if !mmap {
        ensure!(got == 0, "mmap_size is {got}, not 0");
    }
    Ok((conn, got as u64))
}

impl Engine for SqliteEngine {
    fn write(&self, body: &mut dyn FnMut(&mut dyn Writer) -> Result<()>) -> Result<()> {
        let mut conn = self.writer.lock().unwrap();
        let txn = conn.transaction()?;
        {
            let mut writer = SqliteWriter {
                insert: txn.prepare_cached("INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)")?,
                remove: txn.prepare_cached("DELETE FROM kv WHERE k = ?1")?,
            };
            body(&mut writer)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn read(&self, body: &mut dyn FnMut(&mut dyn Reader) -> Result<()>) -> Result<()> {
        let pooled = self.readers.lock().unwrap().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.path, self.mmap)?.0,
        };
        let result = (|| {
            let txn = conn.transaction()?; // BEGIN DEFERRED: the snapshot starts at the first read
            {
                let mut reader = SqliteReader {
                    get: txn.prepare_cached("SELECT v FROM kv WHERE k = ?1")?,
                    range: txn
                        .prepare_cached("SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k LIMIT ?2")?,
                    scan: txn.prepare_cached("SELECT k, v FROM kv ORDER BY k")?,
                    count: txn.prepare_cached("SELECT count(*) FROM kv")?,
                    value: Vec::new(),
                };
                body(&mut reader)?;
            }
            txn.commit()?;
            Ok(())
        })();
        self.readers.lock().unwrap().push(conn);
        result
    }

    fn settle(&self) -> Result<()> {
        let conn = self.writer.lock().unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let size = std::fs::metadata(&self.path)?.len();
        if self.mmap && size > self.mmap_limit {
            eprintln!(
                "warning: sqlite-mmap maps only {} of its {size} bytes (SQLITE_MAX_MMAP_SIZE)",
                self.mmap_limit
            );
        }
        Ok(())
    }

    fn compact(&mut self, _out_dir: &Path) -> Result<PathBuf> {
        let conn = self.writer.lock().unwrap();
        conn.execute_batch("VACUUM").context("VACUUM")?;
        drop(conn);
        self.settle()?;
        Ok(self.dir.clone())
    }
}

struct SqliteReader<'c> {
    get: CachedStatement<'c>,
    range: CachedStatement<'c>,
    scan: CachedStatement<'c>,
    count: CachedStatement<'c>,
    /// SQLite's value pointer dies with the statement step, so `get` copies the value here.
    value: Vec<u8>,
}

impl Reader for SqliteReader<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>> {
        let mut rows = self.get.query([key])?;
        match rows.next()? {
            Some(row) => {
                self.value.clear();
                self.value.extend_from_slice(row.get_ref(0)?.as_blob()?);
                Ok(Some(&self.value))
            }
            None => Ok(None),
        }
    }

    fn range_from(&mut self, start: &[u8], count: usize, digest: &mut Digest) -> Result<()> {
        let mut rows = self.range.query(params![start, count as i64])?;
        while let Some(row) = rows.next()? {
            digest.add(row.get_ref(0)?.as_blob()?, row.get_ref(1)?.as_blob()?);
        }
        Ok(())
    }

    fn scan(&mut self, digest: &mut Digest) -> Result<()> {
        let mut rows = self.scan.query([])?;
        while let Some(row) = rows.next()? {
            digest.add(row.get_ref(0)?.as_blob()?, row.get_ref(1)?.as_blob()?);
        }
        Ok(())
    }

    fn len(&mut self) -> Result<u64> {
        Ok(self.count.query_row([], |row| row.get::<_, i64>(0))? as u64)
    }
}

struct SqliteWriter<'c> {
    insert: CachedStatement<'c>,
    remove: CachedStatement<'c>,
}

impl Writer for SqliteWriter<'_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert.execute(params![key, value])?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.remove.execute([key])? == 1)
    }
}
