//! A three-node in-process cluster over mapkv stores in one temporary folder.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mapkv_raft::router::Router;
use mapkv_raft::{LogStoreOptions, Request, Response, StateMachineStore, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};

pub struct Node {
    pub raft: Raft<TypeConfig>,
    pub sm: StateMachineStore,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub router: Router,
    pub config: Arc<Config>,
    pub nodes: BTreeMap<u64, Node>,
    pub options: LogStoreOptions,
}

pub const IDS: [u64; 3] = [1, 2, 3];

pub fn config(snapshot_every: u64) -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid config"))
}

impl Cluster {
    /// Starts three nodes and makes node 1 initialize the membership.
    pub async fn start(config: Arc<Config>, options: LogStoreOptions) -> Cluster {
        Cluster::start_in(std::env::temp_dir(), config, options).await
    }

    /// [`Cluster::start`] with the nodes' folders under `parent`.
    pub async fn start_in(
        parent: impl AsRef<std::path::Path>,
        config: Arc<Config>,
        options: LogStoreOptions,
    ) -> Cluster {
        let mut c = Cluster {
            dir: tempfile::tempdir_in(parent).expect("temp dir"),
            router: Router::default(),
            config,
            nodes: BTreeMap::new(),
            options,
        };
        for id in IDS {
            c.start_node(id).await;
        }
        let members: BTreeMap<u64, BasicNode> =
            IDS.iter().map(|&i| (i, BasicNode::default())).collect();
        c.nodes[&1]
            .raft
            .initialize(members)
            .await
            .expect("initialize");
        c
    }

    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// Starts node `id` from whatever its folder holds.
    pub async fn start_node(&mut self, id: u64) {
        let dir = self.node_dir(id);
        let deadline = Instant::now() + Duration::from_secs(20);
        // The stopped instance's last tasks may still hold the files for a moment.
        let (log, sm) = loop {
            match mapkv_raft::open_with(&dir, self.options).await {
                Ok(stores) => break stores,
                Err(mapkv::Error::Locked) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("node {id}: open: {e}"),
            }
        };
        let sm_handle = sm.clone();
        let raft = Raft::new(id, Arc::clone(&self.config), self.router.clone(), log, sm)
            .await
            .expect("raft");
        self.router.add(id, raft.clone());
        self.nodes.insert(
            id,
            Node {
                raft,
                sm: sm_handle,
            },
        );
    }

    /// Stops node `id` like a killed process: unreachable at once, then shut down.
    pub async fn stop_node(&mut self, id: u64) {
        self.router.remove(id);
        let node = self.nodes.remove(&id).expect("running node");
        node.raft.shutdown().await.expect("shutdown");
    }

    /// The running leader, once a majority of the three nodes names it: a node that
    /// restarts from a vote for itself may call itself leader of a stale term for a
    /// moment, and must not be taken for the leader.
    pub async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metrics: Vec<_> = self
                .nodes
                .iter()
                .map(|(id, n)| (*id, n.raft.metrics().borrow().clone()))
                .collect();
            for (id, m) in &metrics {
                let followers = metrics
                    .iter()
                    .filter(|(_, o)| {
                        o.current_leader == Some(*id) && o.current_term == m.current_term
                    })
                    .count();
                if m.state == ServerState::Leader && followers * 2 > IDS.len() {
                    return *id;
                }
            }
            assert!(Instant::now() < deadline, "no leader within 30 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes through the leader, retrying on another leader until acknowledged.
    pub async fn write(&self, request: Request) -> Response {
        for _ in 0..200 {
            let leader = self.leader().await;
            match self.nodes[&leader].raft.client_write(request.clone()).await {
                Ok(r) => return r.data,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("write not acknowledged after 200 tries");
    }

    /// Waits until every running node has applied everything the leader has.
    pub async fn wait_converged(&self) {
        let leader = self.leader().await;
        let target = self.nodes[&leader].raft.metrics().borrow().last_log_index;
        let deadline = Instant::now() + Duration::from_secs(60);
        for (id, node) in &self.nodes {
            loop {
                let applied = node.raft.metrics().borrow().last_applied.map(|l| l.index);
                if applied >= target {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} applied {applied:?}, leader has {target:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// The running nodes' state machines, which must all be equal.
    pub fn assert_identical(&self) {
        let dumps: Vec<_> = self
            .nodes
            .values()
            .map(|n| n.sm.dump().expect("dump"))
            .collect();
        for d in &dumps[1..] {
            assert_eq!(d.0, dumps[0].0, "applied log ids differ");
            assert!(d.1 == dumps[0].1, "state machines differ");
        }
    }

    pub fn running(&self) -> BTreeSet<u64> {
        self.nodes.keys().copied().collect()
    }

    pub async fn shutdown(mut self) {
        for id in self.running() {
            self.stop_node(id).await;
        }
    }
}

pub fn set(n: u64) -> Request {
    Request::Set {
        key: format!("k{n:08}").into_bytes(),
        value: format!("v{n}").into_bytes(),
    }
}

/// A snapshot of `sm` built now, as openraft builds one.
pub async fn build_snapshot(sm: &mut StateMachineStore) -> Snapshot<TypeConfig> {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot")
}
