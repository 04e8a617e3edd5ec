//! The `Flags` values that mark which primitive a Consul key belongs to, as HashiCorp's Go client
//! (`api/lock.go`, `api/semaphore.go`) and `consul lock` write them. Sharing them is what lets this
//! crate and Go contenders wait on each other's keys instead of failing.

/// `Flags` of a lock key (Go's `api.LockFlagValue`). Every lock this crate takes carries it.
pub const LOCK_FLAGS: u64 = 0x2ddc_cbc0_58a5_0c18;

/// `Flags` of a semaphore's contender keys and its `.lock` coordination key (Go's
/// `api.SemaphoreFlagValue`).
pub const SEMAPHORE_FLAGS: u64 = 0xe0f6_9a2b_aa41_4de0;

/// Whether a lock may take a key with these flags: ours (or Go's lock), or 0 (a plain key, or one
/// written before the flags were set).
pub(crate) fn lockable(flags: u64) -> bool {
    flags == 0 || flags == LOCK_FLAGS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_values_and_what_a_lock_may_take() {
        // The decimal values Consul shows for them.
        assert_eq!(LOCK_FLAGS, 3304740253564472344);
        assert_eq!(SEMAPHORE_FLAGS, 16210313421097356768);
        assert!(lockable(0) && lockable(LOCK_FLAGS));
        assert!(!lockable(SEMAPHORE_FLAGS) && !lockable(1));
    }

    #[test]
    fn the_conflict_message_names_the_lock_flags() {
        let e = crate::Error::Conflict { key: "k".into(), flags: 1 };
        assert!(e.to_string().contains(&format!("a lock's are 0 or {LOCK_FLAGS:#x}")), "{e}");
    }
}
