"""Campaign throughput on Dask: 2 workers ÷ 1 worker on the same VGG-16 jobs, in one run.

Not a test. Builds one campaign context (VGG-16 fixed16, weight-memory flips, bundled images),
then runs the same jobs on a LocalCluster of 1 and of 2 single-threaded worker processes
(:func:`accel_sim.campaign.runner.local_cluster`, as campaigns do). The clock runs from the first
submission to the last result (cluster start-up, the one-time scatter of images and data, and one
warm-up job per worker are not timed). Each vCPU of the development machine changes speed by up
to 2× within minutes (other tenants of the host), so both clusters stay up and each round runs a
1-worker and a 2-worker pass back to back (alternating which goes first); the figure is the median
over rounds of the two passes' ratio, with each round's ratio and the ratio of the best pass of
each beside it. Per-job overhead =
(workers × wall − Σ job compute seconds) / jobs, split by Dask's task stream into the gaps between
a worker's consecutive jobs (what Dask costs per job) and the tail (workers idle at the end of a
pass while another finishes its last job: about half a job per pass, so it weighs less the more
jobs a campaign has; the default 32 jobs is between the quick-start campaign's 24 and the
hundreds of a rate sweep). For reference it also measures how this
machine scales the same jobs without Dask (one or two plain processes, each running the same
jobs, in alternating rounds: the machine's own ceiling for this work) and plain memory-bound work
(elementwise numpy passes) from 1 to 2 processes.

    python benchmarks/dask_scaling.py [--jobs 32] [--images 200] [--batch-size 16] [--rounds 4]
        [--format fixed16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from accel_sim.campaign import build_context, campaign_from_dict, plan_jobs, run_job
from accel_sim.campaign.runner import local_cluster
from alternating import alternating_rounds  # benchmarks/ is on sys.path when a script here runs


def campaign(jobs: int, images: int, batch: int, fmt: str = "fixed16"):
    return campaign_from_dict({
        "name": "dask-scaling", "seed": 1,
        "model": {"zoo": "vgg16", "format": fmt, "calibration": 128},
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


def _process_loop(context_bytes: bytes, jobs, commands, results) -> None:
    """A plain worker process: warm up, then run ``jobs`` on each command until None."""
    context = pickle.loads(context_bytes)
    run_job(jobs[0], context)
    results.put(0.0)
    while commands.get() is not None:
        started = time.perf_counter()
        for job in jobs:
            run_job(job, context)
        results.put(time.perf_counter() - started)


def _run_on(pipes) -> float:
    """Every process of ``pipes`` runs its jobs once, at the same time; the wall seconds."""
    for commands, _ in pipes:
        commands.put(True)
    return max(results.get() for _, results in pipes)


def process_scaling(context, jobs, rounds: int) -> list[float]:
    """Throughput of 2 plain processes ÷ 1 on the same jobs, per round (alternating order): each
    process runs all of ``jobs``, so the ratio is 2 · (1-process time) / (2-process wall time)."""
    spawn = multiprocessing.get_context("spawn")
    pipes = [(spawn.Queue(), spawn.Queue()) for _ in range(2)]
    data = pickle.dumps(context)
    procs = [spawn.Process(target=_process_loop, args=(data, jobs, c, r)) for c, r in pipes]
    for proc in procs:
        proc.start()
    try:
        for _, results in pipes:
            results.get()  # warm
        seconds = alternating_rounds({n: lambda n=n: _run_on(pipes[:n]) for n in (1, 2)}, rounds)
        return [2 * one / two for one, two in zip(seconds[1], seconds[2])]
    finally:
        for commands, _ in pipes:
            commands.put(None)
        for proc in procs:
            proc.join()


def start_cluster(context, jobs, workers: int) -> dict:
    """A LocalCluster of ``workers`` job processes, the context scattered and every worker warm
    (JIT compilation and each worker's prepared layers); returns its handles and set-up times."""
    from dask.distributed import Client, wait

    started = time.perf_counter()
    cluster = local_cluster(workers)
    client = Client(cluster)
    up = time.perf_counter() - started
    started = time.perf_counter()
    shared = client.scatter(context, broadcast=True)
    wait(shared)
    scatter = time.perf_counter() - started
    wait([client.submit(run_job, jobs[0], shared, pure=False, workers=[address], allow_other_workers=False)
          for address in client.scheduler_info()["workers"]])
    return {"cluster": cluster, "client": client, "shared": shared, "up": up, "scatter": scatter}


def timed_pass(handles: dict, jobs, workers: int) -> dict:
    """Run ``jobs`` once on a started cluster: wall seconds, throughput, overhead per job, and
    from Dask's task stream the two parts of the workers' idle time: the gaps between a worker's
    consecutive jobs (Dask's dispatch) and the tail (workers done while another finishes its last
    job), both in seconds per job."""
    from dask.distributed import get_task_stream

    client, shared = handles["client"], handles["shared"]
    with get_task_stream(client=client) as stream:
        started = time.perf_counter()
        rows = client.gather([client.submit(run_job, job, shared, pure=False) for job in jobs])
        wall = time.perf_counter() - started
    compute = sum(r["seconds"] for r in rows)
    spans: dict[str, list[tuple[float, float]]] = {}
    for task in stream.data:
        for span in task["startstops"]:
            if span["action"] == "compute":
                spans.setdefault(task["worker"], []).append((span["start"], span["stop"]))
    for runs in spans.values():
        runs.sort()
    gaps = sum(b[0] - a[1] for runs in spans.values() for a, b in zip(runs, runs[1:]))
    end = max(runs[-1][1] for runs in spans.values())
    tail = sum(end - runs[-1][1] for runs in spans.values()) + (workers - len(spans)) * wall
    return {"wall": wall, "rate": len(jobs) / wall, "compute": compute, "overhead": (workers * wall - compute) / len(jobs),
            "gaps": gaps / len(jobs), "tail": tail / len(jobs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=32, help="jobs per pass")
    parser.add_argument("--images", type=int, default=200)
    # 16: as fast as 50 on one core, and two jobs on the two cores slow each other down less
    # (their im2col and digit matrices are a third as large); see docs/campaigns.md
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="alternating 1-worker / 2-worker passes")
    parser.add_argument("--format", default="fixed16", choices=("fixed16", "fixed8", "fp32"))
    args = parser.parse_args()
    config = campaign(args.jobs, args.images, args.batch_size, args.format)
    context = build_context(config)
    context.threads = 1
    jobs = plan_jobs(config)
    print(f"VGG-16 {args.format}, passes of {len(jobs)} jobs × {args.images} images, {args.rounds} rounds")
    clusters = {workers: start_cluster(context, jobs, workers) for workers in (1, 2)}
    for workers, handles in clusters.items():
        print(f"{workers} worker(s): start-up {handles['up']:.1f} s, scatter {handles['scatter']:.1f} s")
    try:
        passes = alternating_rounds({workers: lambda w=workers: timed_pass(clusters[w], jobs, w)
                                     for workers in (1, 2)}, args.rounds)
    finally:
        for handles in clusters.values():
            handles["client"].close()
            handles["cluster"].close()
    print("| round | workers | jobs wall s | jobs/s | Σ job s | overhead per job s | of which gaps | of which tail |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for round_ in range(args.rounds):
        for workers in (1, 2):
            r = passes[workers][round_]
            print(f"| {round_ + 1} | {workers} | {r['wall']:.1f} | {r['rate']:.3f} | {r['compute']:.1f} | "
                  f"{r['overhead']:.3f} | {r['gaps']:.4f} | {r['tail']:.3f} |")
    rates = {workers: [r["rate"] for r in passes[workers]] for workers in (1, 2)}
    ratios = [two / one for one, two in zip(rates[1], rates[2])]
    print(f"throughput 2 workers / 1 worker: {float(np.median(ratios)):.2f} (median over rounds of back-to-back "
          f"passes); per round {', '.join(f'{x:.2f}' for x in ratios)}; best pass of each "
          f"{max(rates[2]) / max(rates[1]):.2f}")
    plain_jobs = jobs[:4]
    plain = process_scaling(context, plain_jobs, args.rounds)
    print(f"machine reference, the same jobs in 2 plain processes / 1 ({len(plain_jobs)} jobs each, no Dask): "
          f"{float(np.median(plain)):.2f} (median); per round {', '.join(f'{x:.2f}' for x in plain)}")
    print(f"machine reference, memory-bound numpy passes in 2 processes / 1: {memory_scaling():.2f}")


if __name__ == "__main__":
    main()
