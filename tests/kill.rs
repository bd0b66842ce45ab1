//! kill -9: a child process (this test binary, re-executed) commits in a loop on a real
//! file and acknowledges each commit on stdout once `commit()` has returned; the parent
//! kills it with SIGKILL at random moments, reopens the file and checks that it opens,
//! passes `check`, and holds exactly the state after one commit, no older than the last
//! acknowledged `Immediate` commit. Every commit's changes are a function of its sequence
//! number, so the parent can rebuild each state.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mapkv::{Database, Durability, Options};
use support::model::{Trees, digest, key, read_all};
use support::rng::{Rng, heavy, seed};

const SEQ_TREE: &str = "_seq";
const CHILD_ENV: &str = "MAPKV_KILL_CHILD";

/// Applies commit `seq`'s changes to the model (and to the database if given).
fn commit_ops(
    seq: u64,
    model: &mut Trees,
    mut tree_op: impl FnMut(&str, &[u8], Option<&[u8]>, bool),
) -> Durability {
    let mut rng = Rng::new(seq);
    let name = *rng.pick(&support::model::TREE_NAMES);
    if rng.chance(1, 40) {
        model.remove(name);
        tree_op(name, b"", None, true);
    } else {
        let m = model.entry(name.to_string()).or_default();
        for _ in 0..rng.range(1, 25) {
            let k = key(rng.below(600), rng.chance(1, 5));
            if rng.chance(1, 4) {
                m.remove(&k);
                tree_op(name, &k, None, false);
            } else {
                let len = if rng.chance(1, 10) {
                    rng.range(4000, 20_000)
                } else {
                    rng.below(200)
                };
                let mut v = vec![0; len as usize];
                rng.fill(&mut v);
                tree_op(name, &k, Some(&v), false);
                m.insert(k, v);
            }
        }
    }
    let seq_bytes = seq.to_be_bytes().to_vec();
    model
        .entry(SEQ_TREE.to_string())
        .or_default()
        .insert(b"seq".to_vec(), seq_bytes.clone());
    tree_op(SEQ_TREE, b"seq", Some(&seq_bytes), false);
    if rng.chance(1, 3) {
        Durability::None
    } else {
        Durability::Immediate
    }
}

fn seq_of(content: &Trees) -> u64 {
    content
        .get(SEQ_TREE)
        .and_then(|t| t.get(&b"seq"[..]))
        .map_or(0, |v| {
            u64::from_be_bytes(v[..].try_into().expect("8 bytes"))
        })
}

/// The child: commits `seq + 1, seq + 2, …` until killed, printing `ACK seq durable`.
#[test]
#[ignore = "run by kill_9_at_random_moments in a child process"]
fn kill_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    // Acks go to a file with one unbuffered write each (a kill -9 keeps what was
    // written; stdout passes through the test harness's buffering).
    let mut acks = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(format!("{path}.acks"))
        .expect("ack file");
    let db = Options::new().open(&path).expect("child open");
    let start = seq_of(&read_all(&db).expect("child read"));
    for seq in start + 1..start + 5000 {
        let mut wtx = db.begin_write().expect("begin_write");
        let mut scratch = Trees::new();
        let mut failed = None;
        let durability = commit_ops(seq, &mut scratch, |name, k, v, delete| {
            let r = if delete {
                wtx.delete_tree(name).map(|_| ())
            } else {
                wtx.open_tree(name).and_then(|mut t| match v {
                    Some(v) => t.insert(k, v),
                    None => t.remove(k).map(|_| ()),
                })
            };
            if let Err(e) = r {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            panic!("child op: {e}");
        }
        wtx.set_durability(durability);
        wtx.commit().expect("child commit");
        let line = format!("ACK {seq} {}\n", durability == Durability::Immediate);
        std::io::Write::write_all(&mut acks, line.as_bytes()).expect("ack");
    }
}

/// Digests of the state after each commit, rebuilt on demand.
struct States {
    digests: Vec<u128>,
    model: Trees,
}

impl States {
    fn digest(&mut self, seq: u64) -> u128 {
        while self.digests.len() as u64 <= seq {
            let next = self.digests.len() as u64;
            commit_ops(next, &mut self.model, |_, _, _, _| {});
            self.digests.push(digest(&self.model));
        }
        self.digests[seq as usize]
    }
}

fn spawn_child(path: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "kill_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

#[test]
fn kill_9_at_random_moments() {
    let base = seed(4);
    let mut rng = Rng::new(base);
    let (kills_wanted, budget) = if heavy() {
        (2000, Duration::from_secs(600))
    } else {
        (300, Duration::from_secs(40))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("killed.mapkv");
    // State 0 is the empty database; commit `seq`'s state is digests[seq].
    let mut states = States {
        digests: vec![digest(&Trees::new())],
        model: Trees::new(),
    };
    states.model.clear();
    let mut floor = 0u64; // the state the file must hold at least
    let started = Instant::now();
    let (mut kills, mut acks, mut lost_none) = (0u64, 0u64, 0u64);
    while kills < kills_wanted && started.elapsed() < budget {
        let ack_path = dir.path().join("killed.mapkv.acks");
        let _ = std::fs::remove_file(&ack_path);
        let read_acks = || -> Vec<(u64, bool)> {
            let text = std::fs::read_to_string(&ack_path).unwrap_or_default();
            text.lines()
                .filter(|l| l.ends_with("true") || l.ends_with("false"))
                .filter_map(|l| {
                    let mut parts = l.strip_prefix("ACK ")?.split(' ');
                    let seq = parts.next()?.parse().ok()?;
                    Some((seq, parts.next() == Some("true")))
                })
                .collect()
        };
        let mut child = spawn_child(&path);
        // Kill after a random number of acknowledged commits (0: during open and
        // recovery), plus a random delay.
        let wait_for = rng.below(12) as usize;
        let waiting = Instant::now();
        while read_acks().len() < wait_for {
            assert!(
                waiting.elapsed() < Duration::from_secs(20),
                "child stopped acknowledging"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.below(4000)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the child was killed, not finished");
        let seen = read_acks();
        kills += 1;
        acks += seen.len() as u64;
        for &(seq, durable) in &seen {
            if durable {
                floor = floor.max(seq);
            }
        }
        let newest_possible = seen.last().map_or(floor, |&(s, _)| s) + 1;

        let db = Database::open(&path).expect("open after kill -9");
        db.check()
            .unwrap_or_else(|e| panic!("check after kill {kills}: {e}"));
        let content = read_all(&db).expect("read after kill");
        let seq = seq_of(&content);
        assert!(
            (floor..=newest_possible).contains(&seq),
            "kill {kills}: the file holds commit {seq}, expected {floor}..={newest_possible} (acks {seen:?})"
        );
        assert_eq!(
            digest(&content),
            states.digest(seq),
            "kill {kills}: content is not exactly the state after commit {seq}"
        );
        if seen.last().is_some_and(|&(s, _)| s > seq) {
            lost_none += 1;
        }
        floor = seq; // reopened (and closed cleanly): this state is durable now
    }
    assert!(
        kills >= kills_wanted.min(200),
        "only {kills} kills in the time budget"
    );
    eprintln!(
        "kill -9: {kills} kills, {acks} acknowledged commits, newest commit {floor}, {lost_none} kills lost unsynced Durability::None commits, {:.1?}",
        started.elapsed()
    );
}
