"""How a run appears in TensorBoard: its name, its HParams row, its constant settings.

A sweep's job logs into ``<job dir>/<swept values>/`` (``0/beta=1e3,style=the_scream``), so
``tensorboard --logdir SWEEP`` names each run by what changed in it, the job number first to keep
repeated values (seeds) apart; nst_exp.report finds the events under each job's directory. The
HParams view gets only the swept keys (a single run: the keys given on its command line), typed
as they are (a boolean as a boolean), and the final values; every other setting is written once per
run as a text table. The picture scores (``eval/*``), one value per run, are logged in the run's
``final`` sub-run: the HParams view reads them from there, and they stay out of the run's curves.

torch-free: the entry point computes the name before anything heavy loads.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of the sweep as typed, in the sweep's directory
FINAL_GROUP = "final"  # the sub-run of one-point metrics (eval/*), read by the HParams view
NAME_LIMIT = 120  # characters of a run's folder name; a longer one is cut and given a hash
UNSAFE = re.compile(r"[^A-Za-z0-9._=,+\-\[\]@]")  # not safe in a folder name on every system


@dataclass(frozen=True)
class Board:
    """How a run logs to TensorBoard: the settings that vary (key -> value as typed) and whether they name its folder."""

    swept: dict[str, str] = field(default_factory=dict)
    named: bool = False  # a sweep's job: its events go to <job>/<swept values>/


def split_choices(text: str) -> list[str]:
    """``"1e3,1e4"`` -> ``["1e3", "1e4"]``: a sweep's values as typed, split at the commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, "", ""
    for character in text:
        if quote:
            quote = "" if character == quote else quote
        elif character in "'\"":
            quote = character
        elif character in "([{":
            depth += 1
        elif character in ")]}":
            depth -= 1
        elif character == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += character
    return [*parts, current.strip()]


def sweep_task(sweep_dir: Path | str) -> list[str] | None:
    """The sweep's command-line overrides as typed (``beta=1e3,1e4``), from its multirun.yaml; None if unreadable.

    Read as plain YAML: nothing in it is resolved or instantiated.
    """
    try:
        task = yaml.safe_load((Path(sweep_dir) / MULTIRUN_FILE).read_text(encoding="utf-8"))["hydra"]["overrides"]["task"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None
    return [str(line) for line in task] if isinstance(task, list) else None


def typed_values(task: Sequence[str]) -> tuple[dict[str, dict[str, str]], set[str]]:
    """({swept key: {value as a job records it: value as typed}}, keys set to one value) of a sweep's overrides.

    Hydra records ``beta=1e3,1e4`` as ``beta=1000.0`` in each job; the values as typed are kept here.
    """
    try:
        overrides = OverridesParser.create().parse_overrides(list(task))
    except HydraException:
        return {}, set()
    typed: dict[str, dict[str, str]] = {}
    constant: set[str] = set()
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            constant.add(key)
            continue
        typed[key] = {}
        try:
            values = list(override.sweep_string_iterator())
        except HydraException:  # a range or an interval: its values are not typed one by one
            continue
        choices = split_choices(override.input_line.split("=", 1)[1])
        if len(choices) == len(values):
            typed[key] = dict(zip(values, choices))
    return typed, constant


def compact(value: str) -> str:
    """A number Hydra wrote out in full, short: "1000.0" -> "1000", "1e-07" -> "1e-7"; other text unchanged."""
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number) or not re.fullmatch(r"[-+0-9.e]+", value):
        return value
    mantissa, _, exponent = f"{number:g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def swept_values(job_overrides: Sequence[str], task: Sequence[str] | None) -> dict[str, str]:
    """key -> value as typed, for the keys that vary in this job's sweep, in the job's order.

    A key the sweep's command line set to one value is a constant; every other override of the job
    (a swept value, an Optuna trial's choice, a ``hydra.sweeper.params`` grid) varies. Without the
    sweep's record (a single run, or an unreadable multirun.yaml), every override given varies.
    """
    try:
        overrides = OverridesParser.create().parse_overrides(list(job_overrides))
    except HydraException:
        return {}
    typed, constant = typed_values(task) if task is not None else ({}, set())
    values = {}
    for override in overrides:
        key = override.get_key_element()
        if key in constant or key.lstrip("+~").startswith("hydra.") or key == "resume":
            continue
        value = override.get_value_element_as_str()
        values[key] = typed.get(key, {}).get(value, compact(value))
    return values


def run_name(swept: Mapping[str, str]) -> str:
    """``beta=1e3,style=the_scream``: a folder name safe on every system; "" when nothing is swept."""
    name = UNSAFE.sub("_", ",".join(f"{key.lstrip('+~')}={value}" for key, value in swept.items()))
    if name.startswith("."):
        name = "_" + name[1:]
    if len(name) > NAME_LIMIT:
        name = name[: NAME_LIMIT - 9] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def log_dir(out_dir: Path, swept: Mapping[str, str]) -> Path:
    """Where a run logs: ``out_dir/<run_name>`` (``out_dir`` when nothing is named), or, for a run continued
    in ``out_dir``, the folder its first session logged to."""
    earlier = sorted({path.parent for pattern in ("events.out.tfevents.*", "*/events.out.tfevents.*")
                      for path in Path(out_dir).glob(pattern) if path.parent.name != FINAL_GROUP})
    if earlier:
        return earlier[0]
    name = run_name(swept)
    return Path(out_dir) / name if name else Path(out_dir)


def hparam_value(value: Any) -> bool | float | str:
    """What the HParams view shows: booleans as booleans, numbers as numbers, the rest as text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return "null" if value is None else str(value)


def split_settings(flat: Mapping[str, Any], swept: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the HParams row: swept keys, then alpha/beta where alpha or beta is swept; the constants).

    A swept config group (``style=the_scream``) is shown by its option, and its keys are constants
    of the row; ``flat`` is the run's config flattened to dotted keys.
    """
    row: dict[str, Any] = {}
    for key, typed in swept.items():
        key = key.lstrip("+~")
        row[key] = flat[key] if key in flat else typed
    if ("alpha" in row or "beta" in row) and "alpha/beta" in flat:
        row["alpha/beta"] = flat["alpha/beta"]
    constants = {key: value for key, value in flat.items() if key not in row}
    return {key: hparam_value(value) for key, value in row.items()}, constants


def constants_text(constants: Mapping[str, Any]) -> str:
    """The settings no run of the sweep varies, as a Markdown table for TensorBoard's text view."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| setting | value |", "|---|---|", *(f"| {cell(key)} | {cell(value)} |" for key, value in constants.items())]
    return "\n".join(lines)


def hparams_summaries(row: Mapping[str, bool | float | str], metrics: Sequence[str], final: Sequence[str] = ()):
    """(experiment, session start, session end) summaries of the HParams plugin for one run.

    ``row``: the run's hyperparameters in the order to show them; ``metrics``: scalar tags of the run
    itself (its last value counts); ``final``: tags logged once in the ``final`` sub-run.
    The session end's status is set when the run ends (``session_end``).
    """
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.api_pb2 import DataType, Experiment, HParamInfo, MetricInfo, MetricName
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionStartInfo

    def summary(tag: str, data: HParamsPluginData) -> Summary:
        data.version = metadata.PLUGIN_DATA_VERSION
        plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
        return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])

    kinds = {bool: "DATA_TYPE_BOOL", float: "DATA_TYPE_FLOAT64", str: "DATA_TYPE_STRING"}
    infos = [HParamInfo(name=key, type=DataType.Value(kinds[type(value)])) for key, value in row.items()]
    names = [MetricName(tag=tag) for tag in metrics] + [MetricName(group=FINAL_GROUP, tag=tag) for tag in final]
    experiment = Experiment(hparam_infos=infos, metric_infos=[MetricInfo(name=name) for name in names],
                            time_created_secs=time.time())
    start = SessionStartInfo(start_time_secs=time.time())
    for key, value in row.items():
        if isinstance(value, bool):
            start.hparams[key].bool_value = value
        elif isinstance(value, float):
            start.hparams[key].number_value = value
        else:
            start.hparams[key].string_value = value
    return (summary(metadata.EXPERIMENT_TAG, HParamsPluginData(experiment=experiment)),
            summary(metadata.SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=start)))


def session_end(status_ok: bool):
    """The HParams plugin's session end summary: success, or failure for a run that did not finish."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    status = api_pb2.Status.Value("STATUS_SUCCESS" if status_ok else "STATUS_FAILURE")
    data = HParamsPluginData(session_end_info=SessionEndInfo(status=status, end_time_secs=time.time()),
                             version=metadata.PLUGIN_DATA_VERSION)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=SummaryMetadata(plugin_data=plugin))])
