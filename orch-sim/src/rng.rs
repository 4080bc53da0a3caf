//! The simulation's random numbers: SplitMix64 from the run's seed. Every draw of a run comes
//! from generators forked from one seed, so a seed replays the run exactly.

/// A small, fast, seedable generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

use orch_raft::local::mix;

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(mix(seed))
    }

    /// A generator of its own for `purpose`, derived from this one's seed (draws from one do not
    /// shift the other's).
    pub fn fork(&self, purpose: u64) -> Self {
        Self(mix(self.0 ^ mix(purpose.wrapping_add(0x5157_5f5f_6f72_6368))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// True `per_mille` times in 1,000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// An index into a list of `len` items (0 when empty).
    pub fn pick(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }
}
