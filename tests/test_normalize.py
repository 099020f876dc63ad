"""``python -m nst_exp.normalize``: per-filter scale factors, compensated weights, a loadable file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from PIL import Image

from nst_exp.config import conf_dir
from nst_exp.errors import NstError
from nst_exp.features import load_network
from nst_exp.normalize import activation_layers, mean_activations, normalize, scale_factors

RELU_LAYERS = [f"relu{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for i in range(1, n + 1)]


def normalize_config(overrides: list[str]):
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="normalize", overrides=overrides)


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    """Three noise photos of different shapes."""
    folder = tmp_path / "calibration"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate(((32, 48), (48, 32), (40, 40))):
        Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.fixture
def firing_weights(tmp_path: Path) -> Path:
    """Random VGG-19 weights that make every filter fire: |N(0, 1)| / fan-in, bias 0.1 (1 on conv1_1).

    torchvision's random initialisation (zero bias) leaves some filters silent on
    every image; these weights keep all of them alive and the scales finite.
    """
    torch.manual_seed(0)
    features = torchvision.models.vgg19(weights=None).features
    for index, module in enumerate(module for module in features if isinstance(module, torch.nn.Conv2d)):
        fan_in = module.weight[0].numel()
        with torch.no_grad():
            module.weight.copy_(torch.randn_like(module.weight).abs() / fan_in * torch.rand(module.out_channels, 1, 1, 1) * 2)
            module.bias.fill_(1.0 if index == 0 else 0.1)
    path = tmp_path / "random_vgg19.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def _means(network, folder: Path, size: int = 48) -> dict[str, torch.Tensor]:
    from nst_exp.normalize import calibration_images

    batch = calibration_images(str(folder), size, 0, 10**8)
    pairs = activation_layers(network.layers)
    return mean_activations(network.extractor(list(pairs.values())), batch, pairs)


def test_normalised_network_has_mean_activation_one_and_scaled_features(tmp_path, calibration, firing_weights):
    cfg = normalize_config(["model=vgg19", f"model.weights={firing_weights}", f"images_dir={calibration}", "image_size=48"])
    path = normalize(cfg, tmp_path / "out")
    original = load_network("vgg19", str(firing_weights))
    normalised = load_network("vgg19", str(path))
    factors = _means(original, calibration)
    assert all((f > 0).all() for f in factors.values())  # every filter fires
    assert len({round(float(f.mean()), 3) for f in factors.values()}) > 8  # the layers really differ in scale
    # Each filter's mean activation over the calibration images is now 1.
    for conv, mean in _means(normalised, calibration).items():
        assert torch.allclose(mean, torch.ones_like(mean), atol=1e-4), conv
    # On another image, every layer's features are the original's divided by its factors.
    image = torch.rand(1, 3, 36, 44, generator=torch.Generator().manual_seed(5))
    layers = RELU_LAYERS + ["conv3_2", "conv5_4"]
    before, after = original.extractor(layers)(image), normalised.extractor(layers)(image)
    for layer in layers:
        factor = factors[layer.replace("relu", "conv")].float().reshape(1, -1, 1, 1)
        expected = before[layer] / factor
        assert torch.allclose(after[layer], expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item()), layer
    record = json.loads((tmp_path / "out" / "normalisation.json").read_text())
    assert record["images"] == 3 and record["written_arch"] == "vgg19"
    assert np.allclose(record["factors"]["conv4_2"], factors["conv4_2"].numpy())
    assert f"model.weights={path.resolve()}" in record["use_with"]


def test_filters_that_never_fire_keep_scale_one(tmp_path, calibration):
    """torchvision's random VGG has zero biases, and some filters stay at 0 on every image."""
    cfg = normalize_config(["model=vgg19", "model.weights=random", f"images_dir={calibration}", "image_size=48"])
    path = normalize(cfg, tmp_path / "out")
    original, normalised = load_network("vgg19", "random"), load_network("vgg19", str(path))
    record = json.loads((tmp_path / "out" / "normalisation.json").read_text())
    assert sum(record["dead_filters"].values()) > 0
    before = _means(original, calibration)
    for conv, mean in _means(normalised, calibration).items():
        dead = before[conv] == 0
        assert (mean[dead] == 0).all() and np.all(np.asarray(record["factors"][conv])[dead.numpy()] == 1.0)
        # Filters that fire only at a handful of positions (mean < 1e-3) are at float32 round-off.
        alive = before[conv] > 1e-3
        assert torch.allclose(mean[alive], torch.ones_like(mean[alive]), atol=1e-4), conv


def test_batch_norm_network_is_written_for_the_plain_architecture(tmp_path, calibration):
    cfg = normalize_config(
        ["model.arch=vgg16_bn", "model=vgg19", "model.weights=random", f"images_dir={calibration}", "image_size=32",
         "output=" + str(tmp_path / "vgg16_normalised.safetensors")]
    )
    path = normalize(cfg, tmp_path / "out")
    assert path.suffix == ".safetensors"
    original, normalised = load_network("vgg16_bn", "random"), load_network("vgg16", str(path))
    factors = scale_factors(_means(original, calibration, 32))
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    before, after = original.extractor(["relu4_3"])(image), normalised.extractor(["relu4_3"])(image)
    expected = before["relu4_3"] / factors["conv4_3"].float().reshape(1, -1, 1, 1)
    assert torch.allclose(after["relu4_3"], expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_min_factor_keeps_rare_filters_from_being_amplified_past_it():
    means = {"conv1_1": torch.tensor([1e-6, 1.0, 2.0, 0.0, 0.5, 3.0])}  # the five that fired: median 1.0
    assert scale_factors(means)["conv1_1"].tolist() == pytest.approx([1e-6, 1.0, 2.0, 1.0, 0.5, 3.0])  # the paper's
    assert scale_factors(means, 0.01)["conv1_1"].tolist() == pytest.approx([0.01, 1.0, 2.0, 1.0, 0.5, 3.0])
    assert scale_factors(means, 0.6)["conv1_1"].tolist() == pytest.approx([0.6, 1.0, 2.0, 1.0, 0.6, 3.0])


def test_min_factor_is_recorded_and_names_the_network(tmp_path, calibration):
    cfg = normalize_config(
        ["model=vgg19", "model.weights=random", f"images_dir={calibration}", "image_size=32", "min_factor=0.5"]
    )
    path = normalize(cfg, tmp_path)
    assert path.name == "vgg19_normalised_min0.5.pth"
    record = json.loads((tmp_path / "normalisation.json").read_text())
    assert record["min_factor"] == 0.5 and sum(record["floored_filters"].values()) > 0
    assert "model.name=vgg19_normalised_min0.5 " in record["use_with"]
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(NstError, match=f"min_factor={float(bad)} is not a finite fraction >= 0"):
            normalize(normalize_config(["model=vgg19", "model.weights=random", f"images_dir={calibration}", f"min_factor={bad}"]),
                      tmp_path)


def test_empty_calibration_folder_is_refused(tmp_path):
    cfg = normalize_config(["model=vgg19", "model.weights=random", f"images_dir={tmp_path}"])
    with pytest.raises(NstError, match="No calibration images in"):
        normalize(cfg, tmp_path / "out")
