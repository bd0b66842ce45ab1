//! A frame's length is the peer's claim: `read_frame` must not allocate it before the
//! bytes arrive, or any peer (a corrupt or hostile one) that sends a 4-byte header
//! claiming `MAX_FRAME` makes every reader allocate 256 MiB. Measured with a counting
//! allocator; one test, so nothing else allocates meanwhile.

#[path = "../../tests/support/heap.rs"]
mod heap;

use std::io::{ErrorKind, Write};

use heap::{Counting, peak_of};
use mapkv_raft::tcp::{MAX_FRAME, read_frame};

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn a_huge_claimed_frame_that_never_comes_costs_little() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let (mut ours, _) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The peer: a header claiming the largest frame allowed, a few bytes, then close.
        // All of it sits in the kernel's buffers before the measurement starts.
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        let claimed = u32::try_from(MAX_FRAME).unwrap();
        peer.write_all(&claimed.to_be_bytes()).unwrap();
        peer.write_all(b"a few bytes").unwrap();
        drop(peer);
        listener.accept().await.unwrap()
    });

    let (result, peak_bytes) = peak_of(|| rt.block_on(read_frame::<Vec<u8>>(&mut ours)));
    let err = result.expect_err("a frame cut short is an error");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert!(
        peak_bytes < 1 << 20,
        "reading a frame that claimed {MAX_FRAME} bytes and carried 11 allocated {peak_bytes} bytes"
    );
}
