//! A handle opened before `fork()` does nothing in the child: no transaction begins, a
//! write transaction carried across the fork cannot commit, and dropping the handle
//! writes nothing. The parent's file stays exactly as the parent makes it.
//!
//! A test binary of its own: the child is a copy of this process, and it must not meet
//! the handles of other tests.

#![cfg(unix)]

use std::ffi::c_int;
use std::time::Duration;

use mapkv::{Database, Error, Result};

unsafe extern "C" {
    fn fork() -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn _exit(status: c_int) -> !;
}

/// One thing the child tries with the parent's handle.
type Step<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

fn key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

/// What the child checks; its exit status is 0 if every step was refused with
/// `Error::Forked`, else the number of the first step that was not.
fn in_child(db: Database, carried: mapkv::WriteTxn) -> c_int {
    let steps: [(&str, Step); 7] = [
        ("begin_read", Box::new(|| db.begin_read().map(drop))),
        ("begin_write", Box::new(|| db.begin_write().map(drop))),
        (
            "try_begin_write",
            Box::new(|| db.try_begin_write().map(drop)),
        ),
        (
            "try_begin_write_for",
            Box::new(|| db.try_begin_write_for(Duration::ZERO).map(drop)),
        ),
        ("check", Box::new(|| db.check().map(drop))),
        ("compact", Box::new(|| db.compact().map(drop))),
        (
            "commit of a transaction begun before the fork",
            Box::new(move || {
                {
                    let mut t = carried.open_tree("t")?;
                    for i in 0..2_000 {
                        t.insert(&key(1_000_000 + i), b"written by the child")?;
                    }
                }
                carried.commit()
            }),
        ),
    ];
    for (n, (_name, step)) in steps.into_iter().enumerate() {
        if !matches!(step(), Err(Error::Forked)) {
            return n as c_int + 1;
        }
    }
    // The clean close: must write nothing either.
    drop(db);
    0
}

#[test]
fn a_forked_child_cannot_use_the_parents_handle() -> Result<()> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let db = Database::open(&path)?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..5_000 {
            t.insert(&key(i), &[i as u8; 100])?;
        }
    }
    w.commit()?;
    // Left open across the fork: the parent commits it afterwards, the child tries to.
    let carried = db.begin_write()?;
    carried.open_tree("t")?.insert(&key(0), b"the parent's")?;

    // SAFETY: the child runs only `in_child` (mapkv calls and heap allocation, which
    // glibc keeps usable after a fork) inside `catch_unwind`, and leaves with `_exit`,
    // so it never returns into the test harness or runs its exit handlers.
    let pid = unsafe { fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let status =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_child(db, carried)))
                .unwrap_or(100);
        // SAFETY: ends the child at once, as above.
        unsafe { _exit(status) };
    }
    let mut status: c_int = 0;
    // SAFETY: `pid` is our child; `status` is a valid place for its status.
    assert_eq!(unsafe { waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(
        status & 0x7f,
        0,
        "the child died of signal {}",
        status & 0x7f
    );
    let code = (status >> 8) & 0xff;
    assert_eq!(
        code, 0,
        "the child's step {code} was not refused with Error::Forked"
    );

    // The parent goes on as if the child had not been: its transaction commits, and
    // the file holds what the parent wrote and nothing of the child's.
    {
        let mut t = carried.open_tree("t")?;
        for i in 5_000..6_000 {
            t.insert(&key(i), b"after the fork")?;
        }
    }
    carried.commit()?;
    db.check()?;
    drop(db);
    let db = Database::open(&path)?;
    db.check()?;
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    assert_eq!(t.len()?, 6_000);
    assert_eq!(t.get(&key(0))?, Some(&b"the parent's"[..]));
    assert_eq!(t.get(&key(1_000_000))?, None);
    Ok(())
}
