"""``python -m nst_exp [overrides]``: one style transfer; ``-m`` for a sweep."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from nst_exp.config import conf_dir, register
from nst_exp.errors import NstError
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
        record_failure(output_dir(), error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return float("nan")
        sys.exit(2)
    except KeyboardInterrupt:
        log.error("Interrupted; the image and metrics so far are saved in %s.", output_dir())
        sys.exit(130)


if __name__ == "__main__":
    main()
