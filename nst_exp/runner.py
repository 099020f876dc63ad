"""One style transfer from a composed config: set up, synthesise, write the results.

    validate(cfg)                      # every setting, before anything loads (resume=: check_run_dir)
    with RunLock(run_dir):             # one process per run directory
        where = continuation(...)      # resume=, a run dir holding this run, or a fresh start
        settings, inputs = ...         # the config read once, every input file found once
        network, problem = ...         # the layers the loss reads; each stage's loss and start
        problem.check_sizes(stages)    # every layer sees the images at every stage (file headers)
        guard.check(...)               # the run fits in memory
        loss = problem.loss(...)       # the targets; a resumed run: the same loss, its random state restored
        outcome = synthesise(..., score)  # the stages (one for a plain run), then the picture scores
        RunDir: result.png and metrics.json

The command line (``__main__``), the Python API (``nst_exp.stylize``) and the
tests all call :func:`run`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from nst_exp import images, memory_guard, tensorboard_run
from nst_exp.callbacks import Checkpointer, ProgressBar, Snapshots, TensorBoardLogger
from nst_exp.checkpoint import check_fingerprint, fingerprint, restore_rng
from nst_exp.color import ColorControl
from nst_exp.errors import NstError, RunFailed
from nst_exp.features import Network, load_configured_network, summary
from nst_exp.hardware import SpeedChoice, choose_speed, describe_device, detect, pick_device, reuse_freed_memory
from nst_exp.inputs import Inputs, user_path_keys
from nst_exp.lock import RunLock
from nst_exp.losses import LossSettings
from nst_exp.optimize import Callback, Interrupted, Outcome
from nst_exp.picture_scores import score as picture_score
from nst_exp.problem import Problem
from nst_exp.results import Result, RunDir, Status, flatten, inputs_used
from nst_exp.resume import Continuation, check_run_dir, continuation
from nst_exp.stages import plan, synthesise
from nst_exp.startup import FirstIteration, StartUp
from nst_exp.tensorboard_run import Board
from nst_exp.trust import make_optimizer
from nst_exp.validation import validate

log = logging.getLogger(__name__)


def run(
    cfg: DictConfig,
    out_dir: Path | str | None = None,
    overrides: Sequence[str] = (),
    multirun: bool = False,
    *,
    given: Mapping[str, Image.Image] | None = None,
    on_accept: Callable[[Path], None] | None = None,
    dir_setting: str = "hydra.run.dir=... or hydra.sweep.dir=...",
    waiting_since: float | None = None,
    swept: Mapping[str, str] | None = None,
    checked: bool = False,
) -> Result:
    """Run one style transfer; return its :class:`~nst_exp.results.Result`. The runner the command line uses.

    ``out_dir``: the run's directory (result.png, metrics.json, TensorBoard,
    checkpoints); None keeps the run in memory and writes nothing. With
    ``resume=DIR`` in ``cfg`` the run continues in DIR. ``overrides`` are the
    command line's (``resume=`` may change only resume.RESUMABLE_KEYS; a
    path typed there is never fetched); ``multirun``: one job of a sweep.
    ``given`` holds images in memory for ``content`` or ``style`` (the Python API).
    ``on_accept(run_dir)`` is called once the directory is known to be this
    run's (not another run's, not another process's), before anything is written.
    ``dir_setting`` is how the caller chooses another directory, for messages.
    ``waiting_since``: the ``time.perf_counter()`` moment the user's wait began, which
    ``seconds_to_first_iteration`` counts from (the command line passes the process
    start); None: this call. ``swept``: the settings that vary between the runs compared (key -> value
    as typed; default: ``overrides``), which name a sweep's job in TensorBoard and head its HParams row.
    ``checked``: the caller has validated ``cfg`` (or, with ``resume=``, checked its directory) already,
    as the command line does before torch loads.
    """
    started = time.perf_counter()
    swept = dict(swept) if swept is not None else tensorboard_run.swept_values(overrides, None)
    board = Board(swept, named=multirun)
    startup = StartUp(asked=started if waiting_since is None else waiting_since, called=started)
    run_dir = Path(cfg.resume) if cfg.resume else (Path(out_dir) if out_dir is not None else None)
    if not checked and cfg.resume:
        check_run_dir(run_dir, multirun)  # before the lock creates anything there; the saved config is validated on loading
    elif not checked:
        validate(cfg)
    if run_dir is None:
        return synthesise_run(Continuation(cfg, None), overrides, given, startup, board)
    with RunLock(run_dir):
        where = continuation(cfg, run_dir, overrides, dir_setting)
        if where.finished:
            log.info("%s already holds this run, %s: skipped (delete it to run again).", run_dir, where.saved.status)
            return result_in(run_dir)
        if on_accept is not None:
            on_accept(run_dir)
        return synthesise_run(where, overrides, given, startup, board)


def synthesise_run(
    where: Continuation, overrides: Sequence[str], given: Mapping[str, Image.Image] | None, startup: StartUp,
    board: Board,
) -> Result:
    """Set up, synthesise and write the results of a run that is not finished yet."""
    cfg = where.cfg
    run_dir = RunDir(where.out_dir) if where.out_dir is not None else None
    settings = LossSettings.from_config(cfg)
    inputs = Inputs.from_config(cfg, user_path_keys(overrides), given)  # fails in milliseconds on a bad path
    device = pick_device(cfg.device)
    threads = configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    speed = choose_speed(cfg.precision, cfg.channels_last, detect(device))

    loading = time.perf_counter()
    network = prepare_network(cfg, settings)
    startup.network = time.perf_counter() - loading
    extractor = network.extractor(settings.layers)
    color = ColorControl(cfg.color)
    problem = Problem(inputs, settings, extractor, color, init=cfg.init.kind, seed=cfg.seed)
    stages = plan(cfg.image_size, cfg.iterations, cfg.coarse_to_fine.sizes, cfg.coarse_to_fine.iterations)
    problem.check_sizes(stages)  # before any file is written
    if where.saved is not None and len(stages) > 1:
        raise NstError(
            f"{run_dir} holds a coarse-to-fine run; resuming one is not supported yet (its checkpoints "
            "hold one stage's image). Start it again in a new output dir."
        )
    optimizer = make_optimizer(cfg.optimizer)  # the allowlisted optimizer class and its arguments
    guard = memory_guard.Guard(
        extractor, inputs, cfg.image_size, optimizer, settings.content_layers, device
    )
    guard.check(cfg.memory_guard)
    extractor.to(device).speed(speed.precision_used, speed.channels_last_used, cfg.compile)
    log.info(
        "Running %s on %s (%s, %d CPU threads): %s%s", cfg.model.name, device, describe_device(device), threads,
        speed.reason, ", torch.compile" if cfg.compile else "",
    )

    targets = time.perf_counter()
    loss = problem.loss(stages[0].size)  # the content and style targets (kept): the network's first passes
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    startup.targets = time.perf_counter() - targets
    checkpointed = run_dir is not None and len(stages) == 1  # a checkpoint holds one image size
    loss_print = fingerprint(loss) if checkpointed else {}
    if where.saved is not None:  # a resumed run: the same objective (images, weights, network), the same random stream
        check_fingerprint(where.saved.fingerprint, loss_print, run_dir.path)
        restore_rng(where.saved.rng)
    start = where.resume_state(device)

    final = problem.stage_inputs(stages[-1].size)
    used = inputs_used(cfg)  # saved, logged and scored: only the images the result was made with
    progress = ProgressBar(sum(stage.iterations for stage in stages), cfg.log.progress, where.iteration)
    callbacks: list[Callback] = [FirstIteration(startup)]  # before the writers: their logging is not the step
    checkpointer = None
    if run_dir is not None:
        run_dir.write_inputs(final.named_images(used, masks=True))
        callbacks += [tensorboard_logger(cfg, run_dir, network, speed, final.named_images(used), where, board),
                      Snapshots(run_dir, cfg.log.image_every)]
    if checkpointed:
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        checkpointer = Checkpointer(
            run_dir.path, cfg.checkpoint.every, resolved, loss_print, where.seconds, where.resumed
        )
        callbacks.append(checkpointer)
    callbacks.append(progress)
    score = partial(
        picture_score,
        content=final.content if "content" in used else None,
        styles=[target.image for target in final.styles] if "style" in used else [],
        weights=[target.weight for target in final.styles],
    )
    with progress.logging_above(), reuse_freed_memory(device):  # log lines print above the bar, not through it
        outcome, records = synthesise(stages, problem, optimizer, callbacks, start, score)
    loop = {  # this session's loop (a resumed run's earlier sessions are in ``seconds`` only)
        "seconds_first_evaluation": outcome.first_evaluation,
        "evaluation_share": outcome.evaluating / outcome.seconds if outcome.seconds > 0 else None,
    }
    outcome.seconds += where.seconds

    record = {
        **metrics(cfg, outcome, network, device, threads, speed, startup.called),
        **loop,
        **startup.metrics(),
        **guard.measured(),
        "resumed_from": where.resumed,
        "styles": {source.spec.name: source.spec.weight for source in inputs.styles},
        "color": color.describe(),
    }
    if len(stages) > 1:
        record["stages"] = records
    if run_dir is not None:
        run_dir.write_result(outcome.image)
        run_dir.write_metrics(record)
    result = Result(images.to_pil(outcome.image), outcome.image.detach().cpu(), record, where.out_dir)
    return finish(outcome, result, guard, checkpointer, where)


def tensorboard_logger(
    cfg: DictConfig, run_dir: RunDir, network: Network, speed: SpeedChoice, inputs: Mapping[str, torch.Tensor],
    where: Continuation, board: Board,
) -> TensorBoardLogger:
    """The run's TensorBoard writer: its settings, which network ran, and ``inputs`` as the network sees them."""
    hparams = {**hparams_of(cfg), "precision_used": speed.precision_used, "channels_last_used": speed.channels_last_used}
    about = {"network": summary(cfg.model.name, cfg.model.description, network)}
    log_dir = tensorboard_run.log_dir(run_dir.path, board.swept if board.named else {})
    return TensorBoardLogger(
        log_dir, hparams, cfg.log.scalars_every, cfg.log.image_every, about, where.iteration, board.swept, inputs
    )


def finish(
    outcome: Outcome, result: Result, guard: memory_guard.Guard, checkpointer: Checkpointer | None, where: Continuation
) -> Result:
    """The run's result, or the exception that says how it stopped (its files are written already)."""
    if outcome.status == Status.OUT_OF_MEMORY:
        kept = checkpointer.last if checkpointer is not None and checkpointer.last is not None else None
        kept = kept if kept is not None else (where.iteration or None)
        raise RunFailed(guard.out_of_memory(outcome.message, where.out_dir, kept), result.metrics)
    if outcome.status == Status.INTERRUPTED:  # the caller says in one line what was kept (nst_exp.__main__)
        raise Interrupted(outcome.message, outcome.signal, saved=where.out_dir is not None)
    if outcome.message:
        log.warning("%s", outcome.message)
    if where.out_dir is not None:
        log.info("Wrote %s (%s) to %s", RunDir.RESULT, outcome.status, where.out_dir)
    return result


def result_in(run_dir: Path) -> Result:
    """The result a finished run left in ``run_dir``; a deleted result.png is said to be missing, with how to re-run."""
    run = RunDir(run_dir)
    if not run.result.exists() and not run.result.is_symlink():
        raise NstError(
            f"{run_dir} holds this run, finished, but its {RunDir.RESULT} is missing (deleted?). To make it again, "
            f"delete the folder {run_dir} and run the same command again (a sweep's job: run the sweep again with "
            "hydra.sweep.dir=<its dir>; its other finished jobs are skipped), or give another output dir."
        )
    image = images.open_rgb(run.result)
    return Result(image, images.to_tensor(image), run.read_metrics(), run_dir)


def configure_threads(threads: int | None) -> int:
    """Set torch's CPU threads for this job and return the number in use.

    ``None`` keeps torch's default: all cores in a plain run; in a worker of
    Hydra's joblib launcher, joblib's loky backend has already set
    OMP_NUM_THREADS to cores // workers, so parallel jobs do not oversubscribe.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def prepare_network(cfg: DictConfig, settings: LossSettings) -> Network:
    """The configured network with its weights, its layers checked against the objective's."""
    network = load_configured_network(cfg.model, cfg.seed)
    log.info("Network: %s", summary(cfg.model.name, cfg.model.description, network))
    if not network.trained:
        log.warning("RANDOM WEIGHTS: %s is untrained (%s). Use it for tests only.", cfg.model.name, network.weights)
    elif not network.paper_network:
        log.warning("%s is not the paper's network; see docs/networks.md.", cfg.model.name)
    network.check_layers(settings.content_layers, "content layer", cfg.model.name)
    network.check_layers(settings.style_layers, "style layer", cfg.model.name)
    return network


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings flattened to scalars for TensorBoard's HParams view."""
    flat = {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), private=False).items()
    }
    if cfg.beta > 0:
        flat["alpha/beta"] = cfg.alpha / cfg.beta
    return flat


def metrics(
    cfg: DictConfig,
    outcome: Outcome,
    network: Network,
    device: torch.device,
    threads: int,
    speed: SpeedChoice,
    started: float,
) -> dict[str, Any]:
    """The run's metrics.json: final losses and scores by TensorBoard tag, counts, timings, what ran where."""
    return {
        "status": outcome.status,
        "message": outcome.message,
        **outcome.values,
        "iterations": outcome.iterations,
        "evaluations": outcome.evaluations,
        "seconds": outcome.seconds,
        "wall_seconds": time.perf_counter() - started,
        "seconds_per_iteration": outcome.seconds / outcome.iterations if outcome.iterations else None,
        "seconds_per_evaluation": outcome.seconds / outcome.evaluations if outcome.evaluations else None,
        "image_height": int(outcome.image.shape[-2]),
        "image_width": int(outcome.image.shape[-1]),
        "device": str(device),
        "device_name": describe_device(device),
        "threads": threads,
        "precision": str(cfg.precision),
        "precision_used": speed.precision_used,
        "channels_last": cfg.channels_last,
        "channels_last_used": speed.channels_last_used,
        "speed_reason": speed.reason,
        "compile": cfg.compile,
        "network": cfg.model.name,
        "network_description": cfg.model.description,
        "weights": network.weights,
        "trained_weights": network.trained,
        "paper_network": network.paper_network,
        "network_layers": network.layer_range,
        "torch": torch.__version__,
    }

