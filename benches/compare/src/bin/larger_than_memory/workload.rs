//! What is read: entry `i` is a function of (seed, i), and keys ascend with i, so a child
//! process regenerates any entry without holding the data; and the order of the gets
//! (uniform, or Zipfian with θ = 0.99 and the hot keys scattered).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::data::{KEY_LEN, Rng, VALUE_LEN};

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Keys and values by index. The first 8 key bytes are `i * stride` plus a random offset
/// below the stride (so they are spread evenly over the whole range, look random, and
/// ascend strictly with `i`); the other 16 and the value are random bytes from `i`. The
/// sorted loads stream them in index order and the readers regenerate them from the
/// index, so no process holds the dataset.
#[derive(Clone, Copy)]
pub(crate) struct Entries {
    pub(crate) n: u64,
    seed: u64,
    stride: u64,
}

impl Entries {
    pub(crate) fn new(n: u64, seed: u64) -> Entries {
        assert!(n >= 2);
        Entries {
            n,
            seed,
            stride: u64::MAX / n,
        }
    }

    pub(crate) fn key(&self, i: u64) -> [u8; KEY_LEN] {
        let s = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h = mix(s ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let mut key = [0u8; KEY_LEN];
        key[..8].copy_from_slice(&(i * self.stride + h % self.stride).to_be_bytes());
        key[8..16].copy_from_slice(&mix(h ^ 0x4B45_5931).to_le_bytes());
        key[16..].copy_from_slice(&mix(h ^ 0x4B45_5932).to_le_bytes());
        key
    }

    pub(crate) fn value(&self, i: u64) -> [u8; VALUE_LEN] {
        let s = self.seed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let mut value = [0u8; VALUE_LEN];
        Rng::new(mix(s ^ i.wrapping_mul(0x94D0_49BB_1331_11EB) ^ 0x5641_4C55)).fill(&mut value);
        value
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = ([u8; KEY_LEN], [u8; VALUE_LEN])> + '_ {
        (0..self.n).map(|i| (self.key(i), self.value(i)))
    }

    /// Checks what a get of entry `i` returned.
    pub(crate) fn check(&self, i: u64, got: Option<&[u8]>) -> Result<()> {
        match got {
            Some(v) if v == self.value(i) => Ok(()),
            Some(_) => bail!("entry {i}: wrong value"),
            None => bail!("entry {i}: key not found"),
        }
    }
}

/// YCSB's Zipfian generator (Gray et al., "Quickly generating billion-record synthetic
/// databases"): rank 0 is the most popular; P(rank r) ∝ 1 / (r + 1)^theta.
pub(crate) struct Zipf {
    n: f64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    pub(crate) fn new(n: u64, theta: f64) -> Zipf {
        let zeta = |n: u64| (1..=n).map(|i| (i as f64).powf(-theta)).sum::<f64>();
        let (zeta2, zetan) = (zeta(2), zeta(n));
        let nf = n as f64;
        Zipf {
            n: nf,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / nf).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }

    pub(crate) fn next(&self, rng: &mut Rng) -> u64 {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let r = (self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n as u64 - 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    Uniform,
    Zipfian,
}

impl Workload {
    pub(crate) fn parse(s: &str) -> Result<Workload> {
        Ok(match s {
            "uniform" => Workload::Uniform,
            "zipfian" => Workload::Zipfian,
            _ => bail!("unknown workload {s:?} (uniform, zipfian)"),
        })
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::Zipfian => "Zipfian θ=0.99",
        }
    }

    /// The entry indices of `count` gets. Zipfian ranks are scattered over the key space
    /// by a hash (YCSB's "scrambled" Zipfian), so the hot keys are not neighbours.
    pub(crate) fn indices(self, n: u64, seed: u64, count: usize) -> Vec<u32> {
        let mut rng = Rng::new(mix(seed ^ 0x4745_5453));
        match self {
            Workload::Uniform => (0..count).map(|_| rng.below(n as usize) as u32).collect(),
            Workload::Zipfian => {
                let zipf = Zipf::new(n, 0.99);
                let salt = mix(seed ^ 0x5A49_5046);
                (0..count)
                    .map(|_| (mix(zipf.next(&mut rng) ^ salt) % n) as u32)
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn keys_ascend_and_values_repeat() {
        let e = Entries::new(10_000, 3);
        for i in 1..e.n {
            assert!(e.key(i - 1) < e.key(i));
        }
        assert_eq!(e.value(17), Entries::new(10_000, 3).value(17));
        assert_ne!(e.value(17), e.value(18));
        assert!(e.check(5, Some(&e.value(5))).is_ok());
        assert!(e.check(5, Some(&e.value(6))).is_err());
    }

    #[test]
    pub(crate) fn zipfian_is_skewed_and_scattered() {
        let n = 100_000u64;
        let idx = Workload::Zipfian.indices(n, 3, 200_000);
        let mut counts = std::collections::HashMap::new();
        for &i in &idx {
            assert!((i as u64) < n);
            *counts.entry(i).or_insert(0u32) += 1;
        }
        let mut by_count: Vec<(u32, u32)> = counts.iter().map(|(&i, &c)| (c, i)).collect();
        by_count.sort_unstable_by(|a, b| b.cmp(a));
        // θ = 0.99 over 1e5 items: the top item gets ~8 % of the draws.
        assert!(by_count[0].0 > 10_000, "top count {}", by_count[0].0);
        // The ten hottest are not clustered at the start of the key space.
        assert!(by_count[..10].iter().any(|&(_, i)| i as u64 > n / 2));
    }
}
