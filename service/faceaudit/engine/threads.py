"""Keep numpy's BLAS from fighting onnxruntime for the cores while a stream is scored.

onnxruntime's intra-op threads already use every core the process may use. A method that makes
perturbations or accumulates maps with BLAS-backed numpy (matmul, tensordot) between runtime calls
would start BLAS threads of its own; they spin after each call and steal the runtime's cores
(measured: RISE at 0.65× raw throughput with multithreaded OpenBLAS, 0.92× with one BLAS thread).
While any stream is running, BLAS is limited to one thread; the original limits come back when the
last stream ends. Reference counted, so concurrent requests in one server process compose. The
limit is process-wide and lasts as long as a stream generator is open: consumers close streams they
abandon (a `for` loop that ends does; a kept, half-read generator holds the limit until collected).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_info, threadpool_limits

_lock = threading.Lock()
_active = 0
_limiter: threadpool_limits | None = None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    global _active, _limiter
    with _lock:
        if _active == 0:
            _limiter = threadpool_limits(limits=1, user_api="blas")
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _limiter is not None:
                # Restore only a limit that is still ours: another threadpoolctl user may have set
                # its own since, and restoring ours would overwrite it.
                if all(info["num_threads"] == 1 for info in threadpool_info() if info["user_api"] == "blas"):
                    _limiter.restore_original_limits()
                _limiter = None
