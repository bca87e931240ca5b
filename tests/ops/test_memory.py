"""The api's allocator keeps catalog-sized buffers for reuse instead of re-faulting them per request."""

from __future__ import annotations

import subprocess
import sys

import pytest

_FREED_BYTES_KEPT = """
import ctypes, sys
import numpy as np
from app.memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
buffer = np.ones(1_000_000)  # 8 MB, a large catalog's score vector
del buffer
print(libc.mallinfo2().fordblks)
"""


def _freed_bytes_kept(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FREED_BYTES_KEPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_catalog_buffers_stay_in_the_process_for_the_next_request() -> None:
    assert _freed_bytes_kept("default") < 8_000_000  # glibc gives an 8 MB block back at once
    assert _freed_bytes_kept("tuned") >= 8_000_000


_GC_PASSES_PER_BATCH = """
import gc, sys
from app.memory import collect_less_often
from app.schemas.ingest import EventIn
from app.schemas.validation import validate_batch

if sys.argv[1] == "tuned":
    collect_less_often()
batch = [{"user_id": f"u{n}", "event_family": "engagement", "event_name": "view", "item_id": f"i{n}",
          "context": {"session_id": "s"}, "timestamp": "2026-11-01T10:00:00Z"} for n in range(1000)]
validate_batch(EventIn, batch, name="events", single=False)
gc.collect()
before = sum(generation["collections"] for generation in gc.get_stats())
for _ in range(5):
    validate_batch(EventIn, batch, name="events", single=False)
print(sum(generation["collections"] for generation in gc.get_stats()) - before)
"""


def _gc_passes(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _GC_PASSES_PER_BATCH, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


def test_a_big_ingest_batch_costs_at_most_one_gc_pass_not_dozens() -> None:
    assert _gc_passes("default") >= 20  # CPython's 700-object young generation: every ~700 objects
    assert _gc_passes("tuned") <= 5


_RSS_AFTER = """
import ctypes, gc, sys, tempfile
import numpy as np
from app.memory import drop_mapped_pages, give_back_freed_memory, keep_freed_memory

def rss_kb(kind):
    for line in open("/proc/self/status"):
        if line.startswith(kind + ":"):
            return int(line.split()[1])

if sys.argv[1] == "trim":
    keep_freed_memory()  # the api's tuning: freed blocks under 32 MB stay in the process
    blocks = [np.ones(1_000_000) for _ in range(40)]  # 320 MB of 8 MB blocks, like a load's temporaries
    kept = np.ones(1_000_000)  # allocated after them: what they free is not at the top of the heap
    del blocks
    before = rss_kb("RssAnon")
    assert give_back_freed_memory()
    print(before, rss_kb("RssAnon"))
else:
    path = tempfile.mktemp(suffix=".npy")
    np.save(path, np.ones(32 * 1024 * 1024 // 8))  # 32 MB
    mapped = np.load(path, mmap_mode="r")
    assert float(mapped.sum()) == mapped.size  # read whole, as warm() reads the item factors
    before = rss_kb("RssFile")
    assert drop_mapped_pages(mapped) and float(mapped[:10].sum()) == 10.0  # still readable
    print(before, rss_kb("RssFile"))
"""


def _rss_before_after(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _RSS_AFTER, mode], capture_output=True, text=True, check=True)
    before, after = (int(kb) for kb in out.stdout.split())
    return before, after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_what_a_load_freed_goes_back_to_the_kernel_once_it_is_done() -> None:
    before, after = _rss_before_after("trim")
    assert before - after > 250 * 1024, (before, after)  # of the 320 MB freed, in kB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise on a memory map")
def test_a_memory_mapped_array_read_whole_leaves_the_resident_set() -> None:
    before, after = _rss_before_after("map")
    assert before - after > 24 * 1024, (before, after)  # of the 32 MB read, in kB
