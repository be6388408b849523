import CAllocator

/// Keeps freed memory of a request's short-lived column arrays for the next
/// request instead of handing it back to the kernel and faulting it in again
/// (CAllocator/shim.h says why and by how much). Call once at start-up, in
/// every process that answers as a site: the agent, and the coordinator when
/// it hosts sites in process (local, demo, bench). True where applied (glibc).
@discardableResult
public func tuneAllocatorForSiteWork() -> Bool {
    fedmix_tune_allocator() == 1
}
