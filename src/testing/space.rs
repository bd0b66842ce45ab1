//! The room a [`MemFile`](super::MemFile) has on its simulated disk: blocks that a file
//! system allocates on the first write into them and gives back when the file is cut
//! short, a capacity past which writes fail with ENOSPC (or EDQUOT), and a largest file
//! length past which they fail with EFBIG.

use std::io;

use rustix::io::Errno;

/// Bytes of a file-system block: the unit that [`Space::capacity`] counts.
pub const BLOCK_BYTES: u64 = 4096;

/// How much room a [`MemFile`](super::MemFile) has. The default is unlimited and sparse.
///
/// As on a real file system: overwriting bytes in blocks the file has already allocated
/// always succeeds; a write that needs blocks past the capacity writes what lies before
/// the first block it cannot have (the blocks it could have are then allocated), then
/// fails, as `write(2)` returns a short count and then the error; a size change that
/// would need blocks past the capacity, or make the file longer than `max_len`, fails
/// and changes nothing. Shortening the file gives back the blocks wholly past its new
/// end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// The most bytes the file's blocks may take (whole blocks: rounded down); `None`:
    /// no limit. Lowering it below what the file holds allocates nothing more (and frees
    /// nothing).
    pub capacity: Option<u64>,
    /// What a write past the capacity fails with: `StorageFull` (ENOSPC, the file
    /// system is full) or `QuotaExceeded` (EDQUOT, the user's quota is spent).
    pub full: io::ErrorKind,
    /// The longest the file may be: a write or size change past it fails with
    /// `FileTooLarge` (EFBIG, as past the file system's largest file or
    /// `RLIMIT_FSIZE`); `None`: no limit.
    pub max_len: Option<u64>,
    /// Whether growing the file leaves a hole that allocates nothing (ext4, XFS, btrfs,
    /// tmpfs) rather than allocating every block it adds (FAT, exFAT).
    pub sparse: bool,
}

impl Default for Space {
    fn default() -> Space {
        Space {
            capacity: None,
            full: io::ErrorKind::StorageFull,
            max_len: None,
            sparse: true,
        }
    }
}

impl Space {
    /// `capacity` bytes, the rest as the default.
    pub fn with_capacity(capacity: u64) -> Space {
        Space {
            capacity: Some(capacity),
            ..Space::default()
        }
    }

    fn capacity_blocks(&self) -> u64 {
        self.capacity.map_or(u64::MAX, |c| c / BLOCK_BYTES)
    }

    /// The error a write past the capacity gets, as the operating system reports it.
    fn full_error(&self) -> io::Error {
        match self.full {
            io::ErrorKind::QuotaExceeded => Errno::DQUOT.into(),
            _ => Errno::NOSPC.into(),
        }
    }
}

fn too_large() -> io::Error {
    Errno::FBIG.into()
}

/// Which blocks of the file are allocated, and the file's limits.
#[derive(Default)]
pub(super) struct Blocks {
    /// By block number, up to the last block the file reaches (none past it).
    allocated: Vec<bool>,
    used: u64,
    pub space: Space,
}

fn blocks_to(len: u64) -> u64 {
    len.div_ceil(BLOCK_BYTES)
}

impl Blocks {
    /// The blocks of a file of `len` bytes, all allocated.
    pub(super) fn full(len: u64) -> Blocks {
        let n = blocks_to(len);
        Blocks {
            allocated: vec![true; n as usize],
            used: n,
            space: Space::default(),
        }
    }

    /// Bytes of the blocks allocated.
    pub(super) fn used_bytes(&self) -> u64 {
        self.used * BLOCK_BYTES
    }

    /// Whether every block of `start..start + len` is allocated.
    pub(super) fn covers(&self, start: u64, len: u64) -> bool {
        (start / BLOCK_BYTES..blocks_to(start + len))
            .all(|b| self.allocated.get(b as usize) == Some(&true))
    }

    fn cover(&mut self, blocks: u64) {
        if (self.allocated.len() as u64) < blocks {
            self.allocated.resize(blocks as usize, false);
        }
    }

    /// Allocates the blocks a write of `start..end` needs, in order, and returns how far
    /// it may write (`end`, or less with the error that stops it there).
    pub(super) fn write(&mut self, start: u64, end: u64) -> (u64, Option<io::Error>) {
        let (mut reach, mut error) = (end, None);
        if let Some(max) = self.space.max_len
            && end > max
        {
            reach = max.max(start);
            error = Some(too_large());
        }
        let capacity = self.space.capacity_blocks();
        self.cover(blocks_to(reach));
        for b in start / BLOCK_BYTES..blocks_to(reach) {
            if self.allocated[b as usize] {
                continue;
            }
            if self.used >= capacity {
                reach = (b * BLOCK_BYTES).max(start);
                error = Some(self.space.full_error());
                break;
            }
            self.allocated[b as usize] = true;
            self.used += 1;
        }
        (reach, error)
    }

    /// A change of the file's length from `old` to `new`: allocates (unless sparse) or
    /// frees blocks, or fails and changes nothing.
    pub(super) fn set_len(&mut self, old: u64, new: u64) -> io::Result<()> {
        if self.space.max_len.is_some_and(|max| new > max) {
            return Err(too_large());
        }
        let keep = blocks_to(new);
        if new <= old {
            for b in keep as usize..self.allocated.len() {
                self.used -= u64::from(self.allocated[b]);
            }
            self.allocated.truncate(keep as usize);
            return Ok(());
        }
        self.cover(keep);
        if self.space.sparse {
            return Ok(());
        }
        let added = old / BLOCK_BYTES..keep;
        let needed = added
            .clone()
            .filter(|&b| !self.allocated[b as usize])
            .count() as u64;
        if self.used + needed > self.space.capacity_blocks() {
            return Err(self.space.full_error());
        }
        for b in added {
            self.allocated[b as usize] = true;
        }
        self.used += needed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = BLOCK_BYTES;

    #[test]
    fn writes_stop_at_the_first_block_past_the_capacity() {
        let mut blocks = Blocks::full(2 * B);
        blocks.space = Space::with_capacity(4 * B + 100);
        // Growth leaves a hole (block 2); a write over blocks 1..=5 fills it and block
        // 3, and stops where block 4 would be needed.
        blocks.set_len(2 * B, 3 * B).unwrap();
        assert_eq!(blocks.used_bytes(), 2 * B);
        let (reach, e) = blocks.write(B + 10, 5 * B + 10);
        assert_eq!(reach, 4 * B);
        assert_eq!(e.unwrap().kind(), io::ErrorKind::StorageFull);
        assert_eq!(blocks.used_bytes(), 4 * B);
        // Full: overwriting allocated blocks still succeeds, a new block does not.
        assert!(matches!(blocks.write(0, 4 * B), (r, None) if r == 4 * B));
        let (reach, e) = blocks.write(4 * B, 4 * B + 1);
        assert_eq!(
            (reach, e.map(|e| e.raw_os_error())),
            (4 * B, Some(Some(28)))
        );
        // Shortening gives back the blocks wholly past the new end.
        blocks.set_len(4 * B, B + 1).unwrap();
        assert_eq!(blocks.used_bytes(), 2 * B);
    }

    #[test]
    fn without_holes_growth_allocates_or_fails_whole() {
        let mut blocks = Blocks::full(B);
        blocks.space = Space {
            sparse: false,
            full: io::ErrorKind::QuotaExceeded,
            ..Space::with_capacity(3 * B)
        };
        let e = blocks.set_len(B, 4 * B).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::QuotaExceeded);
        assert_eq!(blocks.used_bytes(), B, "nothing allocated");
        blocks.set_len(B, 3 * B).unwrap();
        assert_eq!(blocks.used_bytes(), 3 * B);
    }

    #[test]
    fn nothing_reaches_past_the_largest_file() {
        let mut blocks = Blocks::default();
        blocks.space.max_len = Some(2 * B);
        let e = blocks.set_len(0, 2 * B + 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        let (reach, e) = blocks.write(B, 3 * B);
        assert_eq!(
            (reach, e.unwrap().kind()),
            (2 * B, io::ErrorKind::FileTooLarge)
        );
        assert_eq!(blocks.used_bytes(), B, "block 0 is a hole");
    }
}
