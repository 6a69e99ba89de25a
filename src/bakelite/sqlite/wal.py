"""SQLite WAL file format: header and frame parsing and checksum verification (pure, no I/O).

Format reference: https://www.sqlite.org/fileformat2.html#walformat.  Every header field is stored
big-endian; only the words fed to the checksum follow the byte order named by the magic number.

The checksum is a running Fletcher-like sum over pairs of 32-bit words ``(x0, x1)``::

    s1 += x0 + s2;  s2 += x1 + s1        (mod 2**32)

It covers bytes 0..23 of the WAL header, then for each frame bytes 0..7 of the frame header plus
the page, chained from the previous frame (the first frame chains from the header checksum).

The vectorised verifier uses the closed form of that linear recurrence: with ``A = [[1, 1], [1, 2]]``
one word pair maps ``v -> A·v + (x0, x0 + x1)``, so a frame of ``n`` pairs gives
``out = Aⁿ·s_in + C·x`` for a coefficient matrix ``C`` that depends only on the page size.  Every
frame is checked from its predecessor's *stored* checksum, so all frames of a batch are checked
independently and at once; the chain of the valid prefix then holds by induction.  ``C·x`` is
computed in uint32: Z/2³² is a ring, so wrapping products and sums give the exact result mod 2³²
with no widening (and no copy of little-endian words on a little-endian host).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # numpy is imported when first needed, or by preload_numpy (see scan_frames)
    import numpy as np
    import numpy.typing as npt

    U32Array = npt.NDArray[np.uint32]

WAL_HEADER_SIZE: Final = 32
FRAME_HEADER_SIZE: Final = 24
WAL_MAGIC_LE: Final = 0x377F0682
WAL_MAGIC_BE: Final = 0x377F0683
WAL_FORMAT_VERSION: Final = 3007000
MIN_PAGE_SIZE: Final = 512
MAX_PAGE_SIZE: Final = 65536
VERIFY_MODES: Final = ("auto", "numpy", "python")

BytesLike = bytes | bytearray | memoryview

_MASK: Final = 0xFFFFFFFF
_HEADER_STRUCT: Final = struct.Struct(">8I")
_FRAME_HEADER_STRUCT: Final = struct.Struct(">6I")
# Large enough to amortise the per-batch numpy overhead, small enough that a stale tail after a
# WAL restart costs at most one batch of wasted work before the scan stops.
_BATCH_BYTES: Final = 4 << 20
# An elementwise multiply plus row sum over cache-sized blocks runs about 1.6x faster here than
# numpy's integer matmul, which has no BLAS and no SIMD kernel.
_PRODUCT_BYTES: Final = 512 << 10
# Importing numpy takes 60-70 ms, a third of the daemon's start-up, and 15 MiB of memory: the
# daemon imports it in the background once every database has started (preload_numpy).  Until
# then, a scan of at most this much (16 frames of 4 KiB, about 1.3 ms in Python) is checked in
# Python, while such scans add up to no more than a few milliseconds (~60 MB/s).
_PYTHON_SCAN_BYTES: Final = 64 << 10
_PYTHON_BUDGET_BYTES: Final = 256 << 10
_numpy_loaded = False
_python_scanned = 0


@dataclass(frozen=True)
class WalHeader:
    """The 32-byte header at the start of a ``-wal`` file."""

    magic: int
    version: int
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    cksum1: int
    cksum2: int
    big_endian: bool  # checksum words are read big-endian (magic & 1)

    @property
    def salts(self) -> tuple[int, int]:
        """(salt1, salt2): identifies the WAL generation."""
        return (self.salt1, self.salt2)

    @property
    def checksum(self) -> tuple[int, int]:
        """The header checksum, which seeds the checksum chain of frame 0."""
        return (self.cksum1, self.cksum2)

    @property
    def frame_size(self) -> int:
        """Bytes per frame: the 24-byte frame header plus one page."""
        return FRAME_HEADER_SIZE + self.page_size


@dataclass(frozen=True)
class FrameHeader:
    """The 24-byte header in front of each page in the WAL."""

    pgno: int
    db_pages: int  # database size in pages after the commit; 0 unless this is a commit frame
    salt1: int
    salt2: int
    cksum1: int
    cksum2: int

    @property
    def salts(self) -> tuple[int, int]:
        """(salt1, salt2) copied from the WAL header when the frame was written."""
        return (self.salt1, self.salt2)

    @property
    def checksum(self) -> tuple[int, int]:
        """The stored running checksum after this frame."""
        return (self.cksum1, self.cksum2)

    @property
    def is_commit(self) -> bool:
        """True for the last frame of a transaction."""
        return self.db_pages != 0


@dataclass(frozen=True)
class Commit:
    """A commit frame found by a scan."""

    last_frame: int  # absolute (0-based) index of the commit frame in the WAL
    db_pages: int  # database size in pages after this commit


@dataclass(frozen=True)
class ScanResult:
    """The valid prefix of a run of frames and the commits inside it."""

    valid_frames: int  # absolute index of the first frame that is not valid
    commits: tuple[Commit, ...]
    last_commit_frame: int  # absolute index of the last commit frame, or start_frame - 1 if none
    checksum_at_commit: tuple[int, int]  # running checksum after the last commit (input s if none)
    # Page number of each valid frame (index i is frame start_frame + i).
    pgnos: list[int] = field(repr=False)
    checksum_at_end: tuple[int, int]  # running checksum after the last valid frame (s if none)


def _is_valid_page_size(page_size: int) -> bool:
    return MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE and page_size & (page_size - 1) == 0


def frame_offset(frame: int, page_size: int) -> int:
    """File offset of the frame header of absolute frame index ``frame``."""
    return WAL_HEADER_SIZE + frame * (FRAME_HEADER_SIZE + page_size)


def wal_checksum(data: BytesLike, s1: int = 0, s2: int = 0, big_endian: bool = False) -> tuple[int, int]:
    """Reference pure-Python WAL checksum of ``data`` continuing from ``(s1, s2)``."""
    if len(data) % 8:
        raise ValueError(f"WAL checksum input must be a multiple of 8 bytes, got {len(data)}")
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    it = iter(words)
    for x0, x1 in zip(it, it, strict=True):
        s1 = (s1 + x0 + s2) & _MASK
        s2 = (s2 + x1 + s1) & _MASK
    return (s1, s2)


def parse_wal_header(data: BytesLike) -> WalHeader | None:
    """Parse the WAL header at the start of ``data``; None if absent, short or invalid."""
    if len(data) < WAL_HEADER_SIZE:
        return None
    magic, version, page_size, ckpt_seq, salt1, salt2, ck1, ck2 = _HEADER_STRUCT.unpack_from(data, 0)
    if magic not in (WAL_MAGIC_LE, WAL_MAGIC_BE) or version != WAL_FORMAT_VERSION:
        return None
    # SQLite stores 65536 literally here and treats any other size (including the db header's
    # "1") as an invalid WAL, so accepting more would ship frames SQLite itself would ignore.
    if not _is_valid_page_size(page_size):
        return None
    big_endian = bool(magic & 1)
    if wal_checksum(memoryview(data)[:24], big_endian=big_endian) != (ck1, ck2):
        return None
    return WalHeader(magic, version, page_size, ckpt_seq, salt1, salt2, ck1, ck2, big_endian)


def parse_frame_header(data: BytesLike, offset: int = 0) -> FrameHeader:
    """Parse the 24-byte frame header at ``offset`` in ``data`` (no validation)."""
    if len(data) - offset < FRAME_HEADER_SIZE:
        raise ValueError(f"frame header needs {FRAME_HEADER_SIZE} bytes at offset {offset}")
    return FrameHeader(*_FRAME_HEADER_STRUCT.unpack_from(data, offset))


def frame_page(buf: BytesLike, header: WalHeader, index_in_buf: int) -> memoryview:
    """The page bytes of the ``index_in_buf``-th frame of ``buf`` (a view, no copy)."""
    mv = memoryview(buf).cast("B")
    start = index_in_buf * header.frame_size + FRAME_HEADER_SIZE
    if index_in_buf < 0 or start + header.page_size > len(mv):
        raise IndexError(f"frame {index_in_buf} is not complete in a buffer of {len(mv)} bytes")
    return mv[start : start + header.page_size]


# ---------------------------------------------------------------------------- closed form


@dataclass(frozen=True)
class _Coefficients:
    rows: U32Array  # (2, words per frame): out = rows·frame_words + power·s_in (mod 2**32)
    power: tuple[int, int, int, int]  # Aⁿ as (a, b, c, d), row-major


@cache  # at most 8 valid page sizes
def _coefficients(page_size: int) -> _Coefficients:
    """Closed-form coefficients of the checksum of one whole frame, for a page size."""
    import numpy as np

    words_per_frame = (FRAME_HEADER_SIZE + page_size) // 4
    pairs = 1 + page_size // 8  # frame-header bytes 0..7, then the page
    powers = np.empty((pairs + 1, 4), dtype=np.uint64)  # powers[j] = Aʲ mod 2**32
    a, b, c, d = 1, 0, 0, 1
    for j in range(pairs + 1):
        powers[j] = (a, b, c, d)
        a, b, c, d = (a + b) & _MASK, (a + 2 * b) & _MASK, (c + d) & _MASK, (c + 2 * d) & _MASK
    # Pair k is multiplied by A^(pairs-1-k): x0 contributes (a+b, c+d), x1 contributes (b, d).
    rev = powers[pairs - 1 :: -1]
    mask = np.uint64(_MASK)
    first = np.concatenate(([0], np.arange(6, words_per_frame, 2)))  # word index of each x0
    rows = np.zeros((2, words_per_frame), dtype=np.uint32)  # zero for salts and stored checksum
    rows[0, first] = (rev[:, 0] + rev[:, 1]) & mask
    rows[1, first] = (rev[:, 2] + rev[:, 3]) & mask
    rows[0, first + 1] = rev[:, 1]
    rows[1, first + 1] = rev[:, 3]
    rows.setflags(write=False)  # shared through the cache
    pa, pb, pc, pd = (int(v) for v in powers[pairs])
    return _Coefficients(rows, (pa, pb, pc, pd))


def _words(buf: memoryview, page_size: int, first: int, count: int, dtype: str) -> U32Array:
    """``count`` frames from frame ``first`` of ``buf`` as a (count, words per frame) view."""
    import numpy as np

    fsz = FRAME_HEADER_SIZE + page_size
    arr: U32Array = np.frombuffer(buf, dtype=dtype, count=count * fsz // 4, offset=first * fsz)
    return arr.reshape(count, fsz // 4)


def _closed_form(
    words: U32Array, stored: U32Array, s: tuple[int, int], page_size: int
) -> tuple[U32Array, U32Array]:
    """Checksum of each frame row, each chained from the previous row's stored checksum."""
    import numpy as np

    coeffs = _coefficients(page_size)
    count, width = words.shape
    prod = np.empty((count, 2), dtype=np.uint32)
    step = max(1, _PRODUCT_BYTES // (4 * width))
    scratch = np.empty((min(step, count), width), dtype=np.uint32)
    for lo in range(0, count, step):
        block = words[lo : lo + step]
        tmp = scratch[: len(block)]
        for col in (0, 1):
            # uint32 wraps mod 2**32: exactly the arithmetic of the checksum (see module docstring).
            np.multiply(block, coeffs.rows[col], out=tmp)
            np.add.reduce(tmp, axis=1, dtype=np.uint32, out=prod[lo : lo + len(block), col])
    prev1 = np.empty(len(words), dtype=np.uint32)
    prev2 = np.empty(len(words), dtype=np.uint32)
    prev1[0], prev2[0] = s
    prev1[1:] = stored[:-1, 0]
    prev2[1:] = stored[:-1, 1]
    a, b, c, d = (np.uint32(v) for v in coeffs.power)
    out1: U32Array = a * prev1 + b * prev2 + prod[:, 0]
    out2: U32Array = c * prev1 + d * prev2 + prod[:, 1]
    return out1, out2


def frame_checksums(buf: BytesLike, header: WalHeader, s: tuple[int, int]) -> U32Array:
    """(n, 2) closed-form checksums of the frames in ``buf``, each from its predecessor's stored one."""
    import numpy as np

    mv = memoryview(buf).cast("B")
    count = len(mv) // header.frame_size
    if count == 0:
        return np.empty((0, 2), dtype=np.uint32)
    words = _words(mv, header.page_size, 0, count, ">u4" if header.big_endian else "<u4")
    fields = _words(mv, header.page_size, 0, count, ">u4")[:, :6]
    out1, out2 = _closed_form(words, fields[:, 4:6].astype(np.uint32), s, header.page_size)
    return np.stack([out1, out2], axis=1)


# ---------------------------------------------------------------------------- scanning


def scan_frames(
    buf: BytesLike,
    header: WalHeader,
    start_frame: int,
    s: tuple[int, int],
    *,
    verify: str = "auto",
) -> ScanResult:
    """Valid prefix and commits of the frames in ``buf``, which starts at frame ``start_frame``.

    ``verify``: ``numpy`` (the vectorised closed form), ``python`` (the frame-by-frame oracle) or
    ``auto``: numpy, except that small scans run in Python until numpy is first worth importing.
    """
    global _python_scanned
    # s is the running checksum after frame start_frame - 1 (the header checksum for frame 0).
    if start_frame < 0:
        raise ValueError(f"start_frame must be >= 0, got {start_frame}")
    mv = memoryview(buf).cast("B")
    if verify == "auto":
        small = len(mv) <= _PYTHON_SCAN_BYTES and _python_scanned < _PYTHON_BUDGET_BYTES
        if small and not _numpy_loaded:
            _python_scanned += len(mv)
            verify = "python"
        else:
            verify = "numpy"
    if verify == "numpy":
        return _scan_numpy(mv, header, start_frame, s)
    if verify == "python":
        return _scan_python(mv, header, start_frame, s)
    raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")


def numpy_ready() -> bool:
    """Whether numpy is imported (a scan would not wait for the import)."""
    return _numpy_loaded


def preload_numpy() -> None:
    """Import numpy now (in a background thread), so no scan pays for the import later.

    Imported by the first big scan instead, it took 60-100 ms of CPU in the middle of an app's
    burst of commits and cost that burst about a third of its throughput.
    """
    global _numpy_loaded
    import numpy  # noqa: F401

    _numpy_loaded = True


def _scan_python(mv: memoryview, header: WalHeader, start_frame: int, s: tuple[int, int]) -> ScanResult:
    fsz = header.frame_size
    s1, s2 = s
    commits: list[Commit] = []
    pgnos: list[int] = []
    at_commit = s
    for i in range(len(mv) // fsz):
        off = i * fsz
        pgno, db_pages, salt1, salt2, ck1, ck2 = _FRAME_HEADER_STRUCT.unpack_from(mv, off)
        if pgno == 0 or (salt1, salt2) != header.salts:
            break
        t1, t2 = wal_checksum(mv[off : off + 8], s1, s2, header.big_endian)
        t1, t2 = wal_checksum(mv[off + FRAME_HEADER_SIZE : off + fsz], t1, t2, header.big_endian)
        if (t1, t2) != (ck1, ck2):
            break
        s1, s2 = t1, t2
        pgnos.append(pgno)
        if db_pages:
            commits.append(Commit(start_frame + i, db_pages))
            at_commit = (s1, s2)
    return ScanResult(
        valid_frames=start_frame + len(pgnos),
        commits=tuple(commits),
        last_commit_frame=commits[-1].last_frame if commits else start_frame - 1,
        checksum_at_commit=at_commit,
        pgnos=pgnos,
        checksum_at_end=(s1, s2),
    )


def _scan_numpy(mv: memoryview, header: WalHeader, start_frame: int, s: tuple[int, int]) -> ScanResult:
    global _numpy_loaded
    import numpy as np

    _numpy_loaded = True
    fsz = header.frame_size
    total = len(mv) // fsz
    batch = max(1, _BATCH_BYTES // fsz)
    word_dtype = ">u4" if header.big_endian else "<u4"
    salt1, salt2 = (np.uint32(v) for v in header.salts)
    commits: list[Commit] = []
    pgnos: list[int] = []
    at_commit = s
    prev = s
    done = 0
    while done < total:
        count = min(batch, total - done)
        words = _words(mv, header.page_size, done, count, word_dtype)
        # Header fields are big-endian whatever the checksum byte order.
        fields = _words(mv, header.page_size, done, count, ">u4")[:, :6].astype(np.uint32)
        out1, out2 = _closed_form(words, fields[:, 4:6], prev, header.page_size)
        ok = (
            (out1 == fields[:, 4])
            & (out2 == fields[:, 5])
            & (fields[:, 0] != 0)
            & (fields[:, 2] == salt1)
            & (fields[:, 3] == salt2)
        )
        bad = np.flatnonzero(~ok)
        valid = int(bad[0]) if bad.size else count
        if valid:
            pgnos += fields[:valid, 0].tolist()
            where = np.flatnonzero(fields[:valid, 1])
            if where.size:
                # tolist() once: per-element numpy scalar access dominated small-commit workloads.
                base = start_frame + done
                pages = fields[where, 1].tolist()
                commits.extend(Commit(base + i, n) for i, n in zip(where.tolist(), pages, strict=True))
                last = int(where[-1])
                at_commit = (int(fields[last, 4]), int(fields[last, 5]))
            prev = (int(fields[valid - 1, 4]), int(fields[valid - 1, 5]))
        done += valid
        if valid < count:
            break
    return ScanResult(
        valid_frames=start_frame + done,
        commits=tuple(commits),
        last_commit_frame=commits[-1].last_frame if commits else start_frame - 1,
        checksum_at_commit=at_commit,
        pgnos=pgnos,
        checksum_at_end=prev,
    )


__all__ = [
    "FRAME_HEADER_SIZE",
    "MAX_PAGE_SIZE",
    "MIN_PAGE_SIZE",
    "WAL_FORMAT_VERSION",
    "WAL_HEADER_SIZE",
    "WAL_MAGIC_BE",
    "WAL_MAGIC_LE",
    "Commit",
    "FrameHeader",
    "ScanResult",
    "WalHeader",
    "frame_checksums",
    "frame_offset",
    "frame_page",
    "parse_frame_header",
    "parse_wal_header",
    "scan_frames",
    "wal_checksum",
]
