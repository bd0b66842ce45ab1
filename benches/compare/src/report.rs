//! Turns the samples into the markdown table and the JSON file.

use serde::Serialize;

use crate::engine::EngineKind;
use crate::sorted_load::SortedLoadReport;
use crate::units::fmt_rate;
use crate::workloads::{Results, Row, SCAN_LEN, Sample, Workload};

/// What the report says about the run, besides the numbers.
#[derive(Serialize)]
pub struct RunInfo {
    pub command: String,
    pub n: usize,
    pub threads: usize,
    pub repeat: usize,
    pub seed: u64,
    pub key_len: usize,
    pub value_len: usize,
    pub individual_writes: usize,
    pub batches: usize,
    pub batch_size: usize,
    pub steady_commits: usize,
    /// Keys each steady commit overwrites (`--steady-fraction` of `n`).
    pub steady_per_commit: usize,
    pub dir: String,
    pub warm_up: &'static str,
    pub machine: Machine,
}

#[derive(Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let meminfo = read("/proc/meminfo");
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (mem_kib / (1 << 20) as f64 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    run: &'a RunInfo,
    engines: Vec<&'static str>,
    ratio: &'static str,
    rows: Vec<ReportRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sorted_load: Option<&'a SortedLoadReport>,
}

#[derive(Serialize)]
struct ReportRow {
    id: &'static str,
    label: String,
    /// "seconds", "bytes" or "ratio".
    unit: &'static str,
    ops: Option<u64>,
    cells: Vec<Cell>,
    best_other: Option<&'static str>,
    /// Best other engine's median ÷ mapkv's median: > 1 means mapkv is faster (smaller).
    mapkv_ratio: Option<f64>,
}

#[derive(Serialize)]
struct Cell {
    engine: &'static str,
    /// Median of the samples, in `unit`.
    median: f64,
    ops_per_sec: Option<f64>,
    samples: Vec<f64>,
}

const RATIO_NOTE: &str = "best other engine's median ÷ mapkv's median: > 1 means mapkv is faster \
                          (for sizes and size ratios: mapkv's is smaller)";

fn label(row: Row, threads: usize) -> String {
    match row {
        Row::Time(w) => match w {
            Workload::BulkLoad => "bulk load (random order)".into(),
            Workload::SortedBulkLoad => "sorted bulk load".into(),
            Workload::IndividualWrites => "individual writes".into(),
            Workload::BatchWrites => "batch writes".into(),
            Workload::Len => "len()".into(),
            Workload::RandomReads => "random reads".into(),
            Workload::RandomReadsThreads => format!("random reads ({threads} threads)"),
            Workload::RangeReads => format!("random range reads ({SCAN_LEN} entries)"),
            Workload::FullScan => "full scan".into(),
            Workload::Removals => "removals".into(),
            Workload::Compaction => "compaction".into(),
            Workload::SteadyUpdates => "steady updates (keys overwritten)".into(),
            Workload::SortedLoadMethods => "sorted load, by method".into(),
        },
        Row::SizeAfterLoad => "file size after load".into(),
        Row::SizeAfterSortedLoad => "file size after sorted load".into(),
        Row::SizeAfterRemovals => "file size after removals".into(),
        Row::SizeAfterCompaction => "file size after compaction".into(),
        Row::SizeAfterCompactInPlace => "file size after compact() in place (mapkv)".into(),
        Row::SizeBeforeSteadyUpdates => "file size before steady updates (its load)".into(),
        Row::SizeAfterSteadyUpdates => "file size after steady updates".into(),
        Row::SizeAfterSteadyCompaction => "file size after steady updates, compacted".into(),
        Row::SteadyGrowth => "steady updates: file ÷ compacted (target: mapkv ≤ 1.3)".into(),
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn build(results: &Results, engines: &[EngineKind], threads: usize) -> Vec<ReportRow> {
    let mut rows = Vec::new();
    for (&row, by_engine) in results {
        let mut ops = None;
        let mut unit = "seconds";
        let mut cells = Vec::new();
        for &kind in engines {
            let Some(samples) = by_engine.get(&kind) else {
                continue;
            };
            let values: Vec<f64> = samples
                .iter()
                .map(|s| match *s {
                    Sample::Time { secs, ops: o } => {
                        ops = o;
                        secs
                    }
                    Sample::Bytes(b) => {
                        unit = "bytes";
                        b as f64
                    }
                    Sample::Ratio(r) => {
                        unit = "ratio";
                        r
                    }
                })
                .collect();
            let m = median(&values);
            cells.push(Cell {
                engine: kind.name(),
                median: m,
                ops_per_sec: ops.map(|o| o as f64 / m),
                samples: values,
            });
        }
        let mapkv = cells
            .iter()
            .find(|c| c.engine == EngineKind::Mapkv.name())
            .map(|c| c.median);
        let best_other = cells
            .iter()
            .filter(|c| c.engine != EngineKind::Mapkv.name())
            .min_by(|a, b| a.median.total_cmp(&b.median));
        let mapkv_ratio = match (mapkv, best_other) {
            (Some(m), Some(b)) if m > 0.0 => Some(b.median / m),
            _ => None,
        };
        rows.push(ReportRow {
            id: row.id(),
            label: label(row, threads),
            unit,
            ops,
            best_other: best_other.map(|c| c.engine),
            mapkv_ratio,
            cells,
        });
    }
    rows
}

pub fn json(
    results: &Results,
    engines: &[EngineKind],
    run: &RunInfo,
    sorted_load: Option<&SortedLoadReport>,
) -> String {
    let report = Report {
        run,
        engines: engines.iter().map(|k| k.name()).collect(),
        ratio: RATIO_NOTE,
        rows: build(results, engines, run.threads),
        sorted_load,
    };
    serde_json::to_string_pretty(&report).expect("serializable")
}

fn fmt_secs(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// The markdown table: one row per workload, one column per engine, then the ratio.
/// The best cell of each row is in bold.
pub fn markdown(results: &Results, engines: &[EngineKind], threads: usize) -> String {
    let rows = build(results, engines, threads);
    let mut out = String::new();
    out.push_str("| workload | ops |");
    for k in engines {
        out.push_str(&format!(" {k} |"));
    }
    out.push_str(" mapkv ÷ best other (> 1: mapkv faster/smaller) |\n|---|---:|");
    for _ in engines {
        out.push_str("---:|");
    }
    out.push_str("---:|\n");
    for row in &rows {
        let best = row
            .cells
            .iter()
            .map(|c| c.median)
            .fold(f64::INFINITY, f64::min);
        out.push_str(&format!(
            "| {} | {} |",
            row.label,
            row.ops.map_or(String::new(), |o| o.to_string())
        ));
        for k in engines {
            let cell = match row.cells.iter().find(|c| c.engine == k.name()) {
                None => "–".to_string(),
                Some(c) => {
                    let text = match (row.unit, c.ops_per_sec) {
                        ("bytes", _) => fmt_bytes(c.median),
                        ("ratio", _) => format!("{:.2}×", c.median),
                        (_, Some(rate)) if row.ops.unwrap_or(0) > 1 => {
                            format!("{} · {}", fmt_secs(c.median), fmt_rate(rate))
                        }
                        _ => fmt_secs(c.median),
                    };
                    if c.median == best && row.cells.len() > 1 {
                        format!("**{text}**")
                    } else {
                        text
                    }
                }
            };
            out.push_str(&format!(" {cell} |"));
        }
        let ratio = match (row.mapkv_ratio, row.best_other) {
            (Some(r), Some(other)) => format!("{r:.2}× (vs {other})"),
            _ => "–".to_string(),
        };
        out.push_str(&format!(" {ratio} |\n"));
    }
    out
}
