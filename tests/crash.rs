//! Simulated power loss: a workload runs on a simulated disk that records every write,
//! size change and sync; crash images are made at chosen points of that log (everything
//! before the last completed sync kept, each later write kept, dropped or torn at 512-byte
//! boundaries, each later size change kept or dropped, or all of them dropped while the
//! writes are kept), and each must open, pass `check`, and hold exactly one committed
//! state no older than the last `Immediate` commit that had returned. Recovery of each
//! image is crashed too. The workloads compact in place now and then (commits that move
//! pages and truncate the file).

mod support;

use std::sync::Arc;
use std::time::Instant;

use mapkv::Durability;
use support::model::{History, Shape, Trees, digest, random_durability, random_ops, read_all};
use support::recovery::{open, recover};
use support::rng::{Rng, heavy, seed};
use support::simdisk::{CrashImages, SimDisk};

/// A workload run on a simulated disk, with the history of its states.
struct Run {
    disk: Arc<SimDisk>,
    hist: History,
    commits: usize,
}

/// Runs `txns` random write transactions (with aborts and reopens) on a fresh disk.
fn run_workload(seed: u64, txns: usize, shape: Shape) -> Run {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::new(Vec::new());
    let mut hist = History::default();
    let mut model = Trees::new();
    let mut state = hist.push(digest(&model), 0);
    let mut db = Some(open(&disk).expect("create"));
    hist.durable(disk.log_len(), state);
    let mut commits = 0;
    for _ in 0..txns {
        if rng.chance(1, 20) {
            // kill -9 (possibly inside a write transaction), reopen; a power loss may
            // follow later, so what the reopened handle trusts must really be durable.
            // The kill comes after a random number of the next writes and syncs: inside
            // a commit, or inside the clean close.
            disk.kill_after(rng.below(12));
            {
                let d = db.as_ref().expect("open");
                if let Ok(mut wtx) = d.begin_write() {
                    let mut next = model.clone();
                    if random_ops(&mut rng, &mut wtx, &mut next, shape).is_ok() {
                        let durability = random_durability(&mut rng);
                        wtx.set_durability(durability);
                        let idx = hist.push(digest(&next), disk.log_len());
                        if wtx.commit().is_ok() {
                            // (the model is reread after the reopen below)
                            state = idx;
                            if durability == Durability::Immediate {
                                hist.durable(disk.log_len(), state);
                            }
                        }
                    }
                }
            }
            let (killed_at, generation) = (disk.log_len(), disk.generation());
            drop(db.take());
            if disk.log_len() > killed_at && disk.generation() == generation {
                hist.durable(disk.log_len(), state); // the clean close ran through
            }
            disk.kill();
            let d = open(&disk).expect("reopen after kill");
            let content = read_all(&d).expect("read after kill");
            hist.check(disk.log_len(), digest(&content))
                .unwrap_or_else(|e| panic!("seed {seed}: after kill -9: {e}"));
            model = content;
            state = hist.push(digest(&model), disk.log_len());
            hist.durable(disk.log_len(), state);
            db = Some(d);
            continue;
        }
        let d = db.as_ref().expect("open");
        if rng.chance(1, 12) {
            // Reopen: a clean close makes the newest commit durable.
            drop(db.take());
            hist.durable(disk.log_len(), state);
            db = Some(open(&disk).expect("reopen"));
            hist.durable(disk.log_len(), state);
            continue;
        }
        if rng.chance(1, 10) {
            // Compaction in place: durable commits that move pages down and cut the
            // file (FORMAT.md#compaction-in-place); the content stays what it was.
            d.compact().expect("compact");
            hist.durable(disk.log_len(), state);
            continue;
        }
        let mut wtx = d.begin_write().expect("begin_write");
        let mut next = model.clone();
        random_ops(&mut rng, &mut wtx, &mut next, shape).expect("ops");
        if rng.chance(1, 15) {
            wtx.abort();
            continue;
        }
        let durability = random_durability(&mut rng);
        wtx.set_durability(durability);
        let idx = hist.push(digest(&next), disk.log_len());
        wtx.commit().expect("commit");
        commits += 1;
        model = next;
        state = idx;
        if durability == Durability::Immediate {
            hist.durable(disk.log_len(), state);
        }
        if rng.chance(1, 10) {
            assert_eq!(read_all(d).expect("read"), model, "live content");
        }
    }
    drop(db);
    hist.durable(disk.log_len(), state);
    Run {
        disk,
        hist,
        commits,
    }
}

#[derive(Default, Debug)]
struct Figures {
    images: u64,
    recovery_images: u64,
    fallbacks: u64,
}

/// Checks one crash image; then crashes its recovery (the clean close, and a commit made
/// after recovery) at every point and checks those images too.
fn check_image(
    run: &Run,
    at: usize,
    image: Vec<u8>,
    rng: &mut Rng,
    crash_recovery: bool,
    figures: &mut Figures,
) -> Result<(), String> {
    figures.images += 1;
    let (disk, db, content) = recover(image)?;
    let got = digest(&content);
    let state = run.hist.check(at, got)?;
    if state < *run.hist.allowed(at).end() {
        figures.fallbacks += 1;
    }
    if !crash_recovery {
        return Ok(());
    }
    // Second life: what recovery and the next session write can be cut short too.
    let mut hist = History::default();
    hist.push(got, 0);
    hist.durable(0, 0);
    if rng.chance(1, 2) {
        let mut model = read_all(&db).map_err(|e| e.to_string())?;
        let mut wtx = db.begin_write().map_err(|e| e.to_string())?;
        random_ops(
            rng,
            &mut wtx,
            &mut model,
            Shape {
                keys: 200,
                ops: 5,
                max_value: 9000,
            },
        )
        .map_err(|e| e.to_string())?;
        let durability = random_durability(rng);
        wtx.set_durability(durability);
        let idx = hist.push(digest(&model), disk.log_len());
        wtx.commit().map_err(|e| e.to_string())?;
        if durability == Durability::Immediate {
            hist.durable(disk.log_len(), idx);
        }
    }
    drop(db);
    hist.durable(disk.log_len(), hist.states.len() - 1);
    let mut images = CrashImages::new(&disk);
    for at2 in 0..=images.log_len() {
        figures.recovery_images += 1;
        let (_, _, content2) = recover(images.image(at2, rng))
            .map_err(|e| format!("after a crash during recovery at {at2}: {e}"))?;
        hist.check(at2, digest(&content2))
            .map_err(|e| format!("after a crash during recovery: {e}"))?;
    }
    Ok(())
}

/// Crashes at every sync point (just before and just after each sync, with several
/// random fates for the unsynced writes) of many small workloads.
#[test]
fn crash_at_every_sync_point_of_small_workloads() {
    let base = seed(1);
    let (workloads, fates) = if heavy() { (400, 8) } else { (40, 3) };
    let started = Instant::now();
    let mut figures = Figures::default();
    let mut commits = 0;
    for w in 0..workloads {
        let s = base.wrapping_mul(1000).wrapping_add(w);
        let run = run_workload(
            s,
            12,
            Shape {
                keys: 300,
                ops: 8,
                max_value: 9000,
            },
        );
        commits += run.commits;
        let mut rng = Rng::new(s ^ 0xC4A5);
        let mut images = CrashImages::new(&run.disk);
        let mut points: Vec<usize> = run
            .disk
            .sync_points()
            .into_iter()
            .flat_map(|i| [i, i + 1])
            .collect();
        points.push(run.disk.log_len());
        points.dedup();
        for at in points {
            for fate in 0..fates {
                let image = images.image(at, &mut rng);
                let crash_recovery = fate == 0;
                check_image(&run, at, image, &mut rng, crash_recovery, &mut figures)
                    .unwrap_or_else(|e| panic!("workload seed {s}: {e}"));
            }
        }
    }
    eprintln!(
        "small workloads: {workloads} workloads, {commits} commits, {figures:?}, {:.1?}",
        started.elapsed()
    );
}

/// Crashes at thousands of random points of larger workloads.
#[test]
fn crash_at_random_points_of_larger_workloads() {
    let base = seed(2);
    let (workloads, points) = if heavy() { (12, 4000) } else { (3, 1000) };
    let started = Instant::now();
    let mut figures = Figures::default();
    let mut commits = 0;
    for w in 0..workloads {
        let s = base.wrapping_mul(1000).wrapping_add(w);
        let run = run_workload(
            s,
            150,
            Shape {
                keys: 2000,
                ops: 20,
                max_value: 30_000,
            },
        );
        commits += run.commits;
        let mut rng = Rng::new(s ^ 0x7A11);
        let mut images = CrashImages::new(&run.disk);
        let mut at: Vec<usize> = (0..points)
            .map(|_| rng.below(run.disk.log_len() as u64 + 1) as usize)
            .collect();
        at.sort_unstable();
        for (i, at) in at.into_iter().enumerate() {
            let image = images.image(at, &mut rng);
            check_image(&run, at, image, &mut rng, i % 10 == 0, &mut figures)
                .unwrap_or_else(|e| panic!("workload seed {s}: {e}"));
        }
    }
    eprintln!(
        "larger workloads: {workloads} workloads, {commits} commits, {figures:?}, {:.1?}",
        started.elapsed()
    );
}
