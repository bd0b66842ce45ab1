//! `mapkv`: the command-line tool for mapkv database files.
//!
//! Inspect (`stat`, `check`), read and write single entries (`get`, `put`, `del`, `scan`),
//! move data in and out in a stable text format (`dump`, `load`; see the `dump` module),
//! compact a file (`compact`) and measure the machine (`bench`).
//!
//! Every failure is one line on stderr, `mapkv: <what>: <why>`, and exit status 1; an
//! invalid command line exits with status 2 (clap's convention).

// `println!` and `eprintln!` panic when their stream is a closed pipe or a full disk;
// output goes through `stdout_result` (or `stdout_error`), messages through `report`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[path = "mapkv/bench.rs"]
mod bench;
#[path = "mapkv/commands.rs"]
mod commands;
#[path = "mapkv/dump.rs"]
mod dump;
#[path = "mapkv/dump_options.rs"]
mod dump_options;
#[path = "mapkv/text.rs"]
mod text;

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mapkv::{Database, Error, Options};

use crate::text::{decode_hex, encode_hex, escape_display};

/// Shown at the end of `mapkv --help`.
const EXIT_STATUS_HELP: &str = "\
Exit status: 0 on success; 1 on any failure (missing, locked or corrupt file, key not
found, integrity check failed), with one line on stderr saying what went wrong; 2 for an
invalid command line.";

/// The command line.
#[derive(Parser)]
#[command(
    name = "mapkv",
    version,
    about = "Inspect, query, edit, dump, load and compact mapkv database files",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands. Doc comments become their `--help` text.
#[derive(Subcommand)]
enum Command {
    /// Print page size, file size, pages in use and free, and each tree's entries and
    /// depth.
    Stat {
        /// The database file (opened read-only).
        db: PathBuf,
    },
    /// Verify the file's integrity: exit status 0 when sound, 1 when not.
    ///
    /// Reads every page the newest commit reaches and checks checksums, key order,
    /// B-tree shape, entry counts and free-page accounting.
    Check {
        /// The database file (opened read-only).
        db: PathBuf,
    },
    /// Print the value stored under KEY in TREE (exit status 1 if there is none).
    ///
    /// The value is printed as text with bytes that are not printable UTF-8, and `\`
    /// itself, escaped as `\xNN`; `--hex` prints hex, `--raw` the exact bytes. `--hex`
    /// also reads KEY as hex, with `--raw` too: `get --hex --raw DB TREE 00ff` prints
    /// the exact value under a binary key.
    Get {
        /// The database file (opened read-only).
        db: PathBuf,
        /// The tree's name.
        tree: String,
        /// The key: UTF-8 text, or hex with `--hex`.
        key: String,
        #[command(flatten)]
        encoding: Encoding,
        /// Write the value's exact bytes to stdout, with no newline (this wins over
        /// `--hex` for the value; KEY is still read as hex).
        #[arg(long)]
        raw: bool,
    },
    /// Store VALUE under KEY in TREE, overwriting.
    ///
    /// Creates the tree, and the database file, if missing. Commits durably before
    /// returning.
    Put {
        /// The database file (created if missing).
        db: PathBuf,
        /// The tree's name (created if missing).
        tree: String,
        /// The key: UTF-8 text, or hex with `--hex`.
        key: String,
        /// The value: UTF-8 text, or hex with `--hex`.
        value: String,
        #[command(flatten)]
        encoding: Encoding,
    },
    /// Remove KEY from TREE (exit status 1 if it was not there).
    ///
    /// Commits durably before returning.
    Del {
        /// The database file.
        db: PathBuf,
        /// The tree's name.
        tree: String,
        /// The key: UTF-8 text, or hex with `--hex`.
        key: String,
        #[command(flatten)]
        encoding: Encoding,
    },
    /// Print the entries of TREE in key order, one `KEY<TAB>VALUE` line each.
    ///
    /// Keys and values are printed as text with bytes that are not printable UTF-8, and
    /// `\` itself, escaped as `\xNN` (or as hex with `--hex`). The bounds combine: with
    /// `--prefix p --from pb`, the scan starts at `pb` and stops after the last key that
    /// starts with `p`.
    Scan {
        /// The database file (opened read-only).
        db: PathBuf,
        /// The tree's name.
        tree: String,
        /// Only keys that start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only keys greater than or equal to this.
        #[arg(long)]
        from: Option<String>,
        /// Only keys less than this.
        #[arg(long)]
        to: Option<String>,
        /// Descending key order.
        #[arg(long)]
        reverse: bool,
        /// Print at most this many entries.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Print only the keys.
        #[arg(long)]
        keys_only: bool,
        #[command(flatten)]
        encoding: Encoding,
    },
    /// Write every tree (or only TREE) to stdout in the mapkv dump format.
    #[command(long_about = dump::FORMAT_HELP)]
    Dump {
        /// The database file (opened read-only).
        db: PathBuf,
        /// Dump only this tree.
        tree: Option<String>,
    },
    /// Read the mapkv dump format (from stdin, or `--file`) into DB.
    #[command(long_about = dump::LOAD_HELP)]
    Load {
        /// The database file (created if missing).
        db: PathBuf,
        /// Read this file instead of stdin.
        #[arg(long, short, value_name = "F")]
        file: Option<PathBuf>,
        /// Bytes of one tree's records held in memory to choose between a bulk load
        /// and a write transaction.
        #[arg(long, value_name = "BYTES", default_value_t = dump::BUFFER_BYTES_DEFAULT)]
        buffer_bytes: usize,
        /// Accept trees without their end line and a last line without a newline, in
        /// hand-written input. Without it they are refused: a truncated dump has them.
        #[arg(long)]
        allow_unterminated: bool,
    },
    /// Write a compacted copy of DB to OUT, which must not exist; without OUT, compact
    /// DB in place.
    ///
    /// A copy rebuilds every tree with full pages and no free pages, from a consistent
    /// snapshot (DB is opened read-only). In place, the pages past where the pages in use
    /// would end are moved into free space and the file is cut (pages keep their fill).
    Compact {
        /// The database file.
        db: PathBuf,
        /// The new file; none: compact DB in place.
        out: Option<PathBuf>,
    },
    /// Time the main workloads on a temporary database and print operations per second.
    ///
    /// Inserts of random keys in one transaction, random gets, a full scan, a bulk
    /// load of sorted keys, and single-insert commits with and without fsync.
    Bench {
        /// Entries per workload.
        #[arg(long, short, default_value_t = 100_000)]
        n: u64,
        /// Directory for the temporary database (default: the system's temp directory;
        /// the numbers depend on its file system).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// How keys and values are written on the command line and printed.
#[derive(Args, Clone, Copy)]
struct Encoding {
    /// Keys and values are hex (e.g. `00ff10`), given and printed; without it they are
    /// UTF-8 text.
    #[arg(long)]
    hex: bool,
}

impl Encoding {
    /// The bytes of a key or value given on the command line; `what` names it in errors.
    fn parse(self, what: &str, text: &str) -> CliResult<Vec<u8>> {
        if self.hex {
            decode_hex(text).ok_or_else(|| Failure(format!("{what} {text:?} is not valid hex")))
        } else {
            Ok(text.as_bytes().to_vec())
        }
    }

    /// Bytes as printed by `get` and `scan`.
    fn show(self, bytes: &[u8]) -> String {
        if self.hex {
            encode_hex(bytes)
        } else {
            escape_display(bytes)
        }
    }
}

/// A failure to report: printed as one line on stderr, then exit status 1.
#[derive(Debug)]
struct Failure(String);

/// The result of a subcommand.
type CliResult<T> = Result<T, Failure>;

impl Failure {
    /// A failure of a database operation on the file at `path`.
    fn db(path: &Path, error: Error) -> Failure {
        let why = match &error {
            Error::Io(e) if e.kind() == io::ErrorKind::NotFound => "no such file".to_string(),
            Error::Io(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                "file already exists".to_string()
            }
            Error::Locked => {
                "database is locked: another process or handle has it open read-write".to_string()
            }
            _ => error.to_string(),
        };
        // The library's I/O errors from opening and locking name the file already.
        let path = path.display().to_string();
        match why.contains(&path) {
            true => Failure(why),
            false => Failure(format!("{path}: {why}")),
        }
    }

    /// A failure of a plain file operation on `path`.
    fn io(path: &Path, error: io::Error) -> Failure {
        Failure::db(path, Error::Io(error))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(Failure(message)) => {
            // One line, whatever the error text holds.
            report(&message.replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand. `Ok(FAILURE)` is a negative answer already reported (a key not
/// found); `Err` a failure still to report.
fn run(command: Command) -> CliResult<ExitCode> {
    match command {
        Command::Stat { db } => commands::stat(&db),
        Command::Check { db } => commands::check(&db),
        Command::Get {
            db,
            tree,
            key,
            encoding,
            raw,
        } => commands::get(&db, &tree, &encoding.parse("key", &key)?, encoding, raw),
        Command::Put {
            db,
            tree,
            key,
            value,
            encoding,
        } => {
            let key = encoding.parse("key", &key)?;
            let value = encoding.parse("value", &value)?;
            commands::put(&db, &tree, &key, &value)
        }
        Command::Del {
            db,
            tree,
            key,
            encoding,
        } => commands::del(&db, &tree, &encoding.parse("key", &key)?, encoding),
        Command::Scan {
            db,
            tree,
            prefix,
            from,
            to,
            reverse,
            limit,
            keys_only,
            encoding,
        } => {
            let bounds = commands::ScanBounds {
                prefix: prefix.map(|p| encoding.parse("prefix", &p)).transpose()?,
                from: from.map(|f| encoding.parse("--from key", &f)).transpose()?,
                to: to.map(|t| encoding.parse("--to key", &t)).transpose()?,
            };
            let options = commands::ScanOptions {
                reverse,
                limit,
                keys_only,
                encoding,
            };
            commands::scan(&db, &tree, &bounds, &options)
        }
        Command::Dump { db, tree } => {
            let database = open_read_only(&db)?;
            stdout_result(|out| dump::dump(&database, tree.as_deref(), out), &db)
        }
        Command::Load {
            db,
            file,
            buffer_bytes,
            allow_unterminated,
        } => {
            let options = dump::LoadOptions {
                buffer_bytes,
                allow_unterminated,
            };
            let database = open_read_write(&db, true)?;
            let summary = match &file {
                Some(f) => {
                    let input = File::open(f).map_err(|e| Failure::io(f, e))?;
                    let len = input.metadata().map(|m| m.len()).ok();
                    let bar = progress_bar(len, "loading");
                    let input = io::BufReader::new(bar.wrap_read(input));
                    let summary = dump::load(&database, &db, f, input, options);
                    bar.finish_and_clear();
                    summary?
                }
                None => {
                    let bar = progress_bar(None, "loading");
                    let input = io::BufReader::new(bar.wrap_read(io::stdin().lock()));
                    let summary = dump::load(&database, &db, Path::new("<stdin>"), input, options);
                    bar.finish_and_clear();
                    summary?
                }
            };
            print_line(&summary.to_string(), &db)
        }
        Command::Compact { db, out: Some(out) } => commands::compact(&db, &out),
        Command::Compact { db, out: None } => {
            commands::compact_in_place(&db, open_read_write(&db, false)?)
        }
        Command::Bench { n, dir } => bench::run(n, dir.as_deref()),
    }
}

// ---- opening -------------------------------------------------------------------------

/// Opens an existing database without write access (and without creating it).
fn open_read_only(path: &Path) -> CliResult<Database> {
    Options::new()
        .read_only(true)
        .open(path)
        .map_err(|e| Failure::db(path, e))
}

/// Opens a database read-write; a missing file is created only if `create`.
fn open_read_write(path: &Path, create: bool) -> CliResult<Database> {
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {}
        Err(e) => return Err(Failure::io(path, e)),
    }
    Database::open(path).map_err(|e| Failure::db(path, e))
}

// ---- output helpers ------------------------------------------------------------------

/// Runs `write` on a buffered stdout and flushes it. A closed pipe (`mapkv scan … | head`)
/// ends the output quietly; other write errors are failures. Every command writes to
/// stdout through this, never with `println!`, which panics on a write error.
fn stdout_result(
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    path: &Path,
) -> CliResult<ExitCode> {
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    match write(&mut out).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => stdout_error(e, path),
    }
}

/// What a failed write to stdout means for the command's exit: a closed pipe (the reader
/// has all it wanted) is success, anything else a failure.
fn stdout_error(e: io::Error, path: &Path) -> CliResult<ExitCode> {
    match e {
        e if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        e => {
            // Taken before `into_inner`, which drops an OS error's code ("no space left").
            let why = e.to_string();
            match e.into_inner().map(|inner| inner.downcast::<Error>()) {
                // `dump` wraps database errors in io::Error to pass them through `write`.
                Some(Ok(db_error)) => Err(Failure::db(path, *db_error)),
                _ => Err(Failure(format!("writing to stdout: {why}"))),
            }
        }
    }
}

/// Writes `mapkv: <message>` on stderr. If stderr cannot take it (a closed pipe, a full
/// disk), nothing is left to tell the error to: the exit status still says it.
fn report(message: &str) {
    let _ = writeln!(io::stderr().lock(), "mapkv: {message}");
}

/// Prints one line of a command's result, as `stdout_result` does.
fn print_line(line: &str, path: &Path) -> CliResult<ExitCode> {
    stdout_result(|out| writeln!(out, "{line}"), path)
}

/// A progress bar over bytes read (a spinner counting them when `len` is unknown) on
/// stderr when it is a terminal; hidden otherwise, so pipes and logs stay clean.
fn progress_bar(len: Option<u64>, message: &'static str) -> ProgressBar {
    let template = match len {
        Some(_) => {
            "{msg} {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ({eta})"
        }
        None => "{spinner} {msg} {binary_bytes} {binary_bytes_per_sec} {elapsed}",
    };
    progress(len, template, message)
}

/// A spinner with elapsed time for work that reports no progress (check, compact), on
/// stderr when it is a terminal.
fn spinner(message: &'static str) -> ProgressBar {
    progress(None, "{spinner} {msg} {elapsed}", message)
}

/// A progress indicator drawn with `template`, or a hidden one when stderr is not a
/// terminal.
fn progress(len: Option<u64>, template: &str, message: &'static str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => ProgressBar::new(len),
        None => ProgressBar::new_spinner(),
    };
    // The templates are constants; a bad one would fall back to the default style.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
