//! Three mapkv-raft nodes on loopback, each a process of its own, with a line-based
//! TCP API; the demo kills the leader's process and restarts it from its files.
//!
//! `cargo run --release -p mapkv-raft --example raft_kv`
//!
//! Run with no arguments, this program is the demo driver: it picks six free ports
//! on 127.0.0.1, starts itself three times as `raft_kv node ...` (one child process
//! per node, each with its own folder of mapkv files in a temporary folder), and then
//! talks to the nodes only through their client API:
//!
//! 1. node 1 initializes the three-node membership; a leader is elected;
//! 2. writes go through the leader (`PUT`, one `DELETE`);
//! 3. the leader's process is killed (SIGKILL, no shutdown);
//! 4. the two others elect a new leader, which serves every acknowledged write
//!    (linearizable `GET`s), and takes more writes;
//! 5. the killed node restarts from its mapkv files and catches up;
//! 6. the three state machines are compared (applied log id, key count, digest of
//!    every key and value); exit 0 if they agree.
//!
//! Nodes talk Raft to each other over TCP (`mapkv_raft::tcp`: length-prefixed
//! postcard frames). The client API, one command per line, one reply line each:
//!
//! | command | reply |
//! |---|---|
//! | `PUT key value` | `OK` or `OK previous=<old value>` |
//! | `GET key` | `VALUE <value>` or `NONE` (a linearizable read: leader only) |
//! | `DELETE key` | `OK` or `OK previous=<old value>` |
//! | `MEMBERS` | `id=.. state=.. term=.. leader=.. voters=1,2,3 applied=..` |
//! | `INIT` | `OK`: makes the configured peers the cluster's first membership |
//! | `DIGEST` | `applied=.. keys=.. digest=..` of the local state machine |
//!
//! Writes go through a `mapkv_raft::Batcher` (concurrent clients' writes share log
//! entries). A write or read sent to a node that is not the leader answers
//! `ERR not-leader leader=<id or ?>`. Try it by hand: `raft_kv node 1 ...` (see
//! `node_main` for the arguments), then `nc 127.0.0.1 <api port>`.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mapkv_raft::tcp::TcpNetwork;
use mapkv_raft::{BatchOptions, Batcher, Request, StateMachineStore, TypeConfig, WriteError};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const IDS: [u64; 3] = [1, 2, 3];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("node") => node_main(&args[1..]),
        None => demo(),
        Some(other) => Err(format!("unknown mode {other:?}; run with no arguments")),
    };
    if let Err(e) = result {
        eprintln!("raft_kv: {e}");
        std::process::exit(1);
    }
}

// ---- one node (a child process) -----------------------------------------------------

/// `raft_kv node <id> <dir> <api addr> <id>=<raft addr>...` (every node's Raft
/// address, its own included).
fn node_main(args: &[String]) -> Result<(), String> {
    let [id, dir, api, peers @ ..] = args else {
        return Err("usage: raft_kv node <id> <dir> <api addr> <id>=<raft addr>...".into());
    };
    let id: u64 = id.parse().map_err(|e| format!("node id: {e}"))?;
    let mut members = BTreeMap::new();
    for p in peers {
        let (n, addr) = p.split_once('=').ok_or(format!("peer {p:?}: no '='"))?;
        let n: u64 = n.parse().map_err(|e| format!("peer {p:?}: {e}"))?;
        members.insert(n, BasicNode::new(addr));
    }
    let raft_addr = members
        .get(&id)
        .ok_or(format!("node {id} is not among the peers"))?
        .addr
        .clone();
    // The driver holds our stdin: when it goes away (even killed), so do we.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let (log, sm) = mapkv_raft::open(dir)
            .await
            .map_err(|e| format!("open {dir}: {e}"))?;
        let config = Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| e.to_string())?);
        let raft = Raft::new(id, config, TcpNetwork, log, sm.clone())
            .await
            .map_err(|e| e.to_string())?;
        let node = Node {
            id,
            batcher: Batcher::new(raft.clone(), BatchOptions::default()),
            raft,
            sm,
            members,
        };
        let raft_listener = tokio::net::TcpListener::bind(&raft_addr)
            .await
            .map_err(|e| format!("bind {raft_addr}: {e}"))?;
        tokio::spawn(mapkv_raft::tcp::serve(raft_listener, node.raft.clone()));
        let api = tokio::net::TcpListener::bind(api)
            .await
            .map_err(|e| format!("bind {api}: {e}"))?;
        let node = Arc::new(node);
        loop {
            let (stream, _) = api.accept().await.map_err(|e| e.to_string())?;
            tokio::spawn(serve_client(stream, Arc::clone(&node)));
        }
    })
}

struct Node {
    id: u64,
    raft: Raft<TypeConfig>,
    /// Writes go through it: concurrent clients' writes share log entries.
    batcher: Batcher,
    sm: StateMachineStore,
    members: BTreeMap<u64, BasicNode>,
}

async fn serve_client(stream: tokio::net::TcpStream, node: Arc<Node>) {
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut reply = node.command(&line).await;
        reply.push('\n');
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

impl Node {
    async fn command(&self, line: &str) -> String {
        let mut words = line.split_whitespace();
        let (cmd, key, value) = (words.next(), words.next(), words.next());
        match (cmd, key, value) {
            (Some("PUT"), Some(k), Some(v)) => {
                self.write(Request::Set {
                    key: k.into(),
                    value: v.into(),
                })
                .await
            }
            (Some("DELETE"), Some(k), None) => self.write(Request::Delete { key: k.into() }).await,
            (Some("GET"), Some(k), None) => match self.raft.ensure_linearizable().await {
                Ok(_) => match self.sm.get(k.as_bytes()) {
                    Ok(Some(v)) => format!("VALUE {}", String::from_utf8_lossy(&v)),
                    Ok(None) => "NONE".into(),
                    Err(e) => format!("ERR {e}"),
                },
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    self.not_leader(f.leader_id)
                }
                Err(e) => format!("ERR {e}"),
            },
            (Some("MEMBERS"), None, None) => {
                let m = self.raft.metrics().borrow().clone();
                let voters: Vec<String> = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .map(|v| v.to_string())
                    .collect();
                format!(
                    "id={} state={:?} term={} leader={} voters={} applied={}",
                    self.id,
                    m.state,
                    m.current_term,
                    m.current_leader.map_or("?".into(), |l| l.to_string()),
                    voters.join(","),
                    m.last_applied.map_or(0, |l| l.index),
                )
            }
            (Some("INIT"), None, None) => match self.raft.initialize(self.members.clone()).await {
                Ok(()) => "OK".into(),
                Err(e) => format!("ERR {e}"),
            },
            (Some("DIGEST"), None, None) => match self.sm.dump() {
                Ok((applied, pairs)) => {
                    let mut h = DefaultHasher::new();
                    pairs.hash(&mut h);
                    format!(
                        "applied={} keys={} digest={:016x}",
                        applied.map_or(0, |l| l.index),
                        pairs.len(),
                        h.finish()
                    )
                }
                Err(e) => format!("ERR {e}"),
            },
            _ => format!("ERR cannot parse {line:?}"),
        }
    }

    async fn write(&self, request: Request) -> String {
        match self.batcher.write(request).await {
            Ok(r) => match r.previous {
                Some(p) => format!("OK previous={}", String::from_utf8_lossy(&p)),
                None => "OK".into(),
            },
            Err(WriteError::Raft(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                self.not_leader(f.leader_id)
            }
            Err(e) => format!("ERR {e}"),
        }
    }

    fn not_leader(&self, leader: Option<u64>) -> String {
        format!(
            "ERR not-leader leader={}",
            leader.map_or("?".into(), |l| l.to_string())
        )
    }
}

// ---- the demo driver ----------------------------------------------------------------

/// The three child processes; dropping this kills whichever still run.
struct Nodes {
    dir: tempfile::TempDir,
    api: BTreeMap<u64, String>,
    raft: BTreeMap<u64, String>,
    children: BTreeMap<u64, Child>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free port on 127.0.0.1 (bound, read, released: the child binds it again).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Nodes {
    fn new() -> Result<Nodes, String> {
        let mut ports = Vec::new();
        while ports.len() < 2 * IDS.len() {
            let p = free_port()?;
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
        Ok(Nodes {
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            api: IDS.iter().map(|&i| (i, addr(i as usize - 1))).collect(),
            raft: IDS.iter().map(|&i| (i, addr(i as usize + 2))).collect(),
            children: BTreeMap::new(),
        })
    }

    /// Starts node `id` from its folder (empty the first time) and waits for its API.
    fn start(&mut self, id: u64) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = self.dir.path().join(format!("node{id}"));
        let child = Command::new(exe)
            .arg("node")
            .arg(id.to_string())
            .arg(&dir)
            .arg(&self.api[&id])
            .args(self.raft.iter().map(|(n, a)| format!("{n}={a}")))
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn node {id}: {e}"))?;
        self.children.insert(id, child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&self.api[&id]).is_err() {
            if Instant::now() > deadline {
                return Err(format!("node {id}'s API did not come up"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills node `id`'s process (SIGKILL: no shutdown, no flush).
    fn kill(&mut self, id: u64) -> Result<(), String> {
        let mut child = self.children.remove(&id).ok_or("not running")?;
        child.kill().map_err(|e| e.to_string())?;
        child.wait().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Sends one command to node `id`'s API and returns the reply line.
    fn ask(&self, id: u64, command: &str) -> Result<String, String> {
        let stream = TcpStream::connect(&self.api[&id]).map_err(|e| format!("node {id}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        (&stream)
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("node {id}: {e}"))?;
        let mut reply = String::new();
        BufReader::new(&stream)
            .read_line(&mut reply)
            .map_err(|e| format!("node {id}: {e}"))?;
        Ok(reply.trim_end().to_string())
    }

    /// One field (`name=value`) of node `id`'s `MEMBERS` or `DIGEST` reply.
    fn field(&self, id: u64, command: &str, name: &str) -> Result<String, String> {
        let reply = self.ask(id, command)?;
        reply
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
            .ok_or(format!("node {id}: no {name} in {reply:?}"))
    }

    /// The leader once every running node names it (in the same term).
    fn leader(&self, within: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<(String, String)> = self
                .children
                .keys()
                .filter_map(|&id| {
                    let leader = self.field(id, "MEMBERS", "leader").ok()?;
                    Some((leader, self.field(id, "MEMBERS", "term").ok()?))
                })
                .collect();
            if views.len() == self.children.len()
                && views.iter().all(|v| *v == views[0])
                && let Ok(l) = views[0].0.parse::<u64>()
                && self.children.contains_key(&l)
            {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(format!("no agreed leader within {within:?}: {views:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a write or a read to the leader, following `not-leader` answers.
    fn to_leader(&self, command: &str) -> Result<String, String> {
        for _ in 0..50 {
            let leader = self.leader(Duration::from_secs(10))?;
            let reply = self.ask(leader, command)?;
            if !reply.starts_with("ERR not-leader") {
                return Ok(reply);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("{command}: no leader took it"))
    }

    fn applied(&self, id: u64) -> Result<u64, String> {
        self.field(id, "MEMBERS", "applied")?
            .parse()
            .map_err(|e| format!("{e}"))
    }
}

fn put(nodes: &Nodes, key: &str, value: &str) -> Result<(), String> {
    let reply = nodes.to_leader(&format!("PUT {key} {value}"))?;
    if !reply.starts_with("OK") {
        return Err(format!("PUT {key}: {reply}"));
    }
    Ok(())
}

fn demo() -> Result<(), String> {
    let start = Instant::now();
    let mut nodes = Nodes::new()?;
    println!("data in {}", nodes.dir.path().display());
    for id in IDS {
        nodes.start(id)?;
        println!(
            "node {id}: process {}, API {}, raft {}",
            nodes.children[&id].id(),
            nodes.api[&id],
            nodes.raft[&id]
        );
    }

    let reply = nodes.ask(1, "INIT")?;
    if reply != "OK" {
        return Err(format!("INIT: {reply}"));
    }
    let leader = nodes.leader(Duration::from_secs(10))?;
    println!("cluster formed: {}", nodes.ask(leader, "MEMBERS")?);

    // Writes through the leader; every acknowledged one is remembered.
    let mut acked: BTreeMap<String, Option<String>> = BTreeMap::new();
    let t = Instant::now();
    for n in 0..100 {
        let (k, v) = (format!("key{n:03}"), format!("value{n}"));
        put(&nodes, &k, &v)?;
        acked.insert(k, Some(v));
    }
    let reply = nodes.to_leader("DELETE key007")?;
    println!("DELETE key007 -> {reply}");
    acked.insert("key007".into(), None);
    println!(
        "100 PUTs and 1 DELETE acknowledged by leader {leader} in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    // Kill the leader's process.
    nodes.kill(leader)?;
    println!("killed node {leader} (the leader) with SIGKILL");
    let t = Instant::now();
    let new_leader = nodes.leader(Duration::from_secs(15))?;
    println!(
        "new leader elected: node {new_leader} after {:.0} ms ({})",
        t.elapsed().as_secs_f64() * 1e3,
        nodes.ask(new_leader, "MEMBERS")?
    );

    // Every acknowledged write, read linearizably from the new leader.
    for (k, v) in &acked {
        let reply = nodes.to_leader(&format!("GET {k}"))?;
        let expected = match v {
            Some(v) => format!("VALUE {v}"),
            None => "NONE".into(),
        };
        if reply != expected {
            return Err(format!("GET {k}: {reply}, acknowledged {expected}"));
        }
    }
    println!(
        "all {} acknowledged writes read back from node {new_leader}",
        acked.len()
    );
    println!("GET key042 -> {}", nodes.to_leader("GET key042")?);

    // More writes while the old leader is down.
    for n in 100..150 {
        let (k, v) = (format!("key{n:03}"), format!("value{n}"));
        put(&nodes, &k, &v)?;
        acked.insert(k, Some(v));
    }
    println!("50 more PUTs acknowledged by node {new_leader} while node {leader} is down");

    // Restart the killed node from its files; it catches up by log.
    nodes.start(leader)?;
    println!(
        "restarted node {leader} from its mapkv files: {}",
        nodes.ask(leader, "DIGEST")?
    );
    let target = nodes.applied(new_leader)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while nodes.applied(leader)? < target {
        if Instant::now() > deadline {
            return Err(format!("node {leader} did not catch up to {target}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("node {leader} caught up: {}", nodes.ask(leader, "MEMBERS")?);

    // The three state machines must agree.
    let digests: Vec<String> = IDS
        .iter()
        .map(|&id| nodes.ask(id, "DIGEST"))
        .collect::<Result<_, _>>()?;
    for (id, d) in IDS.iter().zip(&digests) {
        println!("node {id}: {d}");
    }
    if digests.iter().any(|d| *d != digests[0]) {
        return Err("the state machines differ".into());
    }
    let keys = acked.values().filter(|v| v.is_some()).count();
    if !digests[0].contains(&format!("keys={keys} ")) {
        return Err(format!("expected {keys} keys: {}", digests[0]));
    }
    println!(
        "OK: the three state machines agree ({keys} keys), {:.1} s in all",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
