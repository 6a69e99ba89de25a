"""Frame compression: zstd, lz4 or none."""

from __future__ import annotations

import threading

import lz4.frame
import zstandard

from bakelite.errors import CorruptionError

CODECS = ("zstd", "lz4", "none")
ZSTD_LEVEL = 3

_local = threading.local()


def _zstd_c() -> zstandard.ZstdCompressor:
    # Compressor objects are not thread-safe; one per thread is cheap and reused.
    c = getattr(_local, "zc", None)
    if c is None:
        c = _local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _zstd_d() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def compress(data: bytes | memoryview, codec: str) -> bytes:
    """Compress one frame."""
    if codec == "zstd":
        return bytes(_zstd_c().compress(data))
    if codec == "lz4":
        return bytes(lz4.frame.compress(data))
    if codec == "none":
        return bytes(data)
    raise ValueError(f"unknown codec {codec!r}")


def decompress(data: bytes | memoryview, codec: str, raw_len: int) -> bytes:
    """Decompress one frame and check it has the recorded length."""
    try:
        if codec == "zstd":
            out = _zstd_d().decompress(data, max_output_size=raw_len)
        elif codec == "lz4":
            out = lz4.frame.decompress(bytes(data))
        elif codec == "none":
            out = bytes(data)
        else:
            raise CorruptionError(f"unknown codec {codec!r} in object header")
    except (zstandard.ZstdError, RuntimeError) as e:
        raise CorruptionError(f"frame does not decompress ({codec}): {e}") from e
    if len(out) != raw_len:
        raise CorruptionError(f"frame decompressed to {len(out)} bytes, header says {raw_len}")
    return bytes(out)
