//! The mapkv dump format and the `dump` and `load` subcommands.
//!
//! # Format, version 1
//!
//! A text file of lines ending in `\n`, in the spirit of LMDB's `mdb_dump`. Each tree is
//! a header line, one line per entry in ascending key order, and an end line:
//!
//! ```text
//! # mapkv-dump v1 tree=NAME
//! KEY<TAB>VALUE
//! KEY<TAB>VALUE
//! # mapkv-dump v1 end entries=2
//! ```
//!
//! NAME, KEY and VALUE are escaped byte strings: the bytes 0x20..=0x7e are written as
//! they are, except `\`; every other byte, `\` itself, and a `#` that is the first byte
//! of a key are written as `\xNN` (two lowercase hex digits). So a record line never
//! starts with `#`, holds exactly one raw tab, and round-trips any bytes exactly (empty
//! keys and values included: `\tVALUE`, `KEY\t`). Tree names are UTF-8.
//!
//! A tree's options (`TreeOptions`, fixed when it is created) are fields of its header
//! before `tree=`, whose NAME runs to the end of the line: `value_align(8)` is
//! `# mapkv-dump v1 align=8 tree=NAME`. `load` creates the tree with them, and refuses a
//! tree that exists with other options. A tree with default options has no field but
//! `tree=`, as in dumps from before options were recorded; a reader from then refuses a
//! header with options (a line of a newer format) rather than drop them. A typed table's
//! value layout has no field (`dump_options` says why): `dump` refuses such a tree.
//!
//! When reading, other lines starting with `#` are comments, blank lines are ignored,
//! hex digits may be uppercase, raw bytes above 0x7e are taken as they are (hand-written
//! UTF-8 works), an end line's count must match, and a header `# mapkv-dump vN` with N
//! other than 1 is refused. An unknown header field, an `align=` other than 1, 2, 4, 8,
//! 16, 32 or 64, a raw carriage return, a record without exactly one raw tab,
//! and a `\` not starting `\xNN` are errors that name the line.
//!
//! A dump cut short (a full disk, a killed `mapkv dump`, a partial copy) ends in a line
//! without its newline, or after records with no end line; read as it is, it would load
//! a cut value or key as if it were whole. So a tree without its end line and a last line
//! without a newline are errors too, unless the reader is told to allow them
//! (`load --allow-unterminated`, for hand-written input). A dump cut right after a
//! tree's end line reads as a complete dump of fewer trees: the format has no
//! end-of-dump line to tell them apart.
//!
//! The version number changes only if a dump that this version writes could be read
//! differently; lines added in later versions will be comments to this reader.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::Path;

use mapkv::{Database, Error};

use crate::dump_options::{self, DumpedOptions};
use crate::text::{count_of, hex_digit};
use crate::{CliResult, Failure};

/// `mapkv dump --help`.
pub const FORMAT_HELP: &str = "\
Write every tree (or only TREE) to stdout in the mapkv dump format: stable, line-based
text that `mapkv load` reads back byte-exact (like mdb_dump / mdb_load).

Format, version 1 (one tree after another, in name order):
  # mapkv-dump v1 tree=NAME         starts a tree
  # mapkv-dump v1 align=A tree=NAME starts a tree created with value_align(A), A > 1
  KEY<TAB>VALUE                     one entry a line, ascending key order
  # mapkv-dump v1 end entries=N     ends the tree (required); load checks the count

NAME, KEY and VALUE: the bytes 0x20-0x7e as they are, except `\\`; every other byte,
`\\` itself, and a `#` starting a key as `\\xNN` (two lowercase hex digits). Every line,
the last included, ends with a newline. Empty keys and values are empty fields.

A tree keeps its options: load creates it with the header's align= (1 when absent) and
refuses a tree that exists with another. A typed table cannot be dumped: the format has
no field for its value type's layout, so dump refuses it and writes nothing.

Example: `mapkv dump app.mapkv > app.dump`, `mapkv load new.mapkv --file app.dump`.";

/// `mapkv load --help`.
pub const LOAD_HELP: &str = "\
Read the mapkv dump format (see `mapkv dump --help`) from stdin, or from the file given
with --file, into DB, creating the file and the trees as needed. Entries are inserted
or overwritten; entries already in a tree and absent from the input stay.

Each tree is written atomically: with one bulk load when its keys are sorted and the
tree is empty or absent (the fast path), otherwise in one write transaction. Load holds
up to --buffer-bytes of one tree's records in memory to choose; a longer tree loaded
into an empty tree must be sorted, as `mapkv dump` writes it. A tree is created with the
options its header gives (align=A); one that exists with other options (or is a typed
table) stops the load, naming the header's line.

Besides what dump writes, load accepts uppercase hex digits, raw bytes above 0x7e (so
hand-written UTF-8 works), comment lines starting with `#`, and blank lines. A raw
carriage return, a record without exactly one tab, an escape other than \\xNN, a bad or
unknown header field, an entry count that does not match its end line, a tree without
its end line, or a last line without a newline stops the load with the line number:
trees before the failing one stay loaded, the failing one is not written. The last two
are what a truncated dump looks like; --allow-unterminated accepts them in hand-written
input.";

/// Starts a tree's header line; the tree's options and escaped name follow
/// (`DumpedOptions::parse_header`).
const HEADER_PREFIX: &[u8] = b"# mapkv-dump v1 ";
/// Starts a tree's end line; the decimal entry count follows.
const END_PREFIX: &[u8] = b"# mapkv-dump v1 end entries=";
/// What every line of this format (but records and comments) starts with.
const FORMAT_PREFIX: &[u8] = b"# mapkv-dump ";
/// Default for `mapkv load --buffer-bytes`.
pub const BUFFER_BYTES_DEFAULT: usize = 64 << 20;

/// Appends `bytes` escaped to `out`; `starts_line` escapes a leading `#` too.
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8], starts_line: bool) {
    for (i, &b) in bytes.iter().enumerate() {
        let verbatim =
            (0x20..=0x7e).contains(&b) && b != b'\\' && !(starts_line && i == 0 && b == b'#');
        if verbatim {
            out.push(b);
        } else {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
}

/// Replaces `out` with the bytes `field` stands for; `Err` says what is wrong.
pub fn unescape_into(out: &mut Vec<u8>, field: &[u8]) -> Result<(), String> {
    out.clear();
    let mut i = 0;
    while i < field.len() {
        match field[i] {
            b'\\' => {
                let escape = field.get(i + 1..i + 4);
                let byte = escape.and_then(|e| {
                    (e[0] == b'x').then_some(())?;
                    Some(hex_digit(e[1])? << 4 | hex_digit(e[2])?)
                });
                match byte {
                    Some(b) => out.push(b),
                    None => {
                        return Err(format!(
                            "invalid escape at byte {}: `\\` must start `\\xNN`",
                            i + 1
                        ));
                    }
                }
                i += 4;
            }
            b'\t' => {
                return Err("more than one tab: a record is KEY<TAB>VALUE".to_string());
            }
            b'\r' => {
                return Err("raw carriage return (CRLF line endings?); write \\x0d".to_string());
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}

// ---- dump ----------------------------------------------------------------------------

/// Writes every tree, or only `only`, to `out`. Database errors come back wrapped in an
/// `io::Error` (kind `Other`) holding the `mapkv::Error`.
pub fn dump(db: &Database, only: Option<&str>, out: &mut dyn Write) -> io::Result<()> {
    let rtx = db.begin_read().map_err(io::Error::other)?;
    let names = match only {
        Some(name) => vec![name.to_string()],
        None => rtx.tree_names().map_err(io::Error::other)?,
    };
    // Every tree's options before any output: a tree refused after others were written
    // would leave output that reads as a whole dump of fewer trees.
    let trees = names
        .into_iter()
        .map(|name| Ok((DumpedOptions::for_dump(&rtx, &name)?, name)))
        .collect::<mapkv::Result<Vec<_>>>()
        .map_err(io::Error::other)?;
    let mut line = Vec::new();
    for (options, name) in trees {
        let tree = rtx.open_tree(&name).map_err(io::Error::other)?;
        line.clear();
        line.extend_from_slice(HEADER_PREFIX);
        options.write_header_fields(&mut line);
        escape_into(&mut line, name.as_bytes(), false);
        line.push(b'\n');
        out.write_all(&line)?;
        let mut entries = 0u64;
        for entry in tree.iter().map_err(io::Error::other)? {
            let (key, value) = entry.map_err(io::Error::other)?;
            line.clear();
            escape_into(&mut line, key, true);
            line.push(b'\t');
            escape_into(&mut line, value, false);
            line.push(b'\n');
            out.write_all(&line)?;
            entries += 1;
        }
        out.write_all(END_PREFIX)?;
        writeln!(out, "{entries}")?;
    }
    Ok(())
}

// ---- parsing -------------------------------------------------------------------------

/// A meaningful line of a dump. Comments and blank lines are skipped.
enum Line {
    /// A tree starts, to be created with these options.
    Header(String, DumpedOptions),
    /// An entry, decoded into `Parser::key` and `Parser::value`.
    Record,
    /// The tree ends, with this many entries.
    End(u64),
}

/// Reads a dump line by line.
struct Parser<'a, R> {
    input: R,
    /// Where the input comes from, for messages.
    source: &'a Path,
    /// The current line, without its newline.
    line: Vec<u8>,
    /// 1-based number of the current line.
    line_number: u64,
    /// The last record's key and value.
    key: Vec<u8>,
    value: Vec<u8>,
    /// Accept a tree without its end line and a last line without a newline, which a
    /// truncated dump also has (see the module doc).
    allow_unterminated: bool,
}

impl<'a, R: BufRead> Parser<'a, R> {
    fn new(input: R, source: &'a Path, allow_unterminated: bool) -> Self {
        Parser {
            input,
            source,
            line: Vec::new(),
            line_number: 0,
            key: Vec::new(),
            value: Vec::new(),
            allow_unterminated,
        }
    }

    /// A failure about the current line.
    fn error(&self, message: impl fmt::Display) -> Failure {
        Failure(format!(
            "{}: line {}: {message}",
            self.source.display(),
            self.line_number
        ))
    }

    /// The next meaningful line, or `None` at the end of the input.
    fn next(&mut self) -> CliResult<Option<Line>> {
        loop {
            self.line.clear();
            let read = self
                .input
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Failure(format!("{}: {e}", self.source.display())))?;
            if read == 0 {
                return Ok(None);
            }
            self.line_number += 1;
            if self.line.last() == Some(&b'\n') {
                self.line.pop();
            } else if !self.allow_unterminated {
                return Err(self.error(
                    "no newline at the end of the line: the input stops mid-line (a \
                     truncated dump?); --allow-unterminated takes the line as it is",
                ));
            }
            if self.line.is_empty() {
                continue;
            }
            if let Some(count) = self.line.strip_prefix(END_PREFIX) {
                let count = std::str::from_utf8(count)
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| self.error("end line without a valid entry count"))?;
                return Ok(Some(Line::End(count)));
            }
            if let Some(fields) = self.line.strip_prefix(HEADER_PREFIX) {
                return self.header(fields).map(Some);
            }
            if self.line.starts_with(FORMAT_PREFIX) {
                return Err(
                    self.error("not a line of dump format v1 (a newer mapkv wrote this dump?)")
                );
            }
            if self.line[0] == b'#' {
                continue;
            }
            let tab = self
                .line
                .iter()
                .position(|&b| b == b'\t')
                .ok_or_else(|| self.error("expected KEY<TAB>VALUE, found no tab"))?;
            unescape_into(&mut self.key, &self.line[..tab])
                .map_err(|e| self.error(format!("key: {e}")))?;
            unescape_into(&mut self.value, &self.line[tab + 1..])
                .map_err(|e| self.error(format!("value: {e}")))?;
            return Ok(Some(Line::Record));
        }
    }

    /// A header line, `fields` being what follows `HEADER_PREFIX`.
    fn header(&self, fields: &[u8]) -> CliResult<Line> {
        let (options, name) = DumpedOptions::parse_header(fields).map_err(|e| self.error(e))?;
        let mut bytes = Vec::new();
        unescape_into(&mut bytes, name).map_err(|e| self.error(e))?;
        let name = String::from_utf8(bytes).map_err(|_| self.error("tree name is not UTF-8"))?;
        Ok(Line::Header(name, options))
    }

    /// After a tree's end line, the next line must start another tree (or the input
    /// must end): returns it.
    fn next_after_end(&mut self) -> CliResult<Option<Line>> {
        match self.next()? {
            Some(Line::Record) => Err(self.error("record after the tree's end line")),
            Some(Line::End(_)) => Err(self.error("second end line")),
            other => Ok(other),
        }
    }

    /// Takes `line`, the first line after tree `tree`'s records that is not its end line:
    /// another tree's header, or `None`, the end of the input. Refused unless
    /// `allow_unterminated`, since a dump cut short ends so.
    fn without_end(&self, line: Option<Line>, tree: &str) -> CliResult<Option<Line>> {
        if self.allow_unterminated {
            return Ok(line);
        }
        let what = match line {
            Some(_) => format!("line {}: tree {tree:?} has no end line", self.line_number),
            None => format!(
                "input ends after line {} without tree {tree:?}'s end line",
                self.line_number
            ),
        };
        Err(Failure(format!(
            "{}: {what} `# mapkv-dump v1 end entries=N` (a truncated dump?); \
             --allow-unterminated loads the tree as it is",
            self.source.display()
        )))
    }

    /// Checks an end line's count against the records read.
    fn check_count(&self, expected: u64, read: u64, tree: &str) -> CliResult<()> {
        if expected == read {
            Ok(())
        } else {
            Err(self.error(format!(
                "tree {tree:?} should have {expected} entries but {read} precede its end \
                 line (truncated or edited dump?)"
            )))
        }
    }
}

// ---- load ----------------------------------------------------------------------------

/// What `load` did.
#[derive(Debug, Default)]
pub struct LoadSummary {
    /// Trees written.
    trees: u64,
    /// Entries read and written.
    entries: u64,
    /// Trees written with `Database::bulk_load`.
    bulk_loaded: u64,
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loaded {} into {} ({} by bulk load)",
            count_of(self.entries, "entry", "entries"),
            count_of(self.trees, "tree", "trees"),
            self.bulk_loaded
        )
    }
}

/// How `load` reads its input.
#[derive(Clone, Copy)]
pub struct LoadOptions {
    /// Bytes of one tree's records held in memory (see `LOAD_HELP`).
    pub buffer_bytes: usize,
    /// Accept trees without end lines and a last line without a newline.
    pub allow_unterminated: bool,
}

/// Reads a dump from `input` (named `source` in messages) into `db` (at `db_path`).
pub fn load(
    db: &Database,
    db_path: &Path,
    source: &Path,
    input: impl BufRead,
    options: LoadOptions,
) -> CliResult<LoadSummary> {
    let buffer_bytes = options.buffer_bytes;
    let mut parser = Parser::new(input, source, options.allow_unterminated);
    let mut summary = LoadSummary::default();
    let mut next = parser.next()?;
    while let Some(line) = next {
        next = match line {
            Line::Header(name, tree_options) => {
                let mut loader = TreeLoader {
                    db,
                    db_path,
                    name: &name,
                    options: tree_options,
                    absent: false,
                    summary: &mut summary,
                };
                loader.load(&mut parser, buffer_bytes)?
            }
            Line::Record => {
                return Err(
                    parser.error("record before the first `# mapkv-dump v1 tree=NAME` header")
                );
            }
            Line::End(_) => return Err(parser.error("end line without a tree")),
        };
    }
    Ok(summary)
}

/// Records of one tree held in memory: all their bytes in one buffer.
struct Batch {
    bytes: Vec<u8>,
    /// For each record, where its key and its value end in `bytes`.
    ends: Vec<(usize, usize)>,
    /// Whether the keys so far are strictly ascending.
    sorted: bool,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bytes: Vec::new(),
            ends: Vec::new(),
            sorted: true,
        }
    }

    fn len(&self) -> u64 {
        self.ends.len() as u64
    }

    fn get(&self, index: usize) -> (&[u8], &[u8]) {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i].1);
        let (key_end, value_end) = self.ends[index];
        (&self.bytes[start..key_end], &self.bytes[key_end..value_end])
    }

    fn last_key(&self) -> Option<&[u8]> {
        let last = self.ends.len().checked_sub(1)?;
        Some(self.get(last).0)
    }

    fn push(&mut self, key: &[u8], value: &[u8]) {
        if self.last_key().is_some_and(|last| last >= key) {
            self.sorted = false;
        }
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((key_end, self.bytes.len()));
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (0..self.ends.len()).map(|i| self.get(i))
    }
}

/// Loads the records of one tree section.
struct TreeLoader<'a> {
    db: &'a Database,
    db_path: &'a Path,
    name: &'a str,
    /// What the header says the tree was created with.
    options: DumpedOptions,
    /// Whether the tree was absent when its section started.
    absent: bool,
    summary: &'a mut LoadSummary,
}

impl TreeLoader<'_> {
    fn fail(&self, error: Error) -> Failure {
        Failure::db(self.db_path, error)
    }

    /// Reads the section after its header and writes it; returns the line after it.
    fn load<R: BufRead>(
        &mut self,
        parser: &mut Parser<'_, R>,
        buffer_bytes: usize,
    ) -> CliResult<Option<Line>> {
        let empty = self.check_target(parser)?;
        let mut batch = Batch::new();
        let after = loop {
            match parser.next()? {
                Some(Line::Record) => {
                    batch.push(&parser.key, &parser.value);
                    if batch.bytes.len() >= buffer_bytes {
                        return if empty && batch.sorted {
                            self.bulk_stream(batch, parser, buffer_bytes)
                        } else {
                            self.write_stream(batch, parser)
                        };
                    }
                }
                Some(Line::End(expected)) => {
                    parser.check_count(expected, batch.len(), self.name)?;
                    break parser.next_after_end()?;
                }
                other => break parser.without_end(other, self.name)?,
            }
        };
        if empty && batch.sorted && batch.len() > 0 {
            self.bulk_load(batch.iter()).map_err(|e| self.fail(e))?;
            self.summary.bulk_loaded += 1;
        } else {
            let wtx = self.db.begin_write().map_err(|e| self.fail(e))?;
            {
                let mut tree = self.open_in(&wtx)?;
                for (key, value) in batch.iter() {
                    tree.insert(key, value).map_err(|e| self.fail(e))?;
                }
            }
            wtx.commit().map_err(|e| self.fail(e))?;
        }
        self.summary.trees += 1;
        self.summary.entries += batch.len();
        Ok(after)
    }

    /// Whether the tree is absent or has no entries (so `bulk_load` can take it). An
    /// existing tree created with other options than the header's is refused, naming the
    /// header's line: its values are stored for its own options, which stay.
    fn check_target<R: BufRead>(&mut self, parser: &Parser<'_, R>) -> CliResult<bool> {
        let rtx = self.db.begin_read().map_err(|e| self.fail(e))?;
        let tree = rtx.try_open_tree(self.name).map_err(|e| self.fail(e))?;
        let Some(tree) = tree else {
            self.absent = true;
            return Ok(true);
        };
        let mismatch = (self.options)
            .mismatch(&rtx, self.name)
            .map_err(|e| self.fail(e))?;
        if let Some(why) = mismatch {
            return Err(parser.error(why));
        }
        tree.is_empty().map_err(|e| self.fail(e))
    }

    /// The tree in `wtx`, created with the header's options if absent.
    fn open_in<'w>(&self, wtx: &'w mapkv::WriteTxn) -> CliResult<mapkv::WriteTree<'w>> {
        wtx.open_tree_with(self.name, self.options.tree_options())
            .map_err(|e| self.fail(e))
    }

    /// `Database::bulk_load` into the tree, with the header's options.
    fn bulk_load<I, K, V>(&self, entries: I) -> mapkv::Result<mapkv::BulkStats>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let absent = self.absent.then_some(self.options);
        dump_options::bulk_load(self.db, self.name, absent, entries)
    }

    /// A section longer than the buffer, sorted so far, into an empty tree: one bulk
    /// load fed by `batch` and then the rest of the section as it is read.
    fn bulk_stream<R: BufRead>(
        &mut self,
        batch: Batch,
        parser: &mut Parser<'_, R>,
        buffer_bytes: usize,
    ) -> CliResult<Option<Line>> {
        let previous = batch.last_key().unwrap_or_default().to_vec();
        let mut feed = BulkFeed {
            batch,
            index: 0,
            parser,
            previous,
            fed: 0,
            tree: self.name,
            buffer_bytes,
            failure: None,
            abandon_left: 0,
            after: None,
            done: false,
        };
        let result = self.bulk_load(&mut feed);
        if let Some(failure) = feed.failure {
            return Err(failure); // The bulk load was abandoned: nothing written.
        }
        let stats = result.map_err(|e| self.fail(e))?;
        self.summary.trees += 1;
        self.summary.entries += stats.entries;
        self.summary.bulk_loaded += 1;
        Ok(feed.after)
    }

    /// A section longer than the buffer that bulk load cannot take: one write
    /// transaction, inserting as the section is read.
    fn write_stream<R: BufRead>(
        &mut self,
        batch: Batch,
        parser: &mut Parser<'_, R>,
    ) -> CliResult<Option<Line>> {
        let wtx = self.db.begin_write().map_err(|e| self.fail(e))?;
        let mut entries = batch.len();
        let after = {
            let mut tree = self.open_in(&wtx)?;
            for (key, value) in batch.iter() {
                tree.insert(key, value).map_err(|e| self.fail(e))?;
            }
            drop(batch);
            loop {
                match parser.next()? {
                    Some(Line::Record) => {
                        tree.insert(&parser.key, &parser.value)
                            .map_err(|e| self.fail(e))?;
                        entries += 1;
                    }
                    Some(Line::End(expected)) => {
                        parser.check_count(expected, entries, self.name)?;
                        break parser.next_after_end()?;
                    }
                    // An error here drops `wtx` uncommitted.
                    other => break parser.without_end(other, self.name)?,
                }
            }
        };
        wtx.commit().map_err(|e| self.fail(e))?;
        self.summary.trees += 1;
        self.summary.entries += entries;
        Ok(after)
    }
}

/// The entries of a long section for `Database::bulk_load`: the buffered batch, then
/// records as they are parsed.
///
/// `bulk_load` cannot be told to stop, but it leaves the database unchanged when its
/// input is unsorted. So on a parse error or an out-of-order key the feed records the
/// failure and then yields an empty key, which is never greater than the key before it
/// (two of them if nothing was fed yet): the load ends with `Error::Unsorted` and
/// nothing of the tree is written.
struct BulkFeed<'a, 'p, R> {
    batch: Batch,
    /// Next record of `batch` to feed.
    index: usize,
    parser: &'a mut Parser<'p, R>,
    /// The last key fed, to check the order of parsed records.
    previous: Vec<u8>,
    /// Records fed so far.
    fed: u64,
    tree: &'a str,
    buffer_bytes: usize,
    /// Why the load must be abandoned.
    failure: Option<Failure>,
    /// Empty keys still to feed to make `bulk_load` give up.
    abandon_left: u8,
    /// The line after the section.
    after: Option<Line>,
    /// The section is over (or abandoned).
    done: bool,
}

impl<R: BufRead> BulkFeed<'_, '_, R> {
    /// Records `failure` and starts abandoning the load.
    fn abandon(&mut self, failure: Failure) -> Option<(Vec<u8>, Vec<u8>)> {
        self.failure = Some(failure);
        self.done = true;
        self.abandon_left = if self.fed == 0 { 2 } else { 1 };
        self.next()
    }
}

impl<R: BufRead> Iterator for BulkFeed<'_, '_, R> {
    type Item = (Vec<u8>, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.abandon_left > 0 {
            self.abandon_left -= 1;
            return Some((Vec::new(), Vec::new()));
        }
        if self.done {
            return None;
        }
        if self.index < self.batch.ends.len() {
            let (key, value) = self.batch.get(self.index);
            let entry = (key.to_vec(), value.to_vec());
            self.index += 1;
            self.fed += 1;
            return Some(entry);
        }
        match self.parser.next() {
            Ok(Some(Line::Record)) => {
                if self.parser.key <= self.previous {
                    let failure = self.parser.error(format!(
                        "key is not greater than the one before it; tree {:?} holds more \
                         than {} bytes (--buffer-bytes) and goes into an empty tree, so it \
                         must be sorted by key, as `mapkv dump` writes it; nothing of it \
                         was written",
                        self.tree, self.buffer_bytes
                    ));
                    return self.abandon(failure);
                }
                self.previous.clone_from(&self.parser.key);
                self.fed += 1;
                Some((self.parser.key.clone(), self.parser.value.clone()))
            }
            Ok(Some(Line::End(expected))) => {
                let after = self
                    .parser
                    .check_count(expected, self.fed, self.tree)
                    .and_then(|()| self.parser.next_after_end());
                match after {
                    Ok(line) => {
                        self.after = line;
                        self.done = true;
                        None
                    }
                    Err(failure) => self.abandon(failure),
                }
            }
            Ok(other) => match self.parser.without_end(other, self.tree) {
                Ok(line) => {
                    self.after = line;
                    self.done = true;
                    None
                }
                Err(failure) => self.abandon(failure),
            },
            Err(failure) => self.abandon(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut escaped = Vec::new();
        escape_into(&mut escaped, &all, true);
        assert!(escaped.iter().all(|b| (0x20..=0x7e).contains(b)));
        let mut back = Vec::new();
        unescape_into(&mut back, &escaped).unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn leading_hash_is_escaped_only_at_line_start() {
        let mut out = Vec::new();
        escape_into(&mut out, b"#a#", true);
        assert_eq!(out, b"\\x23a#");
        out.clear();
        escape_into(&mut out, b"#a\\", false);
        assert_eq!(out, b"#a\\x5c");
    }

    #[test]
    fn unescape_rejects_bad_input() {
        let mut out = Vec::new();
        assert!(unescape_into(&mut out, b"a\\n").is_err());
        assert!(unescape_into(&mut out, b"a\\x4").is_err());
        assert!(unescape_into(&mut out, b"a\r").is_err());
        assert!(unescape_into(&mut out, b"a\tb").is_err());
        unescape_into(&mut out, "\\x4A caf\u{e9}".as_bytes()).unwrap();
        assert_eq!(out, "J caf\u{e9}".as_bytes());
    }
}
