//! The allocator: mimalloc, for Rust and (through its `override` feature) for librdkafka's C
//! allocations, plus the one option fleetstream sets on it.
//!
//! mimalloc returns freed memory to the OS after `purge_delay` (1 s by default; its arenas wait
//! ten times that). A producer at full speed frees and re-uses hundreds of MiB of message and
//! batch buffers a second, so the default made the kernel fault in and zero the same memory again
//! and again: 8,000-13,000 page faults and ~0.6 CPU-s per 2 M messages, ~11% of the run
//! (docs/BENCHMARKS.md, "Producer"). With 10 s, memory freed and re-used within 10 s stays
//! mapped; a process that goes quiet still returns it. `MIMALLOC_PURGE_DELAY` in the environment
//! wins over this default, as mimalloc documents.

/// `mi_option_purge_delay`: index 15 of `mi_option_e` in mimalloc.h (v3). The enum keeps its
/// deprecated entries so indices stay stable; libmimalloc-sys does not name this one. The test
/// below checks the index against the environment variable mimalloc reads into it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays mapped before it is returned to the OS, in milliseconds.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// Sets fleetstream's allocator defaults. Call first thing in `main`, before any thread exists.
pub fn tune() {
    // SAFETY: `mi_option_set_default` stores one integer into mimalloc's option table; the index
    // is in range (checked by the test). It is not synchronised, so it must run before any other
    // thread exists: `main` calls it first, and neither the Rust runtime nor mimalloc starts
    // threads before `main`. It keeps a value set from the environment.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _)
    }
}

/// The purge delay in force, milliseconds (-1: never).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one integer from mimalloc's option table (initialised at process load).
    #[allow(unsafe_code)]
    let v = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    v as i64
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    const CHILD: &str = "FLEETSTREAM_TEST_EXPECT_PURGE_DELAY";

    /// In a fresh process (options are read once, at load): without the environment variable
    /// `tune` sets our default; with `MIMALLOC_PURGE_DELAY` mimalloc's own reading of it lands in
    /// the option we set, which proves the index, and `tune` leaves it alone.
    #[test]
    fn purge_delay_is_ours_unless_the_environment_says_otherwise() {
        if let Ok(expect) = std::env::var(CHILD) {
            super::tune();
            assert_eq!(super::purge_delay_ms(), expect.parse::<i64>().unwrap());
            return;
        }
        let me = std::env::current_exe().unwrap();
        for (env, expect) in [(None, super::PURGE_DELAY_MS), (Some("1234"), 1234)] {
            let mut c = Command::new(&me);
            c.args([
                "--exact",
                "alloc::tests::purge_delay_is_ours_unless_the_environment_says_otherwise",
                "--test-threads=1",
            ])
            .env(CHILD, expect.to_string());
            match env {
                Some(v) => c.env("MIMALLOC_PURGE_DELAY", v),
                None => c.env_remove("MIMALLOC_PURGE_DELAY"),
            };
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "child (MIMALLOC_PURGE_DELAY={env:?}) failed:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            // The child really ran the test (the filter matched), not zero tests.
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("1 passed"),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
