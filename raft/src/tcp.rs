//! A Raft network over TCP: openraft's three RPCs (append entries, install snapshot
//! chunk, vote) as length-prefixed frames, one request and one reply at a time per
//! connection.
//!
//! Frame: a 4-byte big-endian length, then that many bytes encoded like the stores'
//! values (`[version] ++ postcard`, `src/codec.rs`). A node's address is its
//! [`BasicNode::addr`] (`host:port`); [`serve`] answers on that address and
//! [`TcpNetwork`] is the [`RaftNetworkFactory`] that calls it.
//!
//! A connection that fails (refused, reset, timed out) is dropped and the call
//! reports the target unreachable, so openraft backs off and retries; the next call
//! connects anew, which is how a restarted node is found again.

use std::io;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::TypeConfig;
use crate::codec;

type NodeId = u64;
type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// Frames above this size are refused (a corrupt length, not a real message:
/// openraft bounds append batches and snapshot chunks far below it).
pub const MAX_FRAME: usize = 256 << 20;

/// The buffer a frame's bytes start in; it doubles as more arrive, so a frame of any
/// size costs at most about twice its size, and a short one little.
const FRAME_CAPACITY_FIRST: usize = 64 << 10;

/// How long a connection attempt may take before the target counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A request on the wire.
#[derive(Serialize, Deserialize)]
enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
}

/// The reply to an [`Rpc`] of the same variant: the target's answer or its error.
#[derive(Serialize, Deserialize)]
enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> io::Result<()> {
    let bytes = codec::encode(value).map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::other(format!("frame of {} bytes", bytes.len())))?;
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&bytes);
    stream.write_all(&frame).await
}

/// Reads one frame; `Ok(None)` when the peer closed the connection between frames.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    stream: &mut TcpStream,
) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("frame of {len} bytes")));
    }
    // The length is the peer's claim, not a fact: grow the buffer as bytes arrive,
    // so a peer that claims a huge frame and sends little costs little.
    let mut bytes = Vec::with_capacity(len.min(FRAME_CAPACITY_FIRST));
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame of {len} bytes ended after {}", bytes.len()),
        ));
    }
    codec::decode(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Answers Raft RPCs for `raft` on `listener` until the listener fails; each
/// connection is served by a task of its own. Spawn it, and abort the task to stop
/// answering (connections already open end when their next read fails or the
/// runtime stops).
pub async fn serve(listener: TcpListener, raft: Raft<TypeConfig>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let raft = raft.clone();
        tokio::spawn(async move {
            // A broken connection only ends itself; the caller reconnects.
            let _ = serve_connection(stream, raft).await;
        });
    }
}

async fn serve_connection(mut stream: TcpStream, raft: Raft<TypeConfig>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    while let Some(rpc) = read_frame::<Rpc>(&mut stream).await? {
        let reply = match rpc {
            Rpc::Append(r) => Reply::Append(raft.append_entries(r).await),
            Rpc::Snapshot(r) => Reply::Snapshot(raft.install_snapshot(r).await),
            Rpc::Vote(r) => Reply::Vote(raft.vote(r).await),
        };
        write_frame(&mut stream, &reply).await?;
    }
    Ok(())
}

/// The [`RaftNetworkFactory`] over TCP: connects to each target's
/// [`BasicNode::addr`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpNetwork;

/// A connection to one target, opened on first use and after every failure.
pub struct TcpConnection {
    target: NodeId,
    addr: String,
    stream: Option<TcpStream>,
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = TcpConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> TcpConnection {
        TcpConnection {
            target,
            addr: node.addr.clone(),
            stream: None,
        }
    }
}

/// Why one call failed before the target answered.
enum CallError {
    /// No connection could be made: the node is down (or not yet up).
    Unreachable(io::Error),
    /// The connection broke or timed out mid-call.
    Network(io::Error),
}

impl TcpConnection {
    /// Sends `rpc` and waits for the reply, within `ttl`.
    async fn call(&mut self, rpc: &Rpc, ttl: Duration) -> Result<Reply, CallError> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                    .and_then(|r| r)
                    .map_err(CallError::Unreachable)?;
                stream.set_nodelay(true).map_err(CallError::Unreachable)?;
                self.stream.insert(stream)
            }
        };
        let exchange = async {
            write_frame(stream, rpc).await?;
            read_frame::<Reply>(stream)
                .await?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))
        };
        let result = match tokio::time::timeout(ttl, exchange).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no reply in time")),
        };
        // A connection whose exchange failed may hold half a frame: never reuse it.
        result.map_err(|e| {
            self.stream = None;
            CallError::Network(e)
        })
    }

    fn error<E: std::error::Error>(&self, e: CallError) -> RpcErr<E> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn mismatch<E: std::error::Error>(&mut self) -> RpcErr<E> {
        self.stream = None;
        RPCError::Network(NetworkError::new(&io::Error::new(
            io::ErrorKind::InvalidData,
            format!("node {} answered another kind of request", self.target),
        )))
    }

    fn remote<E: std::error::Error>(&self, e: RaftError<NodeId, E>) -> RpcErr<E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for TcpConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self.call(&Rpc::Append(rpc), option.hard_ttl()).await {
            Ok(Reply::Append(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.call(&Rpc::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Reply::Snapshot(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.call(&Rpc::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            write_frame(&mut s, &(7u64, "seven".to_string()))
                .await
                .unwrap();
            write_frame(&mut s, &Vec::<u8>::new()).await.unwrap();
            // Larger than the buffer a frame starts in, so it must grow.
            write_frame(&mut s, &vec![7u8; 3 * FRAME_CAPACITY_FIRST])
                .await
                .unwrap();
            // A length beyond MAX_FRAME, then nothing.
            s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        });
        let (mut s, _) = listener.accept().await.unwrap();
        let a: Option<(u64, String)> = read_frame(&mut s).await.unwrap();
        assert_eq!(a, Some((7, "seven".to_string())));
        let b: Option<Vec<u8>> = read_frame(&mut s).await.unwrap();
        assert_eq!(b, Some(Vec::new()));
        let c: Option<Vec<u8>> = read_frame(&mut s).await.unwrap();
        assert_eq!(c, Some(vec![7u8; 3 * FRAME_CAPACITY_FIRST]));
        assert!(read_frame::<Vec<u8>>(&mut s).await.is_err());
        client.await.unwrap();

        // A peer that closes between frames: `None`, not an error.
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            write_frame(&mut s, &1u8).await.unwrap();
        });
        let (mut s, _) = listener.accept().await.unwrap();
        assert_eq!(read_frame::<u8>(&mut s).await.unwrap(), Some(1));
        client.await.unwrap();
        assert_eq!(read_frame::<u8>(&mut s).await.unwrap(), None);
    }
}
