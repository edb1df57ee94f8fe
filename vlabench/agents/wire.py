"""msgpack frames with numpy arrays, as the two policy-serving protocols vlabench speaks put them on the wire.

- **openpi** (``openpi-client``): an array is a map ``{b"__ndarray__": True, b"data": bytes, b"dtype": str,
  b"shape": list}`` (bytes keys), a numpy scalar ``{b"__npgeneric__": True, b"data", b"dtype"}``.
- **vla-eval**: the same fields with str keys (``"__ndarray__"``), and images optionally as
  ``{"__image__": True, "format": "png" | "jpeg" | "raw", ...}``.

``unpack`` reads both; ``pack(obj, style)`` writes one. Only bool/int/uint/float dtypes are accepted, so a
frame can never ask for a pickled object.
"""

from __future__ import annotations

import io
from typing import Any

import msgpack
import numpy as np

ALLOWED_KINDS = frozenset("biuf")


def _dtype(text: str | bytes) -> np.dtype:
    dtype = np.dtype(text.decode() if isinstance(text, bytes) else text)
    if dtype.kind not in ALLOWED_KINDS:
        raise ValueError(f"refusing numpy dtype {dtype} on the wire: only bool/int/uint/float arrays are accepted")
    return dtype


def _encoder(style: str):
    key = (lambda k: k.encode()) if style == "openpi" else (lambda k: k)

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            _dtype(obj.dtype.str)
            return {key("__ndarray__"): True, key("data"): np.ascontiguousarray(obj).tobytes(),
                    key("dtype"): obj.dtype.str, key("shape"): list(obj.shape)}
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(f"cannot send a {type(obj).__name__} over the wire")
    return default


def _decode_image(obj: dict) -> np.ndarray:
    fmt = obj.get("format")
    if fmt == "raw":
        return np.frombuffer(obj["data"], dtype=_dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(obj["data"])).convert("RGB"))


def _object_hook(obj: dict) -> Any:
    for marker in ("__ndarray__", b"__ndarray__"):
        if marker in obj:
            b = isinstance(marker, bytes)
            get = (lambda k: obj[k.encode()]) if b else (lambda k: obj[k])
            return np.frombuffer(get("data"), dtype=_dtype(get("dtype"))).reshape(get("shape")).copy()
    for marker in ("__npgeneric__", b"__npgeneric__"):
        if marker in obj:
            b = isinstance(marker, bytes)
            return _dtype(obj[b"dtype" if b else "dtype"]).type(obj[b"data" if b else "data"])
    if "__image__" in obj:
        return _decode_image(obj)
    return obj


def pack(obj: Any, style: str = "openpi") -> bytes:
    """Serialize ``obj`` (dicts, lists, str, numbers, numpy arrays) in the ``style`` ("openpi" | "vla-eval")."""
    if style not in ("openpi", "vla-eval"):
        raise ValueError(f"unknown wire style {style!r}; valid: openpi, vla-eval")
    return msgpack.packb(obj, default=_encoder(style), use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Deserialize a frame of either style."""
    return msgpack.unpackb(data, object_hook=_object_hook, raw=False, strict_map_key=False)
