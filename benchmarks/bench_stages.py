"""Benchmark: how soon a coarse-to-fine run reaches a single-scale run's final loss.

Runs, from the same seed, a single-scale run at ``--size`` for ``--iterations``
and a coarse-to-fine run (``--coarse`` sizes, then ``--size``), and reads both
runs' ``loss/total`` per iteration, with its wall time, from their TensorBoard
events. It reports the single-scale run's final loss, the time the
coarse-to-fine run took to first reach that loss in its final stage (the same
objective at the same size), and the ratio of the two times.

    python benchmarks/bench_stages.py --size 256 --coarse 64 128 --coarse-iterations 100 50 \\
        --iterations 300 model=vgg16_bn_craft beta=1e7

Run from the checkout with nst_exp installed; it uses only nst_exp's public API.
The images are looked up in --images-dir, else $NST_IMAGES, else
``../shared/images`` beside the checkout.

Times are wall-clock from each run's first logged iteration, so they include
loading each stage's images and targets and the default logging and
checkpoints; both runs miss their first iteration the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from bench import config, default_images_dir  # benchmarks/bench.py, beside this file

from nst_exp.hardware import describe_device, pick_device
from nst_exp.report import read_scalars
from nst_exp.results import CONTENT, STYLE, TOTAL, RunDir
from nst_exp.runner import run


def loss_curve(out_dir: Path) -> pd.DataFrame:
    """``loss/total`` per iteration with seconds since the first logged one: columns step, value, seconds,
    and the run's content and style terms (``loss/content``, ``loss/style``)."""
    scalars = read_scalars(out_dir, {".": 0})
    terms = scalars[scalars.tag.isin(TERMS)].pivot_table(index="step", columns="tag", values="value")
    curve = scalars[scalars.tag == TOTAL].reset_index(drop=True)
    curve["seconds"] = curve.wall_time - curve.wall_time.iloc[0]
    return curve[["step", "value", "seconds"]].join(terms, on="step")


TERMS = (CONTENT, STYLE)


def reached(curve: pd.DataFrame, target: float, after_step: int) -> dict[str, Any] | None:
    """The first iteration past ``after_step`` whose loss is at most ``target``, or None."""
    hits = curve[(curve.step > after_step) & (curve.value <= target)]
    if hits.empty:
        return None
    first = hits.iloc[0]
    return {"step": int(first.step), "seconds": float(first.seconds), "loss": float(first.value)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="the final image_size of both runs")
    parser.add_argument("--coarse", type=int, nargs="+", default=[64, 128], help="coarse_to_fine.sizes")
    parser.add_argument("--iterations", type=int, default=300, help="single-scale iterations; also the final stage's")
    parser.add_argument(
        "--coarse-iterations", type=int, nargs="+", default=None,
        help="coarse_to_fine.iterations, one per coarse size; default --iterations each",
    )
    parser.add_argument(
        "--images-dir", default=default_images_dir(),
        help="the content and style images; default $NST_IMAGES, else ../shared/images beside the checkout",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_stages.json"))
    parser.add_argument("overrides", nargs="*", help="config overrides for both runs, e.g. model=vgg16_bn_craft")
    args = parser.parse_args(argv)
    common = [
        f"image_size={args.size}", f"iterations={args.iterations}", f"images_dir={args.images_dir}", "log.progress=false",
        *args.overrides,
    ]
    coarse_iterations = args.coarse_iterations or [args.iterations] * len(args.coarse)
    if len(coarse_iterations) != len(args.coarse):
        parser.error(f"--coarse-iterations needs one value per --coarse size ({len(args.coarse)})")
    coarse = [
        f"coarse_to_fine.sizes=[{','.join(map(str, args.coarse))}]",
        f"coarse_to_fine.iterations=[{','.join(map(str, coarse_iterations))}]",
    ]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, overrides in (("single", common), ("coarse_to_fine", [*common, *coarse])):
            out_dir = Path(scratch) / name
            run(config(overrides), out_dir=out_dir)
            results[name] = {"overrides": overrides, "metrics": RunDir(out_dir).read_metrics(), "curve": loss_curve(out_dir)}
            print(f"{name} done", file=sys.stderr)
    single, staged = results["single"], results["coarse_to_fine"]
    target = float(single["curve"].value.iloc[-1])
    single_seconds = float(single["curve"].seconds.iloc[-1])
    final_stage_from = sum(coarse_iterations)
    hit = reached(staged["curve"], target, final_stage_from)
    start = staged["curve"][staged["curve"].step > final_stage_from].iloc[0]  # its first logged iteration
    report = {
        "machine": describe_device(pick_device(config(common).device)),
        "size": args.size,
        "coarse": args.coarse,
        "iterations": args.iterations,
        "coarse_iterations": coarse_iterations,
        "overrides": args.overrides,
        "single": {"final_loss": target, "seconds": single_seconds},
        "coarse_to_fine": {
            "final_loss": float(staged["curve"].value.iloc[-1]),
            "seconds": float(staged["curve"].seconds.iloc[-1]),
            "stages": staged["metrics"].get("stages"),
            "reached_single_final_loss": hit,
            # the final stage's first logged iteration: what its upsampled start costs in the final objective
            "final_stage_start": {TOTAL: float(start.value), **{tag: float(start[tag]) for tag in TERMS}},
        },
        "time_ratio": hit["seconds"] / single_seconds if hit else None,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return report


def table(report: dict[str, Any]) -> str:
    single, staged = report["single"], report["coarse_to_fine"]
    hit = staged["reached_single_final_loss"]
    sizes = " -> ".join(map(str, [*report["coarse"], report["size"]]))
    when = (
        f"{hit['seconds']:.1f} s (iteration {hit['step']}), {report['time_ratio']:.2f}x the single-scale time"
        if hit else "not reached"
    )
    return "\n".join([
        f"{report['machine']}; {report['iterations']} iterations at {report['size']} px, coarse stages "
        f"{' + '.join(map(str, report['coarse_iterations']))}; overrides: {' '.join(report['overrides'])}",
        "",
        "| run | final loss/total | seconds |",
        "|---|---|---|",
        f"| single scale, {report['size']} px | {single['final_loss']:.6g} | {single['seconds']:.1f} |",
        f"| coarse to fine, {sizes} px | {staged['final_loss']:.6g} | {staged['seconds']:.1f} |",
        "",
        f"Coarse to fine reached the single-scale final loss after {when}.",
        "Its final stage started at "
        + ", ".join(f"{tag} {value:.6g}" for tag, value in staged["final_stage_start"].items()) + ".",
    ])


if __name__ == "__main__":
    main()
