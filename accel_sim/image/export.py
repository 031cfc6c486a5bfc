"""Export a PyTorch model to an accelerator image.

Any ``nn.Module`` whose forward is a chain of supported layers can be exported (bring your own
model): Conv2d (any stride/padding, groups 1, dilation 1), Linear, ReLU, MaxPool2d, BatchNorm2d
(folded into the preceding convolution), Flatten / ``torch.flatten(x, 1)`` and Dropout (dropped).
The chain is read with ``torch.fx``, so a forward with branches or other operations is refused
with the name of the offending node.
"""

from __future__ import annotations

import logging
import operator
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from accel_sim import __version__
from accel_sim.data import CIFAR10_MEAN, CIFAR10_STD, normalize
from accel_sim.errors import AccelSimError
from accel_sim.image.records import Conv2d, Flatten, Image, Linear, MaxPool2d, check_normalization, conv_output_hw
from accel_sim.numerics import Fixed, Float32, format_for, frac_bits_for, quantize
from accel_sim.numerics.formats import MAX_ABS_FRAC_BITS

logger = logging.getLogger(__name__)

MAX_BIAS_BITS = 32

SUPPORTED_MODULES = (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d, nn.Flatten, nn.Dropout)
_RELU_FUNCTIONS = (F.relu, torch.relu)
_FLATTEN_FUNCTIONS = (torch.flatten,)


@dataclass
class _Step:
    """One float operation of the folded chain."""

    kind: str  # conv2d | linear | maxpool2d | flatten
    name: str
    weight: np.ndarray | None = None  # float64
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    kernel: tuple[int, int] = (1, 1)
    relu: bool = False


def parse_export_format(text: str) -> tuple[int | None, int | None]:
    """An export format's text: ``fp32`` → (None, None); ``fixedW`` → (W, None), each tensor's
    format calibrated; ``fixedW.F`` → (W, F), F fractional bits in every tensor (``fixed32.16`` is
    Q15.16). W lies in 2..32."""
    match = re.fullmatch(r"fp32|fixed(\d+)(?:\.(-?\d+))?", text) if isinstance(text, str) else None
    if not match:
        raise AccelSimError(f"format must be fp32, fixedW (e.g. fixed16) or fixedW.F (e.g. fixed32.16), got {text!r}")
    if match.group(1) is None:
        return None, None
    bits = int(match.group(1))
    if not 2 <= bits <= 32:
        raise AccelSimError(f"format fixedW needs a word width W in 2..32 bits, got {text!r}")
    return bits, None if match.group(2) is None else int(match.group(2))


def image_format_name(weight_bits: int | None, act_bits: int | None) -> str:
    """``fp32``, ``fixed16`` or, with different activation width, ``fixed16a8``."""
    if weight_bits is None:
        return "fp32"
    return f"fixed{weight_bits}" if act_bits in (None, weight_bits) else f"fixed{weight_bits}a{act_bits}"


def export_model(
    model: nn.Module,
    calibration: np.ndarray,
    weight_bits: int | None,
    act_bits: int | None = None,
    model_name: str = "model",
    class_names: tuple[str, ...] | None = None,
    source_sha256: str = "",
    weight_percentile: float | None = None,
    frac_bits: int | None = None,
    input_mean: tuple[float, ...] = CIFAR10_MEAN,
    input_std: tuple[float, ...] = CIFAR10_STD,
) -> Image:
    """Fold, calibrate and quantise ``model`` into an :class:`Image`.

    Parameters
    ----------
    model : torch.nn.Module
        A chain of supported layers; it is not modified.
    calibration : numpy.ndarray
        ``uint8`` images ``(N, 3, H, W)`` (training images) whose largest activations set the
        activation formats.
    weight_bits : int or None
        Weight word width in bits (2..32); None exports ``fp32``.
    act_bits : int or None
        Activation word width in bits; default ``weight_bits``.
    weight_percentile : float or None
        Size the weight formats for this percentile of ``|w|`` instead of the maximum (larger
        weights saturate).
    frac_bits : int or None
        One fixed split for every tensor (weights, biases, activations, input): ``frac_bits``
        fractional bits, e.g. 16 with 32-bit words for Q15.16; None sizes each tensor's format
        from its calibrated range.
    input_mean, input_std : tuple of float
        The normalisation the model was trained with, one value per input channel: pixels enter
        as ``(x / 255 - mean) / std``. Stored in the image (default: CIFAR-10's statistics).

    Values that saturate (outside a user-given split, or past a weight percentile) are counted
    and logged per layer as warnings.
    """
    if weight_bits is None and act_bits is not None:
        raise AccelSimError("act_bits needs weight_bits: an fp32 image stores float32 activations")
    if frac_bits is not None:
        if weight_bits is None:
            raise AccelSimError("frac_bits needs weight_bits: an fp32 image has no fixed-point split")
        if weight_percentile is not None:
            raise AccelSimError("frac_bits and weight_percentile exclude each other: a given split sizes no format")
        if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or abs(frac_bits) > MAX_ABS_FRAC_BITS:
            raise AccelSimError(f"frac_bits must be an integer in -{MAX_ABS_FRAC_BITS}..{MAX_ABS_FRAC_BITS}, "
                                f"got {frac_bits!r}")
    act_bits = weight_bits if act_bits is None else act_bits
    if calibration.dtype != np.uint8 or calibration.ndim != 4 or len(calibration) == 0:
        raise AccelSimError(f"calibration images must be a non-empty uint8 array (N, C, H, W), got "
                         f"{calibration.dtype} {calibration.shape}")
    input_mean, input_std = check_normalization(input_mean, input_std, calibration.shape[1])
    steps = fold_chain(model)
    x = torch.from_numpy(normalize(calibration, input_mean, input_std))
    peaks, out = _calibrate(steps, x)
    with torch.no_grad():
        expected = model.eval()(x).double()
    if not torch.allclose(out, expected, rtol=1e-3, atol=1e-3):
        raise AccelSimError("the model's forward is not the chain of its layers (folded outputs differ from the "
                         "model's); export supports sequential models only")
    input_shape = tuple(calibration.shape[1:])
    n_out = expected.shape[1]
    class_names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(n_out))
    if weight_bits is None:
        input_format = Float32()
    elif frac_bits is not None:
        input_format = Fixed(act_bits, frac_bits)
    else:
        input_format = format_for(np.array([peaks["input"]]), act_bits)
    layers = _build_layers(steps, peaks, input_shape, input_format, weight_bits, act_bits, weight_percentile, frac_bits)
    image = Image(model_name, image_format_name(weight_bits, act_bits), input_shape, input_format, class_names,
                  tuple(layers), source_sha256, __version__, input_mean=input_mean, input_std=input_std)
    logger.info("exported %s as %s: %d layers, %d weight bits", model_name, image.format_name,
                len(image.layers), image.weight_bits)
    return image


def fold_chain(model: nn.Module) -> list[_Step]:
    """The model's forward as folded float steps: BatchNorm into conv, ReLU into the layer before,
    Dropout dropped."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types for untraceable code
        raise AccelSimError(f"cannot read the model's forward as a chain of layers ({type(exc).__name__}: {exc})") from exc
    modules = dict(model.named_modules())
    steps: list[_Step] = []
    previous = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise AccelSimError("the model takes more than one input")
            previous = node
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise AccelSimError("the model's output is not the end of its layer chain")
            break
        if not node.args or node.args[0] is not previous or any(isinstance(a, torch.fx.Node) for a in node.args[1:]):
            raise AccelSimError(f"node {node.name!r} ({node.target}) does not continue a single chain of layers")
        _append_step(steps, node, modules)
        previous = node
    if not steps or steps[-1].kind not in ("conv2d", "linear"):
        raise AccelSimError("the model must end with a conv2d or linear layer (its outputs are the logits)")
    return steps


def _append_step(steps: list[_Step], node: torch.fx.Node, modules: dict[str, nn.Module]) -> None:
    if node.op == "call_module":
        module = modules[node.target]
        if not isinstance(module, SUPPORTED_MODULES):
            raise AccelSimError(f"unsupported layer {node.target!r} ({type(module).__name__}); supported: "
                             f"{', '.join(m.__name__ for m in SUPPORTED_MODULES)}")
        name = str(node.target)
        if isinstance(module, nn.Conv2d):
            if module.groups != 1 or module.dilation != (1, 1) or isinstance(module.padding, str) \
                    or module.padding_mode != "zeros":
                raise AccelSimError(f"unsupported layer {name!r}: Conv2d needs groups=1, dilation=1 and numeric zero padding")
            steps.append(_Step("conv2d", name, _np(module.weight), _bias(module), tuple(module.stride),
                               tuple(module.padding), tuple(module.kernel_size)))
        elif isinstance(module, nn.Linear):
            steps.append(_Step("linear", name, _np(module.weight), _bias(module)))
        elif isinstance(module, nn.BatchNorm2d):
            _fold_batchnorm(steps, module, name)
        elif isinstance(module, nn.ReLU):
            _fuse_relu(steps, name)
        elif isinstance(module, nn.MaxPool2d):
            if module.dilation not in (1, (1, 1)) or module.ceil_mode:
                raise AccelSimError(f"unsupported layer {name!r}: MaxPool2d needs dilation=1 and ceil_mode=False")
            pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
            steps.append(_Step("maxpool2d", name, kernel=pair(module.kernel_size), stride=pair(module.stride),
                               padding=pair(module.padding)))
        elif isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise AccelSimError(f"unsupported layer {name!r}: Flatten must flatten dims 1..-1")
            steps.append(_Step("flatten", name))
        # nn.Dropout: identity at inference
        return
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        _fuse_relu(steps, node.name)
        return
    if node.op == "call_function" and node.target in _FLATTEN_FUNCTIONS and tuple(node.args[1:]) in ((1,), (1, -1)):
        steps.append(_Step("flatten", node.name))
        return
    if node.op == "call_method" and node.target == "flatten" and tuple(node.args[1:]) in ((1,), (1, -1)):
        steps.append(_Step("flatten", node.name))
        return
    target = getattr(node.target, "__name__", node.target) if node.target is not operator.getitem else "getitem"
    raise AccelSimError(f"unsupported operation {target!r} at node {node.name!r}")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy()


def _bias(module: nn.Module) -> np.ndarray:
    return _np(module.bias) if module.bias is not None else np.zeros(module.weight.shape[0])


def _fold_batchnorm(steps: list[_Step], bn: nn.BatchNorm2d, name: str) -> None:
    if not steps or steps[-1].kind != "conv2d" or steps[-1].relu:
        raise AccelSimError(f"BatchNorm2d {name!r} must directly follow a Conv2d to be folded into it")
    conv = steps[-1]
    gamma = _np(bn.weight) if bn.weight is not None else np.ones(bn.num_features)
    beta = _np(bn.bias) if bn.bias is not None else np.zeros(bn.num_features)
    scale = gamma / np.sqrt(_np(bn.running_var) + bn.eps)
    conv.weight = conv.weight * scale[:, None, None, None]
    conv.bias = (conv.bias - _np(bn.running_mean)) * scale + beta


def _fuse_relu(steps: list[_Step], name: str) -> None:
    if not steps or steps[-1].kind not in ("conv2d", "linear") or steps[-1].relu:
        raise AccelSimError(f"ReLU {name!r} must follow a Conv2d, BatchNorm2d or Linear layer")
    steps[-1].relu = True


def _calibrate(steps: list[_Step], x: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    """Run the folded chain in float64; record the largest |value| entering and leaving each layer."""
    peaks = {"input": float(x.abs().max())}
    h = x.double()
    for step in steps:
        if step.kind == "conv2d":
            h = F.conv2d(h, torch.from_numpy(step.weight), torch.from_numpy(step.bias), step.stride, step.padding)
        elif step.kind == "linear":
            h = F.linear(h, torch.from_numpy(step.weight), torch.from_numpy(step.bias))
        elif step.kind == "maxpool2d":
            h = F.max_pool2d(h, step.kernel, step.stride, step.padding)
        else:
            h = torch.flatten(h, 1)
        if step.relu:
            h = F.relu(h)
        if step.kind in ("conv2d", "linear"):
            peaks[step.name] = float(h.abs().max())
    return peaks, h


def _build_layers(steps, peaks, input_shape, input_format, weight_bits, act_bits, percentile, frac_bits) -> list:
    """Quantise the folded steps into layer records, threading shapes and formats along the chain.

    Each weighted layer reads the format the layer before it writes. Its bias is a word of
    :func:`bias_word_bits` bits with the accumulator's scale ``f_w + f_a_in``, or fewer
    fractional bits where the largest bias needs them (it then enters the accumulator shifted).
    """
    layers = []
    shape, fmt = input_shape, input_format
    for i, step in enumerate(steps):
        if step.kind in ("conv2d", "linear"):
            last = i == len(steps) - 1
            if weight_bits is None:
                w_fmt = b_fmt = Float32()
                out_fmt = None if last else Float32()
            elif frac_bits is not None:
                w_fmt = Fixed(weight_bits, frac_bits)
                b_fmt = Fixed(bias_word_bits(weight_bits, act_bits), frac_bits)
                out_fmt = None if last else Fixed(act_bits, frac_bits)
            else:
                w_fmt = format_for(step.weight, weight_bits, percentile)
                b_bits = bias_word_bits(weight_bits, act_bits)
                b_max = float(np.abs(step.bias).max()) if step.bias.size else 0.0
                b_fmt = Fixed(b_bits, min(w_fmt.frac_bits + fmt.frac_bits, frac_bits_for(b_max, b_bits)))
                out_fmt = None if last else format_for(np.array([peaks[step.name]]), act_bits)
            weight, bias = quantize(w_fmt, step.weight), quantize(b_fmt, step.bias)
            if weight_bits is not None:
                _report_saturation(step, weight, bias, w_fmt, b_fmt, out_fmt, peaks)
            common = dict(name=step.name, in_shape=shape, weight=weight, bias=bias,
                          weight_format=w_fmt, bias_format=b_fmt, in_format=fmt, out_format=out_fmt,
                          activation="relu" if step.relu else "none")
            if step.kind == "conv2d":
                out_shape = (weight.shape[0], *conv_output_hw(shape[1], shape[2], step.kernel, step.stride, step.padding))
                layers.append(Conv2d(**common, out_shape=out_shape, stride=step.stride, padding=step.padding))
            else:
                out_shape = (weight.shape[0],)
                layers.append(Linear(**common, out_shape=out_shape))
            fmt = out_fmt
        elif step.kind == "maxpool2d":
            out_shape = (shape[0], *conv_output_hw(shape[1], shape[2], step.kernel, step.stride, step.padding))
            layers.append(MaxPool2d(step.name, shape, out_shape, step.kernel, step.stride, step.padding, fmt))
        else:
            out_shape = (int(np.prod(shape)),)
            layers.append(Flatten(step.name, shape, out_shape, fmt))
        shape = out_shape
    return layers


def bias_word_bits(weight_bits: int, act_bits: int) -> int:
    """Width (bits) of an exported bias word: twice a product's width, at most 32 bits (int8
    accelerators keep 32-bit biases beside 16-bit products)."""
    return min(MAX_BIAS_BITS, 2 * (weight_bits + act_bits))


def _saturated(fmt: Fixed, values: np.ndarray, words: np.ndarray) -> int:
    """How many of ``values`` quantized to ``words`` were clipped to the format's range."""
    real = np.ldexp(np.asarray(values, np.float64), fmt.frac_bits)
    return int(np.sum(((words == fmt.raw_max) & (real > fmt.raw_max + 0.5))
                      | ((words == fmt.raw_min) & (real < fmt.raw_min - 0.5))))


def _report_saturation(step: _Step, weight: np.ndarray, bias: np.ndarray, w_fmt: Fixed, b_fmt: Fixed,
                       out_fmt: Fixed | None, peaks: dict[str, float]) -> None:
    """Log, as a warning, every tensor of a layer with saturated words (and calibration outputs
    beyond the output format)."""
    parts = []
    for what, values, words, fmt in (("weights", step.weight, weight, w_fmt), ("biases", step.bias, bias, b_fmt)):
        count = _saturated(fmt, values, words)
        if count:
            parts.append(f"{count} of {words.size} {what} saturate in {fmt.name}")
    if out_fmt is not None and _saturated(out_fmt, np.array([peaks[step.name]]), quantize(out_fmt, [peaks[step.name]])):
        parts.append(f"its largest calibration output {peaks[step.name]:.4g} saturates in {out_fmt.name}")
    if parts:
        logger.warning("layer %s: %s", step.name, "; ".join(parts))
