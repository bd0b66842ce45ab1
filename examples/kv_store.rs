//! A small persistent session store with expiry, as an application would build it on
//! mapkv: two trees updated together in one transaction, and a sweep that finds expired
//! entries with a range scan instead of reading everything.
//!
//! - `sessions`: session id → expiry time (8 bytes, big-endian) followed by the payload.
//! - `expiry`: expiry time (big-endian) + session id → nothing. Big-endian integers sort
//!   numerically as bytes, so "everything that expired by now" is the range `..=now`.
//!
//! The clock is simulated so the example runs in an instant and prints the same every
//! time. Run it with `cargo run --release --example kv_store`.
//!
//! `StoreError` is the pattern for an application's own errors: mapkv's `Error` wrapped
//! in one variant (`?` converts it), the application's failures in others.

use std::fmt;
use std::path::Path;

use mapkv::{Database, Error, WriteTxn};

/// What can go wrong in the store.
#[derive(Debug)]
enum StoreError {
    /// The database failed: I/O, a corrupt file, a key too large…
    Db(Error),
    /// A `sessions` value too short to hold its expiry time.
    ShortRecord { len: usize },
}

type Result<T> = std::result::Result<T, StoreError>;

impl From<Error> for StoreError {
    fn from(e: Error) -> StoreError {
        StoreError::Db(e)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Db(e) => write!(f, "database: {e}"),
            StoreError::ShortRecord { len } => {
                write!(f, "session record of {len} bytes has no 8-byte expiry time")
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Db(e) => Some(e),
            StoreError::ShortRecord { .. } => None,
        }
    }
}

/// Seconds since an arbitrary epoch.
type Time = u64;

/// A session store over one database file.
struct SessionStore {
    db: Database,
}

/// The `expiry` tree's key for a session: expiry time first, so the tree is ordered by it.
fn expiry_key(expires_at: Time, id: &str) -> Vec<u8> {
    let mut key = expires_at.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

/// Splits a `sessions` value into expiry time and payload.
fn decode(value: &[u8]) -> Result<(Time, &[u8])> {
    let (time, payload) = value
        .split_at_checked(8)
        .ok_or(StoreError::ShortRecord { len: value.len() })?;
    let time = Time::from_be_bytes(time.try_into().expect("split at 8"));
    Ok((time, payload))
}

impl SessionStore {
    /// Opens (or creates) the store at `path`.
    fn open(path: &Path) -> Result<SessionStore> {
        Ok(SessionStore {
            db: Database::open(path)?,
        })
    }

    /// Removes the expiry index entry of session `id`, if it has one.
    fn unindex(wtx: &mut WriteTxn, id: &str) -> Result<()> {
        let old = {
            let sessions = wtx.open_tree("sessions")?;
            match sessions.get(id.as_bytes())? {
                Some(value) => Some(decode(value)?.0),
                None => None,
            }
        };
        if let Some(old) = old {
            wtx.open_tree("expiry")?.remove(&expiry_key(old, id))?;
        }
        Ok(())
    }

    /// Stores `payload` for session `id`, valid until `now + ttl`; replaces an older one.
    /// Durable when it returns.
    fn put(&self, id: &str, payload: &[u8], now: Time, ttl: Time) -> Result<()> {
        let mut wtx = self.db.begin_write()?;
        Self::put_in(&mut wtx, id, payload, now + ttl)?;
        Ok(wtx.commit()?) // Both trees change together, or neither does.
    }

    /// Stores many sessions in one transaction: one commit (and one fsync) for all.
    fn put_many<'a>(
        &self,
        sessions: impl IntoIterator<Item = (&'a str, &'a [u8], Time)>,
        now: Time,
    ) -> Result<()> {
        let mut wtx = self.db.begin_write()?;
        for (id, payload, ttl) in sessions {
            Self::put_in(&mut wtx, id, payload, now + ttl)?;
        }
        Ok(wtx.commit()?)
    }

    /// Writes one session and its expiry index entry in `wtx`.
    fn put_in(wtx: &mut WriteTxn, id: &str, payload: &[u8], expires_at: Time) -> Result<()> {
        Self::unindex(wtx, id)?;
        let mut value = expires_at.to_be_bytes().to_vec();
        value.extend_from_slice(payload);
        wtx.open_tree("sessions")?.insert(id.as_bytes(), &value)?;
        wtx.open_tree("expiry")?
            .insert(&expiry_key(expires_at, id), b"")?;
        Ok(())
    }

    /// The payload of session `id` if it exists and has not expired at `now`. An expired
    /// session reads as absent even before a sweep removes it.
    fn get(&self, id: &str, now: Time) -> Result<Option<Vec<u8>>> {
        let rtx = self.db.begin_read()?;
        let sessions = match rtx.open_tree("sessions") {
            Ok(tree) => tree,
            Err(Error::TreeNotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match sessions.get(id.as_bytes())? {
            Some(value) => {
                let (expires_at, payload) = decode(value)?;
                Ok((expires_at > now).then(|| payload.to_vec()))
            }
            None => Ok(None),
        }
    }

    /// Removes every session that expired at or before `now`, in one transaction, and
    /// returns their ids. Reads only the expired part of the `expiry` index.
    fn sweep(&self, now: Time) -> Result<Vec<String>> {
        let wtx = self.db.begin_write()?;
        let expired: Vec<Vec<u8>> = {
            let expiry = wtx.open_tree("expiry")?;
            let end = expiry_key(now + 1, "");
            expiry
                .range(..end)?
                .map(|entry| entry.map(|(key, _)| key.to_vec()))
                .collect::<mapkv::Result<_>>()?
        };
        let mut ids = Vec::new();
        {
            let mut expiry = wtx.open_tree("expiry")?;
            for key in &expired {
                expiry.remove(key)?;
            }
        }
        let mut sessions = wtx.open_tree("sessions")?;
        for key in &expired {
            let id = &key[8..];
            sessions.remove(id)?;
            ids.push(String::from_utf8_lossy(id).into_owned());
        }
        wtx.commit()?;
        Ok(ids)
    }

    /// Sessions stored, expired or not.
    fn len(&self) -> Result<u64> {
        let rtx = self.db.begin_read()?;
        match rtx.open_tree("sessions") {
            Ok(tree) => Ok(tree.len()?),
            Err(Error::TreeNotFound(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sessions.mapkv");
    let mut now: Time = 1_000;

    {
        let store = SessionStore::open(&path)?;
        store.put("alice", b"cart=3 items", now, 60)?;
        store.put("bob", b"cart=empty", now, 300)?;
        store.put("carol", b"theme=dark", now, 30)?;
        println!(
            "t={now}: stored 3 sessions (alice 60 s, bob 300 s, carol 30 s); {} in the store",
            store.len()?
        );
        now += 20;
        store.put("carol", b"theme=light", now, 30)?; // renewed: expires at t=1050 now
        println!("t={now}: carol renewed for 30 s");
    } // The store is closed here; its file stays.

    let store = SessionStore::open(&path)?;
    println!(
        "reopened {}: {} sessions survived the restart",
        path.display(),
        store.len()?
    );

    now += 35; // t = 1055: alice (1060) alive, carol (1050) expired, bob (1300) alive.
    for id in ["alice", "bob", "carol"] {
        match store.get(id, now)? {
            Some(payload) => println!(
                "t={now}: get {id:<5} -> {}",
                String::from_utf8_lossy(&payload)
            ),
            None => println!("t={now}: get {id:<5} -> expired or absent"),
        }
    }
    let swept = store.sweep(now)?;
    println!(
        "t={now}: sweep removed {swept:?}; {} sessions left",
        store.len()?
    );
    assert_eq!(swept, ["carol"]);

    now += 250; // t = 1305: alice and bob have expired too.
    let swept = store.sweep(now)?;
    println!(
        "t={now}: sweep removed {swept:?}; {} sessions left",
        store.len()?
    );
    assert_eq!(swept, ["alice", "bob"]);
    assert_eq!(store.len()?, 0);

    // A bigger run: 10,000 sessions with staggered lifetimes, swept in steps.
    let ids: Vec<String> = (0..10_000).map(|i| format!("user{i:05}")).collect();
    store.put_many(
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), &b"{}"[..], 1 + i as Time % 100)),
        now,
    )?;
    println!("t={now}: stored {} sessions in one transaction", ids.len());
    let mut swept_total = 0;
    for step in [10, 40, 60] {
        let swept = store.sweep(now + step)?.len();
        swept_total += swept;
        println!(
            "t={}: sweep removed {swept} sessions; {} left",
            now + step,
            store.len()?
        );
    }
    assert_eq!(swept_total, 6_000);
    store.db.check()?;
    println!("integrity check passed");
    Ok(())
}
