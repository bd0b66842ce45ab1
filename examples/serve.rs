//! A small HTTP/1.1 server for the values of a database: `GET /TREE/KEY` answers with the
//! value (`Content-Length`; `Range: bytes=a-b`, `a-` or `-n` gives 206 with
//! `Content-Range`), 404 for an absent tree or key, 416 for a range outside the value.
//! Each request reads from its own read transaction, so a writer may commit meanwhile and
//! a response never mixes two states. Keys are the rest of the path, `%XX`-decoded.
//! `PUT /TREE/KEY` with a `Content-Length` streams the body into the database with
//! `WriteTree::insert_from` (bounded memory, whatever the size) and commits: 201.
//!
//! `--mode` picks how the body leaves the process:
//! - `sendfile` (default): `ReadTree::get_extent` and `ValueExtent::send_to`; the bytes go
//!   from the file's page cache to the socket inside the kernel;
//! - `map-write`: `write` of the `&[u8]` that `get` borrows from the map (one copy, into
//!   the socket buffer);
//! - `copy`: the value is read into a `Vec` first (through `value_reader`), as a store
//!   that reads with `pread` must, then written (two copies).
//!
//! Built on `std::net` with one thread per connection: no dependency, and enough for an
//! example; an event loop would use `send_to`'s partial counts on non-blocking sockets.
//!
//! `sendfile` does not copy: the socket reads the value from the file's cached pages when
//! the bytes are transmitted (TCP over loopback: when the client reads them), after
//! `send_to` returned. So the read transaction of a response sent that way is kept until
//! the client's next request, or until it closes the connection (a lingering close):
//! ended earlier, a commit could reuse the value's pages and change what the client
//! receives. A client that pipelines requests (sends the next before reading a response)
//! defeats this; serve such clients in `copy` or `map-write` mode.
//!
//! ```text
//! cargo run --release --example serve                       # self-test over loopback TCP, exit 0
//! cargo run --release --example serve -- DB [ADDR] [--mode sendfile|map-write|copy]
//! cargo run --release --example serve -- --bench MIB        # one MIB-MiB value, each mode
//! curl -r 0-99 http://127.0.0.1:8080/media/clip.mp4
//! curl -T clip.mp4 http://127.0.0.1:8080/media/clip.mp4
//! ```

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::Shutdown;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mapkv::{Database, Options, ReadTxn, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Sendfile,
    MapWrite,
    Copy,
}

const MODES: [Mode; 3] = [Mode::Sendfile, Mode::MapWrite, Mode::Copy];

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "sendfile" => Some(Mode::Sendfile),
            "map-write" => Some(Mode::MapWrite),
            "copy" => Some(Mode::Copy),
            _ => None,
        }
    }
}

/// A request head larger than this is refused (a bound on what a client can make us hold).
const HEAD_BYTES_MAX: u64 = 8 << 10;

/// How long a connection's end waits for the client to close it, while the transaction
/// of its last response (sent with `sendfile`) is kept: a client that has not read the
/// response by then gets what the file holds when it does.
const LINGER: Duration = Duration::from_secs(30);

/// Serves requests on one connection until the client closes it or asks to.
fn connection(stream: TcpStream, db: &Database, mode: Mode) -> io::Result<()> {
    // The transaction of the last response sent with `sendfile`: its pages must not be
    // reused until the client has read the response.
    let mut pinned = None;
    let served = requests(&stream, db, mode, &mut pinned);
    // A lingering close: no more responses, then wait for the client's close, which
    // comes after it read the last one. That keeps `pinned` until then, and a response
    // sent while part of the request was left unread (a refused upload) reaches the
    // client: closing with unread bytes would reset the connection, which may discard it.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let mut rest = [0; 4096];
    while matches!((&stream).read(&mut rest), Ok(n) if n > 0) {}
    drop(pinned);
    served
}

/// Serves the requests of `stream`, keeping in `pinned` the transaction of the last
/// response that `sendfile` sent, until the next request arrives.
fn requests(
    stream: &TcpStream,
    db: &Database,
    mode: Mode,
    pinned: &mut Option<ReadTxn>,
) -> io::Result<()> {
    // The head and the body leave in separate calls: without this, Nagle's algorithm
    // holds the body of a small response until the client acknowledges the head.
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?).take(HEAD_BYTES_MAX);
    let mut out = stream.try_clone()?;
    loop {
        reader.set_limit(HEAD_BYTES_MAX);
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
            if reader.read_until(b'\n', &mut head)? == 0 {
                if head.is_empty() {
                    return Ok(()); // closed between requests
                }
                return respond(&mut out, "400 Bad Request", &[], b"bad request head\n");
            }
        }
        // A new request: the client has read the previous response.
        *pinned = None;
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.lines();
        let request_line: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
        let (mut range, mut close, mut length) = (None, false, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<u64>().ok();
            }
        }
        match request_line[..] {
            ["GET", path, _version] => *pinned = get(&mut out, db, mode, path, range.as_deref())?,
            ["PUT", path, _version] => {
                let Some(length) = length else {
                    return respond(&mut out, "411 Length Required", &[], b"no length\n");
                };
                // The body is read through the same buffered reader as the head.
                reader.set_limit(length);
                if !put(&mut out, &mut reader, db, path, length)? {
                    // The body was cut short, or is left unread: what follows on the
                    // connection is not the next request's head.
                    return Ok(());
                }
            }
            _ => respond(
                &mut out,
                "400 Bad Request",
                &[],
                b"only GET or PUT /TREE/KEY\n",
            )?,
        }
        if close {
            return Ok(());
        }
    }
}

fn respond(out: &mut TcpStream, status: &str, headers: &[String], body: &[u8]) -> io::Result<()> {
    write_head(out, status, headers, body.len() as u64)?;
    out.write_all(body)
}

fn write_head(out: &mut TcpStream, status: &str, headers: &[String], len: u64) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

/// `PUT /TREE/KEY` with a body of `length` bytes (what `body` is limited to): streamed
/// into the database with `insert_from` (in bounded memory, whatever its size) and
/// committed. False if the connection must close: the body ended early (nothing is
/// stored, and no response), or a refusal left it unread (the response says
/// `Connection: close`: reading a large body only to drop it would cost more).
fn put(
    out: &mut TcpStream,
    body: &mut io::Take<BufReader<TcpStream>>,
    db: &Database,
    path: &str,
    length: u64,
) -> io::Result<bool> {
    let stored = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        None => Err(("400 Bad Request", "expected /TREE/KEY\n".to_string())),
        Some((tree, key)) => {
            let (tree, key) = (percent_decode(tree), percent_decode(key));
            let tree = String::from_utf8_lossy(&tree);
            let stored = (|| {
                let wtx = db.begin_write()?;
                wtx.open_tree(&tree)?
                    .insert_from(&key, length, &mut *body)?;
                wtx.commit()
            })();
            match stored {
                Ok(()) => Ok(()),
                Err(mapkv::Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(false);
                }
                Err(e) => Err(("500 Internal Server Error", format!("{e}\n"))),
            }
        }
    };
    let unread = body.limit() > 0;
    let headers = match unread {
        true => vec!["Connection: close".to_string()],
        false => vec![],
    };
    match stored {
        Ok(()) => respond(out, "201 Created", &headers, b"")?,
        Err((status, message)) => respond(out, status, &headers, message.as_bytes())?,
    }
    Ok(!unread)
}

/// `GET /TREE/KEY`: the value, or the part a `Range` header asks for. Returns the read
/// transaction if the value went out with `sendfile`: the caller keeps it until the
/// client has read the response.
fn get(
    out: &mut TcpStream,
    db: &Database,
    mode: Mode,
    path: &str,
    range: Option<&str>,
) -> io::Result<Option<ReadTxn>> {
    let Some((tree, key)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return respond(out, "400 Bad Request", &[], b"expected /TREE/KEY\n").map(|()| None);
    };
    let (tree, key) = (percent_decode(tree), percent_decode(key));
    let tree = String::from_utf8_lossy(&tree);
    // One read transaction per request: a consistent value even while a writer commits.
    let rtx = db.begin_read().map_err(io::Error::other)?;
    let sent = get_in(out, &rtx, mode, &tree, &key, range)?;
    Ok((sent && mode == Mode::Sendfile).then_some(rtx))
}

/// `get` in the read transaction `rtx`; true if a value's bytes were sent.
fn get_in(
    out: &mut TcpStream,
    rtx: &ReadTxn,
    mode: Mode,
    tree: &str,
    key: &[u8],
    range: Option<&str>,
) -> io::Result<bool> {
    let not_found =
        |out: &mut TcpStream| respond(out, "404 Not Found", &[], b"not found\n").map(|()| false);
    let Some(t) = rtx.try_open_tree(tree).map_err(io::Error::other)? else {
        return not_found(out);
    };
    // The value's length, without reading a large value.
    let Some(extent) = t.get_extent(key).map_err(io::Error::other)? else {
        return not_found(out);
    };
    let len = extent.len();
    let (start, end, status, mut headers) = match range.map(|r| parse_range(r, len)) {
        None => (0, len, "200 OK", vec![]),
        Some(Some((a, b))) => (
            a,
            b,
            "206 Partial Content",
            vec![format!("Content-Range: bytes {a}-{}/{len}", b - 1)],
        ),
        Some(None) => {
            let headers = [format!("Content-Range: bytes */{len}")];
            return respond(out, "416 Range Not Satisfiable", &headers, b"").map(|()| false);
        }
    };
    headers.push("Accept-Ranges: bytes".into());
    headers.push("Content-Type: application/octet-stream".into());
    write_head(out, status, &headers, end - start)?;
    match mode {
        Mode::Sendfile => {
            // A blocking socket: send_to returns once everything is sent.
            let sent = extent.send_to(out, start..end).map_err(io::Error::other)?;
            assert_eq!(sent, end - start, "a blocking socket takes everything");
        }
        Mode::MapWrite => {
            let value = t.get(key).map_err(io::Error::other)?.expect("found above");
            out.write_all(&value[start as usize..end as usize])?;
        }
        Mode::Copy => {
            let mut r = t
                .value_reader(key)
                .map_err(io::Error::other)?
                .expect("found above");
            r.seek(SeekFrom::Start(start))?;
            let mut body = Vec::new();
            r.take(end - start).read_to_end(&mut body)?;
            out.write_all(&body)?;
        }
    }
    Ok(true)
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` as `start..end` within a value of `len` bytes;
/// `None` if it is malformed or outside the value (one range only).
fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let (a, b) = header.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, false) => (len.saturating_sub(b.parse().ok()?), len),
        (false, true) => (a.parse().ok()?, len),
        (false, false) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.saturating_add(1).min(len),
        ),
        (true, true) => return None,
    };
    (start < end).then_some((start, end))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn serve(listener: TcpListener, db: Arc<Database>, mode: Mode) -> io::Result<()> {
    for stream in listener.incoming() {
        let (stream, db) = (stream?, Arc::clone(&db));
        std::thread::spawn(move || {
            if let Err(e) = connection(stream, &db, mode) {
                eprintln!("connection: {e}");
            }
        });
    }
    Ok(())
}

// ---- self-test and measurement: a client -------------------------------------------

/// A response as the client sees it: status, headers (lower-case names), body.
type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// Sends `GET path` with extra header lines on `conn`; returns the status code, the
/// headers (lower-case names) and the body.
fn fetch(conn: &mut BufReader<TcpStream>, path: &str, extra: &str) -> io::Result<Response> {
    // One write: `write!` would send each piece as its own segment.
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n");
    conn.get_mut().write_all(request.as_bytes())?;
    read_response(conn)
}

/// Reads the response to a request sent on `conn`.
fn read_response(conn: &mut BufReader<TcpStream>) -> io::Result<Response> {
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        match line.trim_end().split_once(':') {
            Some((name, value)) => {
                headers.push((name.to_ascii_lowercase(), value.trim().to_string()))
            }
            None => break,
        }
    }
    let len: u64 = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| io::Error::other("no Content-Length"))?;
    let mut body = Vec::new();
    conn.by_ref().take(len).read_to_end(&mut body)?;
    Ok((status, headers, body))
}

/// Sends `PUT path` with `body` on `conn`; returns the status code.
fn upload(conn: &mut BufReader<TcpStream>, path: &str, body: &[u8]) -> io::Result<u16> {
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
    // The rest of the head, then the (empty) body.
    while {
        line.clear();
        conn.read_line(&mut line)?;
        !line.trim_end().is_empty()
    } {}
    status.ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))
}

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j * 31 + i * 7 + j / 257) as u8).collect()
}

/// Whether `stream` holds, unread, a whole response with a body of `len` bytes
/// (`buf` is scratch space, larger than the response).
fn peeked_response_is_whole(stream: &TcpStream, buf: &mut [u8], len: usize) -> io::Result<bool> {
    let n = stream.peek(buf)?;
    let head = buf[..n].windows(4).position(|w| w == b"\r\n\r\n");
    Ok(head.is_some_and(|h| n >= h + 4 + len))
}

fn self_test() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sizes = [0, 5, 1000, 3000, 70_000, (1 << 20) + 7];
    for mmap_size in [u64::MAX, 0] {
        let db = Arc::new(
            Options::new()
                .mmap_size(mmap_size)
                .open(dir.path().join(format!("db-{mmap_size}")))?,
        );
        let wtx = db.begin_write()?;
        let mut t = wtx.open_tree("files")?;
        for (i, &len) in sizes.iter().enumerate() {
            t.insert(format!("f {i}").as_bytes(), &value(i, len))?;
        }
        drop(t);
        wtx.commit()?;
        for mode in MODES {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let server_db = Arc::clone(&db);
            std::thread::spawn(move || serve(listener, server_db, mode));
            let mut conn = BufReader::new(TcpStream::connect(addr)?);
            for (i, &len) in sizes.iter().enumerate() {
                let want = value(i, len);
                let path = format!("/files/f%20{i}");
                let (status, _, body) = fetch(&mut conn, &path, "")?;
                assert!(status == 200 && body == want, "{mode:?} {path}: {status}");
                if len > 20 {
                    let (status, headers, body) =
                        fetch(&mut conn, &path, "Range: bytes=10-19\r\n")?;
                    assert!(
                        status == 206 && body == want[10..20],
                        "{mode:?} {path} range"
                    );
                    let range = format!("bytes 10-19/{len}");
                    assert!(headers.contains(&("content-range".into(), range)));
                    let (status, _, body) = fetch(&mut conn, &path, "Range: bytes=-7\r\n")?;
                    assert!(status == 206 && body == want[len - 7..], "{mode:?} suffix");
                    let (status, _, body) = fetch(&mut conn, &path, "Range: bytes=15-\r\n")?;
                    assert!(status == 206 && body == want[15..], "{mode:?} open range");
                }
                let bad = format!("Range: bytes={}-\r\n", len + 1);
                assert_eq!(fetch(&mut conn, &path, &bad)?.0, 416, "{mode:?} {path}");
            }
            assert_eq!(fetch(&mut conn, "/files/absent", "")?.0, 404);
            // A client that reads a response late still gets the bytes of the snapshot
            // it was sent from, while commits overwrite the value and reuse its pages.
            let late = value(50, 60_000);
            let wtx = db.begin_write()?;
            wtx.open_tree("files")?.insert(b"late", &late)?;
            wtx.commit()?;
            conn.get_mut()
                .write_all(b"GET /files/late HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
            // Until the whole response waits in our socket, unread.
            let mut peeked = vec![0; 70_000];
            while !peeked_response_is_whole(conn.get_ref(), &mut peeked, late.len())? {
                std::thread::sleep(Duration::from_millis(1));
            }
            for round in 0..4 {
                let wtx = db.begin_write()?;
                wtx.open_tree("files")?
                    .insert(b"late", &value(60 + round, late.len()))?;
                wtx.commit()?;
            }
            let (status, _, body) = read_response(&mut conn)?;
            assert!(
                status == 200 && body == late,
                "{mode:?}: a late reader's body changed"
            );
            // An upload, streamed into the database, then read back.
            let up = value(99, (3 << 20) + 11);
            assert_eq!(upload(&mut conn, "/uploads/big", &up)?, 201, "{mode:?} put");
            let (status, _, body) = fetch(&mut conn, "/uploads/big", "")?;
            assert!(status == 200 && body == up, "{mode:?} uploaded value");
            // A body cut short stores nothing, and the server drops the connection.
            let mut cut = TcpStream::connect(addr)?;
            cut.write_all(b"PUT /uploads/short HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")?;
            cut.write_all(&[7; 100])?;
            cut.shutdown(std::net::Shutdown::Write)?;
            assert_eq!(
                cut.read(&mut [0; 64])?,
                0,
                "{mode:?}: closed without a reply"
            );
            assert_eq!(
                fetch(&mut conn, "/uploads/short", "")?.0,
                404,
                "{mode:?} cut"
            );
            // A refused upload whose body is left unread closes the connection: its body
            // (here shaped like a request) is never taken for the next request.
            let mut refused = BufReader::new(TcpStream::connect(addr)?);
            refused
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(10)))?;
            let smuggled = "GET /files/f%200 HTTP/1.1\r\nHost: localhost\r\n\r\n";
            assert_eq!(upload(&mut refused, "/no-key", smuggled.as_bytes())?, 400);
            let mut after = Vec::new();
            refused.read_to_end(&mut after)?;
            let after = String::from_utf8_lossy(&after);
            assert!(
                after == "expected /TREE/KEY\n",
                "{mode:?}: after the refusal: {after:?}"
            );
            assert_eq!(fetch(&mut conn, "/no-tree/f%200", "")?.0, 404);
            let (status, _, _) = fetch(&mut conn, "/files/f%201", "Connection: close\r\n")?;
            assert_eq!(status, 200);
            println!("self-test: mode {mode:?}, mmap_size {mmap_size}: ok");
        }
    }
    Ok(())
}

/// User and system CPU seconds of the calling thread (Linux: /proc/thread-self/stat, in
/// ticks of 1/100 s).
fn thread_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    (ticks(11), ticks(12))
}

/// One value of `mib` MiB fetched over loopback TCP in each mode, warm page cache:
/// throughput, and the CPU time of the server's connection thread.
fn bench(mib: usize) -> Result<()> {
    let dir = tempfile::tempdir_in(".")?;
    let db = Arc::new(Database::open(dir.path().join("db"))?);
    let wtx = db.begin_write()?;
    wtx.open_tree("b")?.insert(b"v", &vec![0x5a; mib << 20])?;
    wtx.commit()?;
    println!("{mib} MiB over loopback TCP, warm cache; CPU of the server's thread");
    for round in 0..2 {
        for mode in MODES {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let server_db = Arc::clone(&db);
            let server = std::thread::spawn(move || -> io::Result<(f64, f64)> {
                let (stream, _) = listener.accept()?;
                let before = thread_cpu();
                connection(stream, &server_db, mode)?;
                let after = thread_cpu();
                Ok((after.0 - before.0, after.1 - before.1))
            });
            let mut conn = BufReader::with_capacity(1 << 20, TcpStream::connect(addr)?);
            let started = Instant::now();
            conn.get_mut()
                .write_all(b"GET /b/v HTTP/1.1\r\nConnection: close\r\n\r\n")?;
            let received = io::copy(&mut conn, &mut io::sink())?;
            let secs = started.elapsed().as_secs_f64();
            // The server waits for our close before its transaction ends.
            drop(conn);
            let (user, sys) = server.join().expect("server thread")?;
            assert!(received > (mib << 20) as u64);
            if round == 1 {
                let gib = received as f64 / (1u64 << 30) as f64;
                println!(
                    "{:>10}: {:>6.2} GiB/s, server CPU per GiB: user {:.3} s, system {:.3} s",
                    format!("{mode:?}"),
                    gib / secs,
                    user / gib,
                    sys / gib
                );
            }
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut mode = Mode::Sendfile;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--self-test" => return self_test(),
            "--bench" => return bench(it.next().and_then(|n| n.parse().ok()).unwrap_or(1024)),
            "--mode" => {
                mode = it.next().and_then(|m| Mode::parse(m)).unwrap_or_else(|| {
                    eprintln!("--mode sendfile|map-write|copy");
                    std::process::exit(2)
                })
            }
            _ => positional.push(a.clone()),
        }
    }
    let Some(path) = positional.first() else {
        return self_test();
    };
    let addr = positional.get(1).map_or("127.0.0.1:8080", String::as_str);
    let db = Arc::new(Database::open(path)?);
    let listener = TcpListener::bind(addr)?;
    println!(
        "serving {path} on http://{} ({mode:?})",
        listener.local_addr()?
    );
    serve(listener, db, mode)?;
    Ok(())
}
