"""Benchmark: nst_exp's time per evaluation against the floor, and peak memory.

Every optimisation step of Gatys' method is one forward and backward pass of
the VGG up to the deepest layer in use. The *floor* is that bare pass (same
truncated network, same input size, backward from the deepest output); a run
can only add to it (Gram matrices, losses, the optimiser, logging). This times,
in one process and interleaved, the floor and full nst_exp runs (logging,
progress and snapshots at their default intervals) per image size and
optimiser, and reads each configuration's peak memory from the metrics.json of
a run in a child process.
``--breakdown`` also times the objective alone (a run less its loop) and the
style terms alone (what the objective adds to the bare pass). ``--fresh`` times
runs as a user meets them: ``python -m nst_exp`` in fresh processes against
torchvision's own network pass (its ``<arch>().features`` up to the deepest
layer in use, at the precision and memory format the run used) in fresh
processes, interleaved, with each run's first pass and the part of its loop
spent in passes (metrics.json). ``--precisions``
times the bare pass at each precision as a run resolves it on this device
(``auto`` included), with channels_last as ``--channels-last`` asks (``auto``:
as a run would choose), against the fp32 floor; every report says what
``precision=auto`` picks here and why.

    python benchmarks/bench.py --sizes 128 256 512 --repeats 5 --out bench.json
    python benchmarks/bench.py --sizes 256 --optimizers lbfgs --no-memory --breakdown
    python benchmarks/bench.py --sizes 256 --optimizers lbfgs --no-memory --precisions auto fp32 bf16
    python benchmarks/bench.py --sizes 256 --no-memory --fresh --evaluations 30 model=vgg19

Run from the checkout with nst_exp installed; it uses only nst_exp's public API.
The images are looked up in --images-dir, else $NST_IMAGES, else
``../shared/images`` beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import nst_exp
from nst_exp.color import ColorControl
from nst_exp.config import conf_dir, register
from nst_exp.features import FeatureExtractor, load_configured_network
from nst_exp.hardware import (
    CHANNELS_LAST,
    PRECISIONS,
    Capabilities,
    SpeedChoice,
    choose_speed,
    describe_device,
    detect,
    pick_device,
)
from nst_exp.inputs import Inputs
from nst_exp.losses import LossSettings, gram_matrix, style_layer_loss
from nst_exp.problem import Problem
from nst_exp.results import TOTAL, RunDir
from nst_exp.runner import run

CHECKOUT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = CHECKOUT.parent / "shared" / "images"  # documented default: ../shared/images beside the checkout
FLOOR_VARIANTS = ("channels_last", "compile")  # speed settings timed alone on the fp32 bare pass


def default_images_dir() -> str:
    """--images-dir's default: $NST_IMAGES, else ../shared/images relative to the checkout."""
    return os.environ.get("NST_IMAGES") or str(DEFAULT_IMAGES)


def config(overrides: list[str]) -> DictConfig:
    register()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def deepest_layer(cfg: DictConfig, names: list[str]) -> str:
    """The deepest of the config's content and style layers, by the network's layer order ``names``."""
    return max(LossSettings.from_config(cfg).layers, key=names.index)


def floor_timer(
    cfg: DictConfig, shape: tuple[int, ...], device: torch.device,
    precision: str = "fp32", channels_last: bool = False, compile: bool = False,
) -> Callable[[int], float]:
    """Seconds per bare forward+backward of the truncated network, over ``n`` passes.

    fp32 in NCHW is the floor; the keywords are FeatureExtractor.speed's, with
    ``precision`` already resolved (fp32, bf16, tf32).
    """
    network = load_configured_network(cfg.model, cfg.seed)  # each timer its own: speed() changes the modules it is given
    deepest = deepest_layer(cfg, network.layer_names)
    extractor = network.extractor([deepest]).to(device).speed(precision, channels_last, compile)
    image = torch.rand(shape, device=device, requires_grad=True)
    return timer(lambda: extractor(image)[deepest].sum().backward(), [image], device)


def run_extractor(cfg: DictConfig, layers: Sequence[str], device: torch.device) -> FeatureExtractor:
    """The configured network's extractor for ``layers`` on ``device``, at the speed settings a run resolves."""
    speed = choose_speed(cfg.precision, cfg.channels_last, detect(device))
    extractor = load_configured_network(cfg.model, cfg.seed).extractor(layers).to(device)
    return extractor.speed(speed.precision_used, speed.channels_last_used, cfg.compile)


def objective_timer(cfg: DictConfig, shape: tuple[int, ...], device: torch.device) -> Callable[[int], float]:
    """Seconds per forward+backward of the run's objective (network, Gram matrices, losses), without
    the optimiser, logging or checkpoints: a run's time less this is what its loop adds."""
    settings = LossSettings.from_config(cfg)
    extractor = run_extractor(cfg, settings.layers, device)
    problem = Problem(Inputs.from_config(cfg), settings, extractor, ColorControl(cfg.color))
    objective = problem.loss(cfg.image_size)
    image = torch.rand(shape, device=device, requires_grad=True)
    return timer(lambda: objective(image).total.backward(), [image], device)


def style_terms_timer(cfg: DictConfig, shape: tuple[int, ...], device: torch.device) -> Callable[[int], float]:
    """Seconds per forward+backward of the style terms alone (Gram matrices and E_l, eq. 4) on
    features of the run's shapes, precision and memory format (bf16 NHWC where ``auto`` picks it,
    as the objective takes them): the part of the objective the bare pass does not have."""
    extractor = run_extractor(cfg, cfg.style_layers, device)
    with torch.no_grad():
        features = [f.requires_grad_(True) for f in extractor(torch.rand(shape, device=device), native=True).values()]
    targets = [gram_matrix(f.detach()) for f in features]

    def style_terms() -> None:
        terms = [style_layer_loss(gram_matrix(f), a, f.shape[1], f.shape[2] * f.shape[3]) for f, a in zip(features, targets)]
        torch.stack(terms).sum().backward()

    return timer(style_terms, features, device)


BREAKDOWN = {"objective": objective_timer, "style terms": style_terms_timer}


def precision_settings(precisions: list[str], channels_last: list[str], caps: Capabilities) -> dict[str, SpeedChoice]:
    """Each asked precision and channels_last (``auto`` included), by label, as a run on ``caps`` resolves it.

    E.g. on an AMX CPU ``precision=auto channels_last=auto`` -> bf16 with
    channels_last; ``precision=fp32 channels_last=auto`` -> fp32 without.
    """
    return {f"precision={p} channels_last={c}": choose_speed(p, c, caps) for p in precisions for c in channels_last}


def settings_label(precision: str, channels_last: bool) -> str:
    return f"{precision} + channels_last" if channels_last else precision


def timer(step: Callable[[], None], leaves: list[torch.Tensor], device: torch.device) -> Callable[[int], float]:
    """A function timing ``n`` calls of ``step`` (the leaves' gradients cleared before each), after a warm-up."""

    def timed(n: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(n):
            for leaf in leaves:
                leaf.grad = None
            step()
        synchronize(device)
        return (time.perf_counter() - start) / n

    timed(2)  # warm-up (and, for compile, compilation)
    return timed


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_seconds_per_evaluation(overrides: list[str]) -> tuple[float, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as out:
        run(config(overrides), out_dir=Path(out))
        metrics = RunDir(Path(out)).read_metrics()
    return metrics["seconds_per_evaluation"], metrics


def child_env() -> dict[str, str]:
    """This environment, with the nst_exp this process imports first on PYTHONPATH (for its children)."""
    package_root = str(Path(nst_exp.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}


def child_run(overrides: list[str]) -> dict[str, Any]:
    """metrics.json of ``python -m nst_exp <overrides>`` in a child process: a fresh process, as a user runs it."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "nst_exp", *overrides, f"hydra.run.dir={out}"]
        child = subprocess.run(command, capture_output=True, text=True, env=child_env(), check=False)
        if child.returncode:
            raise RuntimeError(f"run failed ({child.returncode}): {' '.join(overrides)}\n{child.stderr[-2000:]}")
        return RunDir(Path(out)).read_metrics()


def peak_memory_mb(overrides: list[str]) -> float:
    """Peak memory of a short run, in MiB: its metrics.json's ``memory_peak_bytes`` (RSS on CPU, reserved on CUDA).

    The run is ``python -m nst_exp`` in a child process, so the peak is that
    process's own, not this one's (which holds the timers), and the child
    imports the same nst_exp as this process.
    """
    return child_run(overrides)["memory_peak_bytes"] / 2**20


TORCHVISION_PASS = """
import contextlib, sys, time, torch, torchvision
from nst_exp.features import layer_names
arch, deepest, height, width, precision, channels_last, device, passes = sys.argv[1:9]
features = getattr(torchvision.models, arch)().features
network = features[: layer_names(features).index(deepest) + 1].eval().to(device)
for parameter in network.parameters():
    parameter.requires_grad_(False)
image = torch.rand(1, 3, int(height), int(width), device=device)
if channels_last == "True":
    network, image = network.to(memory_format=torch.channels_last), image.contiguous(memory_format=torch.channels_last)
image.requires_grad_(True)
bf16 = precision == "bf16"
def step():
    image.grad = None
    with torch.autocast(image.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        out = network(image)
    out.float().sum().backward()
    if image.is_cuda:
        torch.cuda.synchronize()
for _ in range(2):
    step()
began = time.perf_counter()
for _ in range(int(passes)):
    step()
print((time.perf_counter() - began) / int(passes))
"""


def torchvision_pass(arch: str, deepest: str, shape: tuple[int, ...], speed: SpeedChoice, device: str, passes: int) -> float:
    """Seconds per forward+backward of torchvision's ``arch().features`` to ``deepest`` (random weights, max
    pooling, as torchvision builds it), in a fresh process, at the run's precision and memory format."""
    command = [sys.executable, "-c", TORCHVISION_PASS, arch, deepest, str(shape[2]), str(shape[3]),
               speed.precision_used, str(speed.channels_last_used), device, str(passes)]
    child = subprocess.run(command, capture_output=True, text=True, env=child_env(), check=False)
    if child.returncode:
        raise RuntimeError(f"torchvision's pass failed ({child.returncode}):\n{child.stderr[-2000:]}")
    return float(child.stdout.split()[-1])


def fresh_sample(
    overrides: list[str], arch: str, deepest: str, shape: tuple[int, ...], speed: SpeedChoice, device: str, passes: int,
) -> dict[str, float]:
    """torchvision's pass in a fresh process, then a fresh ``python -m nst_exp <overrides>``: seconds and metrics."""
    torchvision_s = torchvision_pass(arch, deepest, shape, speed, device, passes)
    metrics = child_run(overrides)
    return {
        "torchvision_s": torchvision_s,
        "run_s": metrics["seconds_per_evaluation"],
        "first_evaluation_s": metrics["seconds_first_evaluation"],
        "evaluation_share": metrics["evaluation_share"],
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--optimizers", nargs="+", default=["lbfgs", "adam"])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; median and min-max reported")
    parser.add_argument("--evaluations", type=int, default=20, help="evaluations timed per repeat")
    parser.add_argument("--weights", default="random", help="model.weights (timing does not depend on values)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--images-dir", default=default_images_dir(),
        help="the content and style images; default $NST_IMAGES, else ../shared/images beside the checkout",
    )
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--floor-variants", nargs="*", default=[], choices=FLOOR_VARIANTS,
        help="also time the bare pass with each of these settings alone, against the fp32 floor",
    )
    parser.add_argument(
        "--precisions", nargs="*", default=[], choices=PRECISIONS,
        help="also time the bare pass at each precision (auto: as resolved on this device), against the fp32 floor",
    )
    parser.add_argument(
        "--channels-last", nargs="+", default=["auto"], choices=CHANNELS_LAST,
        help="with --precisions: the channels_last settings to pair with each (auto: on with bf16, as a run chooses)",
    )
    parser.add_argument(
        "--breakdown", action="store_true",
        help="also time the objective alone (no optimiser or logging) and the style terms alone",
    )
    parser.add_argument(
        "--fresh", action="store_true",
        help="also time runs in fresh processes against torchvision's pass in fresh processes, as a user meets them",
    )
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run, e.g. precision=bf16")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    caps = detect(device)
    auto = choose_speed("auto", "auto", caps)
    speeds = precision_settings(args.precisions, args.channels_last, caps)  # before timing: tf32 off CUDA fails here

    def overrides(size: int, optimizer: str) -> list[str]:
        return [
            f"image_size={size}",
            f"optimizer={optimizer}",
            f"iterations={args.evaluations}",
            f"model.weights={args.weights}",
            f"images_dir={args.images_dir}",
            f"device={args.device}",
            "log.progress=false",
            *args.overrides,
        ]

    variants = ["fp32", *args.floor_variants]  # the floor first
    parts = list(BREAKDOWN) if args.breakdown else []
    passes, runs, losses, used, memory, shapes = {}, {}, {}, {}, {}, {}  # passes: (size, name) -> (timer, samples)
    fresh: dict[tuple[int, str], list[dict[str, float]]] = {}  # (size, optimizer) -> per repeat: run and pass
    run_speeds: dict[tuple[int, str], SpeedChoice] = {}
    deepest: dict[int, tuple[str, str]] = {}  # size -> the network's torchvision architecture, its deepest layer used
    for size in args.sizes:
        cfg = config(overrides(size, args.optimizers[0]))
        _, metrics = run_seconds_per_evaluation(overrides(size, args.optimizers[0]))  # warm-up; learns the shape
        shapes[size] = (1, 3, metrics["image_height"], metrics["image_width"])
        if args.fresh:
            deepest[size] = (cfg.model.arch, deepest_layer(cfg, load_configured_network(cfg.model, cfg.seed).layer_names))
        for variant in variants:
            passes[size, variant] = (floor_timer(cfg, shapes[size], device, **({} if variant == "fp32" else {variant: True})), [])
        for label, speed in speeds.items():
            timed = floor_timer(cfg, shapes[size], device, speed.precision_used, speed.channels_last_used)
            passes[size, label] = (timed, [])
        for part in parts:
            passes[size, part] = (BREAKDOWN[part](cfg, shapes[size], device), [])
        for optimizer in args.optimizers:
            runs[size, optimizer] = []
            run_cfg = config(overrides(size, optimizer))
            speed = choose_speed(run_cfg.precision, run_cfg.channels_last, caps)  # as the run resolves them
            used[size, optimizer] = settings_label(speed.precision_used, speed.channels_last_used)
            run_speeds[size, optimizer], fresh[size, optimizer] = speed, []
    for repeat in range(args.repeats):
        for size in args.sizes:
            for name in [*variants, *speeds, *parts]:
                timed, samples = passes[size, name]
                samples.append(timed(args.evaluations))
            for optimizer in args.optimizers:
                seconds, metrics = run_seconds_per_evaluation(overrides(size, optimizer))
                runs[size, optimizer].append(seconds)
                losses[size, optimizer] = metrics[TOTAL]
                if args.fresh:
                    fresh[size, optimizer].append(fresh_sample(
                        overrides(size, optimizer), *deepest[size], shapes[size], run_speeds[size, optimizer],
                        str(device), max(args.evaluations, 8),
                    ))
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    if args.memory:
        for size in args.sizes:
            for optimizer in args.optimizers:
                memory[size, optimizer] = peak_memory_mb([*overrides(size, optimizer), "iterations=5"])

    rows = []
    for size in args.sizes:
        floor = summary(passes[size, "fp32"][1])
        for optimizer in args.optimizers:
            timing = summary(runs[size, optimizer])
            rows.append(
                {
                    "size": size,
                    "image": f"{shapes[size][3]}x{shapes[size][2]}",
                    "optimizer": optimizer,
                    "settings": used[size, optimizer],  # the precision and memory format the runs used
                    "floor_s": floor,
                    "run_s": timing,
                    "ratio": timing["median"] / floor["median"],
                    "final_loss": losses[size, optimizer],
                    "peak_memory_mb": memory.get((size, optimizer)),
                }
            )
    def against_floor(names: list[str], key: str) -> list[dict[str, Any]]:
        return [
            {
                "size": size,
                key: name,
                "seconds": summary(passes[size, name][1]),
                "ratio": statistics.median(passes[size, name][1]) / statistics.median(passes[size, "fp32"][1]),
            }
            for size in args.sizes
            for name in names
        ]

    report = {
        "machine": describe_device(device),
        "cores": os.cpu_count(),
        "auto": {"precision": auto.precision_used, "channels_last": auto.channels_last_used, "reason": auto.reason},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "evaluations": args.evaluations,
        "repeats": args.repeats,
        "overrides": args.overrides,
        "rows": rows,
        "floor_variants": against_floor(variants[1:], "variant"),
        "precisions": [
            {**row, "precision": speeds[row["asked"]].precision_used, "channels_last": speeds[row["asked"]].channels_last_used}
            for row in against_floor(list(speeds), "asked")
        ],
        "breakdown": against_floor(parts, "part"),
        "fresh": [
            {"size": size, "optimizer": optimizer, "settings": used[size, optimizer],
             **{key: summary([sample[key] for sample in samples]) for key in samples[0]},
             "ratio": statistics.median(sample["run_s"] / sample["torchvision_s"] for sample in samples)}
            for (size, optimizer), samples in fresh.items() if samples
        ],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return report


def table(report: dict[str, Any]) -> str:
    """The report as Markdown tables: runs against the fp32 floor, then any floor variants, precisions, breakdown."""
    overrides = f"; overrides: {' '.join(report['overrides'])}" if report["overrides"] else ""
    lines = [
        f"{report['machine']}, {report['cores']} cores; torch {report['torch']}, {report['threads']} threads; "
        f"{report['evaluations']} evaluations x {report['repeats']} interleaved repeats{overrides}",
        f"precision=auto here: {report['auto']['reason']}",
        "",
        "| size | image | optimizer | settings | fp32 floor s/eval (min-max) | nst_exp s/eval (min-max) | ratio "
        "| final loss | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        peak = f"{row['peak_memory_mb']:.0f}" if row["peak_memory_mb"] else "-"
        lines.append(
            f"| {row['size']} | {row['image']} | {row['optimizer']} | {row['settings']} | {span(row['floor_s'])} "
            f"| {span(row['run_s'])} "
            f"| {row['ratio']:.3f} | {row['final_loss']:.6g} | {peak} |"
        )
    if report.get("floor_variants"):
        lines += ["", "| size | bare pass | s/eval (min-max) | / fp32 floor |", "|---|---|---|---|"]
        for row in report["floor_variants"]:
            lines.append(f"| {row['size']} | {row['variant']} | {span(row['seconds'])} | {row['ratio']:.3f} |")
    if report.get("precisions"):
        lines += ["", "| size | asked | bare pass | s/eval (min-max) | / fp32 floor |", "|---|---|---|---|---|"]
        for row in report["precisions"]:
            used = settings_label(row["precision"], row["channels_last"])
            lines.append(f"| {row['size']} | {row['asked']} | {used} | {span(row['seconds'])} | {row['ratio']:.3f} |")
    if report.get("breakdown"):
        lines += ["", "| size | timed alone | s/eval (min-max) | / fp32 floor |", "|---|---|---|---|"]
        for row in report["breakdown"]:
            lines.append(f"| {row['size']} | {row['part']} | {span(row['seconds'])} | {row['ratio']:.3f} |")
    if report.get("fresh"):
        lines += [
            "", "Fresh processes, as a user runs them, against torchvision's pass at the run's settings:", "",
            "| size | optimizer | settings | torchvision's pass s (min-max) | run s/eval (min-max) | ratio "
            "| first pass s | share of loop in passes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in report["fresh"]:
            lines.append(
                f"| {row['size']} | {row['optimizer']} | {row['settings']} | {span(row['torchvision_s'])} "
                f"| {span(row['run_s'])} | {row['ratio']:.3f} | {row['first_evaluation_s']['median']:.3f} "
                f"| {row['evaluation_share']['median']:.1%} |"
            )
    return "\n".join(lines)


def span(timing: dict[str, float]) -> str:
    return f"{timing['median']:.3f} ({timing['min']:.3f}-{timing['max']:.3f})"


if __name__ == "__main__":
    main()
