//! Which objects a tier takes at all. The edge builds its tiers with these rules and the
//! model applies the same ones, so an object too large for L1 streams from L2 in both.

/// Bookkeeping bytes charged per L1 entry on top of meta and body, so that many tiny
/// objects cannot exceed the capacity in real memory.
pub const L1_ENTRY_OVERHEAD: u64 = 128;

/// The largest object (meta + body) L1 admits: an eighth of its capacity, so that one large
/// object never pushes out many small popular ones, and never more than the deployment's
/// `max_object_size`.
pub fn l1_max_object(l1_capacity: u64, max_object_size: u64) -> u64 {
    (l1_capacity / 8).min(max_object_size)
}

/// Whether an object of `size` bytes (meta + body) may enter an L1 of `capacity` bytes
/// whose per-object cap is `max_object`.
pub fn l1_fits(capacity: u64, max_object: u64, size: u64) -> bool {
    capacity > 0 && size + L1_ENTRY_OVERHEAD <= max_object.min(capacity)
}

/// Bytes an object of `size` bytes is charged in L1.
pub fn l1_weight(size: u64) -> u64 {
    size + L1_ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_takes_objects_up_to_an_eighth_of_its_capacity_and_the_global_cap() {
        assert_eq!(l1_max_object(8 << 20, 100 << 20), 1 << 20);
        assert_eq!(l1_max_object(8 << 30, 100 << 20), 100 << 20);
        let max = l1_max_object(8192, u64::MAX);
        assert!(l1_fits(8192, max, 1024 - L1_ENTRY_OVERHEAD));
        assert!(!l1_fits(8192, max, 1024 - L1_ENTRY_OVERHEAD + 1));
        assert!(!l1_fits(0, max, 1));
    }
}
