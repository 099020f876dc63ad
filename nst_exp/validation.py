"""Checks on a composed config that its types cannot express, made before anything loads.

Unknown keys (``+bta=1e4``) are refused with the nearest known one; every
number against the bound beside its schema field (nst_exp.config.bounded);
then the checks that span several keys (styles and their blend, coarse-to-fine
stages, spatial regions).
Each error names the key, the value, what is allowed and the fix.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nst_exp.config import AT_LEAST_ONE, DEVICES, POSITIVE, WEIGHT, Bound, Config, conf_dir, default, device_kind
from nst_exp.errors import NstError, did_you_mean
from nst_exp.objective import check as check_objective
from nst_exp.trust import INSTANTIATE_KEYS, check_task_targets, optimizer_class


def validate(cfg: Any) -> None:
    """Checks a type cannot express, before anything loads; each error names the key and the fix.

    Unknown keys and every number's range come first (check_known_keys,
    validate_numbers); then the checks that span several keys; the optimizer's
    keys and numbers last (check_optimizer): its class's signature names them,
    and importing that class imports torch, which a run refused for any other
    setting does not wait for.
    """
    plain = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    check_task_targets(plain, _optimizer_choices())  # before anything a config names is imported
    check_known_keys(cfg, optimizer=False)
    validate_numbers(cfg, optimizer=False)
    check_objective(cfg.objective, cfg.objective_weights)  # what a job returns to a sweeper is a value it records
    if cfg.alpha == 0 and cfg.beta == 0:
        raise NstError("alpha and beta are both 0: there is nothing to optimise.")
    if device_kind(cfg.device) is None:
        raise NstError(f"device={cfg.device!r} is not one of {', '.join(DEVICES)} (N: a GPU's number).")
    if cfg.channels_last not in (True, False, "auto"):
        raise NstError(f"channels_last={cfg.channels_last!r} is not one of auto, true, false.")
    if cfg.init.kind == "file" and not cfg.init.path:
        raise NstError("init=file needs init.path=/path/to/image.png.")
    if not cfg.content_layers and not cfg.style_layers:
        raise NstError("content_layers and style_layers are both empty: nothing to match.")
    for layers, weight, term, other in (("content_layers", "alpha", "content", "style"),
                                        ("style_layers", "beta", "style", "content")):
        if not cfg[layers] and cfg[weight] != 0:
            raise NstError(
                f"{layers} is empty but {weight}={cfg[weight]}: the {term} term would match nothing and the run "
                f"would silently be {other}-only. Give {layers} (e.g. {layers}="
                f"[{'relu4_2' if term == 'content' else 'relu1_1,relu2_1,relu3_1,relu4_1,relu5_1'}]), "
                f"or {weight}=0 for a {other}-only run (as conf/experiment/fig1_{other}.yaml does)."
            )
    validate_control(cfg)
    check_optimizer(cfg)


def check_optimizer(cfg: Any) -> None:
    """The optimizer's keys and numbers, against the arguments its ``_target_`` class takes (imports that class)."""
    optimizer = cfg.get("optimizer")
    keys = OmegaConf.to_container(optimizer, resolve=False) if OmegaConf.is_config(optimizer) else optimizer
    _check_optimizer_keys(keys)
    _validate_optimizer_numbers(optimizer)


def normalized_weights(weights: Sequence[float], key: str) -> list[float]:
    """Non-negative weights scaled to sum 1; ``key`` names the setting in the error."""
    values = [float(w) for w in weights]
    negative = [w for w in values if w < 0]
    if negative:
        raise NstError(f"{key}={values} has a negative weight ({negative[0]:g}). Weights must be >= 0.")
    total = sum(values)
    if total <= 0:
        raise NstError(f"{key}={values} sums to 0. Give at least one positive weight.")
    return [w / total for w in values]


def validate_control(cfg: Any) -> None:
    """Colour, several styles, scale, masks and TV (Gatys et al., CVPR 2017)."""
    if cfg.style_blend is not None:
        if not cfg.styles:
            raise NstError(
                "style_blend is set but styles is empty. Name the styles it weights, e.g. "
                "styles=[starry_night,the_scream] style_blend=[0.7,0.3]."
            )
        if len(cfg.style_blend) != len(cfg.styles):
            raise NstError(
                f"style_blend has {len(cfg.style_blend)} weights but styles has {len(cfg.styles)} "
                f"({', '.join(cfg.styles)}). Give one weight per style, or style_blend=null for equal weights."
            )
        normalized_weights(cfg.style_blend, "style_blend")
    validate_coarse_to_fine(cfg)
    validate_spatial(cfg)


def validate_coarse_to_fine(cfg: Any) -> None:
    sizes, iterations = list(cfg.coarse_to_fine.sizes), list(cfg.coarse_to_fine.iterations)
    if any(size < 1 for size in sizes) or sizes != sorted(set(sizes)) or (sizes and sizes[-1] >= cfg.image_size):
        example = sorted({size for size in (cfg.image_size // 4, cfg.image_size // 2) if 1 <= size < cfg.image_size})
        raise NstError(
            f"coarse_to_fine.sizes={sizes} must be increasing positive sizes below image_size={cfg.image_size} "
            f"(the last stage), e.g. coarse_to_fine.sizes=[{','.join(map(str, example))}]"
            f"{' (one stage)' if not example else ''}."
        )
    if iterations and len(iterations) != len(sizes):
        raise NstError(
            f"coarse_to_fine.iterations has {len(iterations)} values for {len(sizes)} coarse stages "
            f"(coarse_to_fine.sizes={sizes}). Give one per size, or [] for `iterations` each."
        )
    if any(count < 0 for count in iterations):
        raise NstError(f"coarse_to_fine.iterations={iterations} must be >= 0.")


def validate_spatial(cfg: Any) -> None:
    spatial = cfg.spatial
    if not spatial.regions:
        return
    if cfg.styles:
        raise NstError(
            "styles and spatial.regions are both set. Give each region its style "
            "(spatial.regions[i].style) and leave styles=[]."
        )
    names = [region.name for region in spatial.regions]
    if len(set(names)) != len(names):
        raise NstError(f"spatial.regions names must differ: {names}.")
    for index, region in enumerate(spatial.regions):
        for key in ("mask", "style_mask"):
            mask = region[key]
            if not (0 <= mask.top < mask.bottom <= 1 and 0 <= mask.left < mask.right <= 1):
                raise NstError(
                    f"spatial.regions[{index}].{key} (region '{region.name}') has top={mask.top}, "
                    f"bottom={mask.bottom}, left={mask.left}, right={mask.right}: need "
                    "0 <= top < bottom <= 1 and 0 <= left < right <= 1 (fractions of the image)."
                )
    styled = [region.weight for region in spatial.regions if region.style]
    if not styled:
        raise NstError(
            "No region in spatial.regions has a style. Give at least one region a style "
            "(spatial.regions[i].style=starry_night), or drop spatial.regions for a plain run."
        )
    normalized_weights(styled, "spatial.regions[*].weight")


# Arguments of torch optimizers, checked wherever the optimizer's class takes them. The optimizer
# node is free-form (its keys are its class's arguments), so its bounds are here, by name; every
# other number's bound is beside its schema field (nst_exp.config.bounded).
OPTIMIZER_NUMBERS: dict[str, Bound] = {
    "lr": POSITIVE,
    "eps": POSITIVE,
    "betas[*]": Bound(low=0, high=1, high_open=True),
    "weight_decay": WEIGHT,
    "momentum": WEIGHT,
    "max_iter": AT_LEAST_ONE,
    "max_eval": Bound(low=1, integer=True, nullable=True),
    "history_size": AT_LEAST_ONE,
    "tolerance_grad": WEIGHT,
    "tolerance_change": WEIGHT,
}
LINE_SEARCHES = (None, "strong_wolfe")  # what torch.optim.LBFGS accepts as line_search_fn


def validate_numbers(cfg: Any, *, optimizer: bool = True) -> None:
    """Refuse a numeric setting that is not finite or out of range, naming the key, the value, what is allowed and the fix.

    ``optimizer=False`` leaves out the optimizer's arguments (check_optimizer), which need its class.
    """
    for key, value, bound, fix in _bounded(cfg, Config):
        problem = bound.problem(value)
        if problem:
            advice = fix or f"Use e.g. {key}={default(key)} (the default)."
            raise NstError(f"{key}={value} {problem}. {key} must be {bound.describe()}. {advice}")
    if optimizer:
        _validate_optimizer_numbers(cfg.get("optimizer"))


def _validate_optimizer_numbers(optimizer: Any) -> None:
    target = optimizer.get("_target_") if hasattr(optimizer, "get") else None
    defaults = {name: p.default for name, p in _optimizer_parameters(optimizer).items()}
    for pattern, bound in OPTIMIZER_NUMBERS.items():
        for key, value in _entries(optimizer, pattern):
            problem = bound.problem(value)
            if problem:
                name = pattern.split("[")[0]
                given = defaults.get(name, inspect.Parameter.empty)
                advice = "" if given is inspect.Parameter.empty else (
                    f" Use e.g. optimizer.{name}={_dotlist_value(given)} ({target}'s default)."
                )
                raise NstError(
                    f"optimizer.{key}={value} {problem}. optimizer.{key} must be {bound.describe()} for {target}.{advice}"
                )
    betas = optimizer.get("betas")
    if betas is not None and len(betas) != 2:
        raise NstError(
            f"optimizer.betas={list(betas)} has {len(betas)} value{'' if len(betas) == 1 else 's'}; {target} needs 2 "
            "(the decay rates of the gradient's mean and of its square), e.g. optimizer.betas=[0.9,0.999]."
        )
    if "line_search_fn" in optimizer and optimizer.get("line_search_fn") not in LINE_SEARCHES:
        raise NstError(
            f"optimizer.line_search_fn={optimizer.get('line_search_fn')!r} is not one {target} knows. "
            "Use optimizer.line_search_fn=null (one evaluation per iteration) or strong_wolfe."
        )


def _bounded(node: Any, schema: type, prefix: str = "") -> Iterator[tuple[str, Any, Bound, str | None]]:
    """(dotted key, value, bound, fix) for each number a schema field bounds (config.bounded), in schema order.

    A list field's entries are yielded one by one (``style_weights[2]``); nested nodes and
    list entries (``spatial.regions[1].weight``) are walked; absent keys and null lists yield nothing.
    """
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        if not hasattr(node, "get") or field.name not in node:
            continue
        key, value, hint = f"{prefix}{field.name}", node.get(field.name), hints[field.name]
        if _is_list(hint):
            items = [] if value is None else [(f"{key}[{index}]", item) for index, item in enumerate(value)]
        else:
            items = [(key, value)]
        bound, inner = field.metadata.get("bound"), _schema_class(hint)
        for item_key, item in items:
            if bound is not None:
                yield item_key, item, bound, field.metadata["fix"]
            elif inner is not None and item is not None:
                yield from _bounded(item, inner, item_key + ".")


def _is_list(hint: Any) -> bool:
    """True for ``List[...]`` and ``Optional[List[...]]``."""
    return typing.get_origin(hint) is list or any(_is_list(arg) for arg in typing.get_args(hint))


def _entries(node: Any, pattern: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for ``pattern`` in ``node``; ``[*]`` walks a list. Absent keys and null lists yield nothing."""
    head, _, rest = pattern.partition(".")
    name, star = (head[:-3], True) if head.endswith("[*]") else (head, False)
    if not hasattr(node, "get") or name not in node:
        return
    value, key = node.get(name), f"{prefix}{name}"
    if star:
        items = [] if value is None else [(f"{key}[{index}]", item) for index, item in enumerate(value)]
    else:
        items = [(key, value)]
    for item_key, item in items:
        if rest:
            yield from _entries(item, rest, item_key + ".")
        else:
            yield item_key, item


def _dotlist_value(value: Any) -> str:
    """A value as the command line writes it: null, [0.9,0.999], 0.001."""
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dotlist_value(item) for item in value) + "]"
    return str(value)


def check_known_keys(cfg: Any, *, optimizer: bool = True) -> None:
    """Refuse a key the schema does not have (``+bta=1e4``), naming the nearest known one and all known at its level.

    ``+key=value`` adds a key Hydra's struct mode would refuse; nst_exp would ignore it and the
    run would not be the one asked for. The optimizer node is free-form: its keys are checked
    against the arguments of the class its ``_target_`` names; ``optimizer=False`` leaves them
    out (check_optimizer).
    """
    _check_keys(OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg, Config, "", optimizer)


def _check_keys(node: Any, schema: type, prefix: str, optimizer: bool = True) -> None:
    hints = typing.get_type_hints(schema)
    known = [f.name for f in dataclasses.fields(schema)]
    for key in node:
        if key not in known and not (key == "hydra" and not prefix):  # compose(return_hydra_config=True) adds it
            raise _unknown_key(key, known, prefix)
    for name in known:
        value = node.get(name)
        if name == "optimizer" and schema is Config:
            if optimizer:
                _check_optimizer_keys(value)
            continue
        inner = _schema_class(hints[name])
        if inner is None or value is None:
            continue
        for index, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if isinstance(item, dict):
                _check_keys(item, inner, f"{prefix}{name}{'' if index is None else f'[{index}]'}.")


def _schema_class(hint: Any) -> type | None:
    """The dataclass behind a field's type (``RegionConf`` for ``List[RegionConf]``, ``Optional[...]``), or None."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _schema_class(arg)
        if found is not None:
            return found
    return None


def _check_optimizer_keys(optimizer: Any) -> None:
    parameters = _optimizer_parameters(optimizer)
    for key in optimizer:
        if key not in parameters and key not in INSTANTIATE_KEYS:
            raise _unknown_key(key, list(parameters), "optimizer.", f" for {optimizer['_target_']}")


def _optimizer_parameters(optimizer: Any) -> dict[str, inspect.Parameter]:
    """The keyword arguments the optimizer's ``_target_`` class takes, besides the tensors (``params``)."""
    choices = _optimizer_choices()
    target = optimizer.get("_target_") if hasattr(optimizer, "get") else None
    if not target:
        raise NstError(
            f"optimizer has no _target_ (it is {optimizer!r}). Pick one with optimizer=<name> "
            f"(conf/optimizer/: {choices})."
        )
    cls = optimizer_class(target, choices)  # imports torch.optim only, never what the config names
    parameters = list(inspect.signature(cls).parameters.values())[1:]  # the first takes the tensors
    return {p.name: p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _optimizer_choices() -> str:
    """The optimizer configs in conf/optimizer/: ``adam, lbfgs``."""
    return ", ".join(sorted(path.stem for path in (Path(conf_dir()) / "optimizer").glob("*.yaml")))


def _unknown_key(key: str, known: Sequence[str], prefix: str, where: str = "") -> NstError:
    """``Unknown key 'bta'. Did you mean 'beta'? Known: alpha, beta, ...``"""
    hint = did_you_mean(key, known, prefix)
    level = f" in {prefix.rstrip('.')}" if prefix else ""
    return NstError(
        f"Unknown key '{prefix}{key}'{where}.{hint} Known{level}: {', '.join(sorted(known))}. "
        "nst_exp does not read it, so the run would silently differ from the one asked for: "
        "fix its spelling, or drop the override (`+key=value` adds keys that nothing reads)."
    )
