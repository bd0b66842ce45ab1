//! Two processes: while one holds the file read-write, a second process that opens it
//! (read-write or read-only) gets `Error::Locked` at once; once the first closes it, the
//! second can open it.

use std::process::Command;
use std::time::{Duration, Instant};

use mapkv::{Database, Error, Options};

const CHILD_ENV: &str = "MAPKV_LOCK_CHILD";

/// The child: opens the file and reports what happened.
#[test]
#[ignore = "run by second_process_gets_locked in a child process"]
fn lock_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let expect_locked = std::env::var("MAPKV_LOCK_EXPECT").as_deref() == Ok("locked");
    for read_only in [false, true] {
        let started = Instant::now();
        let result = Options::new().read_only(read_only).open(&path);
        let elapsed = started.elapsed();
        if expect_locked {
            assert!(
                matches!(result, Err(Error::Locked)),
                "read_only={read_only}: expected Error::Locked, got {:?}",
                result.err()
            );
            assert!(elapsed < Duration::from_secs(1), "Locked took {elapsed:?}");
        } else {
            let db = result.expect("open once the other process closed the file");
            db.check().expect("check");
        }
    }
    println!("CHILD-OK");
}

fn run_child(path: &std::path::Path, expect: &str) {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "lock_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .env("MAPKV_LOCK_EXPECT", expect)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child ({expect}) failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn second_process_gets_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("locked.mapkv");
    let db = Database::open(&path).expect("open");
    let wtx = db.begin_write().expect("begin_write");
    wtx.open_tree("t")
        .expect("tree")
        .insert(b"k", b"v")
        .expect("insert");
    wtx.commit().expect("commit");
    let started = Instant::now();
    run_child(&path, "locked");
    assert!(started.elapsed() < Duration::from_secs(20));
    // Still ours, and unchanged by the attempt.
    let rtx = db.begin_read().expect("read");
    assert_eq!(
        rtx.open_tree("t").expect("t").get(b"k").expect("get"),
        Some(&b"v"[..])
    );
    drop(rtx);
    drop(db);
    run_child(&path, "free");
}
