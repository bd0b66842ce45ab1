//! The fuzzers' in-memory file: `mapkv::testing::MemFile` (no file system, no map, every
//! read through `read_exact_at`), with a panic injected at a chosen read or write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mapkv::testing::{MemFile, MemHooks};

/// An in-memory file holding `bytes`, whose reads and writes count down `PANIC_IN_OPS`.
pub fn file(bytes: Vec<u8>) -> MemFile {
    MemFile::new(bytes).with_hooks(Arc::new(FuzzHooks))
}

/// Reads and writes left before one panics with [`InjectedPanic`] (0: never): a panic
/// raised inside the engine, in the middle of whatever it was doing.
pub static PANIC_IN_OPS: AtomicU64 = AtomicU64::new(0);

/// The payload of the panic `PANIC_IN_OPS` raises.
pub struct InjectedPanic;

struct FuzzHooks;

impl MemHooks for FuzzHooks {
    fn read(&self) {
        count_op();
    }

    fn write(&self, _bufs: &[&[u8]], _offset: u64) -> bool {
        count_op();
        true
    }

    fn set_len(&self, len: u64) {
        // A corrupt file cannot make the engine ask for more than this.
        assert!(len < 1 << 32, "set_len({len})");
    }
}

fn count_op() {
    let left = PANIC_IN_OPS.load(Ordering::Relaxed);
    if left > 0 {
        PANIC_IN_OPS.store(left - 1, Ordering::Relaxed);
        if left == 1 {
            std::panic::panic_any(InjectedPanic);
        }
    }
}
