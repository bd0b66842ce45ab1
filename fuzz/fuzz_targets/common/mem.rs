//! An in-memory file behind `mapkv::testing::Backend`: no file system, no map, every read
//! through `read_exact_at`. Clones share the bytes, so a database can be reopened on it.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mapkv::testing::Backend;
use parking_lot::Mutex;

#[derive(Clone, Default)]
pub struct MemFile(pub Arc<Mutex<Vec<u8>>>);

#[allow(dead_code)]
impl MemFile {
    pub fn new(bytes: Vec<u8>) -> MemFile {
        MemFile(Arc::new(Mutex::new(bytes)))
    }

    pub fn backend(&self) -> Box<dyn Backend> {
        Box::new(self.clone())
    }
}

/// Reads and writes left before one panics with [`InjectedPanic`] (0: never): a panic
/// raised inside the engine, in the middle of whatever it was doing.
pub static PANIC_IN_OPS: AtomicU64 = AtomicU64::new(0);

/// The payload of the panic `PANIC_IN_OPS` raises.
pub struct InjectedPanic;

fn count_op() {
    let left = PANIC_IN_OPS.load(Ordering::Relaxed);
    if left > 0 {
        PANIC_IN_OPS.store(left - 1, Ordering::Relaxed);
        if left == 1 {
            std::panic::panic_any(InjectedPanic);
        }
    }
}

// SAFETY: `file()` is None: nothing is mapped.
unsafe impl Backend for MemFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        count_op();
        let data = self.0.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        match start.checked_add(buf.len()) {
            Some(end) if end <= data.len() => {
                buf.copy_from_slice(&data[start..end]);
                Ok(())
            }
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    fn write_all_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        count_op();
        let mut data = self.0.lock();
        let mut at = offset as usize;
        for b in bufs {
            if data.len() < at + b.len() {
                data.resize(at + b.len(), 0);
            }
            data[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn file_len(&self) -> io::Result<u64> {
        Ok(self.0.lock().len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        // A corrupt file cannot make the engine ask for more than this.
        assert!(len < 1 << 32, "set_len({len})");
        self.0.lock().resize(len as usize, 0);
        Ok(())
    }

    fn file(&self) -> Option<&File> {
        None
    }
}
