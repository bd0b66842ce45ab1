//! Power loss under the Raft log store.
//!
//! A seeded random workload drives a [`LogStore`] through openraft's storage API
//! (`append` with its flush callback, `save_vote`, `save_committed`, `truncate`,
//! `purge`, and now and then a clean reopen), following openraft's rules (committed
//! entries are never truncated, only committed entries are purged, votes only grow), on
//! the core crate's simulated disk (`tests/support/simdisk.rs`), which records every
//! write, size change and sync. Then, for every sync of that record (just before it
//! completes and just after) and for random points between, the image a power loss
//! there leaves is built (each write since the last sync kept, dropped, or torn at
//! 512-byte sectors; size changes kept or lost) and a fresh log store is opened over
//! it. What it reads must be the model's state after some prefix of the operations:
//! every operation reported durable before the cut (an append whose flush callback had
//! fired, a vote, truncate or purge that had returned) included, none issued after the
//! cut. That one check covers: flushed entries present and identical unless an
//! acknowledged (or at least issued) truncate or purge removed them, no entry that was
//! never appended, the vote the last acknowledged one or a later issued one, and
//! `get_log_state` agreeing with the entries read. The log's shape (indexes contiguous
//! from the last purged one) is checked on its own first, and each recovered store must
//! take a new append.
//!
//! The append's report is timed exactly: the test polls `blocking_append` itself with a
//! waker that notes the disk's record length when the flush callback wakes it (in the
//! writer thread, with group commit), so an append that reports itself flushed before
//! its sync is caught at the cut between the two.
//!
//! `MAPKV_SEED` replays a seed; `MAPKV_HEAVY=1` runs more seeds and longer workloads.

#[allow(dead_code)]
#[path = "../../tests/support/rng.rs"]
mod rng;
#[allow(dead_code)]
#[path = "../../tests/support/simdisk.rs"]
mod simdisk;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use mapkv::Options;
use mapkv::testing::open_with_backend;
use mapkv_raft::{LogStore, LogStoreOptions, Request, StateMachineStore, TypeConfig};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use rng::{Rng, heavy, seed};
use simdisk::{CrashImages, SimDisk};

type Id = LogId<u64>;

/// Wakes the polling thread, and notes the disk's record length at the first wake: for
/// an append, the moment its flush callback fired.
struct AckWaker {
    disk: Arc<SimDisk>,
    at: Mutex<Option<usize>>,
    thread: std::thread::Thread,
}

impl Wake for AckWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let mut at = self.at.lock().unwrap();
        if at.is_none() {
            *at = Some(self.disk.log_len());
        }
        self.thread.unpark();
    }
}

/// Runs `fut` to completion on this thread (the log store's futures need no runtime).
/// Returns its output and the disk's record length when it completed: at its first
/// wake-up if it had to wait (an append waiting for its flush callback), else on return.
fn block_on<F: Future>(disk: &Arc<SimDisk>, fut: F) -> (F::Output, usize) {
    let ack = Arc::new(AckWaker {
        disk: Arc::clone(disk),
        at: Mutex::new(None),
        thread: std::thread::current(),
    });
    let waker = Waker::from(Arc::clone(&ack));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            let at = ack.at.lock().unwrap().unwrap_or_else(|| disk.log_len());
            return (out, at);
        }
        std::thread::park();
    }
}

/// What the log holds after a prefix of the operations.
#[derive(Clone, Debug, Default, PartialEq)]
struct State {
    entries: BTreeMap<u64, Arc<Entry<TypeConfig>>>,
    purged: Option<Id>,
    vote: Option<Vote<u64>>,
    committed: Option<Id>,
}

/// One operation of the workload, as recorded.
#[derive(Debug)]
struct Op {
    what: String,
    /// The disk's record length before the call: a cut at or before it misses the op.
    issued: usize,
    /// The record length when the op was reported durable; `None`: it promises nothing
    /// (`save_committed`).
    acked: Option<usize>,
}

struct Run {
    disk: Arc<SimDisk>,
    ops: Vec<Op>,
    /// `states[k]`: after the first `k` ops.
    states: Vec<State>,
}

fn log_id(term: u64, node: u64, index: u64) -> Id {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn open_store(disk: &Arc<SimDisk>, options: LogStoreOptions) -> mapkv::Result<LogStore> {
    let db = open_with_backend(disk.backend(), Options::new())?;
    LogStore::from_database(Arc::new(db), options)
}

fn random_entry(rng: &mut Rng, id: Id) -> Entry<TypeConfig> {
    let payload = match rng.below(20) {
        0 => EntryPayload::Blank,
        _ => {
            // Mostly small commands, now and then one that spans sectors and pages.
            let len = if rng.chance(1, 8) {
                rng.range(600, 9000)
            } else {
                rng.below(80)
            };
            let mut value = vec![0u8; len as usize];
            rng.fill(&mut value);
            EntryPayload::Normal(Request::Set {
                key: rng.below(64).to_be_bytes().to_vec(),
                value,
            })
        }
    };
    Entry {
        log_id: id,
        payload,
    }
}

/// Runs `ops` random operations on a fresh simulated disk. `linked`: the store is linked
/// to a state machine (in a temporary folder) that never applies or snapshots anything,
/// so every purge only hides entries, and every reopen (which links again) brings the
/// hidden ones back (`LogStore::link_state_machine`).
fn run_workload(seed: u64, ops: usize, options: LogStoreOptions, linked: bool) -> Run {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::new(Vec::new());
    let dir = tempfile::tempdir().expect("temp dir");
    let sm = linked.then(|| StateMachineStore::open(dir.path()).expect("state machine"));
    let open = |sm: &Option<StateMachineStore>| {
        let mut store = open_store(&disk, options)?;
        if let Some(sm) = sm {
            store.link_state_machine(sm)?;
        }
        mapkv::Result::Ok(store)
    };
    let mut store = Some(open(&sm).expect("create"));
    let mut state = State::default();
    // The entries in the file: those of `state` and those purged but kept.
    let mut physical = BTreeMap::new();
    let mut run = Run {
        disk: Arc::clone(&disk),
        ops: Vec::new(),
        states: vec![state.clone()],
    };
    // The current leader's term and node; entries are appended under it.
    let (mut term, mut node) = (1u64, 1u64);
    while run.ops.len() < ops {
        let s = store.as_mut().expect("open");
        let last = state
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(state.purged);
        let next_index = last.map_or(0, |l| l.index + 1);
        let committed = state.committed.map(|c| c.index);
        let purged = state.purged.map(|p| p.index);
        let issued = disk.log_len();
        let roll = rng.below(100);
        let (what, acked) = if roll < 5 {
            // A clean close and reopen: it changes nothing, unless linking undoes purges.
            drop(store.take());
            store = Some(open(&sm).expect("reopen"));
            if sm.is_none() || state.purged.is_none() {
                continue;
            }
            state.entries = physical.clone();
            state.purged = None;
            (
                "reopen: link undid the purges".to_string(),
                Some(disk.log_len()),
            )
        } else if roll < 55 {
            let n = rng.range(1, 7);
            let entries: Vec<_> = (0..n)
                .map(|i| random_entry(&mut rng, log_id(term, node, next_index + i)))
                .collect();
            for e in &entries {
                state.entries.insert(e.log_id.index, Arc::new(e.clone()));
                physical.insert(e.log_id.index, Arc::new(e.clone()));
            }
            let (r, at) = block_on(&disk, s.blocking_append(entries));
            r.expect("append");
            (
                format!("append {next_index}..={}", next_index + n - 1),
                Some(at),
            )
        } else if roll < 67 {
            // Committed moves forward, up to the last entry.
            let Some(last) = last else { continue };
            let from = committed.unwrap_or(0).max(purged.map_or(0, |p| p + 1));
            if from > last.index {
                continue;
            }
            let index = rng.range(from, last.index + 1);
            let id = state.entries.get(&index).map(|e| e.log_id).or(state.purged);
            state.committed = id;
            let (r, _) = block_on(&disk, s.save_committed(id));
            r.expect("save_committed");
            (format!("committed {id:?}"), None)
        } else if roll < 77 {
            // A new term (a new leader), or the current vote committed.
            let vote = if rng.chance(1, 3) && state.vote.is_some_and(|v| !v.is_committed()) {
                Vote::new_committed(term, node)
            } else {
                term += 1;
                node = rng.range(1, 4);
                Vote::new(term, node)
            };
            state.vote = Some(vote);
            let (r, at) = block_on(&disk, s.save_vote(&vote));
            r.expect("save_vote");
            (format!("vote {vote}"), Some(at))
        } else if roll < 87 {
            // A conflict: the uncommitted tail goes (never a committed entry).
            let lo = committed
                .map_or(0, |c| c + 1)
                .max(purged.map_or(0, |p| p + 1));
            if lo >= next_index {
                continue;
            }
            let index = rng.range(lo, next_index);
            let id = state.entries[&index].log_id;
            state.entries.retain(|i, _| *i < index);
            physical.retain(|i, _| *i < index);
            let (r, at) = block_on(&disk, s.truncate(id));
            r.expect("truncate");
            (format!("truncate {index}.."), Some(at))
        } else {
            // Purge up to a committed entry.
            let lo = purged.map_or(0, |p| p + 1);
            let Some(c) = committed else { continue };
            if lo > c {
                continue;
            }
            let index = rng.range(lo, c + 1);
            let id = state.entries[&index].log_id;
            state.entries.retain(|i, _| *i > index);
            if sm.is_none() {
                physical.retain(|i, _| *i > index);
            }
            state.purged = Some(id);
            let (r, at) = block_on(&disk, s.purge(id));
            r.expect("purge");
            (format!("purge ..={index}"), Some(at))
        };
        run.ops.push(Op {
            what,
            issued,
            acked,
        });
        run.states.push(state.clone());
    }
    drop(store);
    if linked {
        // The purged entries are still in the file.
        let mut store = open(&None).expect("open");
        let db = Arc::clone(store.database());
        let rtx = db.begin_read().expect("read");
        let kept = match rtx.open_tree("log") {
            Ok(t) => t.iter().expect("iter").count(),
            Err(_) => 0,
        };
        assert_eq!(kept, physical.len(), "entries kept in the file");
        let (r, _) = block_on(&disk, store.try_get_log_entries(..));
        assert_eq!(r.expect("read").len(), state.entries.len());
    }
    run
}

/// What a recovered store reads.
fn read_back(store: &mut LogStore, disk: &Arc<SimDisk>) -> Result<State, String> {
    let (log_state, _) = block_on(disk, store.get_log_state());
    let log_state = log_state.map_err(|e| format!("get_log_state: {e}"))?;
    let (entries, _) = block_on(disk, store.try_get_log_entries(..));
    let entries = entries.map_err(|e| format!("read entries: {e}"))?;
    let (vote, _) = block_on(disk, store.read_vote());
    let vote = vote.map_err(|e| format!("read_vote: {e}"))?;
    let (committed, _) = block_on(disk, store.read_committed());
    let committed = committed.map_err(|e| format!("read_committed: {e}"))?;
    // The log's shape: contiguous from the last purged index + 1 (or 0), and
    // `get_log_state` agrees with it.
    let purged = log_state.last_purged_log_id;
    let first = purged.map_or(0, |p| p.index + 1);
    for (e, expect) in entries.iter().zip(first..) {
        if e.log_id.index != expect {
            return Err(format!(
                "log not contiguous: index {} where {expect} was due (purged {purged:?})",
                e.log_id.index
            ));
        }
    }
    let last = entries.last().map(|e| e.log_id).or(purged);
    if log_state.last_log_id != last {
        return Err(format!(
            "get_log_state says last {:?}, the entries end at {last:?}",
            log_state.last_log_id
        ));
    }
    if committed.is_some_and(|c| Some(c.index) > last.map(|l| l.index)) {
        return Err(format!(
            "committed {committed:?} past the last entry {last:?}"
        ));
    }
    Ok(State {
        entries: entries
            .into_iter()
            .map(|e| (e.log_id.index, Arc::new(e)))
            .collect(),
        purged,
        vote,
        committed,
    })
}

/// How `got` differs from `want`, briefly.
fn diff(want: &State, got: &State) -> String {
    let missing: Vec<u64> = want
        .entries
        .iter()
        .filter(|(i, e)| got.entries.get(i) != Some(e))
        .map(|(i, _)| *i)
        .collect();
    let extra: Vec<u64> = got
        .entries
        .iter()
        .filter(|(i, e)| want.entries.get(i) != Some(e))
        .map(|(i, _)| *i)
        .collect();
    format!(
        "entries missing or different {missing:?}, unexpected {extra:?}; purged {:?} vs {:?}; \
         vote {:?} vs {:?}; committed {:?} vs {:?}",
        want.purged, got.purged, want.vote, got.vote, want.committed, got.committed
    )
}

#[derive(Default, Debug)]
struct Figures {
    events: usize,
    syncs: usize,
    images: usize,
    /// Images that recovered to a state past the last acknowledged one.
    ahead: usize,
    /// Operations by kind (the first word of their description).
    kinds: BTreeMap<String, usize>,
}

/// Checks the image a power loss at `at` leaves (see the module's documentation).
fn check_image(run: &Run, at: usize, image: Vec<u8>, what: &str, figures: &mut Figures) {
    // Ops acknowledged by the cut must be in; ops issued at or after it cannot be.
    let lo = run
        .ops
        .iter()
        .rposition(|op| op.acked.is_some_and(|a| a <= at))
        .map_or(0, |k| k + 1);
    let hi = run.ops.iter().take_while(|op| op.issued < at).count();
    let fail = |msg: String| -> ! {
        let from = lo.saturating_sub(3);
        let ops: Vec<String> = run.ops[from..(hi + 2).min(run.ops.len())]
            .iter()
            .zip(from..)
            .map(|(op, k)| {
                format!(
                    "op {k}: {} (issued at {}, acked at {:?})",
                    op.what, op.issued, op.acked
                )
            })
            .collect();
        panic!(
            "power loss at {at} of {} events ({what}): {msg}\nthe ops around: {ops:#?}",
            run.disk.log_len(),
        )
    };
    let disk = SimDisk::new(image);
    let mut store = open_store(&disk, LogStoreOptions::default())
        .unwrap_or_else(|e| fail(format!("open: {e}")));
    let got = read_back(&mut store, &disk).unwrap_or_else(|e| fail(e));
    match (lo..=hi.max(lo)).find(|&k| run.states[k] == got) {
        Some(k) => {
            if k > lo {
                figures.ahead += 1;
            }
        }
        None => fail(format!(
            "not the state after the first k ops for any k in {lo}..={hi}; against the state \
             after the last acknowledged op: {}",
            diff(&run.states[lo], &got)
        )),
    }
    // The recovered log takes new entries.
    let last = got
        .entries
        .last_key_value()
        .map(|(_, e)| e.log_id)
        .or(got.purged);
    let index = last.map_or(0, |l| l.index + 1);
    let entry = Entry {
        log_id: log_id(1_000, 1, index),
        payload: EntryPayload::Blank,
    };
    let (r, _) = block_on(&disk, store.blocking_append([entry.clone()]));
    r.unwrap_or_else(|e| fail(format!("append after recovery: {e}")));
    let (r, _) = block_on(&disk, store.try_get_log_entries(index..));
    if r.unwrap_or_else(|e| fail(format!("read after recovery: {e}"))) != [entry] {
        fail("the entry appended after recovery does not read back".into());
    }
    figures.images += 1;
}

fn power_loss(name: &str, options: LogStoreOptions, linked: bool, default_seed: u64) {
    let start = Instant::now();
    let (seeds, ops) = if heavy() { (8, 1500) } else { (1, 300) };
    let first = seed(default_seed);
    let mut figures = Figures::default();
    for s in first..first + seeds {
        let run = run_workload(s, ops, options, linked);
        for op in &run.ops {
            let kind = op.what.split([' ', ':']).next().unwrap_or("").to_string();
            *figures.kinds.entry(kind).or_default() += 1;
        }
        let mut rng = Rng::new(s ^ 0xC0FFEE);
        let mut images = CrashImages::new(&run.disk);
        let len = images.log_len();
        let syncs = run.disk.sync_points();
        figures.events += len;
        figures.syncs += syncs.len();
        // Every sync: the cut just before it completes and just after.
        let mut cuts: Vec<(usize, &str)> = Vec::new();
        for &i in &syncs {
            cuts.push((i, "before a sync"));
            cuts.push((i + 1, "after a sync"));
        }
        // Random points, most of them between syncs: the unsynced writes kept, lost
        // or torn.
        for _ in 0..syncs.len().max(16) {
            cuts.push((rng.below(len as u64 + 1) as usize, "random"));
        }
        cuts.push((0, "start"));
        cuts.push((len, "end"));
        cuts.sort();
        for (at, what) in cuts {
            let image = images.image(at, &mut rng);
            check_image(&run, at, image, what, &mut figures);
        }
    }
    eprintln!(
        "{name}: {seeds} seed(s) x {ops} ops: {} disk events, {} syncs, {} crash images \
         checked ({} recovered past the last acknowledged op) in {:.1?}; ops {:?}",
        figures.events,
        figures.syncs,
        figures.images,
        figures.ahead,
        start.elapsed(),
        figures.kinds
    );
}

#[test]
fn power_loss_group_commit() {
    power_loss(
        "group commit",
        LogStoreOptions { group_commit: true },
        false,
        0x5eed_0001,
    );
}

/// Linked to a state machine that has no snapshot: purges hide entries without
/// removing them, and reopening (linking again) brings them back.
#[test]
fn power_loss_linked_purges_kept() {
    power_loss(
        "linked, purges kept",
        LogStoreOptions { group_commit: true },
        true,
        0x5eed_0003,
    );
}

#[test]
fn power_loss_commit_per_append() {
    power_loss(
        "commit per append",
        LogStoreOptions {
            group_commit: false,
        },
        false,
        0x5eed_0002,
    );
}
