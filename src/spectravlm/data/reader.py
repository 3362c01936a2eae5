"""Read windows of a Zarr array by decoding exactly the chunks they touch, with bounded retries.

:class:`WindowReader` reads ``array[times, bands, rows, cols]`` of one array of a cube store (data
``(time, band, y, x)``, cloud ``(time, y, x)`` or a target ``(y, x)``). For the chunk layouts the store
writes (``BytesCodec`` + an optional Blosc/Zstd/Gzip compressor, no sharding, one date per chunk, all
bands in one chunk) it fetches the chunk objects of the whole window in one call (one concurrent batch of
requests on an fsspec store, plain file reads on a local store) and decodes each with numcodecs into a
reused buffer, or straight into the output when the window covers the chunk. Any other layout goes
through zarr's own indexing.

Why not only ``zarr.Array.__getitem__``: measured on the 1024 px demo store (S2 uint16, chunks
``(1, 10, 256, 256)``, 128 px windows aligned to chunk tiles, 10 dates) zarr-python 3.1 read 77 windows/s
against 110 windows/s for decoding the same chunks with numcodecs in one thread; for the S1 float32 group
(2 bands) 180 against 610 windows/s. zarr's per-chunk cost (asyncio task, buffer prototype, codec
pipeline dispatch) of ~0.3 ms dominates small chunks. The direct path removes it, and it is what makes
the loader reach its floor of half the decode ceiling (benchmarks/loader.py).

A missing chunk object means "never written" and reads as the array's fill value, as in zarr. Errors
that may be transient on a remote store (connection resets, timeouts, 5xx answers) are retried
``retries`` times with exponential back-off and then raised as :class:`~spectravlm.errors.StoreReadError`
naming the URL; a chunk that cannot be decoded is a :class:`~spectravlm.errors.StoreCorruptError`.
"""

from __future__ import annotations

import io
import mmap
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

from spectravlm.errors import StoreCorruptError, StoreReadError

try:  # aiohttp is fsspec's HTTP client; its errors are the transient ones of HTTP stores
    from aiohttp import ClientError as _ClientError
except ImportError:  # pragma: no cover - aiohttp is a core dependency
    _ClientError = OSError  # type: ignore[misc,assignment]

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, _ClientError)
"""Errors retried on a read (``FileNotFoundError`` excepted: a missing chunk is the fill value)."""

MMAP_MIN_BYTES = 64 * 1024
"""Local chunk objects at least this large are memory-mapped instead of read into a buffer."""

Decoder = Callable[[bytes | memoryview | mmap.mmap, np.ndarray], None]


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` may go away on a retry (network, timeout, 5xx; not a missing object)."""
    return isinstance(err, TRANSIENT_ERRORS) and not isinstance(err, FileNotFoundError)


class ChunkSource:
    """Fetches chunk objects by key (relative to the store root); ``None`` for an absent object."""

    def __init__(self, location: str, storage_options: dict[str, Any] | None = None) -> None:
        self.location = location
        is_url = "://" in location and not location.startswith("file://")
        self._root: Path | None = None if is_url else Path(location.removeprefix("file://"))
        self._fs: Any = None
        self._base = location.rstrip("/")
        self._storage_options = storage_options or {}
        self._buffers: list[bytearray] = []  # reused read buffers, one per slot (fresh memory faults)

    def url(self, key: str) -> str:
        """Where the object ``key`` lives (a path or URL, for messages)."""
        return f"{self._base}/{key}"

    def _read_local(self, key: str, slot: int) -> memoryview | mmap.mmap:
        """Map a large local object (no copy), or read a small one into the reused buffer ``slot``.

        Mapping a 512 KB chunk and decoding from the page cache took 0.25-0.31 ms against 0.36-0.38 ms for
        reading it into a buffer first (S1 chunks of the benchmark store; 0.20 ms from preloaded bytes).
        """
        assert self._root is not None
        with io.FileIO(os.path.join(self._root, key), "r") as f:
            size = os.fstat(f.fileno()).st_size
            if size >= MMAP_MIN_BYTES:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            while len(self._buffers) <= slot:
                self._buffers.append(bytearray())
            buf = self._buffers[slot]
            if len(buf) < size:
                buf.extend(bytes(size - len(buf)))
            n = f.readinto(memoryview(buf)[:size])
        return memoryview(buf)[:n]

    def get_many(
        self, keys: Sequence[str], slots: Sequence[int] | None = None
    ) -> list[bytes | memoryview | mmap.mmap | BaseException | None]:
        """Fetch ``keys``: their bytes, ``None`` when absent, or the exception raised for that key.

        Local objects come back as views of reused buffers (``slots``, default ``0..len(keys)-1``): use
        them before the next call with the same slots.
        """
        if self._root is not None:
            out: list[bytes | memoryview | mmap.mmap | BaseException | None] = []
            for i, key in enumerate(keys):
                try:
                    out.append(self._read_local(key, i if slots is None else slots[i]))
                except FileNotFoundError:
                    out.append(None)
                except OSError as err:
                    out.append(err)
            return out
        if self._fs is None:  # created lazily, in the process that reads (fsspec clients are not fork-safe)
            import fsspec

            self._fs, _ = fsspec.core.url_to_fs(self._base, **self._storage_options)
        urls = [self.url(k) for k in keys]
        try:
            got = self._fs.cat(urls, on_error="return")
        except Exception as err:  # the whole batch failed (e.g. connection refused)
            return [err] * len(keys)
        if not isinstance(got, dict):  # a single URL may come back as bytes
            got = {urls[0]: got}
        result: list[bytes | memoryview | mmap.mmap | BaseException | None] = []
        for u in urls:
            v = got.get(u, FileNotFoundError(u))
            result.append(None if isinstance(v, FileNotFoundError) else v)
        return result

    def get_many_retrying(
        self, keys: Sequence[str], retries: int, backoff_s: float
    ) -> list[bytes | memoryview | mmap.mmap | None]:
        """:meth:`get_many` with transient failures retried, then :class:`StoreReadError`."""
        values = self.get_many(keys)
        for attempt in range(retries + 1):
            failed = [i for i, v in enumerate(values) if isinstance(v, BaseException)]
            if not failed:
                return values  # type: ignore[return-value]
            err = values[failed[0]]
            assert isinstance(err, BaseException)
            if not is_transient(err) or attempt == retries:
                raise StoreReadError(
                    f"{self.url(keys[failed[0]])}: read failed after {attempt + 1} attempt(s) "
                    f"({len(failed)} of {len(keys)} chunk objects): {type(err).__name__}: {err}"
                ) from err
            time.sleep(backoff_s * 2**attempt)
            again = self.get_many([keys[i] for i in failed], slots=failed)
            for i, v in zip(failed, again, strict=True):
                values[i] = v
        raise AssertionError("unreachable")  # pragma: no cover


def _decoder(array: zarr.Array) -> Decoder | None:
    """Build a numcodecs decoder for ``array``'s codec chain; ``None`` when zarr must decode it."""
    md = array.metadata
    if getattr(md, "zarr_format", 2) != 3:
        return None
    codecs = list(md.codecs)  # type: ignore[union-attr]
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return None
    endian = codecs[0].endian
    if array.dtype.itemsize > 1 and endian is not None and endian.value != sys.byteorder:
        return None
    rest = codecs[1:]
    if not rest:
        return lambda raw, out: np.copyto(out.reshape(-1).view(np.uint8), np.frombuffer(raw, np.uint8))
    if len(rest) != 1:
        return None
    comp = rest[0]
    if isinstance(comp, BloscCodec):
        return lambda raw, out: numcodecs.blosc.decompress(raw, out)
    if isinstance(comp, ZstdCodec):
        zstd = numcodecs.Zstd()
        return lambda raw, out: zstd.decode(raw, out=out)
    if isinstance(comp, GzipCodec):
        gzip = numcodecs.GZip()
        return lambda raw, out: gzip.decode(raw, out=out)
    return None


class WindowReader:
    """Windows of one array of a store (see the module docstring).

    Args:
        array: the open zarr array, ``(T, C, Y, X)``, ``(T, Y, X)`` or ``(Y, X)``.
        source: where its chunk objects live (the store root).
        retries: extra attempts for a transient read error.
        backoff_s: first wait between attempts (doubles each time).
        direct: use the direct decode path when the layout allows it (``False``: always zarr).

    """

    def __init__(
        self,
        array: zarr.Array,
        source: ChunkSource,
        retries: int = 3,
        backoff_s: float = 0.2,
        direct: bool = True,
    ) -> None:
        self.array = array
        self.source = source
        self.retries = retries
        self.backoff_s = backoff_s
        self.ndim = array.ndim
        if self.ndim not in (2, 3, 4):
            raise StoreCorruptError(
                f"{source.url(array.path)}: expected a 2-, 3- or 4-D array, got {array.shape}"
            )
        self.chunks = tuple(array.chunks)
        spatial = self.chunks[-2:]
        leading_ok = self.ndim == 2 or (
            self.chunks[0] == 1 and (self.ndim == 3 or self.chunks[1] == array.shape[1])
        )
        self.decode = _decoder(array) if direct and leading_ok else None
        self.fill = array.metadata.fill_value
        c = array.shape[1] if self.ndim == 4 else 1
        self._scratch = np.empty((c, *spatial), dtype=array.dtype)

    @property
    def direct(self) -> bool:
        """True when windows are decoded with numcodecs (False: through zarr)."""
        return self.decode is not None

    def read(
        self,
        rows: slice,
        cols: slice,
        times: Sequence[int] | None = None,
        bands: Sequence[int] | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """``array[times, bands, rows, cols]`` as numpy (``times``/``bands`` ignored for lower ranks).

        Returns:
            ``(len(times), len(bands), h, w)`` for 4-D arrays, ``(len(times), h, w)`` for 3-D, ``(h, w)``
            for 2-D; raw stored dtype.

        """
        shape = self.array.shape
        t_idx = (
            [0] if self.ndim == 2 else (list(range(shape[0])) if times is None else [int(t) for t in times])
        )
        c = shape[1] if self.ndim == 4 else 1
        b_idx = list(range(c)) if bands is None or self.ndim != 4 else [int(b) for b in bands]
        r0, r1 = rows.start, rows.stop
        c0, c1 = cols.start, cols.stop
        if not (0 <= r0 < r1 <= shape[-2] and 0 <= c0 < c1 <= shape[-1]):
            raise StoreCorruptError(f"window rows {r0}:{r1}, cols {c0}:{c1} outside the array {shape}")
        full = (len(t_idx), len(b_idx), r1 - r0, c1 - c0)
        if out is None:
            out = np.empty(full, dtype=self.array.dtype)
        else:
            out = out.reshape(full)
        if self.decode is None:
            self._read_zarr(t_idx, b_idx, rows, cols, out)
        else:
            self._read_direct(t_idx, b_idx, r0, r1, c0, c1, out)
        if self.ndim == 4:
            return out
        if self.ndim == 3:
            return out[:, 0]
        return out[0, 0]

    def _read_direct(
        self, t_idx: list[int], b_idx: list[int], r0: int, r1: int, c0: int, c1: int, out: np.ndarray
    ) -> None:
        assert self.decode is not None
        cy, cx = self.chunks[-2:]
        all_bands = b_idx == list(range(self._scratch.shape[0]))
        jobs: list[tuple[int, tuple[int, ...], slice, slice, slice, slice]] = []
        for k, t in enumerate(t_idx):
            for iy in range(r0 // cy, (r1 - 1) // cy + 1):
                for ix in range(c0 // cx, (c1 - 1) // cx + 1):
                    y0, x0 = iy * cy, ix * cx
                    sy = slice(max(r0, y0) - y0, min(r1, y0 + cy) - y0)
                    sx = slice(max(c0, x0) - x0, min(c1, x0 + cx) - x0)
                    dy = slice(sy.start + y0 - r0, sy.stop + y0 - r0)
                    dx = slice(sx.start + x0 - c0, sx.stop + x0 - c0)
                    coords = {2: (iy, ix), 3: (t, iy, ix), 4: (t, 0, iy, ix)}[self.ndim]
                    jobs.append((k, coords, sy, sx, dy, dx))
        md = self.array.metadata
        keys = [f"{self.array.path}/{md.encode_chunk_key(j[1])}" for j in jobs]
        blobs = self.source.get_many_retrying(keys, self.retries, self.backoff_s)
        scratch = self._scratch
        whole = (0, cy, 0, cx)
        for (k, _, sy, sx, dy, dx), raw, key in zip(jobs, blobs, keys, strict=True):
            if raw is None:
                out[k, :, dy, dx] = self.fill
                continue
            target = out[k]
            direct_out = (
                all_bands and (sy.start, sy.stop, sx.start, sx.stop) == whole and target.shape[1:] == (cy, cx)
            )
            try:
                self.decode(raw, target if direct_out else scratch)
            except (RuntimeError, ValueError, TypeError) as err:
                raise StoreCorruptError(f"{self.source.url(key)}: cannot decode chunk: {err}") from err
            if not direct_out:
                if all_bands:
                    target[:, dy, dx] = scratch[:, sy, sx]
                else:
                    target[:, dy, dx] = scratch[b_idx, sy, sx]

    def _read_zarr(
        self, t_idx: list[int], b_idx: list[int], rows: slice, cols: slice, out: np.ndarray
    ) -> None:
        if self.ndim == 4:
            sel: tuple[Any, ...] = (t_idx, b_idx, rows, cols)
        elif self.ndim == 3:
            sel = (t_idx, rows, cols)
        else:
            sel = (rows, cols)
        where = self.source.url(self.array.path)
        for attempt in range(self.retries + 1):
            try:
                values = np.asarray(self.array.oindex[sel])
                break
            except Exception as err:
                if is_transient(err) and attempt < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
                    continue
                if is_transient(err):
                    raise StoreReadError(
                        f"{where}: read failed after {attempt + 1} attempt(s): {type(err).__name__}: {err}"
                    ) from err
                raise StoreCorruptError(f"{where}: cannot decode the chunks for {sel}: {err}") from err
        out[...] = values.reshape(out.shape)
