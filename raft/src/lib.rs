//! openraft storage over mapkv: a log store ([`LogStore`]) and a key-value state
//! machine ([`StateMachineStore`]), each in its own mapkv file in one folder.
//!
//! See `raft/README.md` for the layout, the durability argument and what is tested.
#![forbid(unsafe_code)]
#![expect(
    clippy::result_large_err,
    reason = "openraft's traits fix StorageError (224 bytes) as the error type; helpers return it too"
)]

mod batch;
mod codec;
mod log_store;
mod request;
pub mod router;
mod state_machine;
pub mod tcp;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use batch::{BatchOptions, Batcher, WriteError};
pub use log_store::{LogReader, LogStore, LogStoreOptions};
pub use state_machine::{Dump, SnapshotBuilder, StateMachineStore};

/// A command for the replicated key-value state machine. Keys and values are limited
/// in size ([`Request::validate`]); a command over the limits is refused, not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Inserts or overwrites `key`.
    Set { key: Vec<u8>, value: Vec<u8> },
    /// Removes `key`.
    Delete { key: Vec<u8> },
    /// Sets `key` to `new` (`None` removes it) only if its value is `expected`
    /// (`None`: absent).
    CompareAndSwap {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// Several commands in one log entry, applied in order in one transaction (what
    /// [`Batcher`] proposes for concurrent clients). Answered with one response per
    /// command in [`Response::batch`]. Each command stands alone, as if proposed by
    /// itself: one that is refused (see [`Response::refused`]) changes nothing, and the
    /// others are still applied.
    Batch(Vec<Request>),
}

/// What applying one entry returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The key's value before the command (always filled, also when a
    /// compare-and-swap fails; `None` when the command was refused).
    pub previous: Option<Vec<u8>>,
    /// False for a compare-and-swap whose expectation did not hold, and for a refused
    /// command.
    pub ok: bool,
    /// For a [`Request::Batch`]: each command's response, in order; empty otherwise.
    pub batch: Vec<Response>,
    /// Why the state machine refused the command, which then changed nothing: its key
    /// or value is over the limits ([`Request::validate`]; the text is mapkv's
    /// `KeyTooLarge` or `ValueTooLarge`). Every replica refuses it alike. `None` when
    /// the command was applied.
    pub refused: Option<String>,
}

openraft::declare_raft_types!(
    /// The openraft types of a mapkv-backed node.
    pub TypeConfig:
        D = Request,
        R = Response,
        SnapshotData = tokio::fs::File,
);

/// Opens (or creates) the log store and the state machine kept in `dir`, linked
/// ([`LogStore::link_state_machine`]: the log keeps on disk the entries the state
/// machine's snapshot does not cover yet, and gives back those a crash during a
/// snapshot install left purged past the state machine's snapshot).
pub async fn open(dir: impl AsRef<Path>) -> mapkv::Result<(LogStore, StateMachineStore)> {
    open_with(dir, LogStoreOptions::default()).await
}

/// [`open`] with explicit log-store options.
pub async fn open_with(
    dir: impl AsRef<Path>,
    options: LogStoreOptions,
) -> mapkv::Result<(LogStore, StateMachineStore)> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)?;
    let mut log = LogStore::open(dir.join("log.mapkv"), options)?;
    let sm = StateMachineStore::open(dir)?;
    log.link_state_machine(&sm)?;
    Ok((log, sm))
}
