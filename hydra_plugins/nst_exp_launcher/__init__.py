"""nst_exp's joblib launcher, where Hydra looks for launchers; conf/hydra/launcher/joblib.yaml selects it.

hydra-joblib-launcher's launcher whose ``launch`` is ``nst_exp.launcher.Launch``: a worker the OS
kills is a failed job in the sweep's summary (exit 1), and SIGTERM stops every worker. Hydra imports
this module at every start to find its plugins, so joblib and the rest load only when a sweep launches.
"""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as HydraJoblibLauncher


class JoblibLauncher(HydraJoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from nst_exp.launcher import Launch

        return Launch(self).launch(job_overrides, initial_job_idx)
