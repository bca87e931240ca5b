"""Process memory for the api and the worker: the allocator, the cyclic GC, the peak.

Keep freed buffers in the process instead of handing them back to the kernel (glibc only):
ranking a dense vector allocates a few temporaries the size of the catalog (100k items: 0.4 to
0.8 MB each). glibc serves blocks that big with mmap, or trims them off the top of the heap
once freed, so every request page-faults its buffers in again: on the reference machine that
doubled the time to rank a catalog. With higher thresholds freed blocks are reused; RSS grows
by one request's working set (a few MB), not with traffic. What a load or a swap of a big org
frees is given back once it is done (give_back_freed_memory), and model arrays read whole only
at load leave the resident set (drop_mapped_pages).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import mmap
import resource
from typing import Any

log = logging.getLogger("lehnz.memory")

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit; bigger blocks (models) still use mmap
_TRIM_THRESHOLD = 64 * 1024 * 1024
_TOP_PAD = 16 * 1024 * 1024


def glibc_function(name: str) -> Any:
    """A function of the C library, or None where it is not glibc (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def set_malloc_options(options: dict[int, int]) -> bool:
    """glibc's mallopt for each (parameter, value); whether every one was accepted. False (and
    nothing changed) where it is not glibc."""
    mallopt = glibc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in options.items())  # stops at a refusal


def keep_freed_memory() -> bool:
    """Tune this process's allocator; False (and nothing changed) where it is not glibc."""
    done = set_malloc_options(
        {M_MMAP_THRESHOLD: _MMAP_THRESHOLD, M_TRIM_THRESHOLD: _TRIM_THRESHOLD, M_TOP_PAD: _TOP_PAD}
    )
    if not done:
        log.warning("could not tune the allocator (mallopt refused); ranking runs slower")
    return done


# A 1,000-event ingest batch allocates thousands of container objects (validated records,
# their dicts) that live until the request ends. With CPython's young-generation threshold of
# 700 they are scanned by several young and middle collections each, and the full
# collections this brings on walk the whole heap (loaded catalogs included). Measured on a
# server-sized heap: validating and shaping a batch 8.0 -> 4.6 us per event. Young
# collections stay cheap (at most this many objects each); memory held by cyclic garbage
# between collections stays small.
GC_THRESHOLDS = (10_000, 10, 10)


def collect_less_often() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def give_back_freed_memory() -> bool:
    """Return the free pages of every malloc arena to the kernel now (glibc's malloc_trim(0)).

    For the api after it loads or swaps an org: a million-item load frees hundreds of MB of
    temporaries (id lists, decoded JSON, the replaced snapshot) in its loader threads' arenas,
    and keep_freed_memory's thresholds would keep them in the process for good (measured at 1M
    items: 270 MB after a load, 320 MB after a swap). Requests re-fault their buffers once."""
    trim = glibc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


def drop_mapped_pages(array: Any) -> bool:
    """Take a memory-mapped array's pages out of this process's resident set: they stay in the
    page cache (shared, reclaimable) and come back, page by page, when read again. For an
    array read whole once at load (to derive something) and then only a few rows at a time.
    False when the array is not memory-mapped."""
    mapping = getattr(array, "_mmap", None)  # np.memmap, as ModelStore loads big arrays
    if not isinstance(mapping, mmap.mmap):
        return False
    mapping.madvise(mmap.MADV_DONTNEED)
    return True


def peak_rss_mb() -> float:
    """This process's peak resident memory so far: Linux's VmHWM, the high-water mark of the
    process's own memory. Not ru_maxrss, which a spawned child inherits from its parent (the
    kernel carries the RSS the parent had when it forked into the exec'd child's figure): a
    training child started by a big parent would report the parent's size as its own."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # not Linux: KB or bytes
