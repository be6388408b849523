#ifndef FEDMIX_CALLOCATOR_SHIM_H
#define FEDMIX_CALLOCATOR_SHIM_H
/* glibc's allocator settings for fedmix's processes. mallopt is not in
 * Swift's Glibc module, so it is reached through this one function.
 *
 * Why: a site answers a request with many short-lived arrays of a column's
 * length (tens to hundreds of KB). By default glibc returns the freed top
 * of each thread's heap to the kernel at once (madvise, with a TLB flush
 * on every core) and maps arrays of 128 KB and more afresh, so the next
 * request faults the same pages in again: on the 300,000-row benchmark a
 * sixth of the sites' time went to page faults. Keeping up to 16 MB of
 * freed memory per heap, and mapping only arrays of 1 MB and more, ends
 * that; arrays of a large site's column (10 million rows: 80 MB) are still
 * mapped and returned as before. Returns 1 when applied, 0 where there is
 * no glibc (macOS). */
#include <stdlib.h> /* defines __GLIBC__ where glibc is the C library */
#if defined(__GLIBC__)
#include <malloc.h>
static inline int fedmix_tune_allocator(void) {
    int trim = mallopt(M_TRIM_THRESHOLD, 16 << 20);
    int mmap = mallopt(M_MMAP_THRESHOLD, 1 << 20);
    return trim == 1 && mmap == 1;
}
#else
static inline int fedmix_tune_allocator(void) { return 0; }
#endif
#endif
