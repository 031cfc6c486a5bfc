"""A seeded generator of malformed inputs for the CLI: HDF5 images, fault maps, campaign and
hardware TOML files, and command lines. Every case is invalid by construction; the test runs each
in-process and expects one line on stderr and exit code 2."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from accel_sim.data import load_bundled_sample
from accel_sim.faults import DrawSpec, draw_fault_map, write_fault_map
from accel_sim.hardware import load_preset
from accel_sim.image.export import export_model
from accel_sim.image.hdf5 import write_image

BAD_NUMBERS = [float("inf"), float("-inf"), float("nan"), -1, 0, 1e300, -1e300, 2**62, -(2**62)]
BAD_TEXT = ["", "junk", "fixed", "fixed99.3", "fp16", "ufixed1.0", "\u00e9\u00e8", "fixed8.999"]


@dataclass(frozen=True)
class Case:
    kind: str
    label: str
    argv: tuple[str, ...]


def tiny_net() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Conv2d(4, 4, 3, stride=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 10)).eval()


def write_bases(folder: Path) -> dict[str, Path]:
    """Valid files every mutation starts from."""
    cal = load_bundled_sample("train").images[:16]
    paths = {}
    for fmt, bits in (("fixed8", 8), ("fp32", None)):
        paths[fmt] = write_image(export_model(tiny_net(), cal, bits, model_name="tiny"), folder / f"{fmt}.h5")
    from accel_sim.image.hdf5 import read_image

    image = read_image(paths["fixed8"])
    hw = load_preset("edge16")
    for site in ("weight_memory", "pe", "activation_buffer"):
        fmap = draw_fault_map(image, hw, DrawSpec(site, 0.05 if site != "weight_memory" else 0.01),
                              np.random.default_rng(1), 4)
        paths[f"map_{site}"] = write_fault_map(fmap, folder / f"map_{site}.h5")
    transient = draw_fault_map(image, hw, DrawSpec("pe", 0.05, persistence="transient"), np.random.default_rng(2), 4)
    paths["map_transient"] = write_fault_map(transient, folder / "map_transient.h5")
    return paths


HW_TOML = """[hardware]
name = "fuzz"
rows = 8
cols = 8
dataflow = "ws"
weight_bits = 16
act_bits = 16
acc_bits = 48
overflow = "saturate"
rounding = "nearest_even"
weight_buffer_kib = 16
activation_buffer_kib = 16
"""

CAMPAIGN_TOML = """name = "fuzz"
seed = 1
output = "OUT"
[model]
image = "IMAGE"
format = "fixed8"
[data]
count = 4
profile_count = 8
[faults]
site = "weight_memory"
rates = [1e-3]
trials = 1
[[variants]]
name = "relu"
[[variants]]
name = "clip"
activation = "clipact"
thresholds = "act_max"
"""


def corpus(folder: Path, seed: int = 0) -> list[Case]:
    rng = np.random.default_rng(seed)
    bases = write_bases(folder)
    cases: list[Case] = []
    cases += _image_cases(folder, bases, rng)
    cases += _fault_map_cases(folder, bases, rng)
    cases += _hardware_cases(folder, bases, rng)
    cases += _campaign_cases(folder, bases, rng)
    cases += _command_line_cases(folder, bases, rng)
    return cases


def _copy(bases: dict, key: str, folder: Path, n: int, stem: str) -> Path:
    target = folder / f"{stem}{n}.h5"
    shutil.copyfile(bases[key], target)
    return target


def _image_cases(folder: Path, bases: dict, rng: np.random.Generator) -> list[Case]:
    out = []
    root_keys = ["schema", "schema_version", "format", "model", "input_shape", "input_format", "class_names",
                 "num_layers"]
    layer_keys = {"conv": ["op", "name", "in_shape", "out_shape", "weight_format", "bias_format", "in_format",
                           "out_format", "activation", "threshold", "stride", "padding"],
                  "pool": ["kernel", "stride", "padding", "format", "in_shape", "out_shape"]}

    def mutated(label: str, mutate) -> None:
        n = len(out)
        path = _copy(bases, rng.choice(["fixed8", "fp32"]), folder, n, "image")
        with h5py.File(path, "r+") as f:
            mutate(f)
        command = rng.choice(["eval", "inspect", "faults"])
        if command == "eval":
            argv = ("eval", "--image", str(path), "--subset", "2")
        elif command == "inspect":
            argv = ("inspect", str(path))
        else:
            argv = ("faults", "draw", "--image", str(path), "--site", "weight_memory", "--rate", "0.01", "--seed",
                    "1", "-o", str(folder / f"image{n}.map.h5"))
        out.append(Case("image", label, argv))

    def set_attr(obj, key, value):
        if key in obj.attrs:
            del obj.attrs[key]
        obj.attrs[key] = value

    bad_attr_values = BAD_NUMBERS + BAD_TEXT + [np.array([1, 2, 3]), np.array([0, 0]), np.array([-3, 2]),
                                                np.array([1.5, 2.5]), np.array([], dtype=np.int64)]
    for key in root_keys:
        mutated(f"root {key} deleted", lambda f, k=key: f.attrs.__delitem__(k))
        for value in bad_attr_values:
            if key in ("model",) and isinstance(value, str) and value:
                continue  # any non-empty model name is valid
            mutated(f"root {key} = {value!r}", lambda f, k=key, v=value: set_attr(f, k, v))
    for layer, keys in (("000", layer_keys["conv"]), ("001", layer_keys["pool"]), ("002", layer_keys["conv"])):
        for key in keys:
            if key == "kernel" and layer != "001":
                continue
            mutated(f"layer {layer} {key} deleted", lambda f, ly=layer, k=key: f["layers"][ly].attrs.__delitem__(k))
            picks = rng.choice(len(bad_attr_values), size=6, replace=False)
            for value in (bad_attr_values[int(i)] for i in picks):
                if key == "name" and isinstance(value, str):
                    continue  # a layer may have any name
                if key == "threshold" and isinstance(value, float) and np.isnan(value):
                    continue  # NaN is how "no threshold" is stored
                mutated(f"layer {layer} {key} = {value!r}", lambda f, ly=layer, k=key, v=value: set_attr(f["layers"][ly], k, v))
    for layer in ("000", "002", "004"):
        for dataset in ("weight", "bias"):
            mutated(f"layer {layer} {dataset} deleted", lambda f, ly=layer, d=dataset: f["layers"][ly].__delitem__(d))
            for bad in (np.array(3), np.zeros((2, 2)), np.zeros(1, dtype=np.float64), np.array([b"ab"]),
                        np.full(f_shape(bases, layer, dataset), 2**40, dtype=np.int64),
                        np.zeros(f_shape(bases, layer, dataset), dtype=np.float16)):
                def replace(f, ly=layer, d=dataset, b=bad):
                    del f["layers"][ly][d]
                    f["layers"][ly].create_dataset(d, data=b)
                mutated(f"layer {layer} {dataset} = {bad.dtype}{bad.shape}", replace)
    mutated("threshold on a relu layer", lambda f: set_attr(f["layers"]["000"], "threshold", 1.0))
    mutated("clipact without threshold", lambda f: set_attr(f["layers"]["000"], "activation", "clipact"))
    mutated("activation on the last layer", lambda f: set_attr(f["layers"]["004"], "activation", "relu"))
    mutated("maxpool padding wider than half the kernel",
            lambda f: (set_attr(f["layers"]["001"], "padding", np.array([3, 3])),
                       set_attr(f["layers"]["001"], "out_shape", np.array([4, 9, 9]))))
    mutated("stride zero", lambda f: set_attr(f["layers"]["000"], "stride", np.array([0, 0])))
    mutated("layers group missing", lambda f: f.__delitem__("layers"))
    mutated("extra layer group", lambda f: f["layers"].create_group("099"))
    mutated("layer is a dataset", lambda f: (f["layers"].__delitem__("002"), f["layers"].create_dataset("002", data=[1])))
    for n_bytes in (0, 10, 100, 1000, 3000):
        path = folder / f"trunc{n_bytes}.h5"
        path.write_bytes(bases["fixed8"].read_bytes()[:n_bytes])
        out.append(Case("image", f"truncated to {n_bytes} bytes", ("eval", "--image", str(path), "--subset", "2")))
    garbage = folder / "garbage.h5"
    garbage.write_bytes(bytes(rng.integers(0, 256, 4096, dtype=np.uint8)))
    out.append(Case("image", "random bytes", ("inspect", str(garbage))))
    out.append(Case("image", "a directory", ("inspect", str(folder))))
    foreign = folder / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=[1])
    out.append(Case("image", "foreign HDF5", ("eval", "--image", str(foreign))))
    return out


def f_shape(bases: dict, layer: str, dataset: str) -> tuple[int, ...]:
    with h5py.File(bases["fixed8"], "r") as f:
        return f["layers"][layer][dataset].shape


def _fault_map_cases(folder: Path, bases: dict, rng: np.random.Generator) -> list[Case]:
    out = []
    fields = {"site": [4, -1, 100], "layer": [99, -7, 1, 2**31 - 1], "tensor": [2, -3, 9], "index": [-2, 10**9, 2**62],
              "row": [16, -2, 1000], "col": [16, -2, 1000], "register": [3, 10, -5, 99], "bit": [65539, -1, 64, 32768],
              "model": [3, -1, 77], "image": [4, -2, 10**6], "access": [-5, 10**12]}

    def mutated(label: str, base: str, mutate, command: str) -> None:
        n = len(out)
        path = _copy(bases, base, folder, n, "map")
        with h5py.File(path, "r+") as f:
            mutate(f)
        if command == "show":
            argv = ("faults", "show", str(path))
        else:
            argv = ("eval", "--image", str(bases["fixed8"]), "--faults", str(path), "--subset", "4")
        out.append(Case("fault_map", label, argv))

    def set_field(f, name, position, value):
        data = f[name][()]
        wide = data.astype(np.int64)
        wide[position % max(1, wide.size)] = value
        del f[name]
        f.create_dataset(name, data=wide)  # stored as int64: the reader must check before casting

    for base in ("map_weight_memory", "map_pe", "map_activation_buffer", "map_transient"):
        for name, values in fields.items():
            for value in values:
                if base == "map_weight_memory" and name in ("row", "col", "register", "access"):
                    continue  # fields other sites read; a weight-memory fault ignores them
                if base != "map_weight_memory" and name in ("tensor",):
                    continue
                if base in ("map_pe", "map_activation_buffer") and name == "access":
                    continue  # permanent faults hit every MAC: access is not read
                if base == "map_pe" and name == "index":
                    continue
                if base != "map_weight_memory" and name == "layer" and value == 1:
                    continue
                if base == "map_weight_memory" and name == "layer" and value == 2**31 - 1:
                    continue
                for command in ("eval", "show") if name in ("site", "model", "register", "tensor") else ("eval",):
                    if name == "register" and value == 3 and command == "show":
                        continue  # a TMR replica's register: refused against an unprotected array (eval) only
                    position = int(rng.integers(0, 1000))
                    mutated(f"{base} {name} = {value} ({command})", base,
                            lambda f, n=name, p=position, v=value: set_field(f, n, p, v), command)
        for attr in ("image_hash", "hw_hash", "schema"):
            mutated(f"{base} {attr} deleted", base, lambda f, a=attr: f.attrs.__delitem__(a), "eval")
        mutated(f"{base} other image", base, lambda f: f.attrs.__setitem__("image_hash", "0" * 64), "eval")
        mutated(f"{base} schema version 9", base, lambda f: f.attrs.__setitem__("schema_version", 9), "show")
        mutated(f"{base} schema version inf", base, lambda f: f.attrs.__setitem__("schema_version", np.inf), "show")
        mutated(f"{base} rate text", base, lambda f: f.attrs.__setitem__("rate", "high"), "show")
        mutated(f"{base} seed inf", base, lambda f: f.attrs.__setitem__("seed", np.inf), "show")
        for name in ("bit", "site", "index"):
            mutated(f"{base} {name} deleted", base, lambda f, n=name: f.__delitem__(n), "eval")
            mutated(f"{base} {name} as floats", base,
                    lambda f, n=name: (lambda d: (f.__delitem__(n), f.create_dataset(n, data=d + 0.5)))(f[n][()]), "eval")
            mutated(f"{base} {name} length differs", base,
                    lambda f, n=name: (lambda d: (f.__delitem__(n), f.create_dataset(n, data=np.concatenate([d, d[:1]]))))(
                        f[n][()]), "show")
    return out


def _hardware_cases(folder: Path, bases: dict, rng: np.random.Generator) -> list[Case]:
    out = []
    keys = ["rows", "cols", "dataflow", "weight_bits", "act_bits", "acc_bits", "overflow", "rounding",
            "weight_buffer_kib", "activation_buffer_kib"]
    values = ["inf", "-inf", "nan", "-1", "0", "1e300", "99999999999999999999", '"x"', "true", "[1]", "{a = 1}", "1.5"]

    def case(label: str, text: str) -> None:
        path = folder / f"hw{len(out)}.toml"
        path.write_text(text)
        command = rng.choice(["eval", "faults"])
        if command == "eval":
            argv = ("eval", "--image", str(bases["fixed8"]), "--hw", str(path), "--subset", "2")
        else:
            argv = ("faults", "draw", "--image", str(bases["fixed8"]), "--hw", str(path), "--site", "pe", "--rate",
                    "0.01", "--seed", "1", "-o", str(folder / f"hw{len(out)}.map.h5"))
        out.append(Case("hardware", label, argv))

    for key in keys:
        for value in values:
            if key in ("weight_buffer_kib", "activation_buffer_kib") and value in ("1.5",):
                continue  # 1.5 KiB holds an 8x8 tile of 16-bit words
            lines = [line if not line.startswith(f"{key} =") else f"{key} = {value}" for line in HW_TOML.splitlines()]
            case(f"{key} = {value}", "\n".join(lines) + "\n")
        case(f"{key} missing" if key in ("rows", "cols") else f"{key} doubled",
             "\n".join(line for line in HW_TOML.splitlines() if not line.startswith(f"{key} =")) + "\n"
             if key in ("rows", "cols") else HW_TOML + f"{key} = 1\n")
    case("unknown key", HW_TOML + "colour = 1\n")
    case("second table", HW_TOML + "[other]\nx = 1\n")
    case("no table", "rows = 1\n")
    case("empty", "")
    case("garbage", "\x00\x01\x02 = [[")
    case("hardware is a list", "hardware = [1, 2]\n")
    case("array too big", HW_TOML.replace("rows = 8", "rows = 5000"))
    case("accumulator narrower than product", HW_TOML.replace("acc_bits = 48", "acc_bits = 20"))
    case("image wider than multipliers", HW_TOML.replace("weight_bits = 16", "weight_bits = 4"))
    return out


def _campaign_cases(folder: Path, bases: dict, rng: np.random.Generator) -> list[Case]:
    out = []
    valid = CAMPAIGN_TOML.replace("IMAGE", str(bases["fixed8"]))

    def case(label: str, text: str) -> None:
        n = len(out)
        path = folder / f"campaign{n}.toml"
        path.write_text(text.replace("OUT", str(folder / f"campaign_out{n}")))
        out.append(Case("campaign", label, ("campaign", "run", str(path), "--no-progress")))

    for key, bad in (("trials", "10000000000000"), ("trials", "0"), ("layers", "[99]"), ("layers", "[1]"),
                     ("layers", "[-1]"), ("bits", "[40]"), ("bits", "[99]"), ("bits", "[-1]"), ("bits", "[]"),
                     ("registers", '["weight"]'), ("rates", "[inf]"), ("rates", "[nan]"), ("rates", "[1e-3, 1e-3]"),
                     ("count_mode", '"poisson"'), ("persistence", '"often"'), ("rates", "[1e400]")):
        # keys the valid file has are replaced, the others added
        text = _replace_key(valid, "faults", key, bad)
        case(f"faults.{key} = {bad}", text)
    for name in ("a" * 65, "b" * 300, "\u00e9t\u00e9", "na\u00efve-" + "x" * 60, "x/y", "", " ", "a.b/c"):
        case(f"variant name {name[:20]!r}", valid.replace('name = "clip"', f'name = "{name}"'))
    for key, bad in (("count", "0"), ("count", "100000"), ("offset", "5000"), ("profile_count", "0"),
                     ("count", "1e3"), ("offset", "-1")):
        case(f"data.{key} = {bad}", _replace_key(valid, "data", key, bad))
    for key, bad in (("rates", "[1e-3, 1e-4]"), ("trials", "0"), ("candidates", "2"), ("mode", '"slow"'),
                     ("percentile", "0"), ("percentile", "101"), ("tune_images", "0"), ("early_stop_pp", "-1"),
                     ("early_stop_pp", "inf"), ("site", '"dram"'), ("x", "1")):
        case(f"tuning.{key} = {bad}", valid + f"[tuning]\n{key} = {bad}\n")
    key_lines = [i for i, line in enumerate(valid.splitlines()) if " = " in line]
    for i in range(60):  # a valid file with one line duplicated (TOML refuses a key twice) or cut
        lines = valid.splitlines()
        at = int(rng.choice(key_lines))
        if i % 2:
            lines.insert(at, lines[at])
            case(f"line {at} twice", "\n".join(lines) + "\n")
        else:
            lines[at] = lines[at][:int(rng.integers(1, lines[at].index(" = ") + 3))]
            case(f"line {at} cut", "\n".join(lines) + "\n")
    return out


def _replace_key(text: str, section: str, key: str, value: str) -> str:
    head, _, tail = text.partition(f"[{section}]\n")
    lines = tail.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(f"{key} ="):
            lines[i] = f"{key} = {value}"
            return head + f"[{section}]\n" + "\n".join(lines)
        if line.startswith("["):
            break
    return head + f"[{section}]\n{key} = {value}\n" + tail


def _command_line_cases(folder: Path, bases: dict, rng: np.random.Generator) -> list[Case]:
    out = []
    image, missing = str(bases["fixed8"]), str(folder / "missing.h5")
    templates = [
        ("eval", "--image", image, "--subset", "{bad_count}"),
        ("eval", "--image", image, "--offset", "{bad_offset}"),
        ("eval", "--image", image, "--batch-size", "{bad_count}"),
        ("eval", "--model", "alexnet", "--device", "{bad_word}", "--subset", "2"),
        ("eval", "--model", "alexnet", "--faults", image, "--subset", "2"),
        ("eval", "--image", missing),
        ("eval", "--image", image, "--data-dir", str(folder / "nodata")),
        ("eval", "--image", image, "--engine", "{bad_word}"),
        ("eval", "--image", image, "--hw", "{bad_word}"),
        ("export", "--model", "alexnet", "--format", "{bad_format}", "-o", str(folder / "x.h5")),
        ("export", "--model", "alexnet", "--format", "fixed8", "--act-bits", "{bad_count}", "-o", str(folder / "x.h5")),
        ("export", "--model", "alexnet", "--format", "fixed8", "--weight-percentile", "{bad_float}",
         "-o", str(folder / "x.h5")),
        ("export", "--model", "alexnet", "--format", "fixed8", "--calibration", "{bad_count}", "-o", str(folder / "x.h5")),
        ("export", "--model", "{bad_word}", "--format", "fp32", "-o", str(folder / "x.h5")),
        ("faults", "draw", "--image", image, "--site", "pe", "--rate", "{bad_float}", "--seed", "1", "-o", str(folder / "m.h5")),
        ("faults", "draw", "--image", image, "--site", "pe", "--rate", "0.01", "--seed", "{bad_int}", "-o", str(folder / "m.h5")),
        ("faults", "draw", "--image", image, "--site", "weight_memory", "--rate", "0.01", "--seed", "1",
         "--layers", "{bad_layers}", "-o", str(folder / "m.h5")),
        ("faults", "draw", "--image", image, "--site", "weight_memory", "--rate", "0.01", "--seed", "1",
         "--bits", "{bad_bits}", "-o", str(folder / "m.h5")),
        ("faults", "draw", "--image", image, "--site", "weight_memory", "--rate", "0.01", "--seed", "1",
         "--registers", "weight", "-o", str(folder / "m.h5")),
        ("faults", "draw", "--image", image, "--site", "pe", "--rate", "0.01", "--seed", "1", "--persistence",
         "transient", "--images", "{bad_count}", "-o", str(folder / "m.h5")),
        ("faults", "show", missing),
        ("harden", "--image", image, "--tune", "--rates", "{bad_rates}", "-o", str(folder / "h.h5")),
        ("harden", "--image", image, "--tune", "--trials", "{bad_count}", "-o", str(folder / "h.h5")),
        ("harden", "--image", image, "--percentile", "{bad_float}", "-o", str(folder / "h.h5")),
        ("harden", "--image", image, "--batch-size", "{bad_count}", "-o", str(folder / "h.h5")),
        ("harden", "--image", image, "--thresholds", missing, "-o", str(folder / "h.h5")),
        ("harden", "--image", image, "-o", image),
        ("campaign", "report", missing),
        ("campaign", "replay", missing, "--job", "relu/0.001/0"),
        ("inspect", missing),
        ("{bad_word}",),
        ("eval", "--{bad_word}"),
    ]
    fills = {
        "bad_count": ["0", "-1", "-100", "x", "1.5", "", "99999999999999999999999"],
        "bad_offset": ["-1", "1000", "99999", "x"],
        "bad_word": ["banana", "", "cuda:99", "\u00e9", "--", "edge99"],
        "bad_format": ["fixed1", "fixed33", "fixed0", "fixed", "float16", "fixed8.x", "fixed33.16", ""],
        "bad_float": ["inf", "nan", "-1", "101", "1e400", "x", "-inf"],
        "bad_int": ["-1", "x", "1.5", "-99999999999999999999"],
        "bad_layers": ["99", "-1", "1", "x", "0,99", ""],
        "bad_bits": ["99", "-1", "40", "x", ""],
        "bad_rates": ["1e-3,1e-4", "x", "-1", "2", "inf", "nan", "1e-3,1e-3", ""],
    }
    for template in templates:
        slots = [part for part in template if part.startswith("{")]
        options = fills[slots[0].strip("{}")] if slots else [None]
        for value in options:
            argv = tuple(part.format(**{slot.strip("{}"): value for slot in slots}) if part.startswith("{") else part
                         for part in template)
            if template[0] == "eval" and "--{bad_word}" in template and value in ("", "--"):
                continue  # "eval --" and "eval ---" parse differently; covered by the others
            out.append(Case("command_line", " ".join(argv)[:80], argv))
    out.append(Case("command_line", "no command", ()))
    out.append(Case("command_line", "campaign without action", ("campaign",)))
    return out


__all__ = ["Case", "corpus"]
