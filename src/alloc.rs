//! The process's memory allocator: mimalloc (v3) in place of glibc's malloc.
//!
//! Why: under load a leader spent about a tenth of its CPU in glibc's
//! malloc/free (chunk consolidation on free, `unlink_chunk`); with mimalloc,
//! 100-byte writes cost 12-13 % less CPU each at 64 and 256 clients and went
//! 11-12 % faster (README, Performance: "the allocator"). The price, measured:
//! 64 KiB writes cost about 13 % more CPU, most likely because mimalloc hands
//! freed large blocks back to the kernel and faults them in again where glibc
//! keeps them (the shorter the purge delay, the dearer).
//! Its default keeps freed memory a second (`purge_delay`), which put a node's
//! RSS at 180-200 MiB after a burst of 64 KiB messages (glibc: 117-142 MiB);
//! [`tune`] returns it after 100 ms and commits arenas only as they are used,
//! which keeps RSS where glibc had it (110-121 MiB). Shorter delays cost more
//! (at once: 64 KiB writes 18 % dearer); mimalloc v2 kept large messages level
//! only by holding 210-227 MiB per node.

use std::ffi::{c_int, c_long};

/// Positions in mimalloc v3's `mi_option_e` (`mimalloc.h`); the crate does not
/// name these two. `tests::the_option_numbers_name_the_options_meant` checks
/// them against the linked library's documented defaults.
const ARENA_EAGER_COMMIT: c_int = 4;
const PURGE_DELAY: c_int = 15;

/// Freed memory goes back to the kernel after this many milliseconds.
const PURGE_DELAY_MS: c_long = 100;

/// Set the allocator's options, unless mimalloc's environment variables name
/// them; call first thing in `main`, before threads (`mi_option_set` is a
/// plain, not thread-safe setter of mimalloc's option table: hence `unsafe`).
pub fn tune() {
    for (env, option, value) in [
        ("MIMALLOC_ARENA_EAGER_COMMIT", ARENA_EAGER_COMMIT, 0),
        ("MIMALLOC_PURGE_DELAY", PURGE_DELAY, PURGE_DELAY_MS),
    ] {
        // mimalloc's own variable, when set, wins (it has read it already).
        if std::env::var_os(env).is_none() {
            // SAFETY: a plain store into mimalloc's option table; no other
            // thread exists yet to read it concurrently.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

/// How often [`start_collector`] has mimalloc carry out the purges it delayed.
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A thread that has mimalloc return freed memory whose purge delay passed.
/// Why: mimalloc purges delayed memory only when an allocator call comes
/// along after the delay; memory freed by a thread that then sleeps stays
/// resident. A node restarted on a 64 MiB preallocated WAL segment held the
/// 64 MiB read buffer of its recovery that way (RSS 98 against 47 MiB, still
/// 10 s later; `MIMALLOC_PURGE_DELAY=0` gave 31). `mi_collect(false)` is the
/// cheap, non-forcing collection: expired purges only.
pub fn start_collector() {
    let spawned = std::thread::Builder::new()
        .name("mem-collect".into())
        .spawn(|| loop {
            std::thread::sleep(COLLECT_EVERY);
            // SAFETY: mimalloc's collection entry point, safe from any thread.
            unsafe { libmimalloc_sys::mi_collect(false) };
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the allocator's collector thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new mimalloc that renumbered its options would make `tune` set
    /// something else: the defaults `mimalloc.h` documents for these two
    /// (`arena_eager_commit` = 2, `purge_delay` = 1000 in v3) must be where we
    /// look. (Nothing in the test process calls `tune`.)
    #[test]
    fn the_option_numbers_name_the_options_meant() {
        // SAFETY: reads of the option table.
        let (eager, delay) = unsafe {
            (
                libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT),
                libmimalloc_sys::mi_option_get(PURGE_DELAY),
            )
        };
        assert_eq!((eager, delay), (2, 1000));
    }
}
