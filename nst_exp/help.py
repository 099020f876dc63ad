"""``--help`` of nst-exp and nst-exp-normalize: the keys, one line each, read from their YAML's own comments.

The help templates (conf/hydra/help/nst_exp.yaml, normalize.yaml) call
``${nst.help_keys:}`` (``${nst.help_keys:normalize}``) and ``${nst.help_groups:model}``;
the lines come from the YAML at run time, so each key's meaning is written
once, beside its default. :func:`app_help` renders the template as Hydra's
``--help`` does, in a third of the time.
"""

from __future__ import annotations

import os
import re
import string
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nst_exp.config import conf_dir

# `key: value  # comment` at the top level (indent 0) or one level down (indent 2).
KEY_LINE = re.compile(r"^(?P<indent> {0,2})(?P<key>[A-Za-z_]\w*):(?P<value>[^#]*?)\s*(?:#\s*(?P<comment>.*))?$")
SKIPPED = ("defaults", "hydra")  # the groups are listed by Hydra; Hydra's own node is --hydra-help's
WIDTH = 34  # the column where meanings start; a longer key=default pushes its meaning along


def key_lines(config_yaml: str) -> list[tuple[str, str, str]]:
    """(dotted key, default as typed on the command line, comment) for every commented key, in file order."""
    found, parent = [], None
    for line in config_yaml.splitlines():
        match = KEY_LINE.match(line)
        if not match:
            continue
        key, value, comment = match["key"], re.sub(r",\s+", ",", match["value"].strip()), match["comment"] or ""
        if not match["indent"]:
            parent = key if not value else None
            if value and comment:
                found.append((key, value, comment))
        elif parent is not None and parent not in SKIPPED and comment:
            found.append((f"{parent}.{key}", value, comment))
    return [entry for entry in found if entry[0] not in SKIPPED]


def help_keys(config: str = "config") -> str:
    """The key lines of ``--help`` from conf/<config>.yaml: ``  beta=1.0e3   style weight``, ``$`` escaped for Hydra."""
    entries = key_lines((Path(conf_dir()) / f"{config}.yaml").read_text())
    lines = [f"  {f'{key}={value}':<{WIDTH - 2}}  {comment}" for key, value, comment in entries]
    return "\n".join(lines).replace("$", "$$")


def help_groups(*groups: str) -> str:
    """``  model: vgg16, vgg16_bn, ...`` for the named config groups (an app that uses only some of conf/'s)."""
    folder = Path(conf_dir())
    return "\n".join(f"  {group}: {', '.join(sorted(p.stem for p in (folder / group).glob('*.yaml')))}" for group in groups)


def register_help() -> None:
    """The resolvers the help templates (conf/hydra/help/) call."""
    OmegaConf.register_new_resolver("nst.help_keys", help_keys, replace=True)
    OmegaConf.register_new_resolver("nst.help_groups", help_groups, replace=True)


def app_help(argv: Sequence[str], config_name: str = "config") -> str | None:
    """What ``--help`` prints for ``argv``, as Hydra's app help has it; None where Hydra must answer.

    Hydra renders the template after listing every config group, its own
    (``hydra/*``) included, and copies its whole config repository for each
    question it asks: about 0.6 s, two thirds of ``--help``'s time. This asks only
    for the groups the template shows. Any flag but ``--help``, ``-h`` and
    ``--resolve``, or overrides that do not compose, are left to Hydra.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from nst_exp.config import register

    flags = [argument for argument in argv if argument.startswith("-")]
    if not {"--help", "-h"} & set(flags) or not set(flags) <= {"--help", "-h", "--resolve"}:
        return None
    register()
    register_help()
    overrides = [argument for argument in argv if not argument.startswith("-")]
    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            loader = GlobalHydra.instance().config_loader()
            values = _Lazy(
                FLAGS_HELP=_flags_help,
                HYDRA_CONFIG_GROUPS=lambda: _format_groups(loader, hydra=True),
                APP_CONFIG_GROUPS=lambda: _format_groups(loader, hydra=False),
                CONFIG=lambda: OmegaConf.to_yaml(_without_hydra(cfg), resolve="--resolve" in flags),
            )
            return string.Template(cfg.hydra.help.template).substitute(values)
    except Exception:  # noqa: BLE001 - a config that does not compose is Hydra's to report, in its words
        return None


def print_page(text: str) -> None:
    """Print a help page; a reader that stops early (``nst-exp --help | head``) is no error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush would fail again


class _Lazy(dict):
    """A template's values, each computed when the template names it."""

    def __init__(self, **makers: Callable[[], str]) -> None:
        super().__init__()
        self.makers = makers

    def __missing__(self, key: str) -> str:
        self[key] = self.makers[key]()
        return self[key]


def _format_groups(loader: Any, hydra: bool) -> str:
    """``group: option, option`` per line, sorted, as Hydra's ``$APP_CONFIG_GROUPS`` / ``$HYDRA_CONFIG_GROUPS``.

    The application's groups are read from conf/ and the ConfigStore directly; Hydra's
    own (plugins add to them) are asked of Hydra's config loader.
    """
    options = _hydra_groups(loader, "hydra") if hydra else _app_groups()
    return "".join(f"{group}: {', '.join(sorted(options[group]))}\n" for group in sorted(options))


def _app_groups() -> dict[str, list[str]]:
    """{group: its configs} for every folder under conf/ that holds .yaml files, and the ConfigStore's groups; hydra/ aside."""
    from hydra.core.config_store import ConfigStore

    root, found = Path(conf_dir()), {}
    for path in root.rglob("*.yaml"):
        group = path.parent.relative_to(root).as_posix()
        if group != "." and group.split("/")[0] != "hydra":
            found.setdefault(group, set()).add(path.stem)
    store = ConfigStore.instance()
    folders = [name for name in store.list("") if not name.endswith(".yaml") and name != "hydra"]
    while folders:
        group = folders.pop()
        for name in store.list(group):
            if name.endswith(".yaml"):
                found.setdefault(group, set()).add(name[: -len(".yaml")])
            else:
                folders.append(f"{group}/{name}")
    return {group: list(names) for group, names in found.items()}


def _hydra_groups(loader: Any, group: str) -> dict[str, list[str]]:
    """{group: its configs} for ``group`` and every group below it that holds configs, from Hydra's loader."""
    from hydra.core.object_type import ObjectType

    configs = loader.get_group_options(group, ObjectType.CONFIG)
    found = {group: configs} if configs else {}
    for child in loader.get_group_options(group, ObjectType.GROUP):
        found.update(_hydra_groups(loader, f"{group}/{child}"))
    return found


def _flags_help() -> str:
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import get_args_parser

    return Hydra.format_args_help(get_args_parser())


def _without_hydra(cfg: Any) -> Any:
    """The job's config: ``cfg`` without Hydra's node, as Hydra's help prints ``$CONFIG``."""
    import copy

    from omegaconf import open_dict, read_write

    job = copy.deepcopy(cfg)
    with read_write(job), open_dict(job):
        del job["hydra"]
    return job
