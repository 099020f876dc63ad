"""Settings are checked before anything loads: numbers in range and finite, no key the schema lacks."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from conftest import make_config
from omegaconf import MISSING, OmegaConf

from nst_exp.config import WEIGHT, Bound, ColorConf, Config, Convention, InitConf, ModelConf, RegionConf, conf_dir
from nst_exp.errors import NstError, did_you_mean, nearest
from nst_exp.normalize import NormalizeConfig
from nst_exp.validation import check_known_keys, validate, validate_numbers

EXPERIMENTS = sorted(path.stem for path in (Path(conf_dir()) / "experiment").glob("*.yaml"))
OPTIMIZERS = sorted(path.stem for path in (Path(conf_dir()) / "optimizer").glob("*.yaml"))
STYLES = ["styles=[starry_night,the_scream]"]
REGIONS = ["experiment=spatial_sky"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # loss weights: NaN and inf used to pass and show up as a "diverged" run with exit 0
        (["beta=nan"], r"beta=nan is NaN \(not a number\)\. beta must be a finite number >= 0\. "
                       r"Use e\.g\. beta=1000\.0 \(the default\)\."),
        (["alpha=inf"], "alpha=inf is infinite. alpha must be a finite number >= 0"),
        (["tv_weight=-inf"], "tv_weight=-inf is infinite"),
        (["tv_weight=nan"], "tv_weight=nan is NaN"),
        (["style_weights=[0.2,0.2,nan,0.2,0.2]"], r"style_weights\[2\]=nan is NaN"),
        # a negative style weight was accepted while a negative alpha was refused
        (["style_weights=[0.2,-0.2,0.2,0.2,0.2]"],
         r"style_weights\[1\]=-0.2 is negative\. style_weights\[1\] must be a finite number >= 0\. "
         r"Give one weight >= 0 per style layer, or style_weights=null"),
        ([*STYLES, "style_blend=[0.5,inf]"], r"style_blend\[1\]=inf is infinite"),
        ([*REGIONS, "spatial.regions.1.weight=nan"], r"spatial.regions\[1\]\.weight=nan is NaN"),
        (["style_scale=nan"], "style_scale=nan is NaN"),
        # the optimizer's arguments used to fail with torch's traceback once the run had started
        (["optimizer=adam", "optimizer.lr=-0.01"],
         r"optimizer\.lr=-0\.01 is negative\. optimizer\.lr must be a finite number > 0 for torch\.optim\.Adam\. "
         r"Use e\.g\. optimizer\.lr=0\.001 \(torch\.optim\.Adam's default\)\."),
        (["optimizer.lr=0"], "optimizer.lr=0 is 0. optimizer.lr must be a finite number > 0 for torch.optim.LBFGS"),
        (["optimizer.lr=nan"], "optimizer.lr=nan is NaN"),
        (["optimizer=adam", "optimizer.betas=[0.9,1.0]"],
         r"optimizer\.betas\[1\]=1\.0 is 1\. optimizer\.betas\[1\] must be a finite number in \[0, 1\)"),
        (["optimizer=adam", "optimizer.betas=[-0.1,0.999]"], r"optimizer\.betas\[0\]=-0\.1 is negative"),
        (["optimizer=adam", "optimizer.betas=[0.9]"], "optimizer.betas=.0.9. has 1 value; torch.optim.Adam needs 2"),
        (["optimizer=adam", "optimizer.eps=0"], "optimizer.eps=0 is 0. optimizer.eps must be a finite number > 0"),
        (["optimizer.history_size=0"], "optimizer.history_size=0 is below 1. optimizer.history_size must be an integer >= 1"),
        (["optimizer.max_iter=0"], "optimizer.max_iter=0 is below 1"),
        (["optimizer.max_iter=1.5"], "optimizer.max_iter=1.5 is not an integer"),
        (["optimizer.lr=fast"], "optimizer.lr=fast is not a number"),
        (["optimizer.line_search_fn=wolfe"], "optimizer.line_search_fn='wolfe' is not one torch.optim.LBFGS knows"),
        # counts and sizes
        (["image_size=0"], "image_size=0 is below 1. image_size must be an integer >= 1. Use e.g. image_size=512"),
        (["iterations=-1"], "iterations=-1 is negative. iterations must be an integer >= 0"),
        (["seed=-1"], r"seed=-1 is negative\. seed must be an integer in \[0, 18446744073709551615\]"),
        (["threads=0"], "threads=0 is below 1. threads must be an integer >= 1, or null. Use threads=null"),
        (["log.scalars_every=-1"], "log.scalars_every=-1 is negative"),
        (["log.image_every=-5"], "log.image_every=-5 is negative"),
        (["checkpoint.every=-1"], "checkpoint.every=-1 is negative"),
        (["max_image_pixels=0"], "max_image_pixels=0 is below 1"),
        (["coarse_to_fine.sizes=[0,64]"], r"coarse_to_fine\.sizes\[0\]=0 is below 1"),
        (["coarse_to_fine.sizes=[64]", "coarse_to_fine.iterations=[-2]"], r"coarse_to_fine\.iterations\[0\]=-2 is negative"),
        (["model.std=[0.229,0,0.225]"], r"model\.std\[1\]=0\.0 is 0\. model\.std\[1\] must be a finite number > 0"),
        (["model.mean=[0.485,nan,0.406]"], r"model\.mean\[1\]=nan is NaN"),
    ],
)
def test_a_bad_number_is_refused_naming_key_value_range_and_fix(overrides, message):
    cfg = make_config(overrides)
    with pytest.raises(NstError, match=message):
        validate_numbers(cfg)
    with pytest.raises(NstError, match=message):  # validate() runs it first, before any other check
        validate(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+bta=1e4"], r"Unknown key 'bta'\. Did you mean 'beta'\? Known: alpha, beta, channels_last, "),
        (["+model.archh=vgg16"],
         r"Unknown key 'model\.archh'\. Did you mean 'model\.arch'\? Known in model: arch, channel_order, description, key_map, "
         r"mean, name, pooling, std, weights\."),
        (["+log.image_evry=5"], r"Unknown key 'log\.image_evry'\. Did you mean 'log\.image_every'\?"),
        (["+optimizer.histroy_size=10"],
         r"Unknown key 'optimizer\.histroy_size' for torch\.optim\.LBFGS\. Did you mean 'optimizer\.history_size'\? "
         r"Known in optimizer: history_size, line_search_fn, lr, max_eval, max_iter, maximize, tolerance_change, "
         r"tolerance_grad\."),
        # an L-BFGS argument given to Adam: Adam's own argument list, from its signature
        (["optimizer=adam", "+optimizer.history_size=10"],
         r"Unknown key 'optimizer\.history_size' for torch\.optim\.Adam\. Known in optimizer: amsgrad, betas, .*eps"),
        (["+zzz=1"], r"Unknown key 'zzz'\. Known: alpha, "),  # nothing close: no suggestion
        (["optimizer._target_=torch.optim.Nope"], r"optimizer\._target_=torch\.optim\.Nope is not allowed.*"
                                                  r"optimizer=<name> \(conf/optimizer/: adam, lbfgs\)"),
    ],
)
def test_an_unknown_key_is_refused_with_the_nearest_known_one(overrides, message):
    cfg = make_config(overrides)  # Hydra composes these without a word
    with pytest.raises(NstError, match=message):
        check_known_keys(cfg)
    with pytest.raises(NstError, match=message):
        validate(cfg)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_config_passes(experiment, optimizer):
    """Every experiment with every optimizer; ``hydra`` (present when composed with it) is not a user key."""
    cfg = make_config([f"experiment={experiment}", f"optimizer={optimizer}"], return_hydra_config=True)
    check_known_keys(cfg)
    validate_numbers(cfg)


def test_values_at_the_edges_of_their_ranges_pass():
    cfg = make_config([
        "alpha=0", "tv_weight=0", "iterations=0", "seed=0", "threads=1", "log.scalars_every=0", "log.image_every=0",
        "checkpoint.every=0", "style_weights=[0,0,0,0,1]", "optimizer=adam", "optimizer.betas=[0,0.999999]",
        "+optimizer.weight_decay=0", "+optimizer.amsgrad=true", "seed=18446744073709551615",
    ])
    validate(cfg)


@pytest.mark.parametrize(
    ("name", "prefix", "hint"),
    [
        ("bta", "", " Did you mean 'beta'?"),
        ("image_evry", "log.", " Did you mean 'log.image_every'?"),  # the prefix names the level, as the key is typed
        ("zzz", "", ""),  # nothing close: no suggestion
    ],
)
def test_did_you_mean_names_the_nearest_known_name_or_nothing(name, prefix, hint):
    known = ["alpha", "beta", "image_every", "scalars_every"]
    assert did_you_mean(name, known, prefix) == hint
    assert nearest(name, known) == (hint.split("'")[1].removeprefix(prefix) if hint else None)


# Each YAML file and the schema node it fills. ImageConf is not here: its url and sha256 are
# optional (an image file named on the command line has neither), so the schema says null.
FILLED_BY = [
    ("config.yaml", Config), ("normalize.yaml", NormalizeConfig),
    *((f"{group}/{path.name}", schema) for group, schema in (("model", ModelConf), ("init", InitConf), ("color", ColorConf))
      for path in sorted((Path(conf_dir()) / group).glob("*.yaml"))),
]


def _has_default(field: dataclasses.Field) -> bool:
    return field.default_factory is not dataclasses.MISSING or field.default not in (dataclasses.MISSING, MISSING)


def _stated_twice(node: dict, schema: type, groups: set, prefix: str = "") -> list[str]:
    """Keys the YAML ``node`` states that the schema gives a default too, and keys neither states."""
    found, hints = [], typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        key = prefix + field.name
        if dataclasses.is_dataclass(hints[field.name]):
            if field.name in node:
                found += _stated_twice(node[field.name], hints[field.name], set(), key + ".")
            elif field.name not in groups:
                found.append(f"{key}: no YAML states it")
        elif field.name in node and _has_default(field):
            found.append(f"{key}: stated in the YAML and the schema")
        elif field.name not in node and field.name not in groups and not _has_default(field):
            found.append(f"{key}: no YAML states it")
    return found


@pytest.mark.parametrize(("yaml", "schema"), FILLED_BY, ids=[yaml for yaml, _ in FILLED_BY])
def test_every_default_is_stated_once_in_the_yaml_and_the_schema_gives_only_its_type(yaml, schema):
    """The YAML states each default beside its comment (--help reads it there); the schema does not repeat it."""
    node = OmegaConf.to_container(OmegaConf.load(Path(conf_dir()) / yaml), resolve=False)
    groups = {next(iter(entry)) for entry in node.pop("defaults", []) if isinstance(entry, dict)}
    assert _stated_twice(node, schema, groups) == []


@pytest.mark.parametrize(
    ("schema", "name", "overrides", "bound", "message"),
    [
        (Config, "beta", ["beta=1e4"], Bound(low=0, high=5000),
         r"beta=10000\.0 is above 5000\. beta must be a finite number in \[0, 5000\]\. "
         r"Use e\.g\. beta=1000\.0 \(the default\)\.$"),
        # a field of a list entry, with the fix written beside it
        (RegionConf, "weight", ["experiment=spatial_sky", "spatial.regions.0.weight=6"], Bound(low=0, high=5),
         r"spatial\.regions\[0\]\.weight=6\.0 is above 5\. spatial\.regions\[0\]\.weight must be a finite number in "
         r"\[0, 5\]\. Give each region a weight >= 0 \(they are normalised to sum 1\)\.$"),
    ],
)
def test_a_number_is_checked_against_the_bound_beside_its_field(monkeypatch, schema, name, overrides, bound, message):
    """validate_numbers reads each bound from its schema field's metadata (config.bounded): change it there, and only there."""
    field = next(f for f in dataclasses.fields(schema) if f.name == name)
    assert field.metadata["bound"] == WEIGHT
    cfg = make_config(overrides)
    validate_numbers(cfg)  # within the shipped bound
    monkeypatch.setattr(field, "metadata", {**field.metadata, "bound": bound})
    with pytest.raises(NstError, match=message):
        validate_numbers(cfg)


def test_a_choice_parses_its_members_and_their_strings_and_refuses_the_rest():
    assert Convention.parse("authors_code", "loss convention") is Convention.authors_code
    assert Convention.parse(Convention.paper, "loss convention") is Convention.paper
    with pytest.raises(NstError, match=r"^Unknown loss convention 'caffe'\. Known: paper, authors_code\.$"):
        Convention.parse("caffe", "loss convention")
