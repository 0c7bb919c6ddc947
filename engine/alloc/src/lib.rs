//! The memory allocator of `riskd` and of the benchmarks that measure it:
//! jemalloc, with transparent huge pages for its arenas.
//!
//! Feature state is millions of small per-entity buffers read at random, so
//! most of an event's cost is address translation and cache misses. Backing
//! the heap with 2 MiB pages cuts the translation misses (the kernel's
//! `transparent_hugepage` mode `madvise`, Debian's default, is enough; with
//! `never` this is a no-op). jemalloc also keeps small allocations of one
//! size together and frees them without glibc's chunk coalescing.
//!
//! A binary opts in with `use riskd_alloc as _;`. Only binaries should: a
//! fuzzer's sanitizer brings its own allocator.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options, read once before the first allocation
/// (`MALLOC_CONF` syntax; the `_RJEM_MALLOC_CONF` environment variable
/// overrides them, e.g. `_RJEM_MALLOC_CONF=thp:never`).
#[used]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 29] = b"thp:always,metadata_thp:auto\0";

/// The allocator in use, for logs and benchmark reports.
pub fn name() -> &'static str {
    "jemalloc (transparent huge pages)"
}
