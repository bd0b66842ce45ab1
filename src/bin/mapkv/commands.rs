//! The subcommands that read or write single entries, and `stat`, `check`, `compact`.

use std::io;
use std::ops::Bound;
use std::path::Path;
use std::process::ExitCode;

use mapkv::{Error, ReadTree, ReadTxn};

use crate::text::{count_of, escape_display, human_bytes};
use crate::{
    CliResult, Encoding, Failure, open_read_only, open_read_write, print_line, report, spinner,
    stdout_result,
};

/// Opens tree `name` in a read transaction, with the path in the error.
fn open_tree<'t>(path: &Path, rtx: &'t ReadTxn, name: &str) -> CliResult<ReadTree<'t>> {
    rtx.open_tree(name).map_err(|e| Failure::db(path, e))
}

/// `mapkv stat`.
pub fn stat(path: &Path) -> CliResult<ExitCode> {
    let db = open_read_only(path)?;
    let stats = db.stats().map_err(|e| Failure::db(path, e))?;
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: String| {
        out.push_str(&format!("{label:<12}{value}\n"));
    };
    line(&mut out, "file", path.display().to_string());
    line(
        &mut out,
        "file size",
        format!(
            "{} bytes ({})",
            stats.file_size_bytes,
            human_bytes(stats.file_size_bytes)
        ),
    );
    line(&mut out, "page size", format!("{} bytes", stats.page_size));
    line(
        &mut out,
        "pages",
        format!(
            "{} total, {} in use, {} free",
            stats.page_count, stats.pages_in_use, stats.pages_free
        ),
    );
    line(&mut out, "commit", format!("txn {}", stats.txn_id));
    line(&mut out, "trees", stats.trees.len().to_string());
    if !stats.trees.is_empty() {
        let names: Vec<String> = stats
            .trees
            .iter()
            .map(|t| escape_display(t.name.as_bytes()))
            .collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let width = width.max("tree".len());
        out.push_str(&format!(
            "  {:<width$}  {:>12}  {:>5}\n",
            "tree", "entries", "depth"
        ));
        for (name, tree) in names.iter().zip(&stats.trees) {
            out.push_str(&format!(
                "  {name:<width$}  {:>12}  {:>5}\n",
                tree.entries, tree.depth
            ));
        }
    }
    stdout_result(|w| w.write_all(out.as_bytes()), path)
}

/// `mapkv check`: exit status 0 when sound, 1 when corrupt (or unreadable).
pub fn check(path: &Path) -> CliResult<ExitCode> {
    let db = open_read_only(path)?;
    let spinner = spinner("checking");
    let result = db.check();
    spinner.finish_and_clear();
    match result {
        Ok(report) => {
            let line = format!(
                "ok: {}, {}, {} node pages, {} overflow pages, {} free pages, {} data pages",
                count_of(report.trees, "tree", "trees"),
                count_of(report.entries, "entry", "entries"),
                report.node_pages,
                report.overflow_pages,
                report.free_pages,
                report.data_pages
            );
            print_line(&line, path)
        }
        Err(e @ Error::Corrupted { .. }) => {
            Err(Failure(format!("{}: check failed: {e}", path.display())))
        }
        Err(e) => Err(Failure::db(path, e)),
    }
}

/// `mapkv get`.
pub fn get(
    path: &Path,
    tree: &str,
    key: &[u8],
    encoding: Encoding,
    raw: bool,
) -> CliResult<ExitCode> {
    let db = open_read_only(path)?;
    let rtx = db.begin_read().map_err(|e| Failure::db(path, e))?;
    let tree_handle = open_tree(path, &rtx, tree)?;
    match tree_handle.get(key).map_err(|e| Failure::db(path, e))? {
        Some(value) if raw => stdout_result(|w| w.write_all(value), path),
        Some(value) => {
            let line = encoding.show(value) + "\n";
            stdout_result(|w| w.write_all(line.as_bytes()), path)
        }
        None => Ok(key_not_found(key, tree, encoding)),
    }
}

/// Reports that `key` is not in `tree`: the negative answer of `get` and `del`.
fn key_not_found(key: &[u8], tree: &str, encoding: Encoding) -> ExitCode {
    report(&format!(
        "key \"{}\" not found in tree {tree:?}",
        encoding.show(key)
    ));
    ExitCode::FAILURE
}

/// `mapkv put`.
pub fn put(path: &Path, tree: &str, key: &[u8], value: &[u8]) -> CliResult<ExitCode> {
    let db = open_read_write(path, true)?;
    let fail = |e| Failure::db(path, e);
    let wtx = db.begin_write().map_err(fail)?;
    wtx.open_tree(tree)
        .and_then(|mut t| t.insert(key, value))
        .map_err(fail)?;
    wtx.commit().map_err(fail)?;
    Ok(ExitCode::SUCCESS)
}

/// `mapkv del`.
pub fn del(path: &Path, tree: &str, key: &[u8], encoding: Encoding) -> CliResult<ExitCode> {
    let db = open_read_write(path, false)?;
    let fail = |e| Failure::db(path, e);
    // Check first, so a mistyped tree name is reported rather than created.
    db.begin_read()
        .and_then(|r| r.open_tree(tree).map(|_| ()))
        .map_err(fail)?;
    let wtx = db.begin_write().map_err(fail)?;
    let removed = wtx
        .open_tree(tree)
        .and_then(|mut t| t.remove(key))
        .map_err(fail)?;
    if !removed {
        return Ok(key_not_found(key, tree, encoding));
    }
    wtx.commit().map_err(fail)?;
    Ok(ExitCode::SUCCESS)
}

/// The key bounds of `mapkv scan`.
pub struct ScanBounds {
    /// Only keys that start with this.
    pub prefix: Option<Vec<u8>>,
    /// Only keys greater than or equal to this.
    pub from: Option<Vec<u8>>,
    /// Only keys less than this.
    pub to: Option<Vec<u8>>,
}

impl ScanBounds {
    /// The range of keys to visit: `from..to` intersected with the keys starting with
    /// `prefix`.
    fn range(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let lower = match (&self.prefix, &self.from) {
            (Some(p), Some(f)) => Bound::Included(p.max(f).clone()),
            (Some(x), None) | (None, Some(x)) => Bound::Included(x.clone()),
            (None, None) => Bound::Unbounded,
        };
        let prefix_end = self.prefix.as_deref().and_then(prefix_successor);
        let upper = match (prefix_end, &self.to) {
            (Some(p), Some(t)) => Bound::Excluded(p.min(t.clone())),
            (Some(x), None) => Bound::Excluded(x),
            (None, Some(t)) => Bound::Excluded(t.clone()),
            (None, None) => Bound::Unbounded,
        };
        (lower, upper)
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there is
/// none (an empty prefix or one of only 0xff bytes).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// How `mapkv scan` prints.
pub struct ScanOptions {
    /// Descending key order.
    pub reverse: bool,
    /// Print at most this many entries.
    pub limit: Option<u64>,
    /// Print only the keys.
    pub keys_only: bool,
    /// Hex or escaped text.
    pub encoding: Encoding,
}

/// A key and value borrowed from a read transaction, or the error reading them.
type Entry<'t> = mapkv::Result<(&'t [u8], &'t [u8])>;

/// `mapkv scan`.
pub fn scan(
    path: &Path,
    tree: &str,
    bounds: &ScanBounds,
    options: &ScanOptions,
) -> CliResult<ExitCode> {
    let db = open_read_only(path)?;
    let rtx = db.begin_read().map_err(|e| Failure::db(path, e))?;
    let tree = open_tree(path, &rtx, tree)?;
    let range = tree
        .range(bounds.range())
        .map_err(|e| Failure::db(path, e))?;
    let entries: Box<dyn Iterator<Item = Entry<'_>>> = if options.reverse {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let limit = options.limit.unwrap_or(u64::MAX);
    let mut failure = None;
    let result = stdout_result(
        |out| {
            for entry in entries.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
                let (key, value) = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                out.write_all(options.encoding.show(key).as_bytes())?;
                if !options.keys_only {
                    out.write_all(b"\t")?;
                    out.write_all(options.encoding.show(value).as_bytes())?;
                }
                out.write_all(b"\n")?;
            }
            Ok(())
        },
        path,
    );
    match failure {
        Some(e) => Err(Failure::db(path, e)),
        None => result,
    }
}

/// `mapkv compact`.
pub fn compact(path: &Path, out: &Path) -> CliResult<ExitCode> {
    let db = open_read_only(path)?;
    let spinner = spinner("compacting");
    let result = db.compact_to(out);
    spinner.finish_and_clear();
    result.map_err(|e| match e {
        Error::Io(io) if io.kind() == io::ErrorKind::AlreadyExists => Failure::io(out, io),
        e => Failure::db(path, e),
    })?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (before, after) = (size(path), size(out));
    let line = format!(
        "compacted {} ({}) into {} ({})",
        path.display(),
        human_bytes(before),
        out.display(),
        human_bytes(after)
    );
    print_line(&line, path)
}

/// `mapkv compact DB` (no OUT): in place.
pub fn compact_in_place(path: &Path, db: mapkv::Database) -> CliResult<ExitCode> {
    let spinner = spinner("compacting in place");
    let result = db.compact();
    spinner.finish_and_clear();
    let stats = result.map_err(|e| Failure::db(path, e))?;
    let line = format!(
        "compacted {} in place: {} -> {} ({} leaves merged, {} pages moved, {} commits)",
        path.display(),
        human_bytes(stats.file_size_before),
        human_bytes(stats.file_size_after),
        stats.leaves_merged,
        stats.pages_moved,
        stats.passes
    );
    print_line(&line, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_skips_trailing_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
