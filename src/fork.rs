//! Handles across `fork()`. A child process inherits an open database's file
//! descriptor, its lock (an `flock` belongs to the open file, which parent and child
//! share) and its map, but no place in the parent's reader table and no say in the
//! parent's commits. If both wrote, each would reuse pages the other still uses, and a
//! child's reads could meet pages the parent recycles or cuts off. So in the child, a
//! handle opened before the fork begins no transaction (`Error::Forked`), writes
//! nothing (a write transaction carried across the fork cannot commit) and skips the
//! clean close. Snapshots and values carried across the fork are not revoked: reads
//! through them are not checked (that would cost every read), and the parent may reuse
//! or cut off their pages. LMDB asks its users not to use an environment in the child;
//! here what would damage the file is refused.
//!
//! The process counts the forks it came from: a `pthread_atfork` handler increments a
//! counter in each child, and a handle compares the count with the one it was opened
//! under. That is one relaxed atomic load; `getpid()` would be a system call on every
//! `begin_read`.

#![allow(unsafe_code)]

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// Forks between the first handle's opening and now, in this process's line.
static FORKS: AtomicU64 = AtomicU64::new(0);
static REGISTER: Once = Once::new();

/// Runs in the child right after each `fork()`: only an atomic increment, which is
/// async-signal-safe as a handler in a child of a multithreaded process must be.
extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

#[cfg(unix)]
unsafe extern "C" {
    /// POSIX: registers handlers run around `fork()`; 0 on success.
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> std::ffi::c_int;
}

/// The forks this process descends from since the first database was opened in its
/// line. A handle opened with one value is in a forked child when it reads another.
pub(crate) fn generation() -> u64 {
    REGISTER.call_once(|| {
        #[cfg(unix)]
        // SAFETY: `pthread_atfork` takes three optional handler pointers; `in_child` is
        // an `extern "C" fn()` that lives for the whole program (a static function) and
        // does only an atomic increment. It can fail only for lack of memory (ENOMEM):
        // then forks are not counted, as on a platform without fork, and nothing unsafe
        // follows from it.
        unsafe {
            pthread_atfork(None, None, Some(in_child));
        }
    });
    FORKS.load(Ordering::Relaxed)
}
