"""Drawing fault maps from a per-bit fault rate (policy: what to draw).

Randomness: every draw takes an explicit ``numpy.random.Generator``. Campaign jobs derive it with
:func:`job_rng` from the campaign seed and the job's key only::

    SeedSequence([seed mod 2**64 as two 32-bit words, *first 16 bytes of SHA-256(job_key) as four
    32-bit words])

so a job's faults do not depend on which worker ran it, in which order, or after a resume.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from accel_sim.errors import AccelSimError
from accel_sim.faults.model import COUNT_MODES, MODELS, PERSISTENCE, REGISTERS, SITES, FaultMap
from accel_sim.faults.sites import Segment, pe_mac_axes, segments, weighted_layer_indices
from accel_sim.hardware import HardwareConfig
from accel_sim.hardware.lowering import gemm_shape
from accel_sim.hardware.redundancy import register_kind
from accel_sim.image import Image
from accel_sim.numerics.formats import check_mode


def job_rng(seed: int, job_key: str) -> np.random.Generator:
    """The generator of one job, from the campaign seed and the job key (see module docstring)."""
    if not isinstance(seed, int) or seed < 0:
        raise AccelSimError(f"seed must be a non-negative integer, got {seed!r}")
    digest = np.frombuffer(hashlib.sha256(job_key.encode()).digest()[:16], dtype="<u4")
    seed &= (1 << 64) - 1
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, *map(int, digest)]))


@dataclass(frozen=True)
class DrawSpec:
    """What to draw.

    Attributes
    ----------
    site : {"weight_memory", "weight_buffer", "activation_buffer", "pe"}
    rate : float
        Per-bit fault probability in [0, 1].
    model : {"flip", "stuck_at_0", "stuck_at_1"}
    persistence : {"permanent", "transient"}
        Transient faults hit one image, one layer and (PEs) one MAC.
    count_mode : {"binomial", "exact"}
        ``binomial``: the number of faulty bits ~ Binomial(site bits, rate); ``exact``:
        ``int(bits × rate)`` per layer for the weight memory (the public FT-ClipAct code's rule),
        over the whole site otherwise.
    layers : tuple of int or None
        Image layer indices (weighted layers) to restrict to; buffer and PE faults then act only
        while one of these layers runs (each fault in one of them, drawn uniformly).
    bits : tuple of int or None
        Bit positions to restrict to (positions beyond a word's width are ignored for it).
    registers : tuple of str or None
        PE registers to restrict to (``weight``, ``product``, ``psum``: in every DMR or TMR
        replica; ``voter``: a TMR voter's output).
    """

    site: str
    rate: float
    model: str = "flip"
    persistence: str = "permanent"
    count_mode: str = "binomial"
    layers: tuple[int, ...] | None = None
    bits: tuple[int, ...] | None = None
    registers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_mode("fault site", self.site, SITES)
        check_mode("fault model", self.model, MODELS)
        check_mode("persistence", self.persistence, PERSISTENCE)
        check_mode("count mode", self.count_mode, COUNT_MODES)
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 <= self.rate <= 1:
            raise AccelSimError(f"fault rate must be a number in [0, 1], got {self.rate!r}")
        if self.bits is not None and (not self.bits or min(self.bits) < 0 or max(self.bits) > 63):
            raise AccelSimError(f"bit positions must be a non-empty list of integers in 0..63, got {self.bits!r}")
        if self.registers is not None:
            for name in self.registers:
                check_mode("PE register", name, REGISTERS)
            if self.site != "pe":
                raise AccelSimError(f"registers restrict PE faults only, not {self.site}")
        if self.layers is not None and not self.layers:
            raise AccelSimError("layers, when given, must name at least one layer")


def draw_fault_map(image: Image, hw: HardwareConfig, spec: DrawSpec, rng: np.random.Generator,
                   n_images: int | None = None, seed: int = 0, job_key: str = "",
                   image_hash: str | None = None) -> FaultMap:
    """Draw the faults of one run. ``n_images`` (the images the run will see) is needed for
    transient faults, which pick one of them. ``image_hash`` may pass ``image.content_hash()``
    when it is already known (it is recorded in the map)."""
    if spec.persistence == "transient" and (n_images is None or not 1 <= n_images <= 2**31 - 1):
        raise AccelSimError(f"transient faults need the number of images of the run (1..{2**31 - 1}), got {n_images}")
    weighted = weighted_layer_indices(image)
    segs, allowed, sizes = eligible_bits(image, hw, spec)
    positions = _draw_positions(rng, spec, segs, sizes)
    seg_idx = np.searchsorted(np.cumsum(sizes), positions, side="right")
    offsets = positions - (np.cumsum(sizes) - sizes)[seg_idx]
    count = positions.size
    arrays = {name: np.full(count, -1, dtype=np.int64) for name in ("layer", "tensor", "index", "row", "col",
                                                                     "register", "image", "access")}
    bit = np.empty(count, dtype=np.int64)
    for s_i, (seg, bits) in enumerate(zip(segs, allowed)):
        sel = seg_idx == s_i
        word, bit[sel] = offsets[sel] // len(bits), np.asarray(bits)[offsets[sel] % len(bits)]
        if spec.site == "weight_memory":
            arrays["layer"][sel], arrays["tensor"][sel], arrays["index"][sel] = seg.layer, seg.tensor, word
        elif spec.site == "pe":
            arrays["row"][sel], arrays["col"][sel] = word // hw.cols, word % hw.cols
            arrays["register"][sel] = seg.register
        else:
            arrays["index"][sel] = word
    if spec.site != "weight_memory" and (spec.layers is not None or spec.persistence == "transient"):
        pool = weighted if spec.layers is None else np.array(spec.layers)
        arrays["layer"] = rng.choice(pool, size=count)
    if spec.persistence == "transient":
        arrays["image"] = rng.integers(0, n_images, size=count)
        if spec.site == "pe":
            arrays["access"] = _draw_accesses(image, hw, arrays, rng)
    return FaultMap(
        site=np.full(count, SITES.index(spec.site)), bit=bit, model=np.full(count, MODELS.index(spec.model)),
        **arrays, image_hash=image_hash or image.content_hash(), hw_hash=hw.config_hash(),
        rate=float(spec.rate), seed=seed, job_key=job_key, count_mode=spec.count_mode,
        persistence=spec.persistence, description=f"{spec.site} {spec.model} {spec.persistence}",
    )


def eligible_bits(image: Image, hw: HardwareConfig, spec: DrawSpec) -> tuple[list[Segment], list[list[int]], np.ndarray]:
    """The site's segments that ``spec`` may hit, the bit positions allowed in each, and the
    eligible bits per segment (int64). Refuses a spec that names layers the image lacks or whose
    restrictions leave no bit at all (it could never draw a fault)."""
    weighted = weighted_layer_indices(image)
    if spec.layers is not None:
        bad = sorted(set(spec.layers) - set(weighted.tolist()))
        if bad:
            raise AccelSimError(f"layers {bad} are not conv2d/linear layers of the image (those are {weighted.tolist()})")
    segs = segments(image, hw, spec.site, spec.layers)
    if spec.registers is not None:
        segs = [s for s in segs if register_kind(s.register) in spec.registers]
        if not segs:
            raise AccelSimError(f"registers {list(spec.registers)} name no PE register of hardware {hw.name} "
                                f"(pe_redundancy {hw.pe_redundancy!r}: a voter exists only under tmr)")
    allowed = [_allowed_bits(s, spec.bits) for s in segs]
    sizes = np.array([s.words * len(b) for s, b in zip(segs, allowed)], dtype=np.int64)
    if segs and not sizes.sum():
        widths = sorted({s.word_bits for s in segs})
        raise AccelSimError(f"bits {list(spec.bits or ())} select no bit of the {spec.site} words of {image.model} "
                            f"{image.format_name} (widths {widths} bits): the draw could never hit anything")
    return segs, allowed, sizes


def _allowed_bits(seg: Segment, bits: tuple[int, ...] | None) -> list[int]:
    return list(range(seg.word_bits)) if bits is None else sorted(b for b in set(bits) if b < seg.word_bits)


def _draw_positions(rng: np.random.Generator, spec: DrawSpec, segs: list[Segment], sizes: np.ndarray) -> np.ndarray:
    """Distinct bit positions in the concatenated eligible bits of ``segs``."""
    total = int(sizes.sum())
    if total == 0 or spec.rate == 0:
        return np.zeros(0, dtype=np.int64)
    if spec.count_mode == "binomial":
        return np.sort(rng.choice(total, size=int(rng.binomial(total, spec.rate)), replace=False)).astype(np.int64)
    if spec.site != "weight_memory":
        return np.sort(rng.choice(total, size=int(total * spec.rate), replace=False)).astype(np.int64)
    # exact, per layer: int(layer bits × rate) positions within that layer's segments
    starts = np.cumsum(sizes) - sizes
    out = []
    for layer in sorted({s.layer for s in segs}):
        idx = [i for i, s in enumerate(segs) if s.layer == layer]
        layer_bits = int(sizes[idx].sum())
        local = np.sort(rng.choice(layer_bits, size=int(layer_bits * spec.rate), replace=False))
        # map the layer-local position into the global concatenation of its (adjacent) segments
        out.append(starts[idx[0]] + local)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def _draw_accesses(image: Image, hw: HardwareConfig, arrays: dict, rng: np.random.Generator) -> np.ndarray:
    """For each transient PE fault, one MAC that PE performs in the fault's layer (-1 if none)."""
    access = np.full(arrays["row"].size, -1, dtype=np.int64)
    for i in range(access.size):
        layer = image.layers[int(arrays["layer"][i])]
        m, k, n = pe_mac_axes(layer, hw, int(arrays["row"][i]), int(arrays["col"][i]))
        total = m.size * k.size * n.size
        if total == 0:
            continue  # the PE is idle in this layer: the fault has no MAC to hit
        pick = int(rng.integers(total))
        mi, rest = divmod(pick, k.size * n.size)
        ki, ni = divmod(rest, n.size)
        shape = gemm_shape(layer)
        access[i] = (int(m[mi]) * shape.k + int(k[ki])) * shape.n + int(n[ni])
    return access
