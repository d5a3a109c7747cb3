//! Process allocator settings for programs that carry DWCP traffic (glibc).
//!
//! The library never changes process-wide allocator settings by itself; a
//! program (the daemon, the torture harness) opts in with [`configure`] at
//! start-up and may call [`trim`] when traffic has calmed down. Both are
//! no-ops where the C library is not glibc (musl, other systems).
//!
//! Why: DWCP allocates and frees many buffers of 128 KiB and more (frames of
//! up to `max_frame_payload`, compressed chunks, application pieces) on
//! several threads (runtime workers, the blocking pool that compresses).
//! glibc serves an allocation above its mmap threshold with a mapping of its
//! own, returned to the system on free, but raises that threshold to the size
//! of every such block freed (up to 32 MiB). After the first large frame every
//! large buffer then comes from the per-thread arenas, whose free space is
//! kept, fragmented and unusable by the other arenas. Measured with the
//! torture test (QUIC, seed 1, 4,000 streams): 345 MiB peak RSS growth for a
//! 242 MiB peak of live heap; with a fixed threshold 254 MiB, and with the
//! arenas also limited to one per core 238 MiB.
#![allow(unsafe_code)]

/// Allocations at least this large get a mapping of their own, unmapped on
/// free (glibc's default initial threshold, kept fixed).
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] (which also fixes the
/// trim threshold, so free memory at the top of a heap is returned) and caps
/// the number of malloc arenas at the number of CPUs (glibc's default is 8 per
/// CPU). Call once, early, before threads start. Returns whether the settings
/// were applied (false where the C library is not glibc).
pub fn configure() -> bool {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    imp::configure(MMAP_THRESHOLD, cpus.max(2))
}

/// Returns the free memory of every malloc arena to the system
/// (`malloc_trim(0)`). Takes the arenas' locks in turn: call it when traffic
/// is quiet, not on every operation. Returns whether any memory was released.
pub fn trim() -> bool {
    imp::trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub(super) fn configure(mmap_threshold: usize, arenas: usize) -> bool {
        let threshold = libc::c_int::try_from(mmap_threshold).unwrap_or(libc::c_int::MAX);
        let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes allocator parameters; both are
        // documented glibc parameters with values in their valid ranges.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) == 1
                && libc::mallopt(libc::M_ARENA_MAX, arenas) == 1
        }
    }

    pub(super) fn trim() -> bool {
        // SAFETY: malloc_trim has no preconditions; it only releases free pages.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn configure(_mmap_threshold: usize, _arenas: usize) -> bool {
        false
    }

    pub(super) fn trim() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_apply_on_glibc() {
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(super::configure(), glibc);
        // Something to give back: a freed block below the threshold.
        let v: Vec<Vec<u8>> = (0..256).map(|_| vec![1u8; 64 * 1024]).collect();
        drop(v);
        let _ = super::trim();
    }
}
