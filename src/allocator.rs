//! mimalloc's settings for gevaldi's binaries: freed memory is kept for
//! reuse instead of being returned to the OS.
//!
//! A search allocates and frees the same large buffers every step (candle
//! allocates every op's output). With mimalloc's default, freed memory is
//! returned to the OS after 10 ms and the next step's buffers are fresh
//! pages the kernel must zero: on the 2-core CPU, `perf` put 30% of a
//! BigGAN-deep-128 step (batch 8) in the kernel's `clear_page_erms`, and
//! never purging made the step 1.27× faster (0.049 → 0.062 steps/s in one
//! run, `MIMALLOC_PURGE_DELAY=-1`). The cost: the process keeps its peak
//! memory until it exits, which a test run does anyway.
//!
//! One of the two modules that need `unsafe` (with engine/kernels/gemm.rs):
//! mimalloc's options are set through its C API.
#![allow(unsafe_code)]

/// mimalloc's `mi_option_purge_delay` (v3's `mimalloc.h`; libmimalloc-sys
/// names no constant for it). The test below checks the index against the
/// `MIMALLOC_PURGE_DELAY` environment variable mimalloc reads into it.
#[cfg(feature = "mimalloc")]
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed memory to the OS, unless
/// `MIMALLOC_PURGE_DELAY` says otherwise. Call it before other threads
/// start (mimalloc's option setters are not synchronised); it does nothing
/// without the `mimalloc` feature, and has no effect where mimalloc is not
/// the global allocator.
pub(crate) fn keep_freed_memory() {
    #[cfg(feature = "mimalloc")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                // SAFETY: `mi_option_set` stores a value in mimalloc's
                // option table, once; called before other threads start,
                // nothing reads it concurrently.
                unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
            }
        });
    }
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    use std::process::Command;

    use super::PURGE_DELAY;

    /// Run by [`purge_delay_is_the_option_mimalloc_reads_from_its_variable`]
    /// in a child process with `MIMALLOC_PURGE_DELAY=123`.
    #[test]
    #[ignore = "run by purge_delay_is_the_option_mimalloc_reads_from_its_variable"]
    fn child_reads_purge_delay() {
        // SAFETY: reads mimalloc's option table.
        let v = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(v, 123);
    }

    #[test]
    fn purge_delay_is_the_option_mimalloc_reads_from_its_variable() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "allocator::tests::child_reads_purge_delay",
            ])
            .env("MIMALLOC_PURGE_DELAY", "123")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
    }

    #[test]
    fn keeping_freed_memory_sets_purge_delay_to_never() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        super::keep_freed_memory();
        // SAFETY: reads mimalloc's option table.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, -1);
    }
}
