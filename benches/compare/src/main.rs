//! `compare`: runs the same workloads on mapkv, LMDB (heed), redb and SQLite (rusqlite, with
//! and without mmap) and prints a markdown table of the medians, with the ratio of mapkv to
//! the best other engine, and optionally writes the same as JSON.
//!
//! ```text
//! cargo run --release -p compare -- --n 1000000 --json results.json
//! ```
//! See README.md beside this crate for what each row measures.

mod data;
mod engine;
mod engines;
mod report;
mod sorted_load;
mod units;
mod workloads;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::data::{Dataset, KEY_LEN, VALUE_LEN};
use crate::engine::EngineKind;
use crate::report::{Machine, RunInfo};
use crate::workloads::{Config, Workload};

#[derive(Parser)]
#[command(about = "Compare mapkv with LMDB, redb and SQLite on the same workloads")]
struct Cli {
    /// Entries loaded (24-byte random keys, 150-byte random values).
    #[arg(long, default_value_t = 1_000_000)]
    n: usize,
    /// Threads for the multi-threaded random reads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Rounds; every cell of the table is the median of the rounds.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Engines to run, comma-separated: mapkv, lmdb, redb, sqlite, sqlite-mmap [default: all].
    #[arg(long, value_delimiter = ',')]
    engines: Vec<String>,
    /// Workloads to report, comma-separated (see --list) [default: all]. The load in
    /// random order runs in any case, since the other workloads need its database, unless
    /// steady-updates and sorted-load-methods (which make their own) are all that is asked.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Directory in which a fresh temporary directory holds the databases [default: /tmp].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the database files (and print where they are).
    #[arg(long)]
    keep: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the markdown table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Seed of the keys, values and orders.
    #[arg(long, default_value_t = 3)]
    seed: u64,
    /// Transactions of one insert each in "individual writes".
    #[arg(long, default_value_t = 1000)]
    individual_writes: usize,
    /// Transactions in "batch writes".
    #[arg(long, default_value_t = 100)]
    batches: usize,
    /// Inserts per transaction in "batch writes".
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Durable commits of "steady updates" (after its own load of the N entries).
    #[arg(long, default_value_t = 200)]
    steady_commits: usize,
    /// Share of the N loaded keys each steady commit overwrites (0.01 is 1 %), chosen at
    /// random, with fresh values.
    #[arg(long, default_value_t = 0.01)]
    steady_fraction: f64,
    /// How the sorted-load comparison's input lies in memory: `stream` (one buffer in key
    /// order, as read from a sorted file) or `scattered` (gathered from the dataset's
    /// arrays in key order).
    #[arg(long, value_enum, default_value_t = sorted_load::InputLayout::Stream)]
    sorted_input: sorted_load::InputLayout,
    /// List the engines and workloads, and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.list {
        println!("engines:");
        for k in EngineKind::ALL {
            let note = if k.available() {
                ""
            } else {
                "  (not built: feature `mapkv` is off)"
            };
            println!("  {k}{note}");
        }
        println!("workloads:");
        for w in Workload::ALL {
            println!("  {}", w.name());
        }
        return Ok(());
    }

    let engines = select_engines(&cli.engines)?;
    let workloads = select_workloads(&cli.workloads)?;
    if cli.n < 2 || cli.threads == 0 || cli.repeat == 0 {
        bail!("--n must be at least 2, --threads and --repeat at least 1");
    }
    if cli.steady_commits == 0 || !(cli.steady_fraction > 0.0 && cli.steady_fraction <= 1.0) {
        bail!("--steady-commits must be at least 1, --steady-fraction in (0, 1]");
    }

    let parent = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let root = tempfile::Builder::new()
        .prefix("mapkv-compare-")
        .tempdir_in(&parent)
        .with_context(|| format!("temporary directory in {}", parent.display()))?;

    let cfg = Config {
        n: cli.n,
        threads: cli.threads,
        repeat: cli.repeat,
        individual_writes: cli.individual_writes,
        batches: cli.batches,
        batch_size: cli.batch_size,
        steady_commits: cli.steady_commits,
        steady_fraction: cli.steady_fraction,
        seed: cli.seed,
        workloads,
        root: root.path().to_path_buf(),
        keep_files: cli.keep,
    };

    let start = Instant::now();
    let data = Dataset::generate(cfg.n, cfg.extras(), cli.seed);
    eprintln!(
        "generated {} entries (+{} for the writes) in {:.2} s; databases under {}",
        cfg.n,
        cfg.extras(),
        start.elapsed().as_secs_f64(),
        cfg.root.display()
    );

    // The rounds, unless the sorted-load comparison is all that was asked for (the
    // random-order load that every round begins with would only cost time).
    let only_sorted_methods = cfg
        .workloads
        .iter()
        .all(|&w| w == Workload::SortedLoadMethods);
    let results = if only_sorted_methods {
        Default::default()
    } else {
        workloads::run(&cfg, &data, &engines)?
    };
    let sorted_load = if cfg.workloads.contains(&Workload::SortedLoadMethods) {
        Some(sorted_load::run(
            &data,
            &engines,
            cfg.repeat,
            &cfg.root,
            cli.sorted_input,
        )?)
    } else {
        None
    };

    let run = RunInfo {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        n: cfg.n,
        threads: cfg.threads,
        repeat: cfg.repeat,
        seed: cli.seed,
        key_len: KEY_LEN,
        value_len: VALUE_LEN,
        individual_writes: cfg.individual_writes,
        batches: cfg.batches,
        batch_size: cfg.batch_size,
        steady_commits: cfg.steady_commits,
        steady_per_commit: cfg.steady_per_commit(),
        dir: parent.display().to_string(),
        warm_up: "one untimed full scan per engine before the read workloads",
        machine: Machine::describe(),
    };

    let table = report::markdown(&results, &engines, cfg.threads);
    println!(
        "\nn = {}, median of {} round(s), {} threads for the threaded reads; warm-up: {}; \
         every commit durable.\n",
        cfg.n, cfg.repeat, cfg.threads, run.warm_up
    );
    let mut table = if only_sorted_methods {
        String::new()
    } else {
        table
    };
    if let Some(r) = &sorted_load {
        if !table.is_empty() {
            table.push('\n');
        }
        table.push_str(&sorted_load::markdown(r));
    }
    println!("{table}");
    if let Some(path) = &cli.markdown {
        std::fs::write(path, &table).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &cli.json {
        std::fs::write(
            path,
            report::json(&results, &engines, &run, sorted_load.as_ref()),
        )
        .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if cli.keep {
        eprintln!("kept the databases in {}", root.keep().display());
    }
    Ok(())
}

fn select_engines(names: &[String]) -> Result<Vec<EngineKind>> {
    if names.is_empty() {
        let all: Vec<_> = EngineKind::ALL
            .into_iter()
            .filter(|k| k.available())
            .collect();
        if !EngineKind::Mapkv.available() {
            eprintln!("note: built without the `mapkv` feature; running the other engines only");
        }
        return Ok(all);
    }
    let mut engines = Vec::new();
    for name in names {
        let Some(kind) = EngineKind::from_name(name) else {
            bail!("unknown engine {name:?} (see --list)");
        };
        if !kind.available() {
            bail!("engine {name} was not built (feature `mapkv` is off)");
        }
        if !engines.contains(&kind) {
            engines.push(kind);
        }
    }
    Ok(engines)
}

fn select_workloads(names: &[String]) -> Result<BTreeSet<Workload>> {
    if names.is_empty() {
        return Ok(Workload::ALL.into_iter().collect());
    }
    names
        .iter()
        .map(|name| {
            Workload::from_name(name)
                .with_context(|| format!("unknown workload {name:?} (see --list)"))
        })
        .collect()
}
