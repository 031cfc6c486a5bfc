"""``accel-sim campaign run | report | replay``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accel_sim.cli.common import print_table
from accel_sim.errors import AccelSimError


def register(sub: argparse._SubParsersAction) -> None:
    camp = sub.add_parser("campaign", help="run, report and replay fault campaigns")
    csub = camp.add_subparsers(dest="campaign_command", metavar="ACTION")
    csub.required = True
    run = csub.add_parser("run", help="run or resume a campaign file (finished jobs are skipped)")
    run.add_argument("file", type=Path)
    run.add_argument("--out", type=Path, help="output folder (overrides the file's output)")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--report", action="store_true", help="print the report when done")
    run.add_argument("--variants", help="run only these variants (comma-separated names from the file); the "
                     "rows are those the whole campaign computes, and it resumes from them")
    run.add_argument("--rates", help="run only these rates (comma-separated, from the file), likewise")
    run.set_defaults(handler=run_run)
    rep = csub.add_parser("report", help="table, CSV and plots of a results file")
    rep.add_argument("results", type=Path)
    rep.add_argument("--baseline", help="variant the improvements are measured against (default: the first)")
    rep.set_defaults(handler=run_report)
    cmp = csub.add_parser("compare", help="protections side by side: the variants of several finished campaigns, "
                          "their accuracy per rate and their hardware cost, as one table, CSV and plot")
    cmp.add_argument("files", type=Path, nargs="+", help="campaign files (their results are read from their output)")
    cmp.add_argument("--out", type=Path, default=Path("comparison"),
                     help="stem of the CSV and plots written (default: comparison → comparison.csv, .png, .svg)")
    cmp.set_defaults(handler=run_compare)
    rpl = csub.add_parser("replay", help="re-run one job of a results file and compare it with the stored row")
    rpl.add_argument("results", type=Path)
    rpl.add_argument("--job", required=True, help="job key, variant/rate/trial (see the CSV)")
    rpl.set_defaults(handler=run_replay)


def run_run(args: argparse.Namespace) -> int:
    from accel_sim.campaign import Focus, load_campaign, run_campaign

    config = load_campaign(args.file)
    focus = Focus(_names(args.variants), None if args.rates is None else tuple(_rate(r) for r in _names(args.rates)))
    path = run_campaign(config, args.out, progress=not args.no_progress, focus=focus)
    print(f"results: {path}")
    if args.report:
        return report(path, None)
    return 0


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


def _rate(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AccelSimError(f"--rates takes numbers such as 5e-7, got {text!r}") from None


def run_report(args: argparse.Namespace) -> int:
    return report(args.results, args.baseline)


def report(path: Path, baseline: str | None) -> int:
    from accel_sim.campaign import read_results, write_csv
    from accel_sim.campaign.report import auc_summary, common_rates, plot, summarize, write_rows_csv

    resolved, rows = read_results(path)
    if not len(rows):
        raise AccelSimError(f"results file {str(path)!r} holds no finished job yet")
    campaign = resolved["campaign"]
    variants = [v["name"] for v in campaign["variants"]]
    if baseline is not None and baseline not in variants:
        raise AccelSimError(f"--baseline must be one of the variants {variants}, got {baseline!r}")
    summary = summarize(rows, variants, baseline)
    faults = campaign["faults"]
    print(f"campaign {campaign['name']}: {campaign['model']['zoo'] or campaign['model']['image']} "
          f"{campaign['model']['format']}, {faults['site']} {faults['model']} {faults['persistence']}; "
          f"data: {resolved['data']}; hardware {resolved['hardware']['name']}; {len(rows)} jobs")
    versus = f"vs {baseline or variants[0]} pp"
    columns = ["variant", "rate", "trials", "accuracy %", "95% CI ±", versus, "its CI ±", "faults", "NaN images"]
    if any(s.flagged for s in summary):  # hardware that flags images (DMR)
        columns += ["flagged %", "silent errors %"]
    print_table([{
        "variant": s.variant, "rate": f"{s.rate:g}", "trials": s.trials, "accuracy %": f"{s.mean_accuracy:.2f}",
        "95% CI ±": f"{s.ci95:.2f}", versus: f"{s.improvement:+.2f}", "its CI ±": f"{s.improvement_ci95:.2f}",
        "faults": f"{s.mean_faults:.1f}", "NaN images": s.nan_images, "flagged %": f"{s.flagged:.2f}",
        "silent errors %": f"{s.silent:.2f}",
    } for s in summary], columns)
    present, rates = common_rates(rows, variants)
    if len(rates) > 1:
        over = "" if len(rates) == len(faults["rates"]) else f" ({', '.join(f'{r:g}' for r in rates)} only)"
        print(f"AUC (mean accuracy over equally spaced rates{over}, ± 95% CI over trials): " +
              ", ".join(f"{a.variant} {a.mean:.2f} ± {a.ci95:.2f}" for a in auc_summary(rows, present, rates)))
    folder = Path(path).parent
    jobs_csv = write_csv(rows, folder / "jobs.csv")
    summary_csv = write_rows_csv(summary, folder / "summary.csv")
    title = (f"{campaign['model']['zoo'] or 'image'} {campaign['model']['format']}, {faults['site']} "
             f"{faults['model']}, {campaign['data']['count']} images")
    plots = plot(summary, variants, title, folder / "accuracy_vs_rate")
    print(f"written: {jobs_csv}, {summary_csv}, {plots[0]}, {plots[1]}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from accel_sim.campaign.compare import comparison_rows, plot_comparison
    from accel_sim.campaign.report import write_rows_csv

    rows = comparison_rows(args.files)
    rates = sorted({r.rate for r in rows})
    table, flags = {}, {}
    for r in rows:
        checkers = f" + {r.voters} voters" if r.voters else f" + {r.comparators} comparators" if r.comparators else ""
        entry = table.setdefault((r.campaign, r.variant), {
            "network": r.network, "site": r.site, "variant": r.variant,
            "weight word": f"{r.stored_bits_per_weight} bits (+{r.storage_overhead:.0f} %)",
            "PEs": f"{r.pe_replicas}{checkers}", "cycles": r.cycles, **{f"{rate:g}": "" for rate in rates}})
        entry[f"{r.rate:g}"] = f"{r.accuracy:.2f} ± {r.ci95:.2f}"
        if r.comparators:
            flags.setdefault((r.campaign, r.variant), {"network": r.network, "variant": r.variant,
                                                       **{f"{rate:g}": "" for rate in rates}})[f"{r.rate:g}"] = (
                f"{r.flagged:.1f} / {r.silent:.1f}" + (f" / {r.recomputed:.1f}" if r.recomputed else ""))
    print("top-1 accuracy (%) ± 95 % CI per fault rate, and each protection's hardware cost:")
    print_table(list(table.values()), ["network", "site", "variant", *(f"{rate:g}" for rate in rates), "weight word",
                                       "PEs", "cycles"])
    if flags:
        print("DMR: images flagged / wrong and not flagged (silent) [/ run again] (%) per fault rate:")
        print_table(list(flags.values()), ["network", "variant", *(f"{rate:g}" for rate in rates)])
    csv_path = write_rows_csv(rows, args.out.with_suffix(".csv"))
    plots = plot_comparison(rows, args.out)
    print(f"written: {csv_path}, {plots[0]}, {plots[1]}")
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from accel_sim.campaign import Job, build_context, campaign_from_dict, read_results, run_job

    resolved, rows = read_results(args.results)
    keys = [k.decode() for k in rows["key"]]
    if args.job not in keys:
        raise AccelSimError(f"job {args.job!r} is not in {str(args.results)!r} (first keys: {', '.join(keys[:3])})")
    stored = rows[keys.index(args.job)]
    config = campaign_from_dict(resolved["campaign"], str(args.results), json.dumps(resolved["campaign"]))
    variant, rate, trial = args.job.rsplit("/", 2)
    context = build_context(config, Path(args.results).parent, (variant,))
    if context.image_hashes[variant] != resolved["image_hashes"].get(variant):
        raise AccelSimError("the image rebuilt from the stored configuration differs from the campaign's "
                            "(different zoo weights or accel-sim version?)")
    row = run_job(Job(variant, float(rate), int(trial)), context)
    same = all(row[c] == (stored[c].item() if not isinstance(stored[c], bytes) else stored[c].decode())
               for c in ("faults", "correct", "total", "nan_count", "flagged", "silent", "recomputed"))
    print(f"job {args.job}: {row['faults']} faults, {row['correct']}/{row['total']} correct, "
          f"{row['nan_count']} NaN images, {row['flagged']} flagged; stored: {int(stored['faults'])} faults, "
          f"{int(stored['correct'])}/{int(stored['total'])}, {int(stored['nan_count'])} NaN, "
          f"{int(stored['flagged'])} flagged")
    print("replay identical" if same else "REPLAY DIFFERS")
    return 0 if same else 1
