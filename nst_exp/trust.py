"""What a config, a checkpoint or a run directory made by someone else may make nst_exp do: nothing but read.

``hydra.utils.instantiate`` imports and calls whatever a ``_target_`` names, so
every ``_target_`` a command line, a YAML file (``--config-dir``) or a
checkpoint's saved config can set is checked against what its slot allows
*before* anything is imported or called:

- ``optimizer``: a ``torch.optim.<Name>`` class that subclasses
  ``torch.optim.Optimizer``, made with ``_partial_: true`` (the image is given at
  run time); ``_args_``, ``_recursive_``, ``_convert_`` and nested ``_target_``
  nodes are refused.
- ``hydra.callbacks.<name>``: nst_exp's callbacks (``nst_exp.sweep_summary``) and Hydra's
  own (``hydra.experimental.callbacks``).
- ``hydra.launcher``, ``hydra.sweeper``: Hydra's plugins (Hydra checks them too);
  ``hydra.sweeper.sampler``: an ``optuna.samplers`` class.
- ``hydra.job_logging``/``hydra.hydra_logging``: handler classes and factories
  from ``logging`` (and colorlog), ``ext://`` only into ``sys``.
- Anywhere else: no ``_target_`` at all. In what Hydra instantiates, an interpolation
  that is a whole value must resolve to a plain value (``${oc.create:...}`` would make a node).

``check_command_line`` composes a command line exactly as Hydra will (``--config-dir``,
``-m``) and applies these checks before Hydra makes its callbacks; ``validate()`` applies
the job's part again to every config a run uses, a checkpoint's saved one included.

``read_config`` reads a saved ``.hydra/*.yaml`` as data: interpolations such as
``${oc.env:SECRET}`` stay text and are never resolved.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf.errors import OmegaConfBaseException

from nst_exp.errors import NstError

# What reading a record someone else wrote may raise: missing, unreadable, not YAML or JSON, the wrong shape.
RECORD_ERRORS = (OSError, ValueError, TypeError, AttributeError, KeyError, yaml.YAMLError, OmegaConfBaseException)
INSTANTIATE_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
# A class in one module: the module's dotted name fixed, the class name one identifier.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
OPTIMIZER_TARGET = re.compile(rf"torch\.optim\.({_NAME})")
CALLBACK_MODULES = ("nst_exp.sweep_summary", "hydra.experimental.callbacks")
PLUGIN_PREFIXES = ("hydra_plugins.", "hydra._internal.core_plugins.")
SAMPLER_TARGET = re.compile(rf"optuna\.samplers\.({_NAME})")
LOGGING_PREFIXES = ("logging.", "colorlog.")
LOGGING_TREES = ("job_logging", "hydra_logging")
ALLOWED_EXT = ("ext://sys.",)
INSTANTIATED_TREES = ("callbacks", "launcher", "sweeper")  # the parts of hydra.* that Hydra instantiates


def optimizer_class(target: Any, choices: str = "adam, lbfgs") -> type:
    """The class ``optimizer._target_`` names, if it is a torch.optim optimizer; imports only torch.optim."""
    name = optimizer_name(target, choices)
    import torch.optim

    found = getattr(torch.optim, name, None)
    if not (inspect.isclass(found) and issubclass(found, torch.optim.Optimizer) and found is not torch.optim.Optimizer):
        raise _not_an_optimizer(target, choices)
    return found


def optimizer_name(target: Any, choices: str = "adam, lbfgs") -> str:
    """``Adam`` for ``torch.optim.Adam``; refuses any other module without importing anything."""
    match = OPTIMIZER_TARGET.fullmatch(str(target))
    if not match:
        raise _not_an_optimizer(target, choices)
    return match.group(1)


def _not_an_optimizer(target: Any, choices: str) -> NstError:
    return NstError(
        f"optimizer._target_={target} is not allowed: the optimizer must be a torch.optim class "
        f"(a subclass of torch.optim.Optimizer, e.g. torch.optim.Adam or torch.optim.LBFGS), and nothing "
        f"else is imported or called. Pick one with optimizer=<name> (conf/optimizer/: {choices})."
    )


def check_optimizer_node(optimizer: Any, choices: str = "adam, lbfgs") -> None:
    """``optimizer``'s instantiate keys (plain container): what makes instantiate call anything but the optimizer."""
    if not isinstance(optimizer, dict):
        return
    for key in ("_args_", "_recursive_", "_convert_"):
        if key in optimizer:
            raise NstError(
                f"optimizer.{key} is not allowed: nst_exp makes the optimizer itself, with keyword arguments "
                f"only (the image is passed at run time). Drop it (~optimizer.{key}), or pick an optimizer "
                f"with optimizer=<name> (conf/optimizer/: {choices})."
            )
    if "_partial_" in optimizer and optimizer["_partial_"] is not True:
        raise NstError(
            f"optimizer._partial_={optimizer['_partial_']} is not allowed: the optimizer is made at run time, "
            "with the image, so _partial_ must be true. Drop the override."
        )
    for key, value in optimizer.items():
        if key not in INSTANTIATE_KEYS:
            for path, _ in _targets(value, f"optimizer.{key}"):
                raise NstError(
                    f"{path}._target_ is not allowed: an optimizer's arguments are values (numbers, "
                    "lists, strings), never objects to make. Drop it."
                )


def check_task_targets(cfg: Any, choices: str = "adam, lbfgs") -> None:
    """Every ``_target_`` in a job's config (plain container, unresolved): only the optimizer's, and only torch.optim's."""
    optimizer = cfg.get("optimizer") if isinstance(cfg, dict) else None
    check_optimizer_node(optimizer, choices)
    for path, target in _targets(cfg, ""):
        if path != "optimizer":
            raise NstError(
                f"{path}._target_={target} is not allowed: nst_exp makes an object from a config only for "
                "`optimizer` (a torch.optim class). Drop that key."
            )
    if isinstance(optimizer, dict) and "_target_" in optimizer:
        optimizer_name(optimizer["_target_"], choices)  # torch.optim's class itself is checked with its signature


def check_hydra_targets(hydra: Any, select: Callable[[str], Any] | None = None) -> None:
    """Every ``_target_``, logging factory and ``ext://`` in Hydra's own config (plain container, unresolved).

    ``select(dotted path)`` resolves one value of the composed config: an interpolation that is a
    whole value in what Hydra instantiates must resolve to a plain value (``${hydra.job.name}``);
    without ``select``, or where it does not resolve, it is refused.
    """
    if not isinstance(hydra, dict):
        return
    for path, target in _targets(hydra, "hydra"):
        parts = path.split(".")
        if len(parts) == 3 and parts[1] == "callbacks":
            module, _, name = str(target).rpartition(".")
            if module in CALLBACK_MODULES and re.fullmatch(_NAME, name) and _is_callback(module, name):
                _check_plain(hydra["callbacks"][parts[2]], path)
                continue
            raise NstError(
                f"{path}._target_={target} is not allowed: a Hydra callback must be one of nst_exp's "
                f"(nst_exp.sweep_summary.SweepSummary, nst_exp.sweep_summary.FailedTrials) or Hydra's own "
                f"(hydra.experimental.callbacks.*). Drop {path}."
            )
        if path in ("hydra.launcher", "hydra.sweeper") and str(target).startswith(PLUGIN_PREFIXES):
            continue
        if path == "hydra.sweeper.sampler" and SAMPLER_TARGET.fullmatch(str(target)):
            continue
        raise NstError(
            f"{path}._target_={target} is not allowed: Hydra makes objects only from its launcher and sweeper "
            "plugins (hydra_plugins.*), an Optuna sampler (hydra.sweeper.sampler: optuna.samplers.*) and "
            "callbacks (nst_exp.sweep_summary.*). Choose them with hydra/launcher=..., hydra/sweeper=... instead."
        )
    for tree in INSTANTIATED_TREES:  # an interpolation standing for a whole value may resolve to a node to make
        for path, value in _whole_interpolations(hydra.get(tree), f"hydra.{tree}"):
            if not _resolves_to_plain_value(select, path):
                raise NstError(
                    f"{path}={value} is not allowed: in hydra.{tree}, which Hydra instantiates, an interpolation "
                    "that is a whole value must resolve to a text or a number here (like ${hydra.job.name}), "
                    "never to an object to make. Write the value itself."
                )
    for tree in LOGGING_TREES:
        for path, value in _logging_references(hydra.get(tree), f"hydra.{tree}"):
            raise NstError(
                f"{path}={value} is not allowed: Hydra's logging config may name only classes of the "
                f"logging module ({', '.join(LOGGING_PREFIXES)}) and streams ext://sys.stdout or "
                "ext://sys.stderr. Drop that key, or pick a logging config with hydra/job_logging=..."
            )


def make_optimizer(optimizer: Any) -> Any:
    """``functools.partial(<torch.optim class>, **arguments)`` from the optimizer's config, without instantiate.

    The class is the checked one (optimizer_class); the arguments are plain values.
    """
    import functools

    from omegaconf import OmegaConf

    node = OmegaConf.to_container(optimizer, resolve=True) if OmegaConf.is_config(optimizer) else dict(optimizer)
    check_optimizer_node(node)
    arguments = {key: value for key, value in node.items() if key not in INSTANTIATE_KEYS}
    return functools.partial(optimizer_class(node.get("_target_")), **arguments)


def check_command_line(argv: Sequence[str], config_name: str) -> Any:
    """Compose ``argv`` as Hydra will and check every ``_target_`` in it, before Hydra makes anything.

    Hydra instantiates its callbacks before the job runs, so the check cannot wait for
    the job. Returns the composed config (``hydra.*`` included), or None where Hydra
    will refuse the command line itself. ``--experimental-rerun`` (it unpickles a file)
    is refused; a YAML file that does not parse is one message.
    """
    from omegaconf import OmegaConf

    if "--experimental-rerun" in argv:
        raise NstError(
            "--experimental-rerun is not supported: it unpickles a file, which can run any code it holds. "
            "Re-run a run with its overrides instead (python -m nst_exp $(cat <run dir>/.hydra/overrides.yaml)), "
            "or continue it with resume=<run dir>."
        )
    cfg = compose_as_hydra(argv, config_name)
    if cfg is None:
        return None
    plain = OmegaConf.to_container(cfg, resolve=False)
    check_hydra_targets(plain.pop("hydra", None), lambda path: OmegaConf.select(cfg, path, throw_on_missing=True))
    check_task_targets(plain)  # nodes an interpolation in hydra.* could point at
    return cfg


def compose_as_hydra(argv: Sequence[str], config_name: str) -> Any:
    """The config Hydra will compose from ``argv`` (with ``hydra.*``), or None where Hydra will refuse the line itself.

    A YAML file that does not parse (a tab, an unclosed bracket) is one NstError naming the file and line.
    """
    from hydra._internal.hydra import Hydra  # Hydra 1.3's own composition, as hydra.main runs it
    from hydra._internal.utils import create_config_search_path, get_args_parser
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from nst_exp.config import conf_dir, register

    register()  # the schema the defaults list names (nst_exp.normalize registers its own on import)

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # Hydra's parser reports a bad flag itself
        return None
    search_path = create_config_search_path(f"file://{conf_dir()}")
    if args.config_dir is not None:
        if not os.path.isdir(args.config_dir):
            raise NstError(
                f"--config-dir {args.config_dir}: there is no such folder. Give the folder that holds your "
                "config groups (e.g. my_conf/ with my_conf/style/mine.yaml)."
            )
        search_path.prepend("command-line", f"file://{os.path.abspath(args.config_dir)}", SearchPathQuery("schema"))
    saved = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        hydra_app = Hydra.create_main_hydra2(task_name=config_name, config_search_path=search_path)
        mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN  # Hydra's own parse of -m/--multirun
        return hydra_app.compose_config(args.config_name or config_name, args.overrides, run_mode=mode)
    except Exception as error:  # noqa: BLE001 - Hydra reports a config that does not compose; YAML syntax is ours
        problem = _yaml_problem(error)
        if problem is not None:
            raise NstError(problem) from None
        return None
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def _yaml_problem(error: BaseException) -> str | None:
    """One message for a YAML file that does not parse (a tab, a bad indent), from the error or its causes."""
    import yaml

    while error is not None and not isinstance(error, yaml.YAMLError):
        error = error.__cause__ or error.__context__
    if error is None:
        return None
    mark = getattr(error, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "a config file"
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    tab = " YAML indents with spaces only: replace the tab with spaces." if "\\t" in str(problem) else ""
    return f"Cannot read the config file {where}: {problem}.{tab} Fix the file, then run again."


def read_config(path: Path) -> Any:
    """A saved YAML config (``.hydra/config.yaml``) as plain data: no interpolation resolved, no object made.

    ``${oc.env:SECRET}`` in a file someone shared stays that text; resolving it would
    copy this machine's secret into whatever is written from it (a report, a CSV).
    """
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _entries(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, key, value) for ``node`` itself (key None) and every entry below it, depth first."""
    yield path, None, node
    yield from _below(node, path)


def _below(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        here = f"{path}[{key}]" if isinstance(node, list) else f"{path}.{key}" if path else str(key)
        yield here, key, value
        yield from _below(value, here)


def _targets(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted path of the node, its ``_target_``) for every node of ``node`` that has one."""
    for here, _, value in _entries(node, path):
        if isinstance(value, dict) and "_target_" in value:
            yield here, value["_target_"]


def _resolves_to_plain_value(select: Callable[[str], Any] | None, path: str) -> bool:
    if select is None:
        return False
    try:
        value = select(path)
    except Exception:  # noqa: BLE001 - a value that cannot be resolved now is not known to be plain
        return False
    return value is None or isinstance(value, (str, int, float, bool))


def _whole_interpolations(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """String values that are one interpolation and nothing else (``${oc.create:...}``, ``${content}``)."""
    for here, _, value in _entries(node, path):
        if isinstance(value, str) and value.strip().startswith("${") and value.strip().endswith("}"):
            yield here, value


def _check_plain(node: Any, path: str) -> None:
    """A callback's settings: keyword values only; no positional ``_args_``, nothing nested to make."""
    if not isinstance(node, dict):
        return
    for key in ("_args_", "_partial_", "_recursive_", "_convert_"):
        if key in node:
            raise NstError(f"{path}.{key} is not allowed: a callback takes keyword settings only. Drop it.")
    for key, value in node.items():
        if key != "_target_":
            for inner, _ in _targets(value, f"{path}.{key}"):
                raise NstError(f"{inner}._target_ is not allowed: a callback's settings are values. Drop it.")


def _is_callback(module: str, name: str) -> bool:
    """``module.name`` is a Hydra Callback class; ``module`` is one of CALLBACK_MODULES (nst_exp's or Hydra's)."""
    from hydra.experimental.callback import Callback

    found = getattr(importlib.import_module(module), name, None)
    return inspect.isclass(found) and issubclass(found, Callback)


def _logging_references(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Values in a ``logging.config.dictConfig`` tree that would import or call something outside ``logging``."""
    for here, key, value in _entries(node, path):
        if key in ("()", "class"):  # a factory or class dictConfig imports and calls
            if not (isinstance(value, str) and value.startswith(LOGGING_PREFIXES)):
                yield here, value
        elif isinstance(value, str) and value.startswith("ext://") and not value.startswith(ALLOWED_EXT):
            yield here, value
