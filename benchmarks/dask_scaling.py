"""Campaign throughput on Dask: 2 workers ÷ 1 worker on the same VGG-16 jobs, in one run.

Not a test. Builds one campaign context (VGG-16 fixed16, weight-memory flips, bundled images),
then runs the same jobs on a LocalCluster of 1 and of 2 single-threaded worker processes. The
clock runs from the first submission to the last result (cluster start-up, the one-time scatter
of images and data, and one warm-up job per worker are not timed). Per-job overhead =
(workers × wall − Σ job compute seconds) / jobs. For reference it also measures how this
machine scales plain memory-bound work (elementwise numpy passes) from 1 to 2 processes.

    python benchmarks/dask_scaling.py [--jobs 16] [--images 200] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from accel_sim.campaign import build_context, campaign_from_dict, plan_jobs, run_job


def campaign(jobs: int, images: int, batch: int):
    return campaign_from_dict({
        "name": "dask-scaling", "seed": 1,
        "model": {"zoo": "vgg16", "format": "fixed16", "calibration": 128},
        "data": {"source": "bundled", "count": images, "profile_count": 64},
        "hardware": {"preset": "edge16"},
        "faults": {"site": "weight_memory", "rates": [1e-6], "trials": jobs},
        "variants": [{"name": "relu", "activation": "relu"}],
        "execution": {"engine": "dask", "batch_size": batch},
    })


def _stream(seconds: float) -> int:
    """Memory-bound work (elementwise passes over 32 MiB arrays); returns the passes done."""
    x = np.random.default_rng(0).random(4_000_000)
    y = np.empty_like(x)
    passes, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        np.multiply(x, 1.0001, out=y)
        np.add(y, x, out=x)
        passes += 1
    return passes


def memory_scaling(seconds: float = 4.0) -> float:
    """How this machine scales memory-bound work: passes of 2 processes ÷ passes of 1."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_stream, 0.1).result()
        alone = pool.submit(_stream, seconds).result()
        both = sum(f.result() for f in [pool.submit(_stream, seconds) for _ in range(2)])
    return both / alone


def main() -> None:
    from dask.distributed import Client, LocalCluster, wait

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    config = campaign(args.jobs, args.images, args.batch_size)
    context = build_context(config)
    context.threads = 1
    jobs = plan_jobs(config)
    print(f"VGG-16 fixed16, {len(jobs)} jobs of {args.images} images each")
    print("| workers | start-up s | scatter s | jobs wall s | jobs/s | Σ job s | overhead per job s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rates = {}
    for workers in (1, 2):
        started = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        up = time.perf_counter() - started
        started = time.perf_counter()
        shared = client.scatter(context, broadcast=True)
        wait(shared)
        scatter = time.perf_counter() - started
        # warm-up on every worker: JIT compilation and each worker's prepared layers
        wait([client.submit(run_job, jobs[0], shared, pure=False, workers=[address], allow_other_workers=False)
              for address in client.scheduler_info()["workers"]])
        started = time.perf_counter()
        rows = client.gather([client.submit(run_job, job, shared, pure=False) for job in jobs])
        wall = time.perf_counter() - started
        compute = sum(r["seconds"] for r in rows)
        rates[workers] = len(jobs) / wall
        print(f"| {workers} | {up:.1f} | {scatter:.1f} | {wall:.1f} | {rates[workers]:.3f} | {compute:.1f} | "
              f"{(workers * wall - compute) / len(jobs):.3f} |", flush=True)
        client.close()
        cluster.close()
    print(f"throughput 2 workers / 1 worker: {rates[2] / rates[1]:.2f}")
    print(f"machine reference, memory-bound numpy passes in 2 processes / 1: {memory_scaling():.2f}")


if __name__ == "__main__":
    main()
