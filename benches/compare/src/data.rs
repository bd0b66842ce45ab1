//! The data every engine is given: random 24-byte keys and 150-byte values from a fixed
//! seed, the orders the workloads visit them in, and what a correct engine must return.

use std::ops::Range;

pub const KEY_LEN: usize = 24;
pub const VALUE_LEN: usize = 150;

/// SplitMix64: small, fast, and fixed, so every run (and every engine) sees the same data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// A number in `0..bound` (bound > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// All keys and values of a run. Entries `0..n` are the ones loaded; the entries after them
/// are fresh keys for the write workloads (`extra(..)`).
pub struct Dataset {
    pub n: usize,
    keys: Vec<[u8; KEY_LEN]>,
    values: Vec<[u8; VALUE_LEN]>,
    /// A permutation of `0..n`: the order of the random reads.
    pub read_order: Vec<u32>,
    /// `n / 2` random indices in `0..n`: where the range reads start.
    pub range_starts: Vec<u32>,
}

impl Dataset {
    pub fn generate(n: usize, extras: usize, seed: u64) -> Dataset {
        let total = n + extras;
        assert!(total <= u32::MAX as usize, "too many entries");
        let mut rng = Rng::new(seed);
        let mut keys = vec![[0u8; KEY_LEN]; total];
        let mut values = vec![[0u8; VALUE_LEN]; total];
        for (key, value) in keys.iter_mut().zip(values.iter_mut()) {
            rng.fill(key);
            rng.fill(value);
        }
        let mut read_order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut read_order);
        let range_starts = (0..n / 2).map(|_| rng.below(n) as u32).collect();
        let data = Dataset {
            n,
            keys,
            values,
            read_order,
            range_starts,
        };
        let sorted = data.sorted((0..total).collect());
        // 192 random bits per key: a duplicate would mean a broken generator.
        assert!(
            sorted.windows(2).all(|w| data.key(w[0]) != data.key(w[1])),
            "duplicate key generated"
        );
        data
    }

    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[i]
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i]
    }

    /// Sorts entry indices by key.
    pub fn sorted(&self, mut indices: Vec<usize>) -> Vec<usize> {
        indices.sort_unstable_by(|&a, &b| self.keys[a].cmp(&self.keys[b]));
        indices
    }
}

/// An order-independent digest of the entries an engine returned: it proves that every key
/// and value byte was read and was right, without a lookup per entry in the timed loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    pub count: u64,
    pub sum: u64,
}

impl Digest {
    #[inline]
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(entry_hash(key, value));
    }
}

/// Position-dependent sum of the 8-byte words of key and value: independent multiplies,
/// so it costs a few nanoseconds per entry.
#[inline]
fn entry_hash(key: &[u8], value: &[u8]) -> u64 {
    #[inline]
    fn words(bytes: &[u8], mut c: u64, mut h: u64) -> (u64, u64) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let w = u64::from_le_bytes(chunk.try_into().unwrap());
            h = h.wrapping_add(w.wrapping_mul(c));
            c = c.wrapping_add(0x9E37_79B9_7F4A_7C16);
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        h = h.wrapping_add(u64::from_le_bytes(last).wrapping_mul(c));
        (c.wrapping_add(0x9E37_79B9_7F4A_7C16), h)
    }
    let (c, h) = words(key, 0xD6E8_FEB8_6659_FD93, key.len() as u64);
    let (_, h) = words(value, c, h ^ ((value.len() as u64) << 32));
    (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// What a correct engine returns for the scans, given which entries are present.
pub struct Expected {
    pub len: u64,
    pub full_scan: Digest,
    /// The digest of all `range_starts` scans of `scan_len` entries together.
    pub range_reads: Digest,
}

impl Expected {
    /// `present`: the loaded entries `0..n` plus these ranges of extra entries.
    pub fn compute(data: &Dataset, extras: &[Range<usize>], scan_len: usize) -> Expected {
        let present: Vec<usize> = (0..data.n)
            .chain(extras.iter().cloned().flatten())
            .collect();
        let sorted = data.sorted(present);
        let mut full_scan = Digest::default();
        for &i in &sorted {
            full_scan.add(data.key(i), data.value(i));
        }
        let mut range_reads = Digest::default();
        for &start in &data.range_starts {
            let key = data.key(start as usize);
            let pos = sorted.partition_point(|&i| data.key(i) < key);
            for &i in sorted[pos..].iter().take(scan_len) {
                range_reads.add(data.key(i), data.value(i));
            }
        }
        Expected {
            len: sorted.len() as u64,
            full_scan,
            range_reads,
        }
    }
}

/// The steady update workload's plan: which loaded entries each commit overwrites, and
/// with what. Every engine gets the same plan. Each commit overwrites `per_commit`
/// distinct entries of `0..n`, chosen at random (a partial Fisher–Yates shuffle of a
/// permutation kept from commit to commit), in that random order. The new values are a
/// function of (seed, commit, entry), so they need not be stored: `value` makes them again,
/// and `expected` is the digest a full scan must return after the last commit.
pub struct SteadyPlan {
    value_seed: u64,
    /// `commits[c]`: the entries commit `c` overwrites, in the order it writes them.
    pub commits: Vec<Vec<u32>>,
    pub expected: Digest,
}

impl SteadyPlan {
    pub fn new(data: &Dataset, commits: usize, per_commit: usize, seed: u64) -> SteadyPlan {
        let n = data.n;
        assert!(per_commit <= n, "more overwrites per commit than entries");
        // Streams of their own, so that the plan does not depend on how many numbers the
        // dataset drew.
        let mut rng = Rng::new(seed ^ 0x5354_4541_4459_5550); // "STEADYUP"
        let value_seed = rng.next_u64();
        let mut perm: Vec<u32> = (0..n as u32).collect();
        // The last commit that overwrote each entry, plus one (0: never overwritten).
        let mut last = vec![0u32; n];
        let commits: Vec<Vec<u32>> = (0..commits)
            .map(|c| {
                for j in 0..per_commit {
                    let k = j + rng.below(n - j);
                    perm.swap(j, k);
                }
                let chosen = perm[..per_commit].to_vec();
                for &i in &chosen {
                    last[i as usize] = c as u32 + 1;
                }
                chosen
            })
            .collect();
        let mut plan = SteadyPlan {
            value_seed,
            commits,
            expected: Digest::default(),
        };
        let mut expected = Digest::default();
        for (i, &c) in last.iter().enumerate() {
            match c {
                0 => expected.add(data.key(i), data.value(i)),
                c => expected.add(data.key(i), &plan.value(c as usize - 1, i)),
            }
        }
        plan.expected = expected;
        plan
    }

    /// The value commit `commit` writes to entry `i`: fresh random bytes.
    pub fn value(&self, commit: usize, i: usize) -> [u8; VALUE_LEN] {
        let mut rng = Rng::new(self.value_seed ^ (((commit as u64) << 32) | i as u64));
        let mut value = [0u8; VALUE_LEN];
        rng.fill(&mut value);
        value
    }

    /// Commit `commit`'s entries with their new values, made before the commit is timed.
    pub fn writes(&self, commit: usize) -> Vec<(u32, [u8; VALUE_LEN])> {
        self.commits[commit]
            .iter()
            .map(|&i| (i, self.value(commit, i as usize)))
            .collect()
    }
}
