//! What the disk alone charges for the writes of a durable commit: the same writes and
//! `fdatasync` calls as the engines' commits, with no engine around them. The floor
//! that no engine writing those shapes can beat on this machine.
//!
//! ```text
//! cargo run --release -p compare --bin disk_floor -- --dir /tmp --rounds 3
//! ```
//!
//! One-key commits (µs per commit, 3,000 commits a round):
//! - `sync only`: `fdatasync` with nothing to write (the cache flush alone);
//! - `1 page`: one page written, then the sync (a WAL appending one frame);
//! - `meta + 6 pages, one place`: a 100-byte meta and the 6 pages after it in one call:
//!   one region, as a commit whose meta sat next to its pages would write;
//! - `6 pages + meta elsewhere`: the 6 pages in one call, the meta 100 bytes at the start
//!   of the file: two regions, as a mapkv one-key commit writes into a free run;
//! - `6 pages in 2 runs + meta`, `… in 3 runs + meta`: the same pages split over free
//!   runs 40 MiB apart (a commit that fills several small free runs);
//! - `6 pages at a random place + meta`, `6 pages: 3 in turn, 3 random + meta`: the
//!   same writes where free runs lie scattered over the file (the runs above move through
//!   the file in turn; on this machine's virtual disk a write to a random place costs the
//!   sync more than one next to recent writes);
//! - `6 pages appended + meta`: the pages past the end of the file, grown and zeroed
//!   ahead as mapkv's storage does (`append_like_mapkv`).
//!
//! Batches (seconds for 100 commits of 1,300 pages, about what 1,000 random inserts into
//! a 1M-entry tree dirty):
//! - `contiguous`: each commit's pages in one run, in calls of 64 KiB;
//! - `scattered over the file`: each page alone at a random free place (what reusing
//!   single freed pages gives), in ascending order;
//! - `scattered over 40 MiB`: the same in one 40 MiB stretch, chosen anew for each
//!   commit (what a commit sweeping through free pages that fill an eighth of the file
//!   spans).

#[path = "../data.rs"]
#[allow(dead_code)]
mod data;

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

const PAGE: usize = 4096;
/// The scratch file's size: room for every shape, written once before timing.
const FILE_BYTES: usize = 320 << 20;
const BATCH_PAGES: usize = 1_300;
const BATCHES: usize = 100;
const ONE_KEY_COMMITS: usize = 3_000;
/// The stretch of the file that the `scattered over 40 MiB` batches write into.
const STRETCH_BYTES: usize = 40 << 20;

/// One commit's writes and sync; its argument numbers the commit.
type Commit<'a> = Box<dyn Fn(usize) -> std::io::Result<()> + 'a>;

#[derive(Parser)]
struct Args {
    /// Directory for the scratch file (on the disk to measure)
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Rounds of every shape; each row prints every round
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let scratch = tempfile::NamedTempFile::new_in(&args.dir)?;
    let file = scratch.as_file();
    let chunk = vec![1u8; 64 << 10];
    for offset in (0..FILE_BYTES).step_by(chunk.len()) {
        file.write_all_at(&chunk, offset as u64)?;
    }
    file.sync_all()?;

    let page = vec![2u8; PAGE];
    let zeroed_to = Cell::new(FILE_BYTES);
    let six_pages = vec![3u8; 6 * PAGE];
    let placement = RefCell::new(data::Rng::new(2));
    let one_key: Vec<(&str, Commit)> = vec![
        ("sync only", Box::new(|_| file.sync_data())),
        (
            "1 page",
            Box::new(|i| {
                file.write_all_at(&page, ((2 + i % 1000) * PAGE) as u64)?;
                file.sync_data()
            }),
        ),
        (
            "meta + 6 pages, one place",
            Box::new(|i| {
                let at = (i % 2) * 7 * PAGE;
                file.write_all_at(&six_pages[..100], at as u64)?;
                file.write_all_at(&six_pages, (at + PAGE) as u64)?;
                file.sync_data()
            }),
        ),
        (
            "6 pages + meta elsewhere",
            Box::new(|i| {
                let at = (8 << 20) + (i % 300) * 6 * PAGE;
                file.write_all_at(&six_pages, at as u64)?;
                file.write_all_at(&six_pages[..100], ((i % 2) * PAGE) as u64)?;
                file.sync_data()
            }),
        ),
        (
            "6 pages in 2 runs + meta",
            Box::new(|i| {
                let at = (8 << 20) + (i % 300) * 6 * PAGE;
                file.write_all_at(&six_pages[..3 * PAGE], at as u64)?;
                file.write_all_at(&six_pages[..3 * PAGE], (at + (40 << 20)) as u64)?;
                file.write_all_at(&six_pages[..100], ((i % 2) * PAGE) as u64)?;
                file.sync_data()
            }),
        ),
        (
            "6 pages in 3 runs + meta",
            Box::new(|i| {
                let at = (8 << 20) + (i % 300) * 6 * PAGE;
                for run in 0..3 {
                    let run_at = at + run * (40 << 20);
                    file.write_all_at(&six_pages[..2 * PAGE], run_at as u64)?;
                }
                file.write_all_at(&six_pages[..100], ((i % 2) * PAGE) as u64)?;
                file.sync_data()
            }),
        ),
        (
            "6 pages at a random place + meta",
            Box::new(|_| {
                let at = random_page(&placement) * PAGE;
                file.write_all_at(&six_pages, at as u64)?;
                file.write_all_at(&six_pages[..100], 0)?;
                file.sync_data()
            }),
        ),
        (
            "6 pages: 3 in turn, 3 random + meta",
            Box::new(|i| {
                let at = (8 << 20) + (i % 300) * 3 * PAGE;
                file.write_all_at(&six_pages[..3 * PAGE], at as u64)?;
                let random = random_page(&placement) * PAGE;
                file.write_all_at(&six_pages[..3 * PAGE], random as u64)?;
                file.write_all_at(&six_pages[..100], ((i % 2) * PAGE) as u64)?;
                file.sync_data()
            }),
        ),
        (
            "6 pages appended + meta",
            Box::new(|i| {
                if i == 0 {
                    file.set_len(FILE_BYTES as u64)?;
                    file.sync_all()?;
                    zeroed_to.set(FILE_BYTES);
                }
                let at = FILE_BYTES + i * 6 * PAGE;
                append_like_mapkv(file, &zeroed_to, at + 6 * PAGE)?;
                file.write_all_at(&six_pages, at as u64)?;
                file.write_all_at(&six_pages[..100], ((i % 2) * PAGE) as u64)?;
                file.sync_data()
            }),
        ),
    ];
    println!("one-key commits, µs per commit, {} rounds:", args.rounds);
    for (name, commit) in &one_key {
        let mut rounds = Vec::new();
        for _ in 0..args.rounds {
            let start = Instant::now();
            for i in 0..ONE_KEY_COMMITS {
                commit(i)?;
            }
            rounds.push(start.elapsed().as_secs_f64() * 1e6 / ONE_KEY_COMMITS as f64);
        }
        println!("  {name:28} {}", join(&rounds, 0));
    }

    println!(
        "{BATCHES} commits of {BATCH_PAGES} pages, seconds, {} rounds:",
        args.rounds
    );
    let batch_region = 100 << 20;
    let batch = vec![4u8; BATCH_PAGES * PAGE];
    let mut rng = data::Rng::new(1);
    // Where single pages go: over the whole file, or in a 40 MiB stretch of it (about
    // what a stretch holding 1,300 free pages spans when an eighth of the file is free).
    let spreads = [
        ("contiguous", None),
        ("scattered over the file", Some(FILE_BYTES / PAGE - 2)),
        ("scattered over 40 MiB", Some(STRETCH_BYTES / PAGE)),
    ];
    for (name, spread) in spreads {
        let mut rounds = Vec::new();
        for _ in 0..args.rounds {
            let start = Instant::now();
            for b in 0..BATCHES {
                if let Some(span) = spread {
                    let first = 2 + rng.below(FILE_BYTES / PAGE - 1 - span);
                    let mut ids: Vec<usize> =
                        (0..BATCH_PAGES).map(|_| first + rng.below(span)).collect();
                    ids.sort_unstable();
                    for id in ids {
                        file.write_all_at(&page, (id * PAGE) as u64)?;
                    }
                } else {
                    let at = batch_region + (b % 30) * BATCH_PAGES * PAGE;
                    for (i, part) in batch.chunks(64 << 10).enumerate() {
                        file.write_all_at(part, (at + i * (64 << 10)) as u64)?;
                    }
                }
                file.sync_data()?;
            }
            rounds.push(start.elapsed().as_secs_f64());
        }
        println!("  {name:28} {}", join(&rounds, 2));
    }
    Ok(())
}

/// What mapkv's storage does before a commit that appends up to `end`: grow the file in
/// steps of 16 MiB (a hole), and keep 2 MiB past the commit's end written with zeros,
/// topped up once a megabyte of it is used, so that the commits' own writes allocate no
/// blocks. `zeroed_to`: how far the file is written.
fn append_like_mapkv(file: &File, zeroed_to: &Cell<usize>, end: usize) -> std::io::Result<()> {
    const ZERO_AHEAD: usize = 2 << 20;
    const GROWTH: usize = 16 << 20;
    let mut len = file.metadata()?.len() as usize;
    if len < end {
        len = end + GROWTH;
        file.set_len(len as u64)?;
    }
    let zeros = vec![0u8; 64 << 10];
    // Never past the file's length, as in the engine: a write past it would change the
    // size, which costs that commit's sync a journal commit.
    let target = len.min(end + ZERO_AHEAD);
    let from = zeroed_to.get().max(end);
    if target.saturating_sub(from) >= ZERO_AHEAD / 2 {
        for at in (from..target).step_by(zeros.len()) {
            let piece = zeros.len().min(target - at);
            file.write_all_at(&zeros[..piece], at as u64)?;
        }
        zeroed_to.set(target);
    }
    Ok(())
}

/// A page anywhere in the scratch file but its first two (the metas' place), for writes
/// that land wherever free pages happen to be.
fn random_page(rng: &RefCell<data::Rng>) -> usize {
    2 + rng.borrow_mut().below(FILE_BYTES / PAGE - 8)
}

fn join(values: &[f64], decimals: usize) -> String {
    let shown: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    shown.join("  ")
}
