"""Reading images of every common kind upright as RGB, refusing bad files clearly, fetching."""

from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pytest
from PIL import Image

from nst_exp import images
from nst_exp.errors import NstError


def halves(size=(40, 20)) -> Image.Image:
    """Left half red, right half blue."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[:, : size[0] // 2] = (255, 0, 0)
    array[:, size[0] // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


def test_exif_rotated_jpeg_loads_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    halves().save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    tensor = images.load(tmp_path / "rotated.jpg", 40)
    assert tuple(tensor.shape) == (1, 3, 40, 20)  # portrait once rotated
    top, bottom = tensor[0, :, :15].mean((1, 2)), tensor[0, :, 25:].mean((1, 2))
    assert top[0] > 0.9 and top[2] < 0.1  # the left (red) half is now on top
    assert bottom[2] > 0.9 and bottom[0] < 0.1


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK"])
def test_modes_load_as_rgb(tmp_path, mode):
    source = halves()
    path = tmp_path / ("image.jpg" if mode == "CMYK" else "image.png")
    source.convert(mode).save(path)
    tensor = images.load(path, 40)
    assert tuple(tensor.shape) == (1, 3, 20, 40)
    expected = images.to_tensor(source.convert(mode).convert("RGB")) if mode in ("L", "LA") else images.to_tensor(source)
    assert (tensor - expected).abs().mean() < 0.03


def test_palette_transparency_composites_on_white(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))
    image.save(tmp_path / "palette.png", transparency=0)  # index 0 (black) is transparent
    tensor = images.load(tmp_path / "palette.png", 8)
    assert tensor[0, :, :, 6].min() == 1.0  # transparent -> white, not black
    assert tensor[0, 0, :, 1].min() == 1.0 and tensor[0, 1, :, 1].max() == 0.0  # opaque red kept


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")
    tensor = images.load(tmp_path / "deep.png", 32)
    torch_ramp = tensor[0, 0, 0].numpy()
    np.testing.assert_allclose(torch_ramp, np.linspace(0, 1, 32), atol=1 / 255)
    assert (tensor[0, 0] == tensor[0, 1]).all() and (tensor[0, 1] == tensor[0, 2]).all()


def test_large_jpeg_is_shrunk_on_the_cpu_to_the_requested_size(tmp_path):
    halves((1600, 800)).save(tmp_path / "big.jpg")
    tensor = images.load(tmp_path / "big.jpg", 100)
    assert tuple(tensor.shape) == (1, 3, 50, 100)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not an image Pillow can read"),
        (b"this is a text file, not a picture\n" * 10, "is not an image Pillow can read"),
    ],
)
def test_unreadable_files_are_refused(tmp_path, content, message):
    path = tmp_path / "painting.jpg"
    path.write_bytes(content)
    with pytest.raises(NstError, match=message) as error:
        images.load(path, 32)
    assert "Re-export it as PNG or JPEG" in str(error.value)


def test_truncated_jpeg_is_refused(tmp_path):
    halves((256, 128)).save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(NstError, match="is damaged and cannot be decoded"):
        images.load(tmp_path / "cut.jpg", 64)


def test_decompression_bombs_are_refused_with_a_message(tmp_path, monkeypatch):
    halves((64, 48)).save(tmp_path / "big.png")
    with pytest.raises(NstError, match=r"is 64 x 48 pixels, over the limit of 1,000 pixels.*raise max_image_pixels"):
        images.load(tmp_path / "big.png", 32, max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own error beyond twice its limit
    with pytest.raises(NstError, match="over the limit"):
        images.load(tmp_path / "big.png", 32, max_pixels=1000)


def test_missing_image_names_file_folder_and_fix(tmp_path):
    with pytest.raises(NstError) as error:
        images.resolve("nope.jpg", str(tmp_path), what="style")
    message = str(error.value)
    assert "The style image 'nope.jpg' was not found" in message
    assert str(tmp_path / "nope.jpg") in message and "NST_IMAGES" in message
    assert "style.path=/path/to/image.jpg" in message


def test_absolute_path_is_used_as_given(tmp_path):
    halves().save(tmp_path / "mine.png")
    assert images.resolve(str(tmp_path / "mine.png"), "/nonexistent") == tmp_path / "mine.png"


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/served; never the internet."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_missing_image_with_url_is_fetched_once(tmp_path, http_root):
    root, base = http_root
    halves().save(root / "painting.png")
    images_dir = tmp_path / "cache"
    path = images.resolve("painting.png", str(images_dir), f"{base}/painting.png")
    assert path == images_dir / "painting.png"
    assert path.read_bytes() == (root / "painting.png").read_bytes()
    (root / "painting.png").unlink()  # the second use must not need the server
    assert images.resolve("painting.png", str(images_dir), f"{base}/painting.png") == path


def test_failed_fetch_says_what_to_do_and_leaves_no_partial_file(tmp_path, http_root):
    _, base = http_root
    with pytest.raises(NstError, match=r"Fetching it from .*/gone.png failed \(HTTP Error 404"):
        images.resolve("gone.png", str(tmp_path / "cache"), f"{base}/gone.png", what="content")
    assert not any((tmp_path / "cache").glob("*"))


def test_loaded_images_are_nchw_in_memory(tmp_path):
    """A start image in the file's HWC order gave gradients L-BFGS could not flatten (init=content crashed)."""
    path = tmp_path / "halves.png"
    halves().save(path)
    for image in (images.load(path, 40, 10**6), images.load_sized(path, (10, 20), 10**6)):
        assert image.is_contiguous() and image.shape[:2] == (1, 3)
