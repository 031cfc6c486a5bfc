"""Reading and writing accelerator images: HDF5 schema version 2 (documented in docs/image-format.md).

Writing goes to a temporary file that is renamed at the end, so a crash never leaves a partial
image. Reading validates everything the emulator relies on and names the file and the layer in
every error.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import h5py
import numpy as np

from accel_sim.attributes import integer, text
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
    """Write ``image`` to ``path`` (HDF5, schema version :data:`SCHEMA_VERSION`)."""
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
                "input_mean": np.asarray(image.input_mean, np.float64),
                "input_std": np.asarray(image.input_std, np.float64),
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
    version = integer(attrs.get("schema_version", -1), "root attribute schema_version")
    if version > SCHEMA_VERSION:
        raise AccelSimError(f"{str(path)!r} has image schema version {version}; this accel-sim reads up to "
                            f"version {SCHEMA_VERSION}: upgrade accel-sim")
    if version < 1:
        raise AccelSimError(f"{str(path)!r} has an invalid schema version {version}")
    for key in ("format", "model", "input_shape", "input_format", "class_names", "num_layers"):
        if key not in attrs:
            raise AccelSimError(f"root attribute {key!r} is missing")
    if not isinstance(f.get("layers"), h5py.Group):
        raise AccelSimError("the 'layers' group is missing")
    names = sorted(f["layers"].keys())
    count = integer(attrs["num_layers"], "root attribute num_layers")
    if count != len(names) or names != [f"{i:03d}" for i in range(count)]:
        raise AccelSimError(f"root attribute num_layers is {count}, but the layers group holds {len(names)} "
                            f"entries ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}); expected 000..")
    for key in names:
        if not isinstance(f["layers"][key], h5py.Group):
            raise AccelSimError(f"layers/{key} must be a group")
    layers = tuple(_read_layer(f["layers"][key], key) for key in names)
    model = text(attrs["model"], "root attribute model")
    if not model:
        raise AccelSimError("root attribute model must name the model, got ''")
    try:
        class_names = json.loads(text(attrs["class_names"], "root attribute class_names"))
    except json.JSONDecodeError as exc:
        raise AccelSimError(f"root attribute class_names is not a JSON list ({exc})") from None
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise AccelSimError(f"root attribute class_names must be a JSON list of names, got {class_names!r}")
    image = Image(
        model=model,
        format_name=text(attrs["format"], "root attribute format"),
        input_shape=_integers(attrs["input_shape"], "root attribute input_shape", 3, low=1),
        input_format=format_from_text(text(attrs["input_format"], "root attribute input_format"),
                                      "root attribute input_format"),
        class_names=tuple(class_names),
        layers=layers,
        source_sha256=text(attrs.get("source_sha256", ""), "root attribute source_sha256"),
        tool_version=text(attrs.get("tool_version", ""), "root attribute tool_version"),
        hardening=text(attrs.get("hardening", ""), "root attribute hardening"),
        **_normalization(attrs, version),
    )
    check_format_name(image)
    return image


def _normalization(attrs, version: int) -> dict:
    """``input_mean`` and ``input_std`` (schema 2 on; schema 1 images all used CIFAR-10's)."""
    if version < 2:
        return {}
    out = {}
    for key in ("input_mean", "input_std"):
        if key not in attrs:
            raise AccelSimError(f"root attribute {key!r} is missing")
        values = np.atleast_1d(np.asarray(attrs[key]))
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.floating):
            raise AccelSimError(f"root attribute {key} must be a list of numbers, got {attrs[key]!r}")
        out[key] = tuple(values.tolist())
    return out


def check_format_name(image: Image) -> None:
    """Refuse an image whose nominal format (``fp32``, ``fixedW``, ``fixedWaA``) is not what its
    layers store."""
    match = re.fullmatch(r"fp32|fixed(\d+)(?:a(\d+))?", image.format_name)
    if not match:
        raise AccelSimError(f"root attribute format must be fp32, fixedW or fixedWaA, got {image.format_name!r}")
    layers = image.weighted_layers
    if image.format_name == "fp32":
        if not all(layer.weight_format.is_float for layer in layers):
            raise AccelSimError("root attribute format is fp32, but the layers store fixed-point words")
        return
    weight_bits = int(match.group(1))
    act_bits = int(match.group(2) or weight_bits)
    if any(layer.weight_format.is_float or layer.weight_format.word_bits != weight_bits for layer in layers):
        raise AccelSimError(f"root attribute format is {image.format_name}, but the layers do not all store "
                            f"{weight_bits}-bit weights")
    if any(layer.in_format.word_bits != act_bits for layer in layers):
        raise AccelSimError(f"root attribute format is {image.format_name}, but the layers do not all read "
                            f"{act_bits}-bit activations")


def _integers(value, what: str, count: int, low: int) -> tuple[int, ...]:
    values = np.atleast_1d(np.asarray(value))
    if values.ndim != 1 or values.size != count:
        raise AccelSimError(f"{what} must be {count} integers >= {low}, got {value!r}")
    out = tuple(integer(v, what) for v in values)
    if min(out) < low or max(out) > 2**31:
        raise AccelSimError(f"{what} must be {count} integers in {low}..{2**31}, got {out}")
    return out


def _read_layer(g: h5py.Group, key: str) -> Layer:
    where = f"layer {key}"
    try:
        op = text(g.attrs["op"], "attribute op")
        name = text(g.attrs["name"], "attribute name")
        where = f"layer {key} ({name}, {op})"
        cls = _LAYER_TYPES.get(op)
        if cls is None:
            raise AccelSimError(f"unknown op {op!r}; known: {', '.join(_LAYER_TYPES)}")
        in_dims, out_dims = (1 if cls is Linear else 3), (1 if cls in (Linear, Flatten) else 3)
        common = dict(name=name, in_shape=_integers(g.attrs["in_shape"], "attribute in_shape", in_dims, 1),
                      out_shape=_integers(g.attrs["out_shape"], "attribute out_shape", out_dims, 1))
        if cls is Flatten:
            return Flatten(**common, format=_format(g, "format"))
        if cls is MaxPool2d:
            return MaxPool2d(**common, kernel=_pair(g, "kernel", 1), stride=_pair(g, "stride", 1),
                             padding=_pair(g, "padding", 0), format=_format(g, "format"))
        formats = {k: _format(g, k) for k in ("weight_format", "bias_format", "in_format")}
        out_text = text(g.attrs["out_format"], "attribute out_format")
        formats["out_format"] = format_from_text(out_text, "out_format") if out_text else None
        threshold = g.attrs["threshold"]
        if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (float, int, np.floating, np.integer)):
            raise AccelSimError(f"attribute threshold must be a number (NaN for none), got {threshold!r}")
        threshold = float(threshold)
        arrays = {k: _read_words(g, k, formats[f"{k}_format"]) for k in ("weight", "bias")}
        fields = dict(common, **formats, **arrays, activation=text(g.attrs["activation"], "attribute activation"),
                      threshold=None if np.isnan(threshold) else threshold)
        if cls is Conv2d:
            fields.update(stride=_pair(g, "stride", 1), padding=_pair(g, "padding", 0))
        return cls(**fields)
    except KeyError as exc:
        raise AccelSimError(f"{where}: attribute or dataset {exc} is missing") from None
    except ValueError as exc:
        raise AccelSimError(f"{where}: {exc}") from None


def _format(g: h5py.Group, key: str):
    return format_from_text(text(g.attrs[key], f"attribute {key}"), key)


def _pair(g: h5py.Group, key: str, low: int) -> tuple[int, int]:
    return _integers(g.attrs[key], f"attribute {key}", 2, low)


def _read_words(g: h5py.Group, key: str, fmt) -> np.ndarray:
    if key not in g:
        raise AccelSimError(f"dataset {key!r} is missing")
    if not isinstance(g[key], h5py.Dataset):
        raise AccelSimError(f"{key!r} must be a dataset")
    data = g[key][()]
    if not isinstance(data, np.ndarray) or data.ndim == 0:
        raise AccelSimError(f"dataset {key!r} must be an array, got a scalar")
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
