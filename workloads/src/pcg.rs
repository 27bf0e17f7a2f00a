//! The page generator: PCG-64 MCG (`pcg64_fast`, XSL-RR output), bit for bit the generator
//! `rand_pcg::Pcg64Mcg` 0.3.1 (same multiplier, output function, seeding and byte order; a test
//! compares the two), with its state at hand so that the uniform write loop can run two
//! steps of the recurrence at once.

use rand::{Error, RngCore, SeedableRng};

const MULTIPLIER: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;
/// MULTIPLIER², for stepping two states ahead.
const MULTIPLIER_2: u128 = MULTIPLIER.wrapping_mul(MULTIPLIER);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mcg128 {
    state: u128,
}

#[inline(always)]
fn output_xsl_rr(state: u128) -> u64 {
    let rot = (state >> 122) as u32;
    let xsl = ((state >> 64) as u64) ^ (state as u64);
    xsl.rotate_right(rot)
}

impl Mcg128 {
    /// Call `f` with the next `n` outputs of [`next_u64`](RngCore::next_u64), in order.
    ///
    /// Each state is the previous one times the multiplier, a chain of dependent 128-bit
    /// multiplications; stepping two interleaved chains by the multiplier squared gives the same
    /// states with half the chain length.
    #[inline(always)]
    pub fn for_each_u64(&mut self, n: u64, mut f: impl FnMut(u64)) {
        let mut a = self.state.wrapping_mul(MULTIPLIER);
        let mut b = self.state.wrapping_mul(MULTIPLIER_2);
        for _ in 0..n / 2 {
            f(output_xsl_rr(a));
            f(output_xsl_rr(b));
            a = a.wrapping_mul(MULTIPLIER_2);
            b = b.wrapping_mul(MULTIPLIER_2);
        }
        // `a` is now one step past the last state used, `b` two.
        if n % 2 == 1 {
            f(output_xsl_rr(a));
            self.state = a;
        } else {
            self.state = a.wrapping_mul(MULTIPLIER_INV);
        }
    }
}

/// The multiplicative inverse of MULTIPLIER modulo 2^128 (it is odd).
const MULTIPLIER_INV: u128 = inverse(MULTIPLIER);

/// The inverse of odd `m` modulo 2^128 (Newton's iteration: each step doubles the correct bits).
const fn inverse(m: u128) -> u128 {
    let mut x = m; // correct to 3 bits for odd m
    let mut i = 0;
    while i < 7 {
        x = x.wrapping_mul(2u128.wrapping_sub(m.wrapping_mul(x)));
        i += 1;
    }
    x
}

impl RngCore for Mcg128 {
    #[inline]
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_mul(MULTIPLIER);
        output_xsl_rr(self.state)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let mut chunks = dest.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let n = rest.len();
            rest.copy_from_slice(&self.next_u64().to_le_bytes()[..n]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// As `rand_pcg`: the seed is a little-endian 128-bit state with its low bit forced to 1.
/// (`seed_from_u64` is `rand_core`'s provided method, as for `Pcg64Mcg`.)
impl SeedableRng for Mcg128 {
    type Seed = [u8; 16];

    fn from_seed(seed: [u8; 16]) -> Self {
        Mcg128 {
            state: u128::from_le_bytes(seed) | 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Mcg128, MULTIPLIER, MULTIPLIER_INV};
    use proptest::prelude::*;
    use rand::distributions::Distribution;
    use rand::{RngCore, SeedableRng};
    use rand_pcg::Pcg64Mcg;

    #[test]
    fn inverse_is_the_inverse() {
        assert_eq!(MULTIPLIER.wrapping_mul(MULTIPLIER_INV), 1);
    }

    proptest! {
        #[test]
        fn same_outputs_as_rand_pcg(seed in any::<u64>(), n in 0u64..40, lens in proptest::collection::vec(0usize..20, 0..6)) {
            let mut ours = Mcg128::seed_from_u64(seed);
            let mut theirs = Pcg64Mcg::seed_from_u64(seed);
            let mut got = Vec::new();
            ours.for_each_u64(n, |x| got.push(x));
            let want: Vec<u64> = (0..n).map(|_| theirs.next_u64()).collect();
            prop_assert_eq!(got, want);
            for len in lens {
                let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
                ours.fill_bytes(&mut a);
                theirs.fill_bytes(&mut b);
                prop_assert_eq!(a, b);
                prop_assert_eq!(ours.next_u32(), theirs.next_u32());
                prop_assert_eq!(ours.next_u64(), theirs.next_u64());
            }
            let z = rand_distr::Zipf::new(1000, 0.99).unwrap();
            for _ in 0..20 {
                prop_assert_eq!(z.sample(&mut ours), z.sample(&mut theirs));
            }
            let mut got = Vec::new();
            ours.for_each_u64(n + 1, |x| got.push(x));
            let want: Vec<u64> = (0..=n).map(|_| theirs.next_u64()).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(ours.next_u64(), theirs.next_u64());
        }
    }
}
