//! Request ids without a random-number call each: a UUID (version 8, the
//! custom layout) made of a random prefix drawn once per process and a
//! per-process counter passed through a bijection, so ids never repeat
//! within a process, differ between processes, and do not read as a count.
//!
//! Layout: 58 random bits from the process's prefix (the 64 high bits less
//! the version nibble and two spare bits), then the counter's 62 bits,
//! permuted (a multiplication by an odd constant and a xor with a random
//! mask, both bijections modulo 2^62), in the low 64 bits less the variant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use uuid::{Builder, Uuid, Variant, Version};

/// 62 bits: what the low half keeps once the variant takes two.
const LOW_BITS: u64 = (1 << 62) - 1;
/// Odd, so that multiplying by it modulo 2^62 is a bijection.
const SPREAD: u64 = 0x2545_f491_4f6c_dd1d & LOW_BITS;

struct Generator {
    prefix: u64,
    mask: u64,
    next: AtomicU64,
}

static IDS: LazyLock<Generator> = LazyLock::new(|| {
    let seed = Uuid::new_v4().as_u64_pair();
    Generator {
        prefix: seed.0,
        mask: seed.1 & LOW_BITS,
        next: AtomicU64::new(0),
    }
});

/// The next request id of this process.
pub fn next() -> Uuid {
    let ids = &*IDS;
    let n = ids.next.fetch_add(1, Ordering::Relaxed);
    // The builder sets the version and the variant; the permuted counter
    // sits below the variant's two bits, so no two counters give the same id.
    Builder::from_bytes(Uuid::from_u64_pair(ids.prefix, permute(n, ids.mask)).into_bytes())
        .with_version(Version::Custom)
        .with_variant(Variant::RFC4122)
        .into_uuid()
}

/// A bijection on 62 bits.
fn permute(n: u64, mask: u64) -> u64 {
    (n.wrapping_mul(SPREAD) & LOW_BITS) ^ mask
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_version_8_and_do_not_repeat() {
        let ids: HashSet<Uuid> = (0..100_000).map(|_| next()).collect();
        assert_eq!(ids.len(), 100_000);
        let one = next();
        assert_eq!(one.get_version_num(), 8);
        assert_eq!(one.get_variant(), Variant::RFC4122);
    }

    #[test]
    fn the_permutation_is_a_bijection_that_survives_the_variant_bits() {
        // Distinct counters stay distinct once the variant overwrites the
        // low half's two top bits: the permuted value never uses them.
        let mask = 0x1234_5678_9abc_def0 & LOW_BITS;
        let mut seen = HashSet::new();
        for n in (0..50_000).chain([LOW_BITS - 1, LOW_BITS]) {
            let p = permute(n, mask);
            assert_eq!(p & !LOW_BITS, 0);
            assert!(seen.insert(p), "{n} collided");
        }
        // Consecutive ids do not look consecutive.
        assert!(permute(1, mask).abs_diff(permute(2, mask)) > 1 << 20);
    }
}
