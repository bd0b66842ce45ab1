//! The `mapkv` command-line tool, run as a program on temporary databases: results,
//! output formats, exit statuses and the one-line error messages.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mapkv::{Database, Options, Table, TreeOptions};

/// `dump` and `load`: the format, round trips, hand-written and bad input.
#[path = "cli/dump_load.rs"]
mod dump_load;

/// What one run of the tool did.
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// Asserts success and returns stdout as text.
    fn ok(&self) -> String {
        assert_eq!(self.code, 0, "expected success; stderr: {}", self.stderr);
        self.stdout_text()
    }

    /// Asserts exit status 1 with exactly one line on stderr, and returns that line.
    fn failed(&self) -> &str {
        assert_eq!(
            self.code,
            1,
            "expected failure; stdout: {:?}",
            self.stdout_text()
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr: {:?}",
            self.stderr
        );
        assert!(lines[0].starts_with("mapkv: "), "{}", lines[0]);
        lines[0]
    }
}

/// Runs the tool with `args`, feeding `stdin`.
fn mapkv_with_input<I, S>(args: I, stdin: &[u8]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(env!("CARGO_BIN_EXE_mapkv"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mapkv binary runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin).expect("stdin accepts the input");
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("the mapkv binary finishes");
    Run {
        code: status.code().expect("exited, not killed"),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs the tool with `args` and empty stdin.
fn mapkv<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    mapkv_with_input(args, b"")
}

/// Where a run's stdout (or stderr) goes when the test does not read it.
#[derive(Clone, Copy, Debug)]
enum Sink {
    /// A pipe whose reader has exited, as in `mapkv check a | true`.
    ClosedPipe,
    /// `/dev/full`: every write fails with "no space left on device".
    Full,
}

/// The sinks this machine has: `/dev/full` is Linux's (and some BSDs').
fn sinks() -> Vec<Sink> {
    let mut sinks = vec![Sink::ClosedPipe];
    if Path::new("/dev/full").exists() {
        sinks.push(Sink::Full);
    }
    sinks
}

impl Sink {
    fn stdio(self) -> Stdio {
        match self {
            Sink::ClosedPipe => {
                // The reader is closed before the child starts, so its first write fails.
                let (reader, writer) =
                    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
                drop(reader);
                Stdio::from(writer)
            }
            Sink::Full => Stdio::from(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .expect("/dev/full opens"),
            ),
        }
    }
}

/// Runs the tool with `args`, empty stdin, and its stdout and stderr as given.
fn mapkv_with<I, S>(args: I, stdout: Stdio, stderr: Stdio) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_mapkv"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .output()
        .expect("the mapkv binary runs");
    Run {
        code: status.code().expect("exited, not killed"),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs the tool with `args`, empty stdin and stdout into `sink`; `stdout` stays empty.
fn mapkv_into<I, S>(args: I, sink: Sink) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    mapkv_with(args, sink.stdio(), Stdio::piped())
}

/// A temporary directory and a database path inside it.
/// Runs the tests one at a time. A child process that another test thread spawns
/// inherits, between its fork and its exec, every descriptor of this process, including
/// a database file a test has just closed: the child then briefly holds that file's lock,
/// and the tool run on the file next says "database is locked".
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("test.mapkv");
    (dir, path)
}

/// `path` as a command-line argument.
fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A tree's entries in key order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every tree with its entries, read with the library.
fn contents(path: &Path) -> Vec<(String, Entries)> {
    let db = Options::new()
        .read_only(true)
        .open(path)
        .expect("database opens");
    let rtx = db.begin_read().expect("read txn");
    let mut out = Vec::new();
    for name in rtx.tree_names().expect("tree names") {
        let tree = rtx.open_tree(&name).expect("tree opens");
        let entries = tree
            .iter()
            .expect("iter")
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<mapkv::Result<Vec<_>>>()
            .expect("entries read");
        out.push((name, entries));
    }
    out
}

#[test]
fn put_get_del() {
    let _serial = serial();
    let (_dir, db) = temp_db();
    let db = arg(&db);
    assert_eq!(mapkv(["put", db, "users", "alice", "admin"]).ok(), "");
    mapkv(["put", db, "users", "bob", "guest"]).ok();
    mapkv(["put", db, "users", "bob", "owner"]).ok();
    assert_eq!(mapkv(["get", db, "users", "alice"]).ok(), "admin\n");
    assert_eq!(mapkv(["get", db, "users", "bob"]).ok(), "owner\n");
    let missing = mapkv(["get", db, "users", "carol"]);
    assert!(missing.failed().contains("not found"), "{}", missing.stderr);

    mapkv(["del", db, "users", "alice"]).ok();
    mapkv(["get", db, "users", "alice"]).failed();
    assert!(
        mapkv(["del", db, "users", "alice"])
            .failed()
            .contains("not found")
    );
    let no_tree = mapkv(["del", db, "nosuchtree", "k"]);
    assert!(
        no_tree.failed().contains("does not exist"),
        "{}",
        no_tree.stderr
    );
    let no_tree = mapkv(["get", db, "nosuchtree", "k"]);
    assert!(
        no_tree.failed().contains("does not exist"),
        "{}",
        no_tree.stderr
    );
}

#[test]
fn values_print_escaped_raw_or_hex() {
    let _serial = serial();
    let (_dir, db) = temp_db();
    let db = arg(&db);
    mapkv(["put", db, "t", "k", "tab\there back\\slash café"]).ok();
    assert_eq!(
        mapkv(["get", db, "t", "k"]).ok(),
        "tab\\x09here back\\x5cslash café\n"
    );
    assert_eq!(
        mapkv(["get", "--raw", db, "t", "k"]).stdout,
        "tab\there back\\slash café".as_bytes()
    );

    mapkv(["put", "--hex", db, "bin", "00ff", "0a5c09ff00"]).ok();
    assert_eq!(
        mapkv(["get", "--hex", db, "bin", "00ff"]).ok(),
        "0a5c09ff00\n"
    );
    assert_eq!(mapkv(["get", db, "bin", "00ff"]).code, 1, "text, not hex");
    // `--raw` decides the output, so a binary key's exact value can be printed.
    let raw = mapkv(["get", "--raw", "--hex", db, "bin", "00FF"]);
    assert_eq!(raw.code, 0, "{}", raw.stderr);
    assert_eq!(raw.stdout, b"\x0a\x5c\x09\xff\x00");
    assert_eq!(
        mapkv(["scan", "--hex", db, "bin"]).ok(),
        "00ff\t0a5c09ff00\n"
    );
    assert_eq!(
        mapkv(["scan", db, "bin"]).ok(),
        "\\x00\\xff\t\\x0a\\x5c\\x09\\xff\\x00\n"
    );
    let bad = mapkv(["put", "--hex", db, "bin", "0g", "00"]);
    assert!(bad.failed().contains("not valid hex"), "{}", bad.stderr);
}

#[test]
fn scan_bounds_order_and_limit() {
    let _serial = serial();
    let (_dir, path) = temp_db();
    {
        let db = Database::open(&path).expect("open");
        let wtx = db.begin_write().expect("write");
        {
            let mut t = wtx.open_tree("t").expect("tree");
            for key in ["a", "ab", "abc", "abd", "b", "ba", "c"] {
                t.insert(key.as_bytes(), key.to_uppercase().as_bytes())
                    .expect("insert");
            }
            t.insert(b"ab\xff", b"FF").expect("insert");
        }
        wtx.commit().expect("commit");
    }
    let db = arg(&path);
    let keys = |extra: &[&str]| {
        let mut args = vec!["scan", "--keys-only", db, "t"];
        args.extend_from_slice(extra);
        mapkv(args)
            .ok()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&[]),
        ["a", "ab", "abc", "abd", "ab\\xff", "b", "ba", "c"]
    );
    assert_eq!(keys(&["--prefix", "ab"]), ["ab", "abc", "abd", "ab\\xff"]);
    assert_eq!(
        keys(&["--from", "abd", "--to", "ba"]),
        ["abd", "ab\\xff", "b"]
    );
    assert_eq!(
        keys(&["--prefix", "ab", "--from", "abd"]),
        ["abd", "ab\\xff"]
    );
    assert_eq!(keys(&["--prefix", "ab", "--to", "abd"]), ["ab", "abc"]);
    assert_eq!(keys(&["--reverse", "--limit", "3"]), ["c", "ba", "b"]);
    assert_eq!(keys(&["--prefix", "b", "--reverse"]), ["ba", "b"]);
    assert_eq!(keys(&["--limit", "0"]), Vec::<String>::new());
    assert_eq!(keys(&["--prefix", "zz"]), Vec::<String>::new());
    assert_eq!(
        mapkv(["scan", db, "t", "--prefix", "ab", "--limit", "2"]).ok(),
        "ab\tAB\nabc\tABC\n"
    );
    assert_eq!(
        mapkv(["scan", "--hex", "--keys-only", db, "t", "--prefix", "6162"]).ok(),
        "6162\n616263\n616264\n6162ff\n"
    );
}

/// Keys and values that exercise every rule of the dump format.
fn awkward_entries() -> Entries {
    let mut entries: Entries = vec![
        (b"".to_vec(), b"empty key".to_vec()),
        (b"empty value".to_vec(), b"".to_vec()),
        (b"tab\tkey".to_vec(), b"tab\tvalue\t".to_vec()),
        (b"new\nline".to_vec(), b"\n\r\n".to_vec()),
        (b"back\\slash".to_vec(), b"\\x41 is not A".to_vec()),
        (b"\x00nul".to_vec(), b"\x00\x00".to_vec()),
        (b"\xff\xfe".to_vec(), b"\xff".to_vec()),
        (
            b"# looks like a header".to_vec(),
            b"# mapkv-dump v1 tree=x".to_vec(),
        ),
        (
            "unicode é ☃".as_bytes().to_vec(),
            "snow ☃".as_bytes().to_vec(),
        ),
        (
            b"big".to_vec(),
            (0..20_000u32).map(|i| (i % 251) as u8).collect(),
        ),
    ];
    entries.extend((0..=255u8).map(|b| (vec![b'k', b], vec![b, b'v'])));
    entries
}

/// A database with awkward entries in several trees, one named with a space.
fn awkward_db(path: &Path) {
    let db = Database::open(path).expect("open");
    let wtx = db.begin_write().expect("write");
    for name in ["my tree", "#hash\ttab\\", "plain"] {
        let mut t = wtx.open_tree(name).expect("tree");
        for (k, v) in awkward_entries() {
            t.insert(&k, &v).expect("insert");
        }
    }
    wtx.open_tree("empty").expect("empty tree");
    wtx.commit().expect("commit");
}

#[test]
fn check_passes_a_good_file_and_fails_a_corrupted_copy() {
    let _serial = serial();
    let (dir, path) = temp_db();
    {
        let db = Database::open(&path).expect("open");
        let wtx = db.begin_write().expect("write");
        {
            let mut t = wtx.open_tree("t").expect("tree");
            for i in 0..20_000u32 {
                t.insert(&i.to_be_bytes(), &[i as u8; 100]).expect("insert");
            }
        }
        wtx.commit().expect("commit");
    }
    let out = mapkv(["check", arg(&path)]).ok();
    assert!(out.starts_with("ok: 1 tree, 20000 entries"), "{out}");

    let bad = dir.path().join("bad.mapkv");
    let mut bytes = std::fs::read(&path).expect("read");
    // A whole page from the middle of the file, header included, so that reads reach
    // the damage too (a few bytes could land in a page's free space, which only the
    // checksum covers).
    let page = 4096;
    let middle = bytes.len() / 2 / page * page;
    bytes[middle..middle + page].fill(0xa5);
    std::fs::write(&bad, &bytes).expect("write");
    let run = mapkv(["check", arg(&bad)]);
    assert!(run.failed().contains("corrupted"), "{}", run.stderr);
    // Reads that reach the damage fail the same way, in one line.
    let run = mapkv(["dump", arg(&bad)]);
    assert!(run.failed().contains("corrupted"), "{}", run.stderr);
}

#[test]
fn missing_file_is_one_line_and_not_created() {
    let _serial = serial();
    let (_dir, path) = temp_db();
    let db = arg(&path);
    let commands: [&[&str]; 7] = [
        &["stat", db],
        &["check", db],
        &["get", db, "t", "k"],
        &["del", db, "t", "k"],
        &["scan", db, "t"],
        &["dump", db],
        &["compact", db, "out.mapkv"],
    ];
    for args in commands {
        let run = mapkv(args);
        assert!(
            run.failed().ends_with(": no such file"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!path.exists(), "{args:?} created the file");
    }
}

#[test]
fn locked_file_is_one_line() {
    let _serial = serial();
    let (_dir, path) = temp_db();
    let held = Database::open(&path).expect("open");
    let db = arg(&path);
    let commands: [&[&str]; 4] = [
        &["put", db, "t", "k", "v"],
        &["get", db, "t", "k"],
        &["stat", db],
        &["check", db],
    ];
    for args in commands {
        let run = mapkv(args);
        assert!(run.failed().contains("locked"), "{args:?}: {}", run.stderr);
    }
    drop(held);
    mapkv(["put", db, "t", "k", "v"]).ok();
}

#[test]
fn refuses_to_write_into_a_file_that_is_not_a_database() {
    let _serial = serial();
    let (dir, _) = temp_db();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "my notes\n").expect("write");
    let run = mapkv(["put", arg(&notes), "t", "k", "v"]);
    assert!(
        run.failed().contains("not a mapkv database"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&notes).expect("read"), b"my notes\n");
    let run = mapkv(["stat", arg(&notes)]);
    assert!(
        run.failed().contains("not a mapkv database"),
        "{}",
        run.stderr
    );
}

#[test]
fn stat_lists_trees_and_compact_keeps_contents() {
    let _serial = serial();
    let (dir, path) = temp_db();
    awkward_db(&path);
    let out = mapkv(["stat", arg(&path)]).ok();
    assert!(out.contains("page size   4096 bytes"), "{out}");
    for tree in ["my tree", "#hash\\x09tab\\x5c", "plain", "empty"] {
        assert!(out.contains(tree), "{tree} in {out}");
    }
    assert!(out.contains("trees       4"), "{out}");

    let compacted = dir.path().join("compacted.mapkv");
    let out = mapkv(["compact", arg(&path), arg(&compacted)]).ok();
    assert!(out.starts_with("compacted "), "{out}");
    assert_eq!(contents(&compacted), contents(&path));
    mapkv(["check", arg(&compacted)]).ok();
    let again = mapkv(["compact", arg(&path), arg(&compacted)]);
    assert!(
        again.failed().contains("already exists"),
        "{}",
        again.stderr
    );
    // Without OUT: in place, keeping every entry.
    let before = contents(&path);
    let out = mapkv(["compact", arg(&path)]).ok();
    assert!(out.contains("in place"), "{out}");
    assert_eq!(contents(&path), before);
    mapkv(["check", arg(&path)]).ok();
}

#[test]
fn help_and_usage_errors() {
    let _serial = serial();
    for sub in [
        "stat", "check", "get", "put", "del", "scan", "dump", "load", "compact", "bench",
    ] {
        let out = mapkv([sub, "--help"]).ok();
        assert!(out.contains("Usage: mapkv"), "{sub}: {out}");
    }
    assert!(
        mapkv(["dump", "--help"])
            .ok()
            .contains("# mapkv-dump v1 tree=NAME")
    );
    assert_eq!(mapkv(["get", "only-one-arg"]).code, 2);
    assert_eq!(mapkv(["frobnicate"]).code, 2);
}

#[test]
fn bench_runs() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = mapkv(["bench", "--n", "200", "--dir", arg(dir.path())]).ok();
    for workload in ["insert", "get", "scan", "bulk load", "commit"] {
        assert!(out.contains(workload), "{workload} in {out}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read dir").count(),
        0,
        "bench removes its database"
    );
}

/// An I/O error that names the file is printed once, not prefixed with the path again.
#[test]
fn io_errors_name_the_file_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = arg(dir.path());
    let run = mapkv(["stat", path]);
    let line = run.failed();
    assert_eq!(line.matches(path).count(), 1, "{line}");
}

/// A message on stderr that cannot be written (a closed pipe, a full disk) is not a
/// panic either: the exit status still tells the failure, and a panic would replace
/// it with 101.
///
/// Catches: `eprintln!`, which panics when the write fails.
#[test]
fn stderr_closed_or_full_is_not_a_panic() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("a.mapkv");
    awkward_db(&db);
    let missing = dir.path().join("missing.mapkv");
    for sink in sinks() {
        let commands: [(&str, Vec<&str>); 3] = [
            (
                "get of a missing key",
                vec!["get", arg(&db), "plain", "nope"],
            ),
            (
                "del of a missing key",
                vec!["del", arg(&db), "plain", "nope"],
            ),
            ("check of a missing file", vec!["check", arg(&missing)]),
        ];
        for (what, args) in commands {
            let run = mapkv_with(args, Stdio::piped(), sink.stdio());
            assert_eq!(run.code, 1, "{what} {sink:?}");
            assert_eq!(run.stdout, b"", "{what} {sink:?}");
        }
    }
}

/// No command panics on stdout: a closed pipe ends the output quietly with status 0
/// (the work is done), a failed write is one line on stderr and status 1.
#[test]
fn stdout_closed_or_full_is_not_a_panic() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("a.mapkv");
    awkward_db(&db);
    let dump = mapkv(["dump", arg(&db)]);
    let dump_file = dir.path().join("a.dump");
    std::fs::write(&dump_file, &dump.stdout).expect("write dump");
    for (i, sink) in sinks().into_iter().enumerate() {
        let expect = |run: Run, what: &str| match sink {
            Sink::ClosedPipe => {
                assert_eq!(run.code, 0, "{what} {sink:?}: {}", run.stderr);
                assert_eq!(run.stderr, "", "{what} {sink:?}");
            }
            Sink::Full => {
                let line = run.failed();
                assert!(line.contains("writing to stdout"), "{what}: {line}");
            }
        };
        let loaded = dir.path().join(format!("loaded-{i}.mapkv"));
        let copy = dir.path().join(format!("copy-{i}.mapkv"));
        let commands: [(&str, Vec<&str>); 7] = [
            ("check", vec!["check", arg(&db)]),
            ("stat", vec!["stat", arg(&db)]),
            ("scan", vec!["scan", arg(&db), "plain"]),
            ("dump", vec!["dump", arg(&db)]),
            (
                "load",
                vec!["load", arg(&loaded), "--file", arg(&dump_file)],
            ),
            ("compact copy", vec!["compact", arg(&db), arg(&copy)]),
            ("compact in place", vec!["compact", arg(&loaded)]),
        ];
        for (what, args) in commands {
            expect(mapkv_into(args, sink), what);
        }
        // The writes were done before the output failed.
        assert_eq!(contents(&loaded), contents(&db), "{sink:?}");
        assert_eq!(contents(&copy), contents(&db), "{sink:?}");
        let bench = ["bench", "--n", "50", "--dir", arg(dir.path())];
        expect(mapkv_into(bench, sink), "bench");
    }
}
