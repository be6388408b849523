#ifndef FEDMIX_CALLOCATOR_SHIM_H
#define FEDMIX_CALLOCATOR_SHIM_H
/* glibc's allocator settings for fedmix's processes. mallopt is not in
 * Swift's Glibc module, so it is reached through this one function.
 *
 * Why: a site answers a request with many short-lived arrays of a column's
 * length. By default glibc returns the freed top of each thread's heap to
 * the kernel at once (madvise, with a TLB flush on every core) and maps
 * blocks of 128 KB and more afresh, raising that threshold only as mapped
 * blocks are freed; so the next request faults the same pages in again: on
 * the 300,000-row benchmark (7,500 rows a site) a sixth of the sites' time
 * went to page faults. Setting the thresholds switches glibc's adaptation
 * off, so they are set where it would end: blocks below 32 MB (columns of
 * up to 4 million rows) come from the heap, and up to 64 MB of freed memory
 * is kept per heap. Columns of larger sites (10 million rows: 80 MB) are
 * mapped and returned as before. Returns 1 when applied, 0 where there is
 * no glibc (macOS). */
#include <stdlib.h> /* defines __GLIBC__ where glibc is the C library */
#if defined(__GLIBC__)
#include <malloc.h>
static inline int fedmix_tune_allocator(void) {
    int trimmed = mallopt(M_TRIM_THRESHOLD, 64 << 20);
    int mapped = mallopt(M_MMAP_THRESHOLD, 32 << 20);
    return trimmed == 1 && mapped == 1;
}
#else
static inline int fedmix_tune_allocator(void) { return 0; }
#endif
#endif
