//! A page bitmap with a maintained population count, word-level bulk operations, and
//! conversion to address ranges.

/// One bit per page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u64,
    count: u64,
}

impl Bitmap {
    pub fn new(len: u64) -> Self {
        Bitmap {
            words: vec![0; len.div_ceil(64) as usize],
            len,
            count: 0,
        }
    }

    pub fn full(len: u64) -> Self {
        let mut b = Bitmap::new(len);
        b.words.iter_mut().for_each(|w| *w = !0);
        b.trim();
        b.count = len;
        b
    }

    /// The bitmap of `len` bits held in `words` (one bit per page, little-endian words; bits at
    /// `len` and above are dropped).
    pub fn from_words(len: u64, words: Vec<u64>) -> Self {
        assert_eq!(
            words.len() as u64,
            len.div_ceil(64),
            "word count does not match length"
        );
        let mut b = Bitmap {
            words,
            len,
            count: 0,
        };
        b.trim();
        b.count = b.words.iter().map(|w| w.count_ones() as u64).sum();
        b
    }

    fn trim(&mut self) {
        let rem = self.len % 64;
        if rem != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << rem) - 1;
            }
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    #[inline]
    pub fn get(&self, i: u64) -> bool {
        self.words[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    // `set` and `clear` update the count in a branch on purpose: the branch-free form
    // (`count += was_clear as u64`) was miscompiled by the optimised build of rustc 1.95 on
    // this code (the count update was lost once inlined into the engine's closures), which the
    // release-mode tests and the oracle cross-checks caught.

    /// Set bit `i`; returns true if it was clear.
    #[inline]
    pub fn set(&mut self, i: u64) -> bool {
        let w = &mut self.words[(i / 64) as usize];
        let m = 1u64 << (i % 64);
        if *w & m == 0 {
            *w |= m;
            self.count += 1;
            true
        } else {
            false
        }
    }

    /// Clear bit `i`; returns true if it was set.
    #[inline]
    pub fn clear(&mut self, i: u64) -> bool {
        let w = &mut self.words[(i / 64) as usize];
        let m = 1u64 << (i % 64);
        if *w & m != 0 {
            *w &= !m;
            self.count -= 1;
            true
        } else {
            false
        }
    }

    /// A [`Setter`] for setting many bits in a tight loop.
    pub fn setter(&mut self) -> Setter<'_> {
        Setter {
            words: &mut self.words,
            count: &mut self.count,
            changed: 0,
        }
    }

    pub fn clear_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
        self.count = 0;
    }

    /// `self |= other`.
    pub fn or_with(&mut self, other: &Bitmap) {
        assert_eq!(self.len, other.len, "bitmaps of different sizes");
        let mut count = 0;
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
            count += a.count_ones() as u64;
        }
        self.count = count;
    }

    /// The number of bits set in `other` but not in `self`. Looks only at the words in `spans`
    /// (disjoint `[first, end)` word-index ranges), outside which `other` must have no bits.
    pub fn count_new_within(&self, other: &Bitmap, spans: &[(usize, usize)]) -> u64 {
        assert_eq!(self.len, other.len, "bitmaps of different sizes");
        let mut new = 0u64;
        for &(a, b) in spans {
            for (s, o) in self.words[a..b].iter().zip(&other.words[a..b]) {
                new += (o & !s).count_ones() as u64;
            }
        }
        new
    }

    /// The number of bits set in `self` or `other` (what a stop would have to send of a send set
    /// and a dirty log), without building the union.
    pub fn union_count(&self, other: &Bitmap) -> u64 {
        self.count + self.count_new_within(other, &[(0, self.words.len())])
    }

    /// `self &= !other`. Looks only at the words in `spans` (disjoint `[first, end)` word-index
    /// ranges), outside which `other` must have no bits.
    pub fn remove_within(&mut self, other: &Bitmap, spans: &[(usize, usize)]) {
        assert_eq!(self.len, other.len, "bitmaps of different sizes");
        let mut gone = 0u64;
        for &(a, b) in spans {
            for (s, o) in self.words[a..b].iter_mut().zip(&other.words[a..b]) {
                gone += (*s & *o).count_ones() as u64;
                *s &= !*o;
            }
        }
        self.count -= gone;
    }

    /// `self |= other`, then clear `other`. Looks only at the words in `spans` (disjoint
    /// `[first, end)` word-index ranges), outside which `other` must have no bits.
    pub fn absorb_within(&mut self, other: &mut Bitmap, spans: &[(usize, usize)]) {
        assert_eq!(self.len, other.len, "bitmaps of different sizes");
        let mut new = 0u64;
        for &(a, b) in spans {
            for (s, o) in self.words[a..b].iter_mut().zip(&mut other.words[a..b]) {
                new += (*o & !*s).count_ones() as u64;
                *s |= *o;
                *o = 0;
            }
        }
        self.count += new;
        other.count = 0;
    }

    /// OR a raw little-endian word slice (e.g. a KVM dirty log) into this bitmap.
    pub fn or_words(&mut self, other: &[u64]) {
        assert_eq!(self.words.len(), other.len(), "bitmaps of different sizes");
        let mut count = 0;
        for (a, b) in self.words.iter_mut().zip(other) {
            *a |= *b;
            count += a.count_ones() as u64;
        }
        self.trim();
        self.count = count;
    }

    /// Word `wi` of the bitmap.
    #[inline]
    pub fn word(&self, wi: usize) -> u64 {
        self.words[wi]
    }

    /// Set word `wi` to `v` keeping the count right.
    #[inline]
    pub fn set_word(&mut self, wi: usize, v: u64) {
        let old = self.words[wi];
        self.count = self.count - old.count_ones() as u64 + v.count_ones() as u64;
        self.words[wi] = v;
    }

    /// Clear the bits of `mask` in word `wi`; all of them are set, and there are `ones`.
    #[inline]
    pub fn clear_set_bits(&mut self, wi: usize, mask: u64, ones: u64) {
        debug_assert!(self.words[wi] & mask == mask && mask.count_ones() as u64 == ones);
        self.words[wi] &= !mask;
        self.count -= ones;
    }

    /// Iterate over set bits in increasing order.
    pub fn iter_ones(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    None
                } else {
                    let b = w.trailing_zeros() as u64;
                    w &= w - 1;
                    Some(wi as u64 * 64 + b)
                }
            })
        })
    }

    /// Maximal runs of set bits as `(first, len)` pairs, in address order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for i in self.iter_ones() {
            match out.last_mut() {
                Some((s, l)) if *s + *l == i => *l += 1,
                _ => out.push((i, 1)),
            }
        }
        out
    }
}

// `Setter` counts without a branch: one per write would be mispredicted about as often as not
// while a round fills the dirty log, which made it the engine's hottest spot. It is checked
// against `set` (which keeps its branch, see above) by the release-mode tests, and the engine's
// outputs (the dirty counts of every round) did not change.

/// Sets bits of a [`Bitmap`] one at a time, as [`Bitmap::set`] does, but counts the newly set
/// ones aside and adds them to the bitmap's count when dropped: held in a local, its count
/// stays in a register.
pub struct Setter<'a> {
    words: &'a mut [u64],
    count: &'a mut u64,
    changed: u64,
}

impl Setter<'_> {
    /// Set bit `i`.
    #[inline]
    pub fn set(&mut self, i: u64) {
        let w = &mut self.words[(i / 64) as usize];
        let b = i % 64;
        let old = *w;
        *w = old | 1 << b;
        self.changed += !old >> b & 1;
    }
}

impl Drop for Setter<'_> {
    fn drop(&mut self) {
        *self.count += self.changed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn count_and_ranges_match_a_naive_model(len in 1u64..400, ops in proptest::collection::vec((0u64..400, any::<bool>()), 0..300)) {
            let mut b = Bitmap::new(len);
            let mut naive = vec![false; len as usize];
            for (i, set) in ops {
                let i = i % len;
                if set {
                    prop_assert_eq!(b.set(i), !naive[i as usize]);
                } else {
                    prop_assert_eq!(b.clear(i), naive[i as usize]);
                }
                naive[i as usize] = set;
            }
            prop_assert_eq!(b.count(), naive.iter().filter(|&&x| x).count() as u64);
            let ones: Vec<u64> = b.iter_ones().collect();
            let naive_ones: Vec<u64> = (0..len).filter(|&i| naive[i as usize]).collect();
            prop_assert_eq!(&ones, &naive_ones);
            // Ranges cover exactly the set bits, are maximal and ordered.
            let ranges = b.ranges();
            let expanded: Vec<u64> = ranges.iter().flat_map(|&(s, l)| s..s + l).collect();
            prop_assert_eq!(&expanded, &naive_ones);
            for w in ranges.windows(2) {
                prop_assert!(w[0].0 + w[0].1 < w[1].0);
            }
            // Setter agrees with set, bit for bit and in its count.
            let pages: Vec<u64> = b.iter_ones().chain((0..len).step_by(3)).collect();
            let mut one = b.clone();
            let mut many = b.clone();
            pages.iter().for_each(|&p| {
                one.set(p);
            });
            {
                let mut s = many.setter();
                pages.iter().for_each(|&p| s.set(p));
            }
            prop_assert_eq!(&many, &one);
            prop_assert_eq!(many.count(), many.iter_ones().count() as u64);
            // Span-restricted union and absorb agree with the whole-bitmap forms.
            let words = len.div_ceil(64) as usize;
            let spans = [(0, words / 2), (words / 2, words)];
            let mut other = Bitmap::new(len);
            for i in (0..len).step_by(5) {
                other.set(i);
            }
            let mut u = b.clone();
            u.or_with(&other);
            prop_assert_eq!(b.count() + b.count_new_within(&other, &spans), u.count());
            prop_assert_eq!(b.union_count(&other), u.count());
            prop_assert_eq!(other.union_count(&b), u.count());
            let mut r = b.clone();
            r.remove_within(&other, &spans);
            let mut naive_r = b.clone();
            for i in other.iter_ones() {
                naive_r.clear(i);
            }
            prop_assert_eq!(&r, &naive_r);
            let mut v = b.clone();
            v.absorb_within(&mut other, &spans);
            prop_assert_eq!(&v, &u);
            prop_assert_eq!(&other, &Bitmap::new(len));
            let mut full = Bitmap::new(len);
            full.or_with(&Bitmap::full(len));
            prop_assert_eq!(full.count(), len);
        }
    }
}
