"""Hard-link into a throw-away site-packages the installed distributions that a wheel requires,
with everything they require in turn, so that pip then installs the wheel alone instead of
unpacking gigabytes of dependencies again (a CUDA build of torch is 5 GB). Only the declared
closure is linked: a requirement missing from the wheel's metadata still makes the wheel check
fail, as in a fresh environment.

Usage (with the interpreter whose distributions are to be linked):
``python tests/link_dependencies.py WHEEL TARGET_SITE_PACKAGES``
"""

from __future__ import annotations

import os
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        fields = Parser().parsestr(archive.read(name).decode())
    return [Requirement(text) for text in fields.get_all("Requires-Dist") or []]


def closure(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """The installed distributions the requirements name (their markers evaluated without
    extras), and theirs, recursively."""
    found: dict[str, metadata.Distribution] = {}
    todo = [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        requirement = todo.pop()
        key = canonicalize_name(requirement.name)
        if key in found:
            continue
        dist = metadata.distribution(requirement.name)  # PackageNotFoundError: the check fails
        found[key] = dist
        for text in dist.requires or []:
            inner = Requirement(text)
            wanted = [{"extra": e} for e in requirement.extras] + [{"extra": ""}]
            if inner.marker is None or any(inner.marker.evaluate(env) for env in wanted):
                todo.append(inner)
    return found


def link(dist: metadata.Distribution, target: Path) -> int:
    """Hard-link the distribution's files that lie inside its site-packages; returns how many."""
    root = Path(dist.locate_file("")).resolve()
    count = 0
    for entry in dist.files or []:
        source = Path(dist.locate_file(entry)).resolve()
        if root not in source.parents or not source.is_file():
            continue  # scripts in bin/, files the RECORD lists but the install lacks
        destination = target / source.relative_to(root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not destination.exists():
            os.link(source, destination)
            count += 1
    return count


def main(wheel: str, target: str) -> None:
    dists = closure(wheel_requirements(Path(wheel)))
    files = sum(link(dist, Path(target)) for dist in dists.values())
    print(f"linked {len(dists)} distributions ({files} files): {', '.join(sorted(dists))}")


if __name__ == "__main__":
    main(*sys.argv[1:])
