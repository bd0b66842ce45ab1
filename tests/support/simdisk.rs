//! A simulated disk behind `mapkv::testing::Backend`: it keeps the file in memory, records
//! every write, size change and sync in order, and produces the file as a power loss at
//! any point of that log could leave it. It can also fail the Nth operation of a kind.
//!
//! A failed sync is modelled as Linux reports a failed writeback: the writes since the
//! previous sync never reach the disk, yet the program goes on reading them from the page
//! cache, where they are marked clean, until the cache is dropped (`drop_cached`); then
//! reads show what the disk holds.

use std::fs::File;
use std::io;
use std::sync::Arc;

use mapkv::testing::Backend;
use parking_lot::Mutex;

use super::rng::Rng;

/// Sector size: writes are atomic at this granularity, and no larger.
pub const SECTOR: usize = 512;

/// One recorded operation.
#[derive(Clone, Debug)]
pub enum Event {
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    SetLen(u64),
    Sync,
    /// A sync that failed: every write since the previous sync (of either kind) is lost
    /// from the disk for good (a size it extended the file to stays), though the program
    /// still reads it from the page cache until the cache is dropped. Size changes are
    /// kept.
    SyncFailed,
}

/// The kinds of operation a fault can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Sync,
    SetLen,
}

pub const OP_KINDS: [OpKind; 4] = [OpKind::Read, OpKind::Write, OpKind::Sync, OpKind::SetLen];

/// Fail the `nth` operation of `kind` (1-based); with `persistent`, every later one too.
/// The error's kind is `Other` unless `SimDisk::set_fault_error` says otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub kind: OpKind,
    pub nth: u64,
    pub persistent: bool,
}

/// An operation that an injected fault failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    Read,
    /// A write of `len` bytes at `offset` (of which the first sector reached the file).
    Write {
        offset: u64,
        len: u64,
    },
    Sync,
    /// A change of the file's length from `from` to `to` (not made).
    SetLen {
        from: u64,
        to: u64,
    },
}

struct Inner {
    /// The file as the running program sees it (every write applied).
    data: Vec<u8>,
    /// The file when the disk was made: durable.
    initial: Vec<u8>,
    log: Vec<Event>,
    fault: Option<Fault>,
    /// The kind of error injected faults give.
    fault_error: io::ErrorKind,
    /// The operations injected faults failed, in order.
    failed: Vec<Failed>,
    counts: [u64; 4],
    /// Faults that fired.
    fired: u64,
    /// Bumped by `kill`: backends of an older generation belong to a dead process.
    generation: u64,
    /// `kill_after`: writes, syncs and size changes left before the kill.
    kill_in: Option<u64>,
    /// The ranges (offset, length; 0: to the end) asked of `drop_cached`, in order.
    drops: Vec<(u64, u64)>,
}

/// The disk; share it in an `Arc` and hand `SimBackend`s to databases.
pub struct SimDisk {
    inner: Mutex<Inner>,
}

impl SimDisk {
    /// A disk holding `initial` (durable), e.g. an empty file or a crash image.
    pub fn new(initial: Vec<u8>) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            inner: Mutex::new(Inner {
                data: initial.clone(),
                initial,
                log: Vec::new(),
                fault: None,
                fault_error: io::ErrorKind::Other,
                failed: Vec::new(),
                counts: [0; 4],
                fired: 0,
                generation: 0,
                kill_in: None,
                drops: Vec::new(),
            }),
        })
    }

    pub fn backend(self: &Arc<Self>) -> Box<dyn Backend> {
        let generation = self.inner.lock().generation;
        Box::new(SimBackend(Arc::clone(self), generation))
    }

    /// Kills the process using the disk (as kill -9): every backend handed out so far
    /// fails from now on, changing nothing, so dropping its database writes nothing.
    pub fn kill(&self) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner.kill_in = None;
    }

    /// How many kills so far.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Kills the process after `n` more writes, syncs or size changes (if it has not
    /// been killed before).
    pub fn kill_after(&self, n: u64) {
        self.inner.lock().kill_in = Some(n);
    }

    /// Events recorded so far: a crash point is an index into the log (`0..=log_len`).
    pub fn log_len(&self) -> usize {
        self.inner.lock().log.len()
    }

    pub fn log(&self) -> Vec<Event> {
        self.inner.lock().log.clone()
    }

    /// The file as it is now, every write included (what a kill -9 leaves): as the
    /// program reads it, so after a failed sync with the cache's copies of the lost
    /// writes.
    pub fn contents(&self) -> Vec<u8> {
        self.inner.lock().data.clone()
    }

    /// The file as a read would show it once the page cache is dropped: what the disk
    /// holds, with the writes since the last sync still cached (dirty) on top. Equal to
    /// `contents` unless a sync failed.
    pub fn uncached_contents(&self) -> Vec<u8> {
        self.inner.lock().uncached()
    }

    /// The ranges (offset, length; 0: to the end) the databases asked to drop from the
    /// page cache, in order.
    pub fn cache_drops(&self) -> Vec<(u64, u64)> {
        self.inner.lock().drops.clone()
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut inner = self.inner.lock();
        inner.fault = fault;
        inner.counts = [0; 4];
    }

    /// Operations of `kind` so far (counted since the last `set_fault`).
    pub fn count(&self, kind: OpKind) -> u64 {
        self.inner.lock().counts[kind as usize]
    }

    pub fn faults_fired(&self) -> u64 {
        self.inner.lock().fired
    }

    /// Makes injected faults fail with errors of `kind` (`StorageFull`: a full disk)
    /// from now on, instead of `Other`.
    pub fn set_fault_error(&self, kind: io::ErrorKind) {
        self.inner.lock().fault_error = kind;
    }

    /// The operations injected faults failed so far, in order.
    pub fn failed_ops(&self) -> Vec<Failed> {
        self.inner.lock().failed.clone()
    }

    /// Indexes `i` such that the log's event `i` is a sync: crashing at `i` (just before
    /// the sync completes) and at `i + 1` (just after) are the interesting points.
    pub fn sync_points(&self) -> Vec<usize> {
        let inner = self.inner.lock();
        (0..inner.log.len())
            .filter(|&i| matches!(inner.log[i], Event::Sync))
            .collect()
    }

    /// The file as if every logged event reached the disk except the write at log index
    /// `event`, of which only the first `sectors_kept` sectors did (the others keep what
    /// the disk held before it): one torn write, whatever was written after it intact,
    /// as a power loss before the next sync can leave it.
    pub fn image_tearing(&self, event: usize, sectors_kept: usize) -> Vec<u8> {
        let inner = self.inner.lock();
        assert!(
            matches!(inner.log.get(event), Some(Event::Write { .. })),
            "event {event} is not a write"
        );
        let mut image = inner.initial.clone();
        for (i, ev) in inner.log.iter().enumerate() {
            match ev {
                Event::Write { offset, data } => {
                    let kept = if i == event {
                        data.len().min(sectors_kept * SECTOR)
                    } else {
                        data.len()
                    };
                    apply_write(&mut image, *offset as usize, &data[..kept]);
                }
                Event::SetLen(n) => image.resize(*n as usize, 0),
                Event::Sync => {}
                Event::SyncFailed => panic!("image_tearing does not model a failed sync"),
            }
        }
        image
    }

    /// A crash image for one crash point (`0..=log_len`): see `CrashImages`.
    pub fn crash_image(&self, at: usize, rng: &mut Rng) -> Vec<u8> {
        let mut images = CrashImages::new(self);
        images.image(at, rng)
    }
}

impl Inner {
    /// Counts an operation; Err if the configured fault hits it or the process that
    /// owns the backend was killed.
    fn tick(&mut self, kind: OpKind, generation: u64) -> io::Result<()> {
        if kind != OpKind::Read {
            match &mut self.kill_in {
                Some(0) => {
                    self.generation += 1;
                    self.kill_in = None;
                }
                Some(n) => *n -= 1,
                None => {}
            }
        }
        if generation != self.generation {
            return Err(io::Error::other("the process was killed"));
        }
        let n = &mut self.counts[kind as usize];
        *n += 1;
        // `filter`, not a let chain: the crates that share this file promise Rust 1.85.
        let fires = |f: &Fault| f.kind == kind && (*n == f.nth || (f.persistent && *n > f.nth));
        if self.fault.filter(fires).is_some() {
            self.fired += 1;
            let message = format!("injected {kind:?} fault #{n}");
            return Err(io::Error::new(self.fault_error, message));
        }
        Ok(())
    }

    /// See `SimDisk::uncached_contents`.
    fn uncached(&self) -> Vec<u8> {
        if !self.log.iter().any(|e| matches!(e, Event::SyncFailed)) {
            return self.data.clone();
        }
        let mut image = self.initial.clone();
        let tail = settle(&mut image, &self.log);
        apply_events(&mut image, &self.log[tail..], true);
        debug_assert_eq!(image.len(), self.data.len(), "sizes are never lost");
        image
    }
}

fn apply_write(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(data);
}

/// Applies `events` (none of them a sync) to `image`; without `writes_kept`, writes change
/// only the length (a failed writeback: the bytes are lost, the size is not).
fn apply_events(image: &mut Vec<u8>, events: &[Event], writes_kept: bool) {
    for ev in events {
        match ev {
            Event::Write { offset, data } if writes_kept => {
                apply_write(image, *offset as usize, data)
            }
            Event::Write { offset, data } => {
                let end = *offset as usize + data.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
            }
            Event::SetLen(n) => image.resize(*n as usize, 0),
            Event::Sync | Event::SyncFailed => unreachable!("a sync inside a window"),
        }
    }
}

/// Applies the events up to the last sync of `log` (of either kind) to `image`, as the
/// disk holds them for good: writes before a sync that succeeded are kept, writes before
/// one that failed lost. Returns the index after that last sync: the events after it are
/// still unsynced.
fn settle(image: &mut Vec<u8>, log: &[Event]) -> usize {
    let mut start = 0;
    for (i, ev) in log.iter().enumerate() {
        if matches!(ev, Event::Sync | Event::SyncFailed) {
            apply_events(image, &log[start..i], matches!(ev, Event::Sync));
            start = i + 1;
        }
    }
    start
}

/// The handle a database uses; every operation goes to the shared disk.
pub struct SimBackend(Arc<SimDisk>, u64);

// SAFETY: `file()` is None: nothing is mapped.
unsafe impl Backend for SimBackend {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut inner = self.0.inner.lock();
        inner.tick(OpKind::Read, self.1).inspect_err(|_| {
            if self.1 == inner.generation {
                inner.failed.push(Failed::Read);
            }
        })?;
        let start = offset as usize;
        let end = start.checked_add(buf.len());
        match end {
            Some(end) if end <= inner.data.len() => {
                buf.copy_from_slice(&inner.data[start..end]);
                Ok(())
            }
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    fn write_all_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let data: Vec<u8> = bufs.concat();
        let mut inner = self.0.inner.lock();
        if let Err(e) = inner.tick(OpKind::Write, self.1) {
            if self.1 != inner.generation {
                return Err(e);
            }
            inner.failed.push(Failed::Write {
                offset,
                len: data.len() as u64,
            });
            // A failed write may still have written a part: its first sector.
            let part = data[..data.len().min(SECTOR)].to_vec();
            apply_write(&mut inner.data, offset as usize, &part);
            inner.log.push(Event::Write { offset, data: part });
            return Err(e);
        }
        apply_write(&mut inner.data, offset as usize, &data);
        inner.log.push(Event::Write { offset, data });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut inner = self.0.inner.lock();
        if let Err(e) = inner.tick(OpKind::Sync, self.1) {
            if self.1 == inner.generation {
                inner.log.push(Event::SyncFailed); // injected, not a kill
                inner.failed.push(Failed::Sync);
            }
            return Err(e);
        }
        inner.log.push(Event::Sync);
        Ok(())
    }

    fn file_len(&self) -> io::Result<u64> {
        Ok(self.0.inner.lock().data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut inner = self.0.inner.lock();
        let from = inner.data.len() as u64;
        inner.tick(OpKind::SetLen, self.1).inspect_err(|_| {
            if self.1 == inner.generation {
                inner.failed.push(Failed::SetLen { from, to: len });
            }
        })?;
        inner.data.resize(len as usize, 0);
        inner.log.push(Event::SetLen(len));
        Ok(())
    }

    fn file(&self) -> Option<&File> {
        None
    }

    fn drop_cached(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut inner = self.0.inner.lock();
        if self.1 != inner.generation {
            return Err(io::Error::other("the process was killed"));
        }
        inner.drops.push((offset, len));
        if !inner.log.iter().any(|e| matches!(e, Event::SyncFailed)) {
            // The cache holds what the disk holds: nothing to drop (and no copy of the
            // image, which tests that measure the engine's memory would count).
            return Ok(());
        }
        let uncached = inner.uncached();
        let file_len = inner.data.len();
        let end = if len == 0 {
            file_len
        } else {
            offset.saturating_add(len).min(file_len as u64) as usize
        };
        let start = (offset as usize).min(end);
        inner.data[start..end].copy_from_slice(&uncached[start..end]);
        Ok(())
    }
}

/// Produces crash images for increasing crash points without replaying the whole log
/// each time: it keeps the durable image at the last sync it passed.
///
/// The image for crash point `at` (the first `at` events happened, the rest did not):
/// everything up to the last sync before `at` is as that sync left it (kept, or lost if
/// the sync failed); what happens to the events after it is an `Unsynced` choice.
pub struct CrashImages {
    log: Vec<Event>,
    initial: Vec<u8>,
    /// The durable image after the first `durable_at` events (`durable_at` is 0 or one
    /// past a sync of either kind).
    durable: Vec<u8>,
    durable_at: usize,
}

/// What a crash image keeps of the writes and size changes since the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsynced {
    /// Every write independently kept, dropped, or torn at sector boundaries (each sector
    /// new, old, or garbage); every size change kept or dropped. The file's final size is
    /// the durable size or that of a kept change, and bytes past it are gone.
    Random,
    /// Every size change dropped. The part of a write inside the file as it is then is
    /// kept, dropped or torn as in `Random`; of the part past its end, a prefix of whole
    /// sectors (possibly none) survives intact and extends the file, as a file system
    /// that records a larger size only once the data it covers is on the disk leaves it.
    SizesLost,
    /// Every size change dropped, every write kept (extending the file where it reaches
    /// past the end).
    OnlyWrites,
}

impl CrashImages {
    pub fn new(disk: &SimDisk) -> CrashImages {
        let inner = disk.inner.lock();
        CrashImages {
            log: inner.log.clone(),
            initial: inner.initial.clone(),
            durable: inner.initial.clone(),
            durable_at: 0,
        }
    }

    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// The image for crash point `at`, with the unsynced events `Random` three times in
    /// four and `SizesLost` otherwise; points may be asked in any order (asking an
    /// earlier one than before replays from the start).
    pub fn image(&mut self, at: usize, rng: &mut Rng) -> Vec<u8> {
        let unsynced = if rng.chance(1, 4) {
            Unsynced::SizesLost
        } else {
            Unsynced::Random
        };
        self.image_with(at, unsynced, rng)
    }

    /// The image for crash point `at` with the unsynced events treated as `unsynced` says.
    pub fn image_with(&mut self, at: usize, unsynced: Unsynced, rng: &mut Rng) -> Vec<u8> {
        assert!(at <= self.log.len());
        let last_sync = (0..at)
            .rev()
            .find(|&i| matches!(self.log[i], Event::Sync | Event::SyncFailed))
            .map_or(0, |i| i + 1);
        if last_sync < self.durable_at {
            self.durable = self.initial.clone();
            self.durable_at = 0;
        }
        settle(&mut self.durable, &self.log[self.durable_at..last_sync]);
        self.durable_at = last_sync;
        let mut image = self.durable.clone();
        let mut len = image.len();
        for ev in &self.log[last_sync..at] {
            match ev {
                Event::Sync | Event::SyncFailed => unreachable!("no sync after the last one"),
                Event::SetLen(n) => {
                    if unsynced == Unsynced::Random && rng.chance(1, 2) {
                        let n = *n as usize;
                        if n < image.len() {
                            // A kept shrink: whatever grows back reads as zeros.
                            image[n..].fill(0);
                        }
                        len = n;
                    }
                }
                Event::Write { offset, data } => {
                    let offset = *offset as usize;
                    // Without size changes, the file ends at `len` until a write extends it.
                    let inside = match unsynced {
                        Unsynced::Random => data.len(),
                        _ => len.saturating_sub(offset).min(data.len()),
                    };
                    let fate = match unsynced {
                        Unsynced::OnlyWrites => 0,
                        _ => rng.below(10),
                    };
                    match fate {
                        0..=3 => apply_write(&mut image, offset, &data[..inside]),
                        4..=6 => {}
                        _ => torn_write(&mut image, offset, &data[..inside], rng),
                    }
                    if inside < data.len() {
                        let past = &data[inside..];
                        let sectors = past.len().div_ceil(SECTOR);
                        let kept = match unsynced {
                            Unsynced::OnlyWrites => sectors,
                            _ => rng.below(sectors as u64 + 1) as usize,
                        };
                        let kept = past.len().min(kept * SECTOR);
                        apply_write(&mut image, offset + inside, &past[..kept]);
                        len = len.max(offset + inside + kept);
                    }
                }
            }
        }
        image.resize(len, 0);
        image
    }
}

/// Applies `data` at `offset` sector by sector: each sector it touches ends up new, old,
/// or garbage (all of the sector).
fn torn_write(image: &mut Vec<u8>, offset: usize, data: &[u8], rng: &mut Rng) {
    let end = offset + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    let mut sector = offset / SECTOR * SECTOR;
    while sector < end {
        let (lo, hi) = (sector.max(offset), (sector + SECTOR).min(end));
        match rng.below(10) {
            0..=4 => image[lo..hi].copy_from_slice(&data[lo - offset..hi - offset]),
            5..=7 => {}
            _ => {
                // The whole sector, also where the write covers only part of it (a meta
                // slot's 100 bytes): the disk writes sectors, not bytes. Whatever lies
                // past the file's final size is cut off afterwards.
                if image.len() < sector + SECTOR {
                    image.resize(sector + SECTOR, 0);
                }
                rng.fill(&mut image[sector..sector + SECTOR]);
            }
        }
        sector += SECTOR;
    }
}

/// Prints the log, one event a line (page, length, writer transaction), for debugging.
pub fn print_log(disk: &SimDisk) {
    for (i, ev) in disk.log().iter().enumerate() {
        match ev {
            Event::Write { offset, data } => {
                let txn = |at: usize| {
                    data.get(at..at + 8)
                        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                };
                if *offset < 8192 {
                    eprintln!(
                        "{i}: meta slot {} txn {:?} durable_before {:?}",
                        offset / 4096,
                        txn(16),
                        txn(24)
                    );
                } else {
                    eprintln!(
                        "{i}: write page {} +{} pages kind {} txn {:?}",
                        offset / 4096,
                        data.len() / 4096,
                        data[0],
                        txn(8)
                    );
                }
            }
            Event::SetLen(n) => eprintln!("{i}: set_len {n}"),
            Event::Sync => eprintln!("{i}: sync"),
            Event::SyncFailed => eprintln!("{i}: sync failed"),
        }
    }
}
