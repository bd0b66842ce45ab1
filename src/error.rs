//! The one error type of the crate.

use std::fmt;

/// Everything that can go wrong in mapkv.
///
/// Bad bytes read from the file are always reported as [`Error::Corrupted`]; they never
/// cause a panic or undefined behaviour.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused a read, write, sync or lock, or an earlier failed
    /// write or sync has poisoned the handle (reopen the database to continue). A full
    /// disk keeps its kind (`StorageFull`, `QuotaExceeded`, `FileTooLarge`); met while a
    /// commit writes pages that nothing durable references, it fails that commit alone
    /// (see [`WriteTxn::commit`](crate::WriteTxn::commit)).
    Io(std::io::Error),
    /// The file is inconsistent: a checksum, bound or structural rule does not hold.
    Corrupted {
        /// The page where the problem was found (0 for the file header and meta pages).
        page: u64,
        /// What is wrong, in words.
        reason: String,
    },
    /// `ReadTxn::open_tree` named a tree that does not exist.
    TreeNotFound(String),
    /// `Database::bulk_load` was asked to load into a tree that already holds entries.
    TreeNotEmpty(String),
    /// `Database::bulk_load` input was not strictly ascending, or `WriteTree::append`
    /// was given a key not greater than the tree's last.
    Unsorted {
        /// `bulk_load`: zero-based position of the first entry whose key is not greater
        /// than the key before it. `append`: the tree's entry count, the position the
        /// entry would have had.
        index: u64,
    },
    /// A key (or tree name) is longer than the page size allows.
    KeyTooLarge {
        /// The key's length in bytes.
        size: usize,
        /// The largest key length accepted at this page size.
        max: usize,
    },
    /// A value is longer than the format allows, or (read on a 32-bit target) than the
    /// process can address.
    ValueTooLarge {
        /// The value's length in bytes.
        size: u64,
        /// The largest value length accepted.
        max: u64,
    },
    /// The file is open read-write by another handle, in this process or another.
    Locked,
    /// The handle was opened before this process was forked from its parent, which
    /// still owns it: in the child it starts no transaction and writes nothing. Open the
    /// database in the child instead (once the parent has closed it).
    Forked,
    /// A write was attempted on a database opened with `Options::read_only(true)`.
    ReadOnly,
    /// An `Options` value is out of range, or the file does not fit the options.
    InvalidOptions(String),
    /// A handle of a write transaction's tree was used after the tree was opened again
    /// or deleted in the same transaction: only the newest handle of a tree works.
    StaleTree(String),
    /// A write transaction was used from inside one of its own changes: a `retain`
    /// predicate may read other trees of the transaction, but not open, change or
    /// delete trees.
    Reentrant,
    /// A tree was opened again or deleted while the bytes an earlier handle of it
    /// handed out with `WriteTree::insert_reserve` may still be in use: that handle is
    /// alive and has not been called since. Call it (any method) or drop it first.
    Reserved(String),
}

/// `std::result::Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn corrupted(page: u64, reason: impl Into<String>) -> Error {
        Error::Corrupted {
            page,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Corrupted { page, reason } => {
                write!(f, "database file is corrupted at page {page}: {reason}")
            }
            Error::TreeNotFound(name) => write!(f, "tree {name:?} does not exist"),
            Error::TreeNotEmpty(name) => {
                write!(
                    f,
                    "tree {name:?} is not empty; bulk_load needs an empty tree"
                )
            }
            Error::Unsorted { index } => write!(
                f,
                "keys are not strictly ascending at entry {index} (bulk_load input, or an \
                 append after the tree's last key)"
            ),
            Error::KeyTooLarge { size, max } => {
                write!(
                    f,
                    "key of {size} bytes is larger than the limit of {max} bytes"
                )
            }
            Error::ValueTooLarge { size, max } => write!(
                f,
                "value of {size} bytes is larger than the limit of {max} bytes"
            ),
            Error::Locked => write!(f, "database file is locked by another handle"),
            Error::Forked => write!(
                f,
                "the database handle was opened before fork() and belongs to the parent \
                 process; open the database in the child instead"
            ),
            Error::ReadOnly => write!(f, "database is open read-only"),
            Error::InvalidOptions(why) => write!(f, "invalid options: {why}"),
            Error::StaleTree(name) => write!(
                f,
                "this handle of tree {name:?} is stale: the tree was opened again or deleted \
                 in the same transaction"
            ),
            Error::Reentrant => write!(
                f,
                "the write transaction was used from inside one of its own changes (a retain \
                 predicate may read other trees, not open, change or delete them)"
            ),
            Error::Reserved(name) => write!(
                f,
                "tree {name:?} cannot be opened again or deleted while a value reserved by \
                 its live handle may still be filled: call or drop that handle first"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}
