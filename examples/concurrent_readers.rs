//! Several reader threads share an `Arc<Database>` while a writer commits transfers
//! between accounts. Each read transaction is a snapshot: however long it takes and
//! however many commits land meanwhile, it sees one consistent state — the total of all
//! balances never changes, and the commit counter it reads first and last agrees.
//!
//! Run it with `cargo run --release --example concurrent_readers`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mapkv::{Database, Durability, Options, Result};

const ACCOUNTS: u32 = 1_000;
const BALANCE_START: u64 = 1_000;
const READERS: usize = 4;
const RUN_TIME: Duration = Duration::from_secs(2);

/// An account's key: big-endian, so the tree is in account order.
fn account_key(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

fn balance(value: &[u8]) -> u64 {
    u64::from_le_bytes(value.try_into().expect("balances are 8 bytes"))
}

/// One reader's findings.
#[derive(Default, Debug)]
struct Seen {
    snapshots: u64,
    commits_first: u64,
    commits_last: u64,
}

/// Reads snapshots until `stop`: in each, the commit counter, then every balance (slowly,
/// so commits land while it reads), then the counter again.
fn reader(db: &Database, stop: &AtomicBool) -> Result<Seen> {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let rtx = db.begin_read()?;
        let meta = rtx.open_tree("meta")?;
        let counter = |m: &mapkv::ReadTree| -> Result<u64> {
            Ok(balance(m.get(b"commits")?.expect("counter exists")))
        };
        let before = counter(&meta)?;
        let accounts = rtx.open_tree("accounts")?;
        let mut total = 0;
        for (i, entry) in accounts.iter()?.enumerate() {
            total += balance(entry?.1);
            if i % 250 == 0 {
                thread::sleep(Duration::from_micros(200)); // let the writer commit
            }
        }
        let after = counter(&meta)?;
        assert_eq!(
            total,
            u64::from(ACCOUNTS) * BALANCE_START,
            "a snapshot saw a torn transfer"
        );
        assert_eq!(before, after, "the snapshot moved during the read");
        if seen.snapshots == 0 {
            seen.commits_first = before;
        }
        seen.commits_last = before;
        seen.snapshots += 1;
    }
    Ok(seen)
}

/// Moves money between pseudo-random accounts, one transfer a commit, until `stop`.
fn writer(db: &Database, stop: &AtomicBool) -> Result<u64> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut commits = 0u64;
    while !stop.load(Ordering::Relaxed) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let from = (state % u64::from(ACCOUNTS)) as u32;
        let to = ((state >> 32) % u64::from(ACCOUNTS)) as u32;
        let mut wtx = db.begin_write()?;
        {
            let mut accounts = wtx.open_tree("accounts")?;
            let from_balance = balance(accounts.get(&account_key(from))?.expect("account"));
            let amount = (state >> 16) % (from_balance + 1);
            accounts.insert(&account_key(from), &(from_balance - amount).to_le_bytes())?;
            let to_balance = balance(accounts.get(&account_key(to))?.expect("account"));
            accounts.insert(&account_key(to), &(to_balance + amount).to_le_bytes())?;
        }
        commits += 1;
        wtx.open_tree("meta")?
            .insert(b"commits", &commits.to_le_bytes())?;
        // Every 100th commit is durable. Until one is, the pages of the last durable
        // commit must survive a crash, and the library reuses no freed page: the file
        // would grow with every commit.
        if commits.is_multiple_of(100) {
            wtx.set_durability(Durability::Immediate);
        }
        wtx.commit()?;
    }
    Ok(commits)
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Durability::None: commits are visible at once without an fsync each, so the writer
    // commits often; see `writer` for the periodic durable commit.
    let db = Arc::new(
        Options::new()
            .durability(Durability::None)
            .open(dir.path().join("accounts.mapkv"))?,
    );
    let wtx = db.begin_write()?;
    {
        let mut accounts = wtx.open_tree("accounts")?;
        for id in 0..ACCOUNTS {
            accounts.insert(&account_key(id), &BALANCE_START.to_le_bytes())?;
        }
    }
    wtx.open_tree("meta")?
        .insert(b"commits", &0u64.to_le_bytes())?;
    wtx.commit()?;
    println!(
        "{ACCOUNTS} accounts of {BALANCE_START}; {READERS} readers summing all balances, \
         one writer committing transfers, for {RUN_TIME:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
            thread::spawn(move || reader(&db, &stop))
        })
        .collect();
    let writer = {
        let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
        thread::spawn(move || writer(&db, &stop))
    };
    thread::sleep(RUN_TIME);
    stop.store(true, Ordering::Relaxed);

    let commits = writer.join().expect("writer thread")?;
    println!(
        "writer: {commits} commits ({:.0}/s)",
        commits as f64 / started.elapsed().as_secs_f64()
    );
    for (i, handle) in readers.into_iter().enumerate() {
        let seen = handle.join().expect("reader thread")?;
        println!(
            "reader {i}: {} snapshots, from commit {} to {}; every one summed to {} and \
             kept its commit number",
            seen.snapshots,
            seen.commits_first,
            seen.commits_last,
            u64::from(ACCOUNTS) * BALANCE_START
        );
        assert!(seen.snapshots > 0);
    }
    let stats = db.stats()?;
    println!(
        "file {:.1} MiB: {} pages in use, {} free for reuse",
        stats.file_size_bytes as f64 / (1 << 20) as f64,
        stats.pages_in_use,
        stats.pages_free
    );
    db.check()?;
    println!("integrity check passed");
    Ok(())
}
