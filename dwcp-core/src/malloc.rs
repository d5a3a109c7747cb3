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
//! 242 MiB peak of live heap; with a fixed threshold (128 KiB) 254 MiB, and
//! with the arenas also limited to one per core 238 MiB. The threshold is
//! now 1 MiB (see [`MMAP_THRESHOLD`] for what that saves and costs).
#![allow(unsafe_code)]

/// Allocations at least this large get a mapping of their own, unmapped on
/// free (kept fixed). It was glibc's initial 128 KiB: every 256 KiB read of
/// an application's socket (the daemon's pipe) and every frame of 128 KiB
/// and more then mapped fresh pages, faulted them in one by one and
/// unmapped them again. At 1 MiB those buffers come from the arenas: on
/// loopback (`dwcp-bench compression-e2e --mbit 0 --only "dwcp: off"`)
/// the sending daemon spent 0.09-0.10 CPU seconds on 128 MiB over TCP
/// lanes against 0.13-0.15, and 0.14-0.15 against 0.20 over QUIC;
/// transfers took 0.12-0.14 s against 0.14-0.16 (TCP) and 0.21 s against
/// 0.24-0.25 (QUIC). The cost: `scripts/footprint` peaked at 26.8 MB
/// against 21.3, 14.9 MB idle after against 13.9; the torture runs' RSS
/// growth (QUIC seed 1, 2,000 streams) read 290 and 298 MiB against 266,
/// 291 and 298, over TCP lanes 231 against 219.
pub const MMAP_THRESHOLD: usize = 1024 * 1024;

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
