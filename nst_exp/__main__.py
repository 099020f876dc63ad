"""``python -m nst_exp [overrides]``: one style transfer; ``-m`` for a sweep."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from nst_exp.config import conf_dir, register
from nst_exp.errors import NstError, RunFailed
from nst_exp.hardware import sweep_device
from nst_exp.help import register_help
from nst_exp.lock import RunDirInUse
from nst_exp.results import record_failure
from nst_exp.run import run

log = logging.getLogger("nst_exp")
register()
register_help()  # the resolver conf/hydra/help/nst_exp.yaml calls for --help


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Run one job; return its final loss to a sweeper. A user error is one message; a sweep's other jobs go on."""
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:  # on a machine with several GPUs, job n of a sweep takes GPU n % count
        cfg.device = sweep_device(cfg.device, hydra_cfg.job.get("num"), torch.cuda.device_count())
    try:
        return run(cfg, out_dir, list(hydra_cfg.overrides.task), multirun).loss
    except NstError as error:
        log.error("%s", error)
        # A refused resume, or a directory another process holds, leaves that run's record alone.
        if not isinstance(error, RunDirInUse) and (not cfg.resume or isinstance(error, RunFailed)):
            record_failure(out_dir, str(error), error.metrics if isinstance(error, RunFailed) else None)
        if multirun:
            return float("nan")
        sys.exit(2)
    except KeyboardInterrupt as stop:
        if multirun:
            again = f"run the same sweep again with hydra.sweep.dir={hydra_cfg.sweep.dir}"
        else:
            again = f"python -m nst_exp resume={out_dir}"
        log.error(
            "Interrupted; the image and metrics so far are saved in %s, with a checkpoint. Continue: %s",
            out_dir,
            again,
        )
        sys.exit(128 + int(getattr(stop, "signal", signal.SIGINT)))


if __name__ == "__main__":
    main()
