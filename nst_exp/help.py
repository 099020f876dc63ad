"""``--help`` of nst-exp and nst-exp-normalize: the keys, one line each, read from their YAML's own comments.

The help templates (conf/hydra/help/nst_exp.yaml, normalize.yaml) call
``${nst.help_keys:}`` (``${nst.help_keys:normalize}``) and ``${nst.help_groups:model}``;
the lines come from the YAML at run time, so each key's meaning is written
once, beside its default.
"""

from __future__ import annotations

import re
from pathlib import Path

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
