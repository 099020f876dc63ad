"""``python -m nst_exp [overrides]``: one style transfer; ``-m`` for a sweep."""

from __future__ import annotations

import logging
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from nst_exp.config import conf_dir, register
from nst_exp.errors import NstError, RunFailed
from nst_exp.run import output_dir, record_failure, run

log = logging.getLogger("nst_exp")
register()


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Run one job. A user error is reported in one message; in a sweep the other jobs go on."""
    try:
        return run(cfg)
    except NstError as error:
        log.error("%s", error)
        if not cfg.resume or isinstance(error, RunFailed):  # a refused resume leaves the run's record alone
            record_failure(output_dir(), error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return float("nan")
        sys.exit(2)
    except KeyboardInterrupt as stop:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            again = f"run the same sweep again with hydra.sweep.dir={HydraConfig.get().sweep.dir}"
        else:
            again = f"python -m nst_exp resume={output_dir()}"
        log.error(
            "Interrupted; the image and metrics so far are saved in %s, with a checkpoint. Continue: %s",
            output_dir(),
            again,
        )
        sys.exit(128 + int(getattr(stop, "signal", signal.SIGINT)))


if __name__ == "__main__":
    main()
