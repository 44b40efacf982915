"""Compressed chunks kept for a while and made ahead of time, shared by every session of the process.

Compression is the slow part of streaming a volume (about 100–200 MB/s of int16 per core with the
codecs of :mod:`spine_viewer.transport`). :class:`ChunkStore` compresses the next chunks of the plan
in worker threads (zlib releases the GIL) while the browser receives and decodes the current one,
and keeps finished chunks in a small LRU (bounded in bytes) so a second reader of the same study, or
a reload, costs no compression at all.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor

from spine_viewer.transport import EncodedChunk

#: Default byte budget of the process-wide store (compressed bytes).
DEFAULT_STORE_BYTES = 256 << 20


class ChunkStore:
    """An LRU of :class:`EncodedChunk` by key, with background encoding.

    Args:
        max_bytes: compressed bytes kept (finished chunks; the oldest go first).
        workers: encoding threads.
    """

    def __init__(self, max_bytes: int = DEFAULT_STORE_BYTES, workers: int = 2) -> None:
        self.max_bytes = int(max_bytes)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spine-viewer-chunk")
        self._lock = threading.RLock()  # a finished future runs its callback in the submitter
        self._done: OrderedDict[Hashable, EncodedChunk] = OrderedDict()
        self._pending: dict[Hashable, Future[EncodedChunk]] = {}
        self._bytes = 0

    def _finish(self, key: Hashable, fut: Future[EncodedChunk]) -> None:
        with self._lock:
            self._pending.pop(key, None)
            if fut.cancelled() or fut.exception() is not None:
                return
            self._keep(key, fut.result())

    def _keep(self, key: Hashable, chunk: EncodedChunk) -> None:
        # caller holds the lock
        if key not in self._done:
            self._done[key] = chunk
            self._bytes += chunk.nbytes
        while self._bytes > self.max_bytes and len(self._done) > 1:
            _, old = self._done.popitem(last=False)
            self._bytes -= old.nbytes

    def _submit(self, key: Hashable, make: Callable[[], EncodedChunk]) -> Future[EncodedChunk]:
        # caller holds the lock
        fut = self._pending.get(key)
        if fut is None:
            fut = self._pool.submit(make)
            self._pending[key] = fut
            fut.add_done_callback(functools.partial(self._finish, key))
        return fut

    def get(self, key: Hashable, make: Callable[[], EncodedChunk]) -> EncodedChunk:
        """The chunk of ``key``: kept, being made (waited for), or made now in this thread."""
        with self._lock:
            chunk = self._done.get(key)
            if chunk is not None:
                self._done.move_to_end(key)
                return chunk
            fut = self._pending.get(key)
        if fut is not None:
            return fut.result()
        chunk = make()
        with self._lock:
            self._keep(key, chunk)
        return chunk

    def prefetch(self, key: Hashable, make: Callable[[], EncodedChunk]) -> None:
        """Start making ``key`` in the background unless it is kept or under way."""
        with self._lock:
            if key in self._done:
                return
            self._submit(key, make)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._done

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._done.clear()
            self._bytes = 0


_default: ChunkStore | None = None
_default_lock = threading.Lock()


def default_store() -> ChunkStore:
    """The process-wide store."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ChunkStore()
        return _default
