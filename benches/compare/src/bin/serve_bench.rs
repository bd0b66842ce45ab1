//! Serving values over loopback TCP (issue 17, item 6): mapkv in three modes against
//! SQLite's incremental blob read and redb.
//!
//! ```sh
//! cargo run --release -p compare --bin serve_bench -- --repeat 3 [--dir D] [--scenarios a,b,c] [--json F]
//! ```
//!
//! Scenarios: (a) one value of `--big-mib` MiB (1 GiB), one client; (b) 10,000 values of
//! 64 KiB, 8 concurrent clients, each fetching every value once in its own shuffled
//! order; (c) `--small-n` values of 150 B (100,000 by default; the issue's 1 million
//! with `--small-n 1000000`), 8 clients, each fetching its own eighth of the keys in a
//! shuffled order: a request rate.
//!
//! The server is this process: one thread per connection (`std::net`), one read
//! transaction (mapkv, redb) or one blob handle (SQLite) per request. The clients run in
//! a child process (this program re-run with `--client`), so that the server's CPU time,
//! read from `/proc/self/stat` (user and system, all threads) just before the clients
//! start and just after they finish, holds the serving alone. Protocol: the client sends
//! the key as a line (ten decimal digits), the server answers with the value's length
//! (8 bytes, little-endian) and the value; the client reads it into a reused buffer.
//! Before the measured rounds, one untimed pass by one client warms the page cache.
//!
//! With `SERVE_BENCH_CLIENT_DISCARDS=1` the clients receive values with
//! `recv(MSG_TRUNC)`, which on TCP drops the bytes in the kernel without copying them
//! out: what serving costs when the client's copy does not set the pace (on two cores,
//! client and server share them).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use redb::{ReadableDatabase, TableDefinition};
use rusqlite::{Connection, MAIN_DB};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");
const TREE: &str = "t";
/// SQLite's blob reads go through a buffer of this size, as a server would stream them.
const BLOB_CHUNK_BYTES: usize = 256 * 1024;
const CLIENTS: usize = 8;
const SQLITE_MAX_LENGTH_BYTES: u64 = 999_000_000;
const GIB: f64 = (1u64 << 30) as f64;
/// `/proc/self/stat` counts CPU time in clock ticks; 100 a second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Parser)]
struct Args {
    /// Where the stores are made (a fresh directory inside it, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Which of a (one big value), b (64 KiB values, 8 clients), c (150 B values).
    #[arg(long, default_value = "a,b,c", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Size of scenario a's value in MiB.
    #[arg(long, default_value_t = 1024)]
    big_mib: u64,
    /// Number of values in scenario c.
    #[arg(long, default_value_t = 100_000)]
    small_n: u64,
    /// Measured rounds; each cell is the median.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: run as the client process (`ADDR KEYS CLIENTS SPLIT`).
    #[arg(long, num_args = 4, hide = true)]
    client: Option<Vec<String>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sendfile,
    MapWrite,
    Copy,
    SqliteBlob,
    Redb,
}

const KINDS: [(Kind, &str); 5] = [
    (Kind::Sendfile, "mapkv sendfile"),
    (Kind::MapWrite, "mapkv map-write"),
    (Kind::Copy, "mapkv copy"),
    (Kind::SqliteBlob, "sqlite blob"),
    (Kind::Redb, "redb"),
];

/// One scenario's data: `n` values of `len` bytes, fetched by `clients` clients, each
/// all of them (`split == false`) or its own share (`split == true`).
struct Scenario {
    name: &'static str,
    n: u64,
    len: u64,
    clients: usize,
    split: bool,
}

/// The three stores of one scenario.
struct Stores {
    mapkv: mapkv::Database,
    redb: redb::Database,
    sqlite: PathBuf,
}

#[derive(serde::Serialize)]
struct Cell {
    engine: &'static str,
    scenario: &'static str,
    bytes_per_second: f64,
    requests_per_second: f64,
    user_seconds_per_gib: f64,
    system_seconds_per_gib: f64,
    cpu_microseconds_per_request: f64,
}

fn key(i: u64) -> String {
    format!("{i:010}")
}

fn fill(i: u64, len: u64) -> Vec<u8> {
    (0..len).map(|j| (i.wrapping_mul(31) + j) as u8).collect()
}

/// Builds the three stores of `s` under `dir` (untimed).
fn prepare(dir: &Path, s: &Scenario) -> Result<Stores> {
    let mdb = mapkv::Database::open(dir.join(format!("{}.mapkv", s.name)))?;
    let wtx = mdb.begin_write()?;
    {
        let mut t = wtx.open_tree(TREE)?;
        for i in 0..s.n {
            if s.len > 64 << 20 {
                t.insert_from(
                    key(i).as_bytes(),
                    s.len,
                    &mut std::io::repeat(7).take(s.len),
                )?;
            } else {
                t.insert(key(i).as_bytes(), &fill(i, s.len))?;
            }
        }
    }
    wtx.commit()?;

    let rdb = redb::Database::create(dir.join(format!("{}.redb", s.name)))?;
    let wtx = rdb.begin_write()?;
    {
        let mut t = wtx.open_table(TABLE)?;
        for i in 0..s.n {
            let v = if s.len > 64 << 20 {
                vec![7; s.len as usize]
            } else {
                fill(i, s.len)
            };
            t.insert(key(i).as_bytes(), &v[..])?;
        }
    }
    wtx.commit()?;

    let sqlite = dir.join(format!("{}.sqlite", s.name));
    let mut conn = Connection::open(&sqlite)?;
    conn.execute_batch("CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB)")?;
    let tx = conn.transaction()?;
    // SQLite refuses a blob over SQLITE_MAX_LENGTH (10^9 bytes in the bundled build, row included), so
    // its big value is 999,000,000 bytes; throughput and CPU per GiB stay comparable.
    let len = s.len.min(SQLITE_MAX_LENGTH_BYTES);
    for i in 0..s.n {
        // The key's number is the rowid that `blob_open` needs.
        tx.execute(
            "INSERT INTO kv VALUES (?1, zeroblob(?2))",
            (i as i64, len as i64),
        )?;
        let mut blob = tx.blob_open(MAIN_DB, "kv", "v", i as i64, false)?;
        if s.len > 64 << 20 {
            let chunk = vec![7u8; 1 << 20];
            let mut left = len as usize;
            while left > 0 {
                let k = left.min(chunk.len());
                blob.write_all(&chunk[..k])?;
                left -= k;
            }
        } else {
            blob.write_all(&fill(i, s.len))?;
        }
    }
    tx.commit()?;
    Ok(Stores {
        mapkv: mdb,
        redb: rdb,
        sqlite,
    })
}

/// Answers one connection's requests until the client closes it.
fn serve(stores: &Stores, kind: Kind, stream: TcpStream) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut requests = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut line = String::new();
    let mut buf: Vec<u8> = Vec::new();
    let conn = match kind {
        Kind::SqliteBlob => Some(Connection::open(&stores.sqlite)?),
        _ => None,
    };
    // The read transaction of the last value sent with sendfile: the socket reads the
    // value's pages when the client takes the bytes, so it is kept until the client's
    // next request (FORMAT.md#value-extents).
    let mut pinned: Option<mapkv::ReadTxn> = None;
    loop {
        line.clear();
        if requests.read_line(&mut line)? == 0 {
            return Ok(());
        }
        drop(pinned.take()); // the client asked again: it has read the last value
        let k = line.trim_end().as_bytes();
        match kind {
            Kind::Sendfile => {
                let rtx = stores.mapkv.begin_read()?;
                {
                    let tree = rtx.open_tree(TREE)?;
                    let extent = tree.get_extent(k)?.context("absent key")?;
                    out.write_all(&extent.len().to_le_bytes())?;
                    let sent = extent.send_to(&out, ..)?;
                    anyhow::ensure!(sent == extent.len(), "short send");
                }
                pinned.replace(rtx);
            }
            Kind::MapWrite => {
                let rtx = stores.mapkv.begin_read()?;
                let tree = rtx.open_tree(TREE)?;
                let v = tree.get(k)?.context("absent key")?;
                out.write_all(&(v.len() as u64).to_le_bytes())?;
                out.write_all(v)?;
            }
            Kind::Copy => {
                let rtx = stores.mapkv.begin_read()?;
                let tree = rtx.open_tree(TREE)?;
                buf.clear();
                tree.value_reader(k)?
                    .context("absent key")?
                    .read_to_end(&mut buf)?;
                out.write_all(&(buf.len() as u64).to_le_bytes())?;
                out.write_all(&buf)?;
            }
            Kind::Redb => {
                let rtx = stores.redb.begin_read()?;
                let table = rtx.open_table(TABLE)?;
                let guard = table.get(k)?.context("absent key")?;
                let v = guard.value();
                out.write_all(&(v.len() as u64).to_le_bytes())?;
                out.write_all(v)?;
            }
            Kind::SqliteBlob => {
                let rowid: i64 = line.trim_end().parse()?;
                let conn = conn.as_ref().expect("opened above");
                let mut blob = conn.blob_open(MAIN_DB, "kv", "v", rowid, true)?;
                out.write_all(&(blob.len() as u64).to_le_bytes())?;
                buf.resize(BLOB_CHUNK_BYTES, 0);
                loop {
                    let got = blob.read(&mut buf)?;
                    if got == 0 {
                        break;
                    }
                    out.write_all(&buf[..got])?;
                }
            }
        }
    }
}

/// Server CPU time so far, user and system, in seconds (the whole process).
fn cpu_seconds() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields 14 and 15 (utime, stime); the command name (field 2) may hold spaces.
    let rest = &stat[stat.rfind(')').context("/proc/self/stat")? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| -> Result<f64> { Ok(f[i].parse::<f64>()? / TICKS_PER_SECOND) };
    Ok((ticks(11)?, ticks(12)?))
}

/// What one run of the client process measured, and the server's CPU meanwhile.
struct Run {
    seconds: f64,
    bytes: u64,
    requests: u64,
    user: f64,
    system: f64,
}

/// Runs the client process against `addr` and reads the server's CPU time around it.
fn run_clients(addr: &str, n: u64, clients: usize, split: bool) -> Result<Run> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--client", addr, &n.to_string(), &clients.to_string()])
        .arg(if split { "split" } else { "all" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut from = BufReader::new(child.stdout.take().expect("piped"));
    let mut to = child.stdin.take().expect("piped");
    let mut line = String::new();
    from.read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "ready", "client: {line:?}");
    let (u0, s0) = cpu_seconds()?;
    to.write_all(b"go\n")?;
    line.clear();
    from.read_line(&mut line)?;
    let (u1, s1) = cpu_seconds()?;
    anyhow::ensure!(child.wait()?.success(), "client failed");
    let f: Vec<&str> = line.split_whitespace().collect();
    anyhow::ensure!(f.len() == 3, "client: {line:?}");
    Ok(Run {
        seconds: f[0].parse()?,
        bytes: f[1].parse()?,
        requests: f[2].parse()?,
        user: u1 - u0,
        system: s1 - s0,
    })
}

/// The client process: connects `clients` times, says `ready`, waits for `go`, fetches,
/// prints `seconds bytes requests`.
fn client(a: &[String]) -> Result<()> {
    let (addr, n, clients, split) = (
        &a[0],
        a[1].parse::<u64>()?,
        a[2].parse::<usize>()?,
        a[3] == "split",
    );
    let streams: Vec<TcpStream> = (0..clients)
        .map(|_| TcpStream::connect(addr))
        .collect::<Result<_, _>>()?;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, stream)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<(u64, u64)> {
                stream.set_nodelay(true)?;
                let mut order: Vec<u64> = if split {
                    (c as u64..n).step_by(clients).collect()
                } else {
                    (0..n).collect()
                };
                shuffle(&mut order, c as u64 + 1);
                let mut out = stream.try_clone()?;
                let mut input = stream;
                let mut buf = vec![0u8; 1 << 20];
                let mut bytes = 0;
                let discard =
                    std::env::var_os("SERVE_BENCH_CLIENT_DISCARDS").is_some_and(|v| v == "1");
                barrier.wait();
                for &i in &order {
                    out.write_all(format!("{}\n", key(i)).as_bytes())?;
                    let mut len = [0u8; 8];
                    input.read_exact(&mut len)?;
                    let mut left = u64::from_le_bytes(len);
                    bytes += left;
                    while left > 0 {
                        let want = left.min(buf.len() as u64) as usize;
                        let got = match discard {
                            true => {
                                let flags = rustix::net::RecvFlags::TRUNC;
                                rustix::net::recv(&input, &mut buf[..want], flags)?.0
                            }
                            false => input.read(&mut buf[..want])?,
                        };
                        if got == 0 {
                            bail!("server closed the connection");
                        }
                        left -= got as u64;
                    }
                }
                Ok((bytes, order.len() as u64))
            })
        })
        .collect();
    println!("ready");
    std::io::stdout().flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    barrier.wait();
    let t0 = Instant::now();
    let (mut bytes, mut requests) = (0, 0);
    for h in handles {
        let (b, r) = h.join().expect("client thread")?;
        bytes += b;
        requests += r;
    }
    println!("{} {bytes} {requests}", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Fisher–Yates with a xorshift generator: the same order for the same seed.
fn shuffle(v: &mut [u64], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Serves `kind` from `stores` on a fresh port, warms the cache, measures `repeat` runs.
fn measure(
    stores: &Arc<Stores>,
    kind: Kind,
    name: &'static str,
    s: &Scenario,
    repeat: usize,
) -> Result<Cell> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let st = stores.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let st = st.clone();
            std::thread::spawn(move || {
                if let Err(e) = serve(&st, kind, stream) {
                    eprintln!("server: {e:#}");
                }
            });
        }
    });
    run_clients(&addr, s.n, 1, false)?; // warm-up, untimed
    let runs: Vec<Run> = (0..repeat)
        .map(|_| run_clients(&addr, s.n, s.clients, s.split))
        .collect::<Result<_>>()?;
    let gib = |r: &Run| r.bytes as f64 / GIB;
    Ok(Cell {
        engine: name,
        scenario: s.name,
        bytes_per_second: median(runs.iter().map(|r| r.bytes as f64 / r.seconds).collect()),
        requests_per_second: median(runs.iter().map(|r| r.requests as f64 / r.seconds).collect()),
        user_seconds_per_gib: median(runs.iter().map(|r| r.user / gib(r)).collect()),
        system_seconds_per_gib: median(runs.iter().map(|r| r.system / gib(r)).collect()),
        cpu_microseconds_per_request: median(
            runs.iter()
                .map(|r| (r.user + r.system) * 1e6 / r.requests as f64)
                .collect(),
        ),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(a) = &args.client {
        return client(a);
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("mapkv-serve-")
        .tempdir_in(base)?;
    let all = [
        Scenario {
            name: "a",
            n: 1,
            len: args.big_mib << 20,
            clients: 1,
            split: false,
        },
        Scenario {
            name: "b",
            n: 10_000,
            len: 64 << 10,
            clients: CLIENTS,
            split: false,
        },
        Scenario {
            name: "c",
            n: args.small_n,
            len: 150,
            clients: CLIENTS,
            split: true,
        },
    ];
    let mut cells = Vec::new();
    for s in all
        .iter()
        .filter(|s| args.scenarios.iter().any(|x| x == s.name))
    {
        eprintln!(
            "scenario {}: preparing {} values of {} B",
            s.name, s.n, s.len
        );
        let stores = Arc::new(prepare(dir.path(), s)?);
        for (kind, name) in KINDS {
            let cell = measure(&stores, kind, name, s, args.repeat)?;
            eprintln!(
                "  {name}: {:.2} GiB/s, {:.0} req/s, {:.3} s user + {:.3} s system per GiB",
                cell.bytes_per_second / GIB,
                cell.requests_per_second,
                cell.user_seconds_per_gib,
                cell.system_seconds_per_gib
            );
            cells.push(cell);
        }
    }
    print_table(&all, &cells);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&cells)?)?;
    }
    Ok(())
}

fn print_table(all: &[Scenario], cells: &[Cell]) {
    let present: Vec<&Scenario> = all
        .iter()
        .filter(|s| cells.iter().any(|c| c.scenario == s.name))
        .collect();
    let mut head = String::from("| engine / mode |");
    let mut rule = String::from("|---|");
    for s in &present {
        let what = if s.name == "c" {
            "requests/s · CPU µs/request (user+sys)"
        } else {
            "GiB/s · CPU s/GiB user+sys"
        };
        head += &format!(
            " {} ({} × {} B, {} client{}): {what} |",
            s.name,
            s.n,
            s.len,
            s.clients,
            if s.clients > 1 { "s" } else { "" }
        );
        rule += "---:|";
    }
    println!("{head}\n{rule}");
    for (_, name) in KINDS {
        let mut row = format!("| {name} |");
        for s in &present {
            let Some(c) = cells
                .iter()
                .find(|c| c.engine == name && c.scenario == s.name)
            else {
                row += " |";
                continue;
            };
            if s.name == "c" {
                row += &format!(
                    " {:.0}/s · {:.1} µs |",
                    c.requests_per_second, c.cpu_microseconds_per_request
                );
            } else {
                row += &format!(
                    " {:.2} GiB/s · {:.3} + {:.3} s |",
                    c.bytes_per_second / GIB,
                    c.user_seconds_per_gib,
                    c.system_seconds_per_gib
                );
            }
        }
        println!("{row}");
    }
}
