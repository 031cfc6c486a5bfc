"""Campaigns: config validation (fuzzed), planning, resumption after kill -9, local = Dask,
reports recomputed from raw rows, replay."""

import csv
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy import stats

from accel_sim.campaign import build_context, campaign_from_dict, load_campaign, plan_jobs, read_results, run_campaign, run_job
from accel_sim.campaign.report import area_under_curve, auc_summary, difference_ci95_half_width, summarize
from accel_sim.campaign.runner import folder_lock
from accel_sim.campaign.store import TIMING_COLUMNS, ResultsStore, rows_as_dicts
from accel_sim.cli import main
from accel_sim.data import load_bundled_sample
from accel_sim.hardware import Accelerator, load_preset

SMALL = """
name = "small"
seed = 7
output = "OUT"

[model]
zoo = "alexnet"
format = "fp32"
calibration = 64

[data]
source = "bundled"
count = 40
profile_count = 64

[hardware]
preset = "edge16"

[faults]
site = "weight_memory"
rates = [1e-6, 1e-5]
trials = 4

[[variants]]
name = "relu"
activation = "relu"

[[variants]]
name = "clipact"
activation = "clipact"
thresholds = "act_max"

[execution]
engine = "local"
batch_size = 40
"""


def write_campaign(tmp_path: Path, text: str = SMALL, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("OUT", str(tmp_path / "out")))
    return path


def comparable(rows):
    return sorted(tuple((k, v) for k, v in r.items() if k not in TIMING_COLUMNS) for r in rows_as_dicts(rows))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    config = load_campaign(write_campaign(tmp))
    path = run_campaign(config, progress=False)
    return config, path


def test_quickstart_file_is_valid():
    config = load_campaign(Path(__file__).resolve().parents[1] / "campaigns" / "quickstart.toml")
    assert [v.name for v in config.variants] == ["relu", "clipact"] and config.model.zoo == "alexnet"
    assert len(plan_jobs(config)) == 2 * 4 * 3


def test_planner_keys_and_seeds_depend_on_the_job_only(reference_run):
    config, _ = reference_run
    jobs = plan_jobs(config)
    assert len(jobs) == 2 * 2 * 4 and len({j.key for j in jobs}) == len(jobs)
    context = build_context(config)
    job = jobs[5]
    first = run_job(job, context)
    for other in jobs[:3]:
        run_job(other, context)  # other work in between changes nothing
    again = run_job(job, context)
    assert {k: v for k, v in first.items() if k not in TIMING_COLUMNS} == \
        {k: v for k, v in again.items() if k not in TIMING_COLUMNS}


def test_common_random_numbers_across_variants(reference_run):
    _, path = reference_run
    _, rows = read_results(path)
    by_key = {(r["variant"], r["rate"], r["trial"]): r["faults"] for r in rows_as_dicts(rows)}
    for (variant, rate, trial), faults in by_key.items():
        assert faults == by_key[("relu", rate, trial)]


def test_report_numbers_recomputed_from_raw_rows(reference_run, capsys):
    config, path = reference_run
    _, rows = read_results(path)
    summary = summarize(rows, ["relu", "clipact"])
    table = rows_as_dicts(rows)
    for s in summary:
        acc = [100 * r["correct"] / r["total"] for r in table if r["variant"] == s.variant and r["rate"] == s.rate]
        base = [100 * r["correct"] / r["total"] for r in table if r["variant"] == "relu" and r["rate"] == s.rate]
        mean = sum(acc) / len(acc)
        sd = math.sqrt(sum((a - mean) ** 2 for a in acc) / (len(acc) - 1))
        assert s.mean_accuracy == pytest.approx(mean)
        assert s.ci95 == pytest.approx(stats.t.ppf(0.975, len(acc) - 1) * sd / math.sqrt(len(acc)))
        assert s.improvement == pytest.approx(mean - sum(base) / len(base))
        welch = difference_ci95_half_width(np.array(acc), np.array(base))
        assert s.improvement_ci95 == (0.0 if s.variant == "relu" else pytest.approx(welch))
    clip = sorted((s for s in summary if s.variant == "clipact"), key=lambda s: s.rate)
    assert area_under_curve(summary, "clipact") == pytest.approx((clip[0].mean_accuracy + clip[1].mean_accuracy) / 2)
    per_trial = [sum(100 * r["correct"] / r["total"] for r in table if r["variant"] == "clipact" and r["trial"] == t) / 2
                 for t in range(config.faults.trials)]  # two rates: the AUC is their mean
    mean = sum(per_trial) / len(per_trial)
    sd = math.sqrt(sum((a - mean) ** 2 for a in per_trial) / (len(per_trial) - 1))
    (auc,) = [a for a in auc_summary(rows, ["relu", "clipact"]) if a.variant == "clipact"]
    assert auc.trials == config.faults.trials and auc.mean == pytest.approx(mean)
    assert auc.ci95 == pytest.approx(stats.t.ppf(0.975, len(per_trial) - 1) * sd / math.sqrt(len(per_trial)))
    assert main(["campaign", "report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "vs relu pp" in out and "AUC" in out
    for name in ("jobs.csv", "summary.csv", "accuracy_vs_rate.png", "accuracy_vs_rate.svg"):
        assert (path.parent / name).stat().st_size > 0


def test_replay_reproduces_a_stored_job(reference_run, capsys):
    _, path = reference_run
    assert main(["campaign", "replay", str(path), "--job", "clipact/1e-05/2"]) == 0
    assert "replay identical" in capsys.readouterr().out
    assert main(["campaign", "replay", str(path), "--job", "nope/1/1"]) == 2


def test_a_focused_run_computes_the_rows_of_the_whole_campaign(reference_run, tmp_path, capsys):
    """``--variants``/``--rates`` run some cells only, with exactly the rows the whole campaign has
    for them; the whole campaign then resumes from that file and ends with the reference rows."""
    config, ref_path = reference_run
    reference = read_results(ref_path)[1]
    path = write_campaign(tmp_path)
    assert main(["campaign", "run", str(path), "--no-progress", "--variants", "clipact", "--rates", "1e-5"]) == 0
    stored, rows = read_results(tmp_path / "out" / "results.h5")
    cell = reference[(reference["variant"] == b"clipact") & (reference["rate"] == 1e-5)]
    assert len(rows) == 4 and comparable(rows) == comparable(cell)
    assert set(stored["image_hashes"]) == {"clipact"}
    assert main(["campaign", "report", str(tmp_path / "out" / "results.h5")]) == 0  # a partial table
    out = capsys.readouterr().out
    assert "clipact" in out and "AUC" not in out  # one rate: no area under a curve
    whole = read_results(run_campaign(load_campaign(path), progress=False))
    assert comparable(whole[1]) == comparable(reference)
    assert whole[0]["image_hashes"] == read_results(ref_path)[0]["image_hashes"]
    for flags, message in ((["--variants", "relu,nope"], "variant 'nope'"), (["--rates", "3e-6"], "rate 3e-06"),
                           (["--rates", "fast"], "--rates takes numbers")):
        assert main(["campaign", "run", str(path), "--no-progress", *flags]) == 2
        assert message in capsys.readouterr().err


def test_a_campaign_grown_by_a_variant_and_a_rate_runs_only_the_new_cells(reference_run, tmp_path, capsys):
    """A finished campaign's file given more variants and rates resumes from its results: the
    old rows stay as they are, the new cells run; changing a stored variant is refused."""
    import shutil

    _, ref_path = reference_run
    (tmp_path / "out").mkdir()
    shutil.copy(ref_path, tmp_path / "out" / "results.h5")
    grown = SMALL.replace("rates = [1e-6, 1e-5]", "rates = [1e-6, 3e-6, 1e-5]") + """
[[variants]]
name = "clamp"
activation = "clamp"
thresholds = "act_max"
"""
    rows = read_results(run_campaign(load_campaign(write_campaign(tmp_path, grown)), progress=False))[1]
    reference = read_results(ref_path)[1]
    assert len(rows) == 3 * 3 * 4
    old = np.isin(rows["key"], reference["key"])
    assert old.sum() == len(reference)
    np.testing.assert_array_equal(np.sort(rows[old], order="key"), np.sort(reference, order="key"))  # not rerun
    assert set(read_results(tmp_path / "out" / "results.h5")[0]["image_hashes"]) == {"relu", "clipact", "clamp"}
    changed = grown.replace('name = "clipact"\nactivation = "clipact"', 'name = "clipact"\nactivation = "clamp"')
    assert changed != grown
    with pytest.raises(ValueError, match="different campaign configuration"):
        run_campaign(load_campaign(write_campaign(tmp_path, changed, "changed.toml")), progress=False)


@pytest.mark.slow
def test_resume_after_kill_minus_9_equals_uninterrupted_run(reference_run, tmp_path):
    config, ref_path = reference_run
    _, ref_rows = read_results(ref_path)
    campaign = write_campaign(tmp_path)
    results = tmp_path / "out" / "results.h5"
    rng = np.random.default_rng(0)
    cmd = [sys.executable, "-m", "accel_sim", "campaign", "run", str(campaign), "--no-progress"]
    kills = 0
    for attempt in range(8):  # three kills, then the final run below completes the campaign
        if kills == 3:
            break
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        done_before = len(read_results(results)[1]) if results.exists() else 0
        deadline = time.time() + 120
        target = done_before + int(rng.integers(1, 4))
        while proc.poll() is None and time.time() < deadline:  # kill once a few more jobs are in
            if results.exists() and len(read_results(results)[1]) >= target:
                time.sleep(float(rng.uniform(0, 0.4)))  # land anywhere, also inside a job or a write
                break
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            with h5py.File(results, "r") as f:  # never left unreadable
                assert "jobs" in f
        if proc.returncode == 0:
            break
    assert kills >= 3
    final = subprocess.run(cmd, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    _, rows = read_results(results)
    keys = [k.decode() for k in rows["key"]]
    assert len(keys) == len(set(keys)) == len(plan_jobs(config))
    assert comparable(rows) == comparable(ref_rows)


@pytest.mark.slow
def test_two_concurrent_runs_and_kill_9_never_lose_or_tear_the_results(reference_run, tmp_path):
    """A second run on a busy folder is refused in one line; a reader polling the results file
    while a run writes it always reads a whole file whose rows only grow; after kill -9 the file
    is readable with every row it had, and a resume completes it."""
    config, ref_path = reference_run
    _, ref_rows = read_results(ref_path)
    campaign = write_campaign(tmp_path)
    out = tmp_path / "out"
    results = out / "results.h5"
    cmd = [sys.executable, "-m", "accel_sim", "campaign", "run", str(campaign), "--no-progress"]
    with folder_lock(out):  # another run holds the folder
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "in use by another run" in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    assert not results.exists()
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, seen, reads = time.time() + 120, 0, 0
    while first.poll() is None and time.time() < deadline and seen < 3:
        if results.exists():
            rows = read_results(results)[1]  # raises on a torn or half-written file
            assert len(rows) >= seen
            seen, reads = len(rows), reads + 1
        time.sleep(0.005)
    assert first.poll() is None, "the run ended before the test could interfere"
    with pytest.raises(ValueError, match="in use by another run"):
        with folder_lock(out):
            pass
    kept = comparable(read_results(results)[1])
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert set(kept) <= set(comparable(read_results(results)[1]))  # no finished row lost
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    _, rows = read_results(results)
    keys = [k.decode() for k in rows["key"]]
    assert len(keys) == len(set(keys)) == len(plan_jobs(config))
    assert comparable(rows) == comparable(ref_rows) and reads > 0


@pytest.mark.slow
def test_dask_with_two_workers_gives_identical_rows(reference_run, tmp_path):
    pytest.importorskip("dask.distributed")
    _, ref_path = reference_run
    text = SMALL.replace('engine = "local"', 'engine = "dask"\nworkers = 2')
    config = load_campaign(write_campaign(tmp_path, text))
    path = run_campaign(config, progress=False)
    _, rows = read_results(path)
    _, ref_rows = read_results(ref_path)
    assert comparable(rows) == comparable(ref_rows)
    assert len({w for w in rows["worker"]}) == 2  # both workers ran jobs


def test_results_of_schema_version_1_read_with_nothing_flagged(reference_run, tmp_path):
    """A results file written before rows had flagged, silent and recomputed reads back with no
    image flagged or recomputed and every wrong prediction silent; a resumed campaign keeps it."""
    from accel_sim.campaign.store import _ROW_DTYPE_V1

    _, path = reference_run
    with h5py.File(path, "r") as f:
        attrs, rows = dict(f.attrs), f["jobs"][()]
    old = tmp_path / "results.h5"
    with h5py.File(old, "w") as f:
        f.attrs.update({**attrs, "schema_version": 1})
        f.create_dataset("jobs", data=np.array([tuple(r[n] for n in _ROW_DTYPE_V1.names) for r in rows],
                                               dtype=_ROW_DTYPE_V1))
    config, back = read_results(old)
    assert len(back) == len(rows) and back.dtype == rows.dtype
    for name in _ROW_DTYPE_V1.names:
        np.testing.assert_array_equal(back[name], rows[name])
    assert not back["flagged"].any() and not back["recomputed"].any()
    np.testing.assert_array_equal(back["silent"], back["total"] - back["correct"])
    np.testing.assert_array_equal(rows["silent"], rows["total"] - rows["correct"])  # nothing flags on this hardware
    store = ResultsStore(old, config["campaign"]["name"], config)
    assert store.finished() == {k.decode() for k in rows["key"]}


def test_other_campaign_in_output_folder_is_refused(reference_run, tmp_path):
    config, path = reference_run
    changed = SMALL.replace("seed = 7", "seed = 8").replace("OUT", str(path.parent))
    other = tmp_path / "other.toml"
    other.write_text(changed)
    with pytest.raises(ValueError, match="different campaign configuration"):
        run_campaign(load_campaign(other), progress=False)


def broken_campaigns() -> list[tuple[str, str]]:
    """A corpus of broken campaign documents: (label, TOML text)."""
    base = tomllib.loads(SMALL)
    cases = []

    def dump(doc) -> str:
        lines = []
        for key, value in doc.items():
            if not isinstance(value, (dict, list)) or (isinstance(value, list) and value and not isinstance(value[0], dict)):
                lines.append(f"{key} = {toml_value(value)}")
        for key, value in doc.items():
            if isinstance(value, dict):
                lines.append(f"[{key}]")
                lines += [f"{k} = {toml_value(v)}" for k, v in value.items()]
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for item in value:
                    lines.append(f"[[{key}]]")
                    lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
        return "\n".join(lines) + "\n"

    def variant(mutate, label):
        doc = tomllib.loads(SMALL)
        mutate(doc)
        cases.append((label, dump(doc)))

    wrong = {str: 12, int: "x", float: "x", list: 3}
    for section in ("model", "data", "hardware", "faults", "execution"):
        for key, value in base.get(section, {}).items():
            bad = wrong[list if isinstance(value, list) else type(value)]
            variant(lambda d, s=section, k=key, b=bad: d[s].__setitem__(k, b), f"{section}.{key} wrong type")
            variant(lambda d, s=section, k=key: d[s].__setitem__(k + "x", 1), f"{section}.{key}x unknown")
            variant(lambda d, s=section, k=key: d[s].__setitem__(k, True), f"{section}.{key} boolean")
    for key, value in base["variants"][1].items():
        variant(lambda d, k=key: d["variants"][1].__setitem__(k, 3), f"variants[1].{key} wrong type")
        variant(lambda d, k=key: d["variants"][1].__setitem__(k, [k]), f"variants[1].{key} list")
    for section in ("model", "data", "hardware", "faults", "execution"):
        variant(lambda d, s=section: d.__setitem__(s, 5), f"{section} is a number")
        variant(lambda d, s=section: d.__setitem__(s, [1, 2]), f"{section} is a list")
    for section, key in (("model", "calibration"), ("data", "count"), ("data", "offset"), ("data", "profile_count"),
                         ("faults", "trials"), ("execution", "workers"), ("execution", "batch_size")):
        variant(lambda d, s=section, k=key: d[s].__setitem__(k, -5), f"{section}.{key} negative")
    for key in ("name", "seed", "variants", "faults"):
        variant(lambda d, k=key: d.pop(k), f"{key} missing")
    for key, bad in (("name", 3), ("seed", -1), ("seed", "7"), ("name", "has space"), ("output", 5)):
        variant(lambda d, k=key, b=bad: d.__setitem__(k, b), f"{key} = {bad!r}")
    variant(lambda d: d.__setitem__("extra", 1), "unknown top-level key")
    for rate in (-1e-6, 1.5, 2, -0.0001):
        variant(lambda d, r=rate: d["faults"].__setitem__("rates", [1e-6, r]), f"rate {rate}")
    variant(lambda d: d["faults"].__setitem__("rates", []), "no rates")
    variant(lambda d: d["faults"].__setitem__("rates", [1e-6, 1e-6]), "duplicate rate")
    variant(lambda d: d["faults"].__setitem__("rates", ["1e-6"]), "rate as text")
    for key, bad in (("site", "dram"), ("model", "bitrot"), ("persistence", "sometimes"), ("count_mode", "poisson"),
                     ("trials", 0), ("registers", ["acc"])):
        variant(lambda d, k=key, b=bad: d["faults"].__setitem__(k, b), f"faults.{key} = {bad!r}")
    variant(lambda d: d.__setitem__("variants", []), "empty variants")
    variant(lambda d: d["variants"][0].pop("name"), "variant without name")
    variant(lambda d: d["variants"][1].pop("thresholds"), "clipact without thresholds")
    variant(lambda d: d["variants"][1].__setitem__("thresholds", "missing.toml"), "threshold file missing")
    variant(lambda d: d["variants"][1].__setitem__("activation", "gelu"), "unknown activation")
    variant(lambda d: d["variants"][1].__setitem__("name", "relu"), "duplicate variant name")
    variant(lambda d: d["variants"][0].__setitem__("format", "float16"), "bad variant format")
    variant(lambda d: d["variants"][0].__setitem__("colour", "red"), "unknown variant key")
    variant(lambda d: d["model"].__setitem__("image", "missing.h5"), "image and zoo")
    variant(lambda d: (d["model"].pop("zoo"), d["model"].__setitem__("image", "missing.h5")), "missing image")
    variant(lambda d: d["model"].pop("zoo"), "no model")
    variant(lambda d: d["model"].__setitem__("zoo", "resnet"), "unknown zoo model")
    variant(lambda d: d["model"].__setitem__("format", "fixed"), "bad format")
    variant(lambda d: d["data"].__setitem__("source", "imagenet"), "bad data source")
    variant(lambda d: d["data"].__setitem__("count", 0), "zero images")
    variant(lambda d: d["data"].__setitem__("split", "valid"), "bad split")
    variant(lambda d: d["hardware"].__setitem__("preset", "nope"), "unknown preset")
    variant(lambda d: d["hardware"].__setitem__("file", "nope.toml"), "missing hardware file")
    variant(lambda d: d["execution"].__setitem__("engine", "spark"), "bad engine")
    variant(lambda d: d["execution"].__setitem__("workers", 0), "zero workers")
    variant(lambda d: d.__setitem__("model", "alexnet"), "model not a table")
    cases.append(("not toml", "name = \n[[["))
    cases.append(("binary garbage", "\x00\x01 = = ="))
    cases.append(("empty file", ""))
    return cases


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def test_broken_campaign_corpus_gives_one_line_errors(tmp_path, capsys):
    cases = broken_campaigns()
    assert len(cases) >= 100
    for i, (label, text) in enumerate(cases):
        path = tmp_path / f"broken{i}.toml"
        path.write_text(text.replace("OUT", str(tmp_path / f"out{i}")))
        code = main(["campaign", "run", str(path), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2, label
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (label, err)
        assert f"broken{i}.toml" in err, (label, err)
        assert not (tmp_path / f"out{i}").exists(), label
    assert main(["campaign", "run", str(tmp_path / "absent.toml")]) == 2


def test_error_names_the_key_and_line(tmp_path):
    text = SMALL.replace("trials = 4", "trials = 4\nratez = 3")
    with pytest.raises(ValueError, match=r"faults\.ratez \(line \d+\) is not a known key"):
        campaign_from_dict(tomllib.loads(text), "c.toml", text)


@pytest.mark.slow
def test_trials_grow_until_each_mean_meets_the_ci_target(tmp_path):
    """With target_ci95, a mean whose CI is too wide after min_trials gets twice the trials (up to
    trials); narrow ones stop; the rounds are decided on exactly the planned trials, so a run
    killed midway and resumed ends with the same rows."""
    from accel_sim.campaign.report import ci95_half_width, summarize

    text = SMALL.replace("trials = 4", "trials = 16\ntarget_ci95 = 3.0\nmin_trials = 2").replace(
        "rates = [1e-6, 1e-5]", "rates = [3e-7, 1e-5]")
    config = load_campaign(write_campaign(tmp_path, text))
    rows = read_results(run_campaign(config, progress=False))[1]
    summary = {(s.variant, s.rate): s for s in summarize(rows, ["relu", "clipact"])}
    counts = {cell: s.trials for cell, s in summary.items()}
    assert set(counts.values()) <= {2, 4, 8, 16} and max(counts.values()) > 2 and min(counts.values()) < 16
    names = np.array([v.decode() for v in rows["variant"]])
    accuracy = 100.0 * rows["correct"] / rows["total"]
    for (variant, rate), n in counts.items():
        assert summary[(variant, rate)].ci95 <= 3.0 or n == 16
        if n > 2:  # it grew: the round before it was too wide
            sel = (names == variant) & (rows["rate"] == rate) & (rows["trial"] < n // 2)
            assert ci95_half_width(accuracy[sel]) > 3.0
    # resume from a prefix of the rows (a kill midway through the second round)
    partial = tmp_path / "partial"
    config2 = load_campaign(write_campaign(tmp_path, text, "d.toml"))
    first = rows[rows["trial"] < 2]
    store = ResultsStore(partial / "results.h5", config2.name, build_context(config2, partial).resolved())
    for row in rows_as_dicts(np.concatenate([first, rows[rows["trial"] == 2][:1]])):
        store.add(row)
    resumed = read_results(run_campaign(config2, partial, progress=False))[1]
    assert comparable(resumed) == comparable(rows)


@pytest.mark.slow
def test_resilience_analysis_by_layer_and_bit(tmp_path, capsys):
    """fp32 AlexNet: flips of the exponent's top bit wreck it, flips of the lowest mantissa bit
    change nothing; a cell's result does not depend on the other cells run; the CLI writes the
    CSV and the plots."""
    from accel_sim.campaign.analysis import AnalysisSettings, analysis_cells, analyze
    from accel_sim.data import draw_sample, load_bundled_sample
    from accel_sim.hardware import Accelerator, load_preset
    from accel_sim.image.export import export_model
    from accel_sim.image.hdf5 import write_image
    from accel_sim.models import load_weights

    calibration = draw_sample(load_bundled_sample("train"), 32, np.random.default_rng(0)).images
    image = export_model(load_weights("alexnet"), calibration, None, model_name="alexnet")
    test = load_bundled_sample("test").subset(40)
    acc = Accelerator(load_preset("edge16"), batch_size=40)
    settings = AnalysisSettings(rate=1e-6, trials=1, seed=3)
    assert [b for _, b in analysis_cells(image, acc, settings, "bit")] == list(range(32))
    clean, both = analyze(image, acc, test.images, test.labels, settings, ("layer", "bit"))
    by_bit = {r.bit: r for r in both if r.grouping == "bit"}
    assert by_bit[30].drop > 50 and by_bit[0].drop == 0 and by_bit[30].mean_faults > 0
    _, layers_only = analyze(image, acc, test.images, test.labels, settings, ("layer",))
    assert layers_only == [r for r in both if r.grouping == "layer"]
    assert [r.layer for r in layers_only] == [i for i, layer in enumerate(image.layers) if hasattr(layer, "bias")]
    path = write_image(image, tmp_path / "a.h5")
    assert main(["analyze", "--image", str(path), "--by", "layer", "--trials", "2", "--subset", "20",
                 "--rate", "1e-7", "--no-progress", "-o", str(tmp_path / "an")]) == 0
    assert (tmp_path / "an" / "analysis.csv").is_file() and (tmp_path / "an" / "by_layer.png").is_file()
    capsys.readouterr()
    assert main(["analyze", "--image", str(path), "--by", "neuron", "-o", str(tmp_path / "x")]) == 2
    assert "--by takes groupings among layer, bit, layer-bit" in capsys.readouterr().err
    assert main(["analyze", "--zoo", "alexnet", "--format", "fixed16.x", "-o", str(tmp_path / "x")]) == 2
    assert "--format must be fp32, fixedW (e.g. fixed16) or fixedW.F" in capsys.readouterr().err


def test_auc_of_a_partial_campaign_is_over_the_rates_every_variant_has():
    from accel_sim.campaign.report import common_rates
    from accel_sim.campaign.store import ROW_DTYPE

    cells = [("relu", 1e-6, 0, 30), ("relu", 1e-5, 0, 10), ("clipact", 1e-5, 0, 80), ("clipact", 1e-6, 0, 90),
             ("clipact", 3e-6, 0, 85), ("clamp", 1e-6, 0, 50)]
    rows = np.zeros(len(cells), dtype=ROW_DTYPE)
    for row, (variant, rate, trial, correct) in zip(rows, cells):
        row["variant"], row["rate"], row["trial"], row["correct"], row["total"] = variant.encode(), rate, trial, correct, 100
    assert common_rates(rows, ["relu", "clipact", "clamp", "tuned"]) == (["relu", "clipact", "clamp"], [1e-6])
    assert common_rates(rows, ["relu", "clipact"]) == (["relu", "clipact"], [1e-6, 1e-5])
    relu, clipact = auc_summary(rows, ["relu", "clipact"], [1e-6, 1e-5])
    assert (relu.mean, clipact.mean) == (20.0, 85.0)  # clipact's 3e-6 is left out


def test_improvement_ci_is_welchs_interval():
    """The improvement's CI half-width equals scipy's Welch interval for the difference of means
    (different trial counts and spreads); constant samples give 0, a single trial NaN."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(88, 0.5, 10), rng.normal(40, 30, 300)
    low, high = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert difference_ci95_half_width(a, b) == pytest.approx((high - low) / 2, rel=1e-9)
    assert difference_ci95_half_width(np.full(5, 88.0), np.full(7, 1.0)) == 0.0
    assert np.isnan(difference_ci95_half_width(a, b[:1]))


def test_ecc_variant_keeps_fault_free_accuracy(tmp_path):
    """A variant with protection = "ecc" runs on SEC-DED weight memory: at 1e-5 (one fault per
    code word) it keeps the fault-free accuracy in every trial, where the unprotected variant does
    not; its faults are drawn over the code words. A campaign without the option records no
    protection key (older results files still match)."""
    text = SMALL.replace('rates = [1e-6, 1e-5]', 'rates = [1e-5]\ncount_mode = "exact"').replace(
        '[[variants]]\nname = "clipact"\nactivation = "clipact"\nthresholds = "act_max"',
        '[[variants]]\nname = "relu-ecc"\nactivation = "relu"\nprotection = "ecc"')
    config = load_campaign(write_campaign(tmp_path, text))
    assert "protection" not in load_campaign(write_campaign(tmp_path, SMALL, "plain.toml")).to_dict()["variants"][0]
    _, rows = read_results(run_campaign(config, progress=False))
    table = rows_as_dicts(rows)
    clean = build_context(config).images["relu"]
    fault_free = int(np.sum(Accelerator(load_preset("edge16")).run(clean, load_bundled_sample().images[:40]).predictions
                            == load_bundled_sample().labels[:40]))
    ecc = [r for r in table if r["variant"] == "relu-ecc"]
    assert ecc and all(r["correct"] == fault_free for r in ecc)
    assert any(r["correct"] < fault_free for r in table if r["variant"] == "relu")
    assert min(r["faults"] for r in ecc) > max(r["faults"] for r in table if r["variant"] == "relu")  # 39-bit code words
    with pytest.raises(ValueError, match=r"variants\[1\].protection \(line 32\) must be one of none, ecc, dmr, "
                                         r"dmr-recompute, tmr"):
        load_campaign(write_campaign(tmp_path, text.replace('protection = "ecc"', 'protection = "abft"'), "bad.toml"))


def test_a_variant_runs_other_weights_of_the_zoo_architecture(tmp_path):
    """A variant's weights file (e.g. fault-aware trained) is exported like the zoo's and runs
    beside it; the option is left out of the resolved campaign when unused; a missing file, or
    weights with a given image file, are refused with the key and line."""
    from accel_sim.models import load_weights, save_weights, zoo_weights_path

    model = load_weights("alexnet", zoo_weights_path("alexnet"))
    with torch.no_grad():
        model[-1].bias += 1.0  # some other weights of the same architecture
    other = save_weights(model, "alexnet", tmp_path / "other.pt")
    text = SMALL.replace('[[variants]]\nname = "clipact"\nactivation = "clipact"\nthresholds = "act_max"',
                         f'[[variants]]\nname = "relu-other"\nactivation = "relu"\nweights = "{other}"')
    config = load_campaign(write_campaign(tmp_path, text))
    assert config.variants[1].weights == str(other) and campaign_from_dict(config.to_dict()) == config
    assert "weights" not in config.to_dict()["variants"][0]
    context = build_context(config)
    assert context.image_hashes["relu"] != context.image_hashes["relu-other"]
    zoo = context.images["relu"].layers[-1].bias
    assert not np.array_equal(zoo, context.images["relu-other"].layers[-1].bias)
    with pytest.raises(ValueError, match=r"variants\[1\].weights \(line \d+\) names a missing file"):
        load_campaign(write_campaign(tmp_path, text.replace(str(other), "nope.pt"), "bad.toml"))


@pytest.mark.slow
def test_tmr_variant_and_the_comparison_of_protections(tmp_path, capsys):
    """PE faults on a TMR variant are drawn over three replicas and the voters, on a DMR variant
    over two replicas (more faults than the unprotected array at the same rate); DMR flags the
    images whose replicas disagreed and counts wrong, unflagged ones as silent; `campaign
    compare` puts every variant's accuracy per rate beside its cost: stored bits per weight
    (SEC-DED code words), PEs, voters and comparators."""
    text = (SMALL.replace('format = "fp32"', 'format = "fixed16"').replace('preset = "edge16"', 'preset = "edge16-os"')
            .replace('site = "weight_memory"\nrates = [1e-6, 1e-5]\ntrials = 4',
                     'site = "pe"\nrates = [3e-4]\ntrials = 2\ncount_mode = "exact"')
            .replace('[[variants]]\nname = "clipact"\nactivation = "clipact"\nthresholds = "act_max"',
                     '[[variants]]\nname = "relu-tmr"\nprotection = "tmr"\n\n[[variants]]\nname = "relu-ecc"\n'
                     'protection = "ecc"\n\n[[variants]]\nname = "relu-dmr"\nprotection = "dmr"'))
    path = write_campaign(tmp_path, text)
    _, rows = read_results(run_campaign(load_campaign(path), progress=False))
    table = rows_as_dicts(rows)
    faults = {v: [r["faults"] for r in table if r["variant"] == v]
              for v in ("relu", "relu-tmr", "relu-ecc", "relu-dmr")}
    # int(bits × 3e-4): 24,576, 86,016 and 49,152 bits
    assert faults["relu"] == [7, 7] and faults["relu-tmr"] == [25, 25] and faults["relu-dmr"] == [14, 14]
    assert faults["relu-ecc"] == faults["relu"]
    for r in table:
        wrong_flagged = r["total"] - r["correct"] - r["silent"]
        assert 0 <= wrong_flagged <= r["flagged"] and r["recomputed"] == 0
        assert r["flagged"] > 0 if r["variant"] == "relu-dmr" else r["flagged"] == 0
    assert main(["campaign", "compare", str(path), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "768 + 256 voters" in printed and "512 + 256 comparators" in printed and "22 bits (+38 %)" in printed
    assert "DMR: images flagged / wrong and not flagged (silent)" in printed
    with open(tmp_path / "cmp.csv") as f:
        costs = {r["variant"]: r for r in csv.DictReader(f)}
    assert (costs["relu-tmr"]["pe_replicas"], costs["relu-tmr"]["voters"], costs["relu"]["pe_replicas"]) == ("768", "256", "256")
    assert (costs["relu"]["stored_bits_per_weight"], costs["relu-ecc"]["stored_bits_per_weight"]) == ("16", "22")
    assert (costs["relu-dmr"]["comparators"], float(costs["relu-dmr"]["flagged"]) > 0) == ("256", True)
    assert (tmp_path / "cmp.png").stat().st_size > 0


def test_resolved_campaign_reads_back():
    """A campaign's plain data (what results files record) parses back into the same campaign."""
    for path in sorted((Path(__file__).resolve().parents[1] / "campaigns").rglob("*.toml")):
        if "hardware" in path.parts:
            continue
        config = load_campaign(path)
        assert campaign_from_dict(config.to_dict()) == config, path
