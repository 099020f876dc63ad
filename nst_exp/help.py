"""``python -m nst_exp --help``: the main keys, one line each, read from conf/config.yaml's own comments.

The help template (conf/hydra/help/nst_exp.yaml) calls ``${nst.help_keys:}``;
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


def help_keys() -> str:
    """The key lines of ``--help``: ``  beta=1.0e3   style weight``, ``$`` escaped for Hydra's template."""
    entries = key_lines((Path(conf_dir()) / "config.yaml").read_text())
    lines = [f"  {f'{key}={value}':<{WIDTH - 2}}  {comment}" for key, value, comment in entries]
    return "\n".join(lines).replace("$", "$$")


def register_help() -> None:
    """The resolver the help template calls."""
    OmegaConf.register_new_resolver("nst.help_keys", help_keys, replace=True)
