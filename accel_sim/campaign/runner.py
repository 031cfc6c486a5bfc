"""Planning and running a campaign: variants × fault rates × trials, locally or on Dask.

Every job is independent and seeded from the campaign seed and its key only
(:func:`accel_sim.faults.draw.job_rng`): the key ``variant/rate/trial`` names the job, and the
fault draw uses ``rate/trial``, so variants of the same word format see the same fault positions
(common random numbers: differences between variants are not drawing noise). Results therefore
do not depend on order, worker count or resumption.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from accel_sim.campaign.config import CampaignConfig, protected_hardware
from accel_sim.campaign.report import ci95_half_width
from accel_sim.campaign.store import LOCK_NAME, RESULTS_NAME, ResultsStore
from accel_sim.data import draw_sample, load_bundled_sample, load_cifar10
from accel_sim.errors import AccelSimError
from accel_sim.faults import draw_fault_map, job_rng, run_with_faults
from accel_sim.faults.draw import eligible_bits
from accel_sim.hardware import Accelerator, HardwareConfig, load_hardware, load_preset
from accel_sim.image import Image
from accel_sim.image.export import export_model, parse_export_format
from accel_sim.image.hdf5 import read_image
from accel_sim.mitigation import (
    activation_layers,
    draw_tuning_data,
    profile_act_max,
    read_thresholds,
    tune_thresholds,
    with_activation,
    write_thresholds,
)
from accel_sim.mitigation.tune import tuning_key
from accel_sim.runtime import tune_allocator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    variant: str
    rate: float
    trial: int

    @property
    def key(self) -> str:
        return f"{self.variant}/{self.rate!r}/{self.trial}"

    @property
    def draw_key(self) -> str:
        return f"{self.rate!r}/{self.trial}"


@dataclass
class CampaignContext:
    """Everything a job needs, built once and sent to each worker once."""

    config: CampaignConfig
    hw: HardwareConfig
    images: dict[str, Image]  # per variant
    image_hashes: dict[str, str]
    inputs: np.ndarray  # uint8 (N, 3, 32, 32)
    labels: np.ndarray
    thresholds: dict[str, dict[int, float]]
    data_name: str
    threads: int = 0  # torch/numba threads per job; 0 = leave as is
    # per process: one accelerator per variant, so each image's clean prepared layers are built
    # once per worker, not once per job (not pickled: each worker builds its own)
    _accelerators: dict[str, Accelerator] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_accelerators": {}}

    def accelerator(self, variant: str) -> Accelerator:
        """The accelerator that runs ``variant``'s jobs in this process."""
        if variant not in self._accelerators:
            self._accelerators[variant] = Accelerator(self.variant_hw(variant),
                                                      batch_size=self.config.execution.batch_size)
        return self._accelerators[variant]

    def variant_hw(self, variant: str) -> HardwareConfig:
        """The campaign's hardware with ``variant``'s protection."""
        spec = next(v for v in self.config.variants if v.name == variant)
        return protected_hardware(self.hw, spec.protection)

    def resolved(self) -> dict:
        """What the results file records: the campaign, the hardware, the images and thresholds."""
        return {"campaign": self.config.to_dict(), "hardware": self.hw.to_dict(),
                "image_hashes": self.image_hashes, "data": self.data_name,
                "thresholds": {v: {str(k): t for k, t in th.items()} for v, th in self.thresholds.items()}}


@dataclass(frozen=True)
class Focus:
    """The part of a campaign a run works on: some of its variants and some of its rates (None:
    all). A focused run computes exactly the rows the whole campaign computes for those cells (the
    jobs and their rounds depend on the cell only), into the same results file, so the whole
    campaign resumes from it later."""

    variants: tuple[str, ...] | None = None
    rates: tuple[float, ...] | None = None

    def check(self, config: CampaignConfig) -> None:
        """Refuse variants or rates the campaign does not have."""
        names = [v.name for v in config.variants]
        for name in self.variants or ():
            if name not in names:
                raise AccelSimError(f"variant {name!r} is not one of the campaign's: {', '.join(names)}")
        for rate in self.rates or ():
            if rate not in config.faults.rates:
                raise AccelSimError(f"rate {rate!r} is not one of the campaign's: "
                                    f"{', '.join(f'{r:g}' for r in config.faults.rates)}")
        if (self.variants is not None and not self.variants) or (self.rates is not None and not self.rates):
            raise AccelSimError("a focus names at least one variant and one rate, or leaves them out")

    def cells(self, config: CampaignConfig) -> list[tuple[str, float]]:
        """The (variant, rate) cells in the campaign's order."""
        return [(v.name, rate) for v in config.variants for rate in config.faults.rates
                if (self.variants is None or v.name in self.variants) and (self.rates is None or rate in self.rates)]


def plan_jobs(config: CampaignConfig, planned: dict[tuple[str, float], int] | None = None) -> list[Job]:
    """One job per (variant, rate, trial) in a fixed order: the trials ``planned`` per (variant,
    rate), by default those of the first round (all of them without a CI target)."""
    planned = planned if planned is not None else first_plan(config)
    return [Job(variant, rate, trial) for (variant, rate), n in planned.items() for trial in range(n)]


def first_plan(config: CampaignConfig, focus: Focus = Focus()) -> dict[tuple[str, float], int]:
    """The first round's trials of every cell of ``focus`` (in the campaign's order)."""
    return {cell: config.faults.first_trials for cell in focus.cells(config)}


def grow_plan(config: CampaignConfig, rows: np.ndarray, planned: dict[tuple[str, float], int]) -> dict[tuple[str, float], int]:
    """The next round: every (variant, rate) whose accuracy over its planned trials (all finished
    in ``rows``) has a 95 % CI half-width above ``faults.target_ci95`` gets twice the trials, up
    to ``faults.trials``. Decided on exactly the planned trials, so a resumed campaign takes the
    same rounds."""
    target, cap = config.faults.target_ci95, config.faults.trials
    names = np.array([v.decode() for v in rows["variant"]])
    accuracy = 100.0 * rows["correct"] / np.maximum(rows["total"], 1)
    grown = dict(planned)
    for (variant, rate), n in planned.items():
        if not target or n >= cap:
            continue
        sel = (names == variant) & (rows["rate"] == rate) & (rows["trial"] < n)
        if ci95_half_width(accuracy[sel]) > target:
            grown[(variant, rate)] = min(2 * n, cap)
    return grown


def load_campaign_hardware(config: CampaignConfig) -> HardwareConfig:
    return load_hardware(config.hardware.file) if config.hardware.file else load_preset(config.hardware.preset)


def build_context(config: CampaignConfig, out_dir: str | os.PathLike | None = None,
                  variants: tuple[str, ...] | None = None) -> CampaignContext:
    """Export or load the images of every variant (of ``variants`` when given), profile or tune
    their thresholds, load the evaluation data. Tuned thresholds are kept in
    ``out_dir/thresholds/`` (with the tuning's resume file), named by what decides them, and read
    from there when present."""
    chosen = [v for v in config.variants if variants is None or v.name in variants]
    hw = load_campaign_hardware(config)
    d = config.data
    if d.source == "bundled":
        train, data = load_bundled_sample("train"), load_bundled_sample(d.split)
    else:
        folder = d.folder or None
        train, data = load_cifar10(folder, "train"), load_cifar10(folder, d.split)
    data = data.subset(d.count, d.offset)
    rng = np.random.default_rng(config.seed)
    calibration = draw_sample(train, min(config.model.calibration, len(train)), rng).images
    profile = draw_sample(train, min(d.profile_count, len(train)), rng).images
    accelerator = Accelerator(hw, batch_size=config.execution.batch_size)
    relu: dict[tuple[str, str], Image] = {}  # per (format, weights): the ReLU image its variants start from
    for variant in chosen:
        source = (variant.format or config.model.format, variant.weights)
        if source not in relu:
            relu[source] = with_activation(_base_image(config, *source, calibration), "relu")
            # before any profiling or tuning: an image the hardware cannot run, or faults that
            # could never be drawn on it (layers it lacks, bits beyond its words), fail now
            accelerator.check_image(relu[source])
            for rate in config.faults.rates:
                eligible_bits(relu[source], hw, config.faults.draw_spec(rate))
    images, thresholds, act_max = {}, {}, {}
    for variant in chosen:
        source = (variant.format or config.model.format, variant.weights)
        image = relu[source]
        if variant.activation == "relu":
            images[variant.name], thresholds[variant.name] = image, {}
            continue
        if variant.thresholds == "act_max":
            if source not in act_max:  # profiled once per image, whatever the variants make of it
                act_max[source] = profile_act_max(image, profile, accelerator)
            th = act_max[source]
        elif variant.thresholds == "tuned":
            th = _tuned_thresholds(config, variant.activation, image, accelerator, train, out_dir)
        else:
            th = read_thresholds(variant.thresholds, variant.activation).values
        images[variant.name] = with_activation(image, variant.activation, th)
        thresholds[variant.name] = th
    return CampaignContext(config, hw, images, {k: v.content_hash() for k, v in images.items()}, data.images,
                           data.labels, thresholds, data.name)


def _base_image(config: CampaignConfig, fmt: str, weights_file: str, calibration: np.ndarray) -> Image:
    """The campaign's image file, or the zoo model (with ``weights_file``'s weights when given)
    exported in ``fmt``."""
    if config.model.image:
        return read_image(config.model.image)
    from accel_sim.models import load_weights, zoo_weights_path
    from accel_sim.models.zoo import file_sha256

    weights = weights_file or zoo_weights_path(config.model.zoo)
    bits, frac = parse_export_format(fmt)
    return export_model(load_weights(config.model.zoo, weights), calibration, bits, model_name=config.model.zoo,
                        source_sha256=file_sha256(weights), frac_bits=frac)


def _tuned_thresholds(config: CampaignConfig, method: str, base: Image, accelerator: Accelerator, train,
                      out_dir: str | os.PathLike | None) -> dict[int, float]:
    """The ``method`` thresholds tuned for the ReLU image ``base``, read from ``out_dir`` when a
    tuning with the same key finished there before."""
    settings = config.tuning.settings(method, config.seed)
    profile, tune = draw_tuning_data(train, settings)
    key = tuning_key(base, accelerator, settings, profile, tune)
    folder = Path(out_dir) / "thresholds" if out_dir is not None else None
    cached = folder / f"{method}-{key[:16]}.toml" if folder is not None else None
    if cached is not None and cached.is_file():
        logger.info("tuned %s thresholds of %s %s read from %s", method, base.model, base.format_name, cached)
        return read_thresholds(cached, method).values
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    state = folder / f"{method}-{key[:16]}.tuning.json" if folder is not None else None
    logger.info("tuning %s thresholds of %s %s (%d layers)", method, base.model, base.format_name,
                len(activation_layers(base)))
    thresholds = tune_thresholds(base, accelerator, profile, tune, settings, config.tuning.mode, state)
    if cached is not None:
        write_thresholds(thresholds, cached)
    return thresholds.values


def run_job(job: Job, context: CampaignContext) -> dict:
    """Run one job; returns its result row. A top-level function, so Dask can ship it."""
    tune_allocator()
    if context.threads:
        import numba
        import torch

        torch.set_num_threads(context.threads)
        numba.set_num_threads(context.threads)
    started = time.perf_counter()
    image, hw, config = context.images[job.variant], context.variant_hw(job.variant), context.config
    spec = config.faults.draw_spec(job.rate)
    fmap = draw_fault_map(image, hw, spec, job_rng(config.seed, job.draw_key), len(context.inputs),
                          config.seed, job.key, image_hash=context.image_hashes[job.variant])
    out = run_with_faults(context.accelerator(job.variant), image, context.inputs, fmap)
    return {
        "key": job.key, "variant": job.variant, "rate": job.rate, "trial": job.trial, "seed": config.seed,
        "faults": len(fmap), "correct": int(np.sum(out.predictions == context.labels)), "total": len(context.labels),
        "nan_count": out.nan_count, "flagged": int(out.flagged.sum()), "silent": out.silent_errors(context.labels),
        "recomputed": int(out.recomputed.sum()), "seconds": time.perf_counter() - started,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


def run_campaign(config: CampaignConfig, out_dir: str | os.PathLike | None = None, progress: bool = True,
                 focus: Focus = Focus()) -> Path:
    """Run (or resume) a campaign, or the cells of ``focus``; returns the path of its results
    file."""
    focus.check(config)
    out = Path(out_dir or config.output or f"results/{config.name}")
    created = not out.exists()
    with folder_lock(out):
        try:
            context = build_context(config, out, focus.variants)
            store = ResultsStore(out / RESULTS_NAME, config.name, context.resolved())
        except BaseException:
            if created:
                (out / LOCK_NAME).unlink(missing_ok=True)
                if not any(out.iterdir()):
                    out.rmdir()
            raise
        return _run_jobs(config, context, store, progress, focus)


def _run_jobs(config: CampaignConfig, context: CampaignContext, store: ResultsStore, progress: bool,
              focus: Focus) -> Path:
    store.save()  # the resolved config is on disk from the start
    planned = first_plan(config, focus)
    with _executor(config, context, store, progress) as execute:
        for round_number in itertools.count(1):  # ends: every round doubles some cell towards the cap
            jobs = plan_jobs(config, planned)
            todo = [job for job in jobs if job.key not in store.finished()]
            logger.info("campaign %s round %d: %d jobs, %d already done, %d to run on %s", config.name,
                        round_number, len(jobs), len(jobs) - len(todo), len(todo), config.execution.engine)
            execute(todo)
            grown = grow_plan(config, store.rows, planned)
            if grown == planned:
                break
            wider = sum(grown[cell] > planned[cell] for cell in planned)
            logger.info("campaign %s: %d of %d means above the %.3g pp CI target get more trials", config.name,
                        wider, len(planned), config.faults.target_ci95)
            planned = grown
    return store.path


@contextlib.contextmanager
def _executor(config: CampaignConfig, context: CampaignContext, store: ResultsStore, progress: bool):
    """A function that runs jobs and stores their rows: in this process, or on a Dask cluster
    started once for every round."""
    if config.execution.engine != "dask":
        def run_here(todo: list[Job]) -> None:
            for job in tqdm(todo, desc=config.name, disable=not progress, unit="job"):
                store.add(run_job(job, context))
        yield run_here
        return
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise AccelSimError("execution.engine = 'dask' needs Dask: pip install 'accel-sim-fi[dask]'") from None
    cluster = None if config.execution.scheduler else local_cluster(config.execution.workers)
    client = Client(config.execution.scheduler or cluster)
    try:
        context.threads = 1  # one job per worker process, one thread each
        shared = client.scatter(context, broadcast=True)  # sent to each worker once

        def run_on_dask(todo: list[Job]) -> None:
            futures = [client.submit(run_job, job, shared, pure=False) for job in todo]
            for future in tqdm(as_completed(futures), total=len(futures), desc=config.name, disable=not progress,
                               unit="job"):
                store.add(future.result())
        yield run_on_dask
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold an exclusive lock on a campaign folder (created if missing) for the whole run: a
    second run on the same folder is refused instead of writing the same results file. The lock
    (``flock`` on ``.campaign.lock``) ends with the process, however it ends, kill -9 included."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise AccelSimError(f"campaign folder {str(folder)!r} is in use by another run ({owner}); wait for it "
                                "to finish or choose another output folder (--out)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def local_cluster(workers: int):
    """A ``dask.distributed.LocalCluster`` of ``workers`` single-threaded worker processes for jobs.

    The workers' statistical profiler is off: it samples the running task's stack every 10 ms
    from the worker's event loop (about 4 % of a core here), which with as many workers as cores
    is taken from the jobs themselves.
    """
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set({"distributed.worker.profile.enabled": False}):  # read when the workers start
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
