"""Malformed inputs of every kind get one line on stderr and exit code 2 — no traceback, no
silent acceptance (``tests/fuzz_corpus.py`` generates the corpus from a seed)."""

import collections
import time

import pytest

from accel_sim.cli import main
from tests.fuzz_corpus import corpus


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return corpus(tmp_path_factory.mktemp("fuzz"), seed=2026)


def test_corpus_covers_every_kind(cases):
    counts = collections.Counter(case.kind for case in cases)
    print(f"fuzz corpus: {len(cases)} cases: {dict(counts)}")
    assert len(cases) >= 1000
    assert set(counts) == {"image", "fault_map", "hardware", "campaign", "command_line"}
    assert min(counts.values()) >= 50


@pytest.mark.slow
def test_every_malformed_input_gets_one_line_and_exit_2(cases, capsys):
    started = time.perf_counter()
    failures = []
    for case in cases:
        try:
            code = main(list(case.argv))
        except SystemExit as exc:  # argparse's --help/--version exit 0; anything else is a bug
            code = exc.code
        except Exception as exc:  # a traceback: the bug the test looks for
            code = f"{type(exc).__name__}: {exc}"
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        if code != 2 or len(lines) != 1 or "Traceback" in err:
            failures.append(f"[{case.kind}] {case.label}: exit {code!r}, stderr {err.strip()[:200]!r}")
    seconds = time.perf_counter() - started
    print(f"{len(cases)} cases in {seconds:.1f} s, {len(failures)} failures")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures[:60])
