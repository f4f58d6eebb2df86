//! Server-chosen ids (leases), made the way etcd makes them (`pkg/idutil`): the low 16 bits
//! of the member id, then a 40-bit millisecond timestamp taken at start-up followed by an
//! 8-bit counter, the last 48 bits counting up by one per id. Ids from one member therefore
//! increase, so keys named after them (etcdctl's `elect` and `lock` keys) sort as with etcd.

use std::sync::atomic::{AtomicU64, Ordering};

const SUFFIX_BITS: u32 = 48;
const COUNTER_BITS: u32 = 8;

pub struct IdGenerator {
    prefix: u64,
    suffix: AtomicU64,
}

impl IdGenerator {
    pub fn new(member_id: u64, unix_ms: u64) -> Self {
        let timestamp = unix_ms & ((1 << (SUFFIX_BITS - COUNTER_BITS)) - 1);
        Self {
            prefix: (member_id & 0xffff) << SUFFIX_BITS,
            suffix: AtomicU64::new(timestamp << COUNTER_BITS),
        }
    }

    pub fn next(&self) -> u64 {
        let suffix = self.suffix.fetch_add(1, Ordering::Relaxed) + 1;
        self.prefix | (suffix & ((1 << SUFFIX_BITS) - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_member_and_count_up() {
        let ids = IdGenerator::new(0x8e9e_05c5_2164_694d, 1_700_000_000_000);
        let (a, b) = (ids.next(), ids.next());
        assert_eq!(a >> 48, 0x694d);
        assert_eq!(b, a + 1);
    }
}
