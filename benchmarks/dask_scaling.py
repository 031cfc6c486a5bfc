"""Campaign throughput on Dask: 2 workers ÷ 1 worker on the same VGG-16 jobs, in one run.

Not a test. Builds one campaign context (VGG-16 fixed16, weight-memory flips, bundled images),
then runs the same jobs on a LocalCluster of 1 and of 2 single-threaded worker processes. The
clock runs from the first submission to the last result (cluster start-up, the one-time
scatter of images and data, and one warm-up job per worker are not timed). Per-job overhead = (workers × wall − Σ job
compute seconds) / jobs.

    python benchmarks/dask_scaling.py [--jobs 16] [--images 200] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import time

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


if __name__ == "__main__":
    main()
