//! Proposal batching: concurrent client writes proposed as one Raft entry.
//!
//! Why: openraft 0.9's core appends each proposal to the leader's log on its own and
//! waits for that append to be flushed before it handles the next one
//! (`RaftCore::append_to_log` awaits the `LogFlushed` callback). The leader's log
//! therefore never has two appends in flight, the log store's group commit has
//! nothing to group there, and the leader takes one fdatasync per `client_write`,
//! back to back, however many clients wait. Followers do get batches (replication
//! sends whatever the leader's log holds).
//!
//! [`Batcher`] moves the grouping one level up: it keeps at most
//! [`BatchOptions::in_flight`] `client_write`s outstanding; requests arriving while
//! they are busy queue, and the next free slot proposes all of them (up to
//! [`BatchOptions::max_batch`]) as one [`Request::Batch`] entry. A lone request is
//! proposed as itself, at once, so one client pays nothing for it.
//!
//! A batch is one entry: applied in order in one state-machine transaction, and
//! committed or lost as a whole. Every caller of a failed batch gets the error (for
//! example `ForwardToLeader`) and may retry, as with `client_write`. A request over the
//! size limits ([`Request::validate`]) is never proposed: its caller alone gets
//! [`WriteError::Invalid`], and the batch it would have joined goes out without it.

use std::sync::Arc;

use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::{BasicNode, Raft};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{Request, Response, TypeConfig};

/// `client_write`'s error.
type ClientError = RaftError<u64, ClientWriteError<u64, BasicNode>>;

/// What [`Batcher::write`] fails with.
#[derive(Debug)]
pub enum WriteError {
    /// The request is over the size limits ([`Request::validate`]: mapkv's
    /// `KeyTooLarge` or `ValueTooLarge`); it was not proposed, and retrying cannot help.
    Invalid(mapkv::Error),
    /// `client_write` failed (for example `ForwardToLeader`): retry as with
    /// `client_write`.
    Raft(ClientError),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Invalid(e) => write!(f, "request not proposed: {e}"),
            WriteError::Raft(e) => write!(f, "{e}"),
        }
    }
}

/// The message holds the inner error's, so it has no `source`.
impl std::error::Error for WriteError {}

type Waiter = (Request, oneshot::Sender<Result<Response, ClientError>>);

/// How a [`Batcher`] groups requests.
#[derive(Clone, Copy, Debug)]
pub struct BatchOptions {
    /// `client_write`s outstanding at once (at least 1).
    pub in_flight: usize,
    /// Requests per proposed entry, at most.
    pub max_batch: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            in_flight: 2,
            max_batch: 1024,
        }
    }
}

/// Proposes concurrent writes to one node's [`Raft`] in batches; clones share the
/// queue. Create it inside a tokio runtime (it spawns its task there); the task ends
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl Batcher {
    /// Starts batching proposals to `raft`.
    pub fn new(raft: Raft<TypeConfig>, options: BatchOptions) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx, options));
        Batcher { tx }
    }

    /// Proposes `request` (with whatever else is queued) and returns its response
    /// once the entry is committed and applied, like `Raft::client_write`. A request
    /// over the size limits fails at once with [`WriteError::Invalid`], unproposed:
    /// the state machine would only refuse it (see [`Response::refused`]).
    pub async fn write(&self, request: Request) -> Result<Response, WriteError> {
        request.validate().map_err(WriteError::Invalid)?;
        let stopped = || WriteError::Raft(RaftError::Fatal(Fatal::Stopped));
        let (reply, answer) = oneshot::channel();
        self.tx.send((request, reply)).map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(WriteError::Raft)
    }
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<Waiter>, o: BatchOptions) {
    let slots = Arc::new(Semaphore::new(o.in_flight.max(1)));
    loop {
        // A free slot first, then the requests: whatever queued while every slot was
        // busy goes out together.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < o.max_batch.max(1) {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(slot);
        });
    }
}

async fn propose(raft: &Raft<TypeConfig>, mut batch: Vec<Waiter>) {
    if batch.len() == 1 {
        if let Some((request, reply)) = batch.pop() {
            let _ = reply.send(raft.client_write(request).await.map(|r| r.data));
        }
        return;
    }
    let (requests, replies): (Vec<Request>, Vec<_>) = batch.into_iter().unzip();
    match raft.client_write(Request::Batch(requests)).await {
        Ok(r) => {
            for (reply, response) in replies.into_iter().zip(r.data.batch) {
                let _ = reply.send(Ok(response));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
