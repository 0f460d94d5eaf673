"""Signal-window encodings on the wire and at rest (no Django inside).

On the wire each channel is either
- JSON: {"fs": 250, "samples": [0.12, -0.03, null, ...]}  (null marks a missing sample; kept as
  float32), or
- compact: {"fs": 250, "dtype": "int16" | "float32", "data": "<base64, little-endian>"}
  (int16 -32768 marks a missing sample; float32 must be finite),
with an optional "scale" and "offset": physical value = raw * scale + offset (e.g. mV, or the
PPG's arbitrary units). At rest a window is one .npz holding each channel exactly as received
(int16 stays int16, float32 stays float32, JSON numbers become float32), so every result can be
recomputed from the stored bytes. The .npz is not deflated: sensor samples are mostly noise to
zlib (a real 30-s int16 window: 31.1 KB stored, 23.8 KB deflated, -23 %), and deflating cost
~1 ms of the web worker's CPU per window, 40 % of an upload's (py-spy, bench/pipeline.py). Older
windows stored deflated read the same way (np.load takes both).
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import re
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

INT16_MISSING = -32768
DTYPES: dict[str, np.dtype[np.int16] | np.dtype[np.float32]] = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}


class EncodingError(ValueError):
    """The channel payload cannot be decoded; the message says what is wrong, in words."""


@dataclass(frozen=True)
class Channel:
    """One channel as received: raw values (int16 or float32), rate (Hz), and scale/offset."""

    fs: float
    raw: np.ndarray
    scale: float = 1.0
    offset: float = 0.0

    def physical(self) -> np.ndarray:
        """Values in physical units as float64; missing samples are NaN."""
        values = self.raw.astype(np.float64) * self.scale + self.offset
        if self.raw.dtype == DTYPES["int16"]:
            values[self.raw == INT16_MISSING] = np.nan
        return values

    @property
    def duration_s(self) -> float:
        return len(self.raw) / self.fs


def decode_json_samples(samples: list) -> np.ndarray:
    """JSON numbers -> float32 array; null -> NaN (missing). Anything but numbers and null, and
    numbers that are not finite in float32, are refused."""
    missing = np.fromiter((v is None for v in samples), dtype=bool, count=len(samples))
    for value in samples:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise EncodingError("samples must be numbers (or null for a missing sample)")
    try:
        values = np.array([np.nan if v is None else v for v in samples], dtype=np.float64)
    except OverflowError as exc:  # an integer too large for a float
        raise EncodingError("samples exceed the float32 range") from exc
    present = values[~missing]
    if not np.all(np.isfinite(present)):
        raise EncodingError("samples hold NaN or infinite values; mark a missing sample with null")
    if present.size and np.max(np.abs(present)) > np.finfo(np.float32).max:
        raise EncodingError("samples exceed the float32 range")
    return values.astype(np.float32)


def decode_compact(data: str, dtype: str) -> np.ndarray:
    """base64 little-endian int16/float32 -> array of that dtype."""
    if dtype not in DTYPES:
        raise EncodingError(f"dtype must be one of {sorted(DTYPES)}")
    try:
        buffer = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncodingError("data is not valid base64") from exc
    itemsize = DTYPES[dtype].itemsize
    if len(buffer) % itemsize:
        raise EncodingError(f"data length {len(buffer)} bytes is not a multiple of {itemsize} ({dtype})")
    values = np.frombuffer(buffer, dtype=DTYPES[dtype]).copy()
    if dtype == "float32" and not np.all(np.isfinite(values)):
        raise EncodingError("data holds NaN or infinite values")
    return values


def encode_compact(values: np.ndarray, dtype: str) -> str:
    """Array -> base64 little-endian int16/float32 (what a device sends)."""
    return base64.b64encode(np.ascontiguousarray(values, dtype=DTYPES[dtype]).tobytes()).decode("ascii")


def pack_window(channels: dict[str, Channel]) -> bytes:
    """Channels -> .npz bytes (raw values as received, with rates (Hz), scales, offsets)."""
    arrays: dict[str, np.ndarray] = {}
    for name, channel in channels.items():
        arrays[f"{name}_raw"] = channel.raw
        arrays[f"{name}_meta"] = np.array([channel.fs, channel.scale, channel.offset], dtype=np.float64)
    if all(a.ndim == 1 and a.dtype.str in _PLAIN_DTYPES for a in arrays.values()):
        return _plain_npz(arrays)
    buffer = io.BytesIO()
    # numpy's stub lets a ** key fill savez's allow_pickle: bool, and mypy cannot see that these keys
    # are "<channel>_raw" and "<channel>_meta", never "allow_pickle".
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


_PLAIN_DTYPES = frozenset({"<i2", "<f4", "<f8"})


@functools.lru_cache(maxsize=256)
def _npy_header(descr: str, length: int) -> bytes:
    """The .npy (format 1.0) header numpy writes for a 1-D array of this dtype and length, made by
    numpy itself (so the bytes are np.save's), once per (dtype, length)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": (length,)})
    return buffer.getvalue()


def _plain_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """What np.savez writes for 1-D arrays (a zip of stored, not deflated, .npy members; the same
    .npy bytes, np.load and _plain_arrays read it alike), written directly: np.savez streams each
    member through zipfile with Zip64 headers, 0.075 ms of CPU per window, a quarter of that so.
    A window is far below the 4 GiB that would need Zip64 (at most 120 s x 1000 Hz x 4 bytes)."""
    now = time.localtime()
    dos_time = (now.tm_hour << 11) | (now.tm_min << 5) | (now.tm_sec // 2)
    dos_date = ((now.tm_year - 1980) << 9) | (now.tm_mon << 5) | now.tm_mday
    parts: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for key, array in arrays.items():
        data = _npy_header(array.dtype.str, len(array)) + array.tobytes()
        name = f"{key}.npy".encode("ascii")
        crc, size = zlib.crc32(data), len(data)
        local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, zipfile.ZIP_STORED, dos_time, dos_date, crc, size, size,
                            len(name), 0) + name
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, zipfile.ZIP_STORED, dos_time, dos_date,
                                   crc, size, size, len(name), 0, 0, 0, 0, 0o600 << 16, offset) + name)
        parts += (local, data)
        offset += len(local) + size
    directory = b"".join(central)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(directory), offset, 0)
    return b"".join(parts) + directory + end


# The header pack_window's np.savez writes for a 1-D little-endian int16/float32/float64 array.
_PLAIN_NPY_HEADER = re.compile(rb"\{'descr': '(<i2|<f4|<f8)', 'fortran_order': False, 'shape': \((\d+),\), \} *\n")
_NPY_V1_MAGIC = b"\x93NUMPY\x01\x00"


def _plain_arrays(blob: bytes) -> dict[str, np.ndarray] | None:
    """The arrays of an .npz as pack_window stores it (stored, not deflated; 1-D arrays of the
    dtypes above), read without np.load: np.load parses each array's header with
    ast.literal_eval, which was 3/4 of decoding a window (0.25 ms of the worker's CPU per window,
    0.07 ms this way). None for anything else (an older deflated window, another layout): the
    caller then uses np.load."""
    arrays = {}
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                    return None
                data = archive.read(info)
                if not data.startswith(_NPY_V1_MAGIC):
                    return None
                header_end = 10 + int.from_bytes(data[8:10], "little")
                header = _PLAIN_NPY_HEADER.fullmatch(data[10:header_end])
                if header is None:
                    return None
                dtype, count = np.dtype(header.group(1).decode("ascii")), int(header.group(2))
                if len(data) - header_end != count * dtype.itemsize:
                    return None
                arrays[info.filename[:-4]] = np.frombuffer(data, dtype=dtype, count=count, offset=header_end).copy()
    except (zipfile.BadZipFile, ValueError):
        return None
    return arrays


def unpack_window(blob: bytes) -> dict[str, Channel]:
    """Inverse of pack_window. Never unpickles: object arrays are refused."""
    arrays = _plain_arrays(blob)
    if arrays is None:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    channels = {}
    for name in sorted({key.rsplit("_", 1)[0] for key in arrays}):
        fs, scale, offset = arrays[f"{name}_meta"].tolist()
        channels[name] = Channel(fs=fs, raw=arrays[f"{name}_raw"], scale=scale, offset=offset)
    return channels


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
