"""Reading and writing accelerator images: HDF5 schema version 1 (documented in docs/image-format.md).

Writing goes to a temporary file that is renamed at the end, so a crash never leaves a partial
image. Reading validates everything the emulator relies on and names the file and the layer in
every error.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from accel_sim.errors import AccelSimError
from accel_sim.image.records import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Conv2d,
    Flatten,
    Image,
    Layer,
    Linear,
    MaxPool2d,
    WeightedLayer,
    format_from_text,
)

logger = logging.getLogger(__name__)

_LAYER_TYPES = {cls.op: cls for cls in (Conv2d, Linear, MaxPool2d, Flatten)}
_COMPRESS_MIN_ELEMENTS = 1024  # smaller datasets are not worth a chunked, filtered layout


def write_image(image: Image, path: str | os.PathLike) -> Path:
    """Write ``image`` to ``path`` (HDF5, schema version 1)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({
                "schema": SCHEMA_NAME,
                "schema_version": SCHEMA_VERSION,
                "format": image.format_name,
                "model": image.model,
                "input_shape": np.asarray(image.input_shape, np.int64),
                "input_format": image.input_format.name,
                "class_names": json.dumps(list(image.class_names)),
                "source_sha256": image.source_sha256,
                "tool_version": image.tool_version,
                "num_layers": len(image.layers),
            })
            if image.hardening:
                f.attrs["hardening"] = image.hardening
            group = f.create_group("layers")
            for i, layer in enumerate(image.layers):
                _write_layer(group.create_group(f"{i:03d}"), layer)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_layer(g: h5py.Group, layer: Layer) -> None:
    g.attrs["op"] = layer.op
    g.attrs["name"] = layer.name
    g.attrs["in_shape"] = np.asarray(layer.in_shape, np.int64)
    g.attrs["out_shape"] = np.asarray(layer.out_shape, np.int64)
    if isinstance(layer, WeightedLayer):
        g.attrs.update({
            "weight_format": layer.weight_format.name,
            "bias_format": layer.bias_format.name,
            "in_format": layer.in_format.name,
            "out_format": "" if layer.out_format is None else layer.out_format.name,
            "activation": layer.activation,
            "threshold": np.nan if layer.threshold is None else float(layer.threshold),
        })
        if isinstance(layer, Conv2d):
            g.attrs["stride"] = np.asarray(layer.stride, np.int64)
            g.attrs["padding"] = np.asarray(layer.padding, np.int64)
        for key, fmt in (("weight", layer.weight_format), ("bias", layer.bias_format)):
            data = getattr(layer, key).astype(fmt.storage_dtype())
            big = data.size >= _COMPRESS_MIN_ELEMENTS
            g.create_dataset(key, data=data, compression="gzip" if big else None, shuffle=big)
    else:
        g.attrs["format"] = layer.format.name
        if isinstance(layer, MaxPool2d):
            g.attrs["kernel"] = np.asarray(layer.kernel, np.int64)
            g.attrs["stride"] = np.asarray(layer.stride, np.int64)
            g.attrs["padding"] = np.asarray(layer.padding, np.int64)


def read_image(path: str | os.PathLike) -> Image:
    """Open and validate an image file.

    Raises
    ------
    ValueError
        If the file is missing, truncated, not an accel-sim image, of a newer schema version, or any
        layer is malformed (missing dataset, wrong shape or dtype, raw value outside its word, broken
        chain of shapes or formats); the message names the file and the layer.
    """
    path = Path(path)
    if not path.is_file():
        raise AccelSimError(f"image file {str(path)!r} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise AccelSimError(f"image file {str(path)!r} is not a readable HDF5 file (truncated or corrupt?): {exc}") from None
    try:
        with f:
            return _read(f, path)
    except ValueError as exc:
        message = str(exc)
        raise AccelSimError(message if str(path) in message else f"image file {str(path)!r}: {message}") from None
    except (OSError, KeyError, TypeError) as exc:
        raise AccelSimError(f"image file {str(path)!r} is damaged ({type(exc).__name__}: {exc})") from None


def _read(f: h5py.File, path: Path) -> Image:
    attrs = f.attrs
    if attrs.get("schema") != SCHEMA_NAME:
        raise AccelSimError(f"{str(path)!r} is an HDF5 file but not an accel-sim image (no schema={SCHEMA_NAME!r} attribute)")
    version = int(attrs.get("schema_version", -1))
    if version > SCHEMA_VERSION:
        raise AccelSimError(f"{str(path)!r} has image schema version {version}; this accel-sim reads up to "
                         f"version {SCHEMA_VERSION}: upgrade accel-sim")
    if version < 1:
        raise AccelSimError(f"{str(path)!r} has an invalid schema version {version}")
    for key in ("format", "model", "input_shape", "input_format", "class_names", "num_layers"):
        if key not in attrs:
            raise AccelSimError(f"root attribute {key!r} is missing")
    if "layers" not in f:
        raise AccelSimError("the 'layers' group is missing")
    names = sorted(f["layers"].keys())
    expected = [f"{i:03d}" for i in range(int(attrs["num_layers"]))]
    if names != expected:
        raise AccelSimError(f"layers group holds {names[:5]}..., expected {int(attrs['num_layers'])} layers 000.."
                         f"{int(attrs['num_layers']) - 1:03d}")
    layers = tuple(_read_layer(f["layers"][key], key) for key in names)
    try:
        return Image(
            model=str(attrs["model"]),
            format_name=str(attrs["format"]),
            input_shape=tuple(int(v) for v in attrs["input_shape"]),
            input_format=format_from_text(str(attrs["input_format"]), "root attribute input_format"),
            class_names=tuple(json.loads(str(attrs["class_names"]))),
            layers=layers,
            source_sha256=str(attrs.get("source_sha256", "")),
            tool_version=str(attrs.get("tool_version", "")),
            hardening=str(attrs.get("hardening", "")),
        )
    except json.JSONDecodeError as exc:
        raise AccelSimError(f"root attribute class_names is not a JSON list ({exc})") from None


def _read_layer(g: h5py.Group, key: str) -> Layer:
    where = f"layer {key}"
    try:
        op = str(g.attrs["op"])
        where = f"layer {key} ({g.attrs.get('name', '?')}, {op})"
        cls = _LAYER_TYPES.get(op)
        if cls is None:
            raise AccelSimError(f"unknown op {op!r}; known: {', '.join(_LAYER_TYPES)}")
        common = dict(name=str(g.attrs["name"]), in_shape=tuple(int(v) for v in g.attrs["in_shape"]),
                      out_shape=tuple(int(v) for v in g.attrs["out_shape"]))
        if cls is Flatten:
            return Flatten(**common, format=format_from_text(str(g.attrs["format"]), "format"))
        if cls is MaxPool2d:
            return MaxPool2d(**common, kernel=_pair(g, "kernel"), stride=_pair(g, "stride"),
                             padding=_pair(g, "padding"), format=format_from_text(str(g.attrs["format"]), "format"))
        formats = {k: format_from_text(str(g.attrs[k]), k) for k in ("weight_format", "bias_format", "in_format")}
        out_text = str(g.attrs["out_format"])
        formats["out_format"] = format_from_text(out_text, "out_format") if out_text else None
        threshold = float(g.attrs["threshold"])
        arrays = {k: _read_words(g, k, formats[f"{k}_format"]) for k in ("weight", "bias")}
        fields = dict(common, **formats, **arrays, activation=str(g.attrs["activation"]),
                      threshold=None if np.isnan(threshold) else threshold)
        if cls is Conv2d:
            fields.update(stride=_pair(g, "stride"), padding=_pair(g, "padding"))
        return cls(**fields)
    except KeyError as exc:
        raise AccelSimError(f"{where}: attribute or dataset {exc} is missing") from None
    except ValueError as exc:
        raise AccelSimError(f"{where}: {exc}") from None


def _pair(g: h5py.Group, key: str) -> tuple[int, int]:
    values = tuple(int(v) for v in np.atleast_1d(g.attrs[key]))
    if len(values) != 2 or min(values) < 0:
        raise AccelSimError(f"attribute {key} must be two non-negative integers, got {values}")
    return values


def _read_words(g: h5py.Group, key: str, fmt) -> np.ndarray:
    if key not in g:
        raise AccelSimError(f"dataset {key!r} is missing")
    data = g[key][()]
    if fmt.is_float:
        if data.dtype != np.float32:
            raise AccelSimError(f"dataset {key!r} must be float32 for {fmt.name}, got {data.dtype}")
        return data
    if not np.issubdtype(data.dtype, np.signedinteger):
        raise AccelSimError(f"dataset {key!r} must hold signed integers for {fmt.name}, got {data.dtype}")
    data = data.astype(np.int64)
    if data.size and (data.min() < fmt.raw_min or data.max() > fmt.raw_max):
        raise AccelSimError(f"dataset {key!r} holds raw values {data.min()}..{data.max()}, outside the "
                         f"{fmt.word_bits}-bit word of {fmt.name} ({fmt.raw_min}..{fmt.raw_max})")
    return data
