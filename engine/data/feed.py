"""Training batches straight from the image cache, with no per-image Python work.

Rows of one split are gathered once per block of Zarr chunks. When the split
fits comfortably in memory it is read once and kept (the common case: CelebA's
train split at 96x96 is 4.5 GB of uint8); otherwise blocks of chunks are read
in a shuffled order, shuffled inside, and the next block is read in a
background thread while the current one trains. The order of epoch ``e`` is a
pure function of (seed, e), so a resumed run sees the same batches.

With several ranks (``share=(rank, ranks)``) every rank computes the same
global batches and reads only its contiguous part of each, batch / ranks rows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import zarr

logger = logging.getLogger(__name__)


def read_rows(images: zarr.Array, rows: np.ndarray, block_rows: int = 8192) -> np.ndarray:
    """``images[rows]`` for sorted ``rows``, read in contiguous blocks so peak memory is the result plus one block."""
    out = np.empty((len(rows), *images.shape[1:]), images.dtype)
    if len(rows) == 0:
        return out
    pos = 0
    for start in range(int(rows[0]) - int(rows[0]) % block_rows, int(rows[-1]) + 1, block_rows):
        stop = start + block_rows
        lo, hi = np.searchsorted(rows, [start, stop])
        if hi > lo:
            block = images[start : min(stop, images.shape[0])]
            out[pos : pos + hi - lo] = block[rows[lo:hi] - start]
            pos += hi - lo
    return out


class BatchFeed:
    """Shuffled uint8 (B, S, S, 3) batches of the cache rows ``rows``.

    ``in_memory``: True, False or None (decide from available memory: keep the
    split when it takes under 40% of what is free).
    """

    def __init__(
        self,
        images: zarr.Array,
        rows: np.ndarray,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        in_memory: bool | None = None,
        block_chunks: int = 32,
        share: tuple[int, int] = (0, 1),
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rank, world = share
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} does not split over {world} ranks: pass a multiple of {world} "
                             f"(--batch-size is the global batch, each rank takes batch-size / ranks)")
        self.share = (rank, world)
        self.images = images
        self.rows = np.sort(np.asarray(rows, np.int64))
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        nbytes = len(self.rows) * int(np.prod(images.shape[1:]))
        if in_memory is None:  # every rank of this machine keeps its own copy
            in_memory = nbytes * int(os.environ.get("LOCAL_WORLD_SIZE", 1)) < 0.4 * psutil.virtual_memory().available
        self.in_memory = in_memory
        self.block_rows = images.chunks[0] * block_chunks
        self._data = read_rows(images, self.rows) if in_memory else None
        logger.debug("feed: %d rows, %.1f MB, in_memory=%s", len(self.rows), nbytes / 1e6, in_memory)

    def __len__(self) -> int:
        n, b = len(self.rows), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _mine(self, batch: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of a global batch (all of it for one process)."""
        rank, world = self.share
        part = -(-len(batch) // world)
        return batch[rank * part : (rank + 1) * part]

    def order(self, epoch: int) -> np.ndarray:
        """Positions in ``rows`` (in memory) or cache rows (streamed) of epoch ``epoch``, batch after batch:
        a pure function of (seed, epoch), the same on every rank."""
        rng = np.random.default_rng([self.seed, epoch])
        if self._data is not None:
            n = len(self._data)
            return rng.permutation(n) if self.shuffle else np.arange(n)
        starts = np.arange(0, self.images.shape[0], self.block_rows)
        if self.shuffle:
            starts = rng.permutation(starts)
        blocks = []
        for s in starts:
            lo, hi = np.searchsorted(self.rows, [s, s + self.block_rows])
            if hi > lo:
                block = self.rows[lo:hi]
                blocks.append(block[rng.permutation(len(block))] if self.shuffle else block)
        return np.concatenate(blocks) if blocks else np.empty(0, np.int64)

    @property
    def data(self) -> np.ndarray | None:
        """The rows in memory, uint8 (len(rows), S, S, 3) in the order of ``rows``; None when streamed."""
        return self._data

    def positions(self, epoch: int) -> Iterator[np.ndarray]:
        """This rank's positions in ``data`` of each batch of epoch ``epoch`` (an in-memory feed), sorted within a
        batch (a sorted gather is kinder to the cache; the batch's content is what counts)."""
        if self._data is None:
            raise ValueError("positions() needs the rows in memory (in_memory=True)")
        order = self.order(epoch)
        b = self.batch_size
        stop = len(order) // b * b if self.drop_last else len(order)
        for i in range(0, stop, b):
            yield self._mine(np.sort(order[i : i + b]))

    def epoch(self, epoch: int) -> Iterator[np.ndarray]:
        """This rank's part of each batch of epoch ``epoch``."""
        if self._data is not None:
            for pos in self.positions(epoch):
                yield self._data[pos]
            return
        order = self.order(epoch)
        b = self.batch_size
        stop = len(order) // b * b if self.drop_last else len(order)
        yield from self._stream([self._mine(order[i : i + b]) for i in range(0, stop, b)])

    def _stream(self, batches: list[np.ndarray]) -> Iterator[np.ndarray]:
        """Read this rank's rows of about one block of batches at a time, the next in a background thread."""
        per_read = max(1, self.block_rows // self.batch_size)
        groups = [batches[i : i + per_read] for i in range(0, len(batches), per_read)]

        def read(group):
            rows = np.concatenate(group)
            sorter = np.argsort(rows, kind="stable")
            data = np.empty((len(rows), *self.images.shape[1:]), self.images.dtype)
            data[sorter] = read_rows(self.images, rows[sorter])
            return data

        with ThreadPoolExecutor(1) as pool:
            nxt = pool.submit(read, groups[0]) if groups else None
            for k, group in enumerate(groups):
                data = nxt.result()
                nxt = pool.submit(read, groups[k + 1]) if k + 1 < len(groups) else None
                pos = 0
                for batch in group:
                    yield data[pos : pos + len(batch)]
                    pos += len(batch)
