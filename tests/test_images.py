"""Reading images of every common kind upright as RGB, refusing bad files clearly, fetching."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import re
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_exp import image_files, images, srgb
from nst_exp.errors import NstError

ROOT = Path(__file__).resolve().parents[1]


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
        image_files.resolve("nope.jpg", str(tmp_path), what="style")
    message = str(error.value)
    assert "The style image 'nope.jpg' was not found" in message
    assert str(tmp_path / "nope.jpg") in message and "NST_IMAGES" in message
    assert "style.path=/path/to/image.jpg" in message


def test_absolute_path_is_used_as_given(tmp_path):
    halves().save(tmp_path / "mine.png")
    assert image_files.resolve(str(tmp_path / "mine.png"), "/nonexistent") == tmp_path / "mine.png"


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
    path = image_files.resolve("painting.png", str(images_dir), f"{base}/painting.png")
    assert path == images_dir / "painting.png"
    assert path.read_bytes() == (root / "painting.png").read_bytes()
    (root / "painting.png").unlink()  # the second use must not need the server
    assert image_files.resolve("painting.png", str(images_dir), f"{base}/painting.png") == path


def test_failed_fetch_says_what_to_do_and_leaves_no_partial_file(tmp_path, http_root):
    _, base = http_root
    with pytest.raises(NstError, match=r"Fetching it from .*/gone.png failed \(HTTP Error 404"):
        image_files.resolve("gone.png", str(tmp_path / "cache"), f"{base}/gone.png", what="content")
    assert not any((tmp_path / "cache").glob("*"))


def test_a_download_is_checked_against_its_sha256(tmp_path, http_root):
    root, base = http_root
    halves().save(root / "painting.png")
    digest = image_files.file_sha256(root / "painting.png")
    path = image_files.resolve("painting.png", str(tmp_path / "cache"), f"{base}/painting.png", sha256=digest.upper())
    assert image_files.file_sha256(path) == digest


def test_a_wrong_sha256_deletes_the_download_and_names_url_digests_and_fix(tmp_path, http_root):
    root, base = http_root
    halves().save(root / "painting.png")
    actual, expected = image_files.file_sha256(root / "painting.png"), "0" * 64
    with pytest.raises(NstError) as error:
        image_files.resolve("painting.png", str(tmp_path / "cache"), f"{base}/painting.png", "style", sha256=expected)
    message = str(error.value)
    assert f"{base}/painting.png" in message and actual in message and expected in message
    assert "set the config's sha256" in message and "it was deleted" in message
    assert list((tmp_path / "cache").iterdir()) == []  # neither the file nor a partial download


def test_every_shipped_image_config_has_a_sha256_key():
    from conftest import make_config

    for group in ("content", "style"):
        for name in (path.stem for path in (ROOT / "conf" / group).glob("*.yaml")):
            assert "sha256" in make_config([f"{group}={name}"])[group]


def test_loaded_images_are_nchw_in_memory(tmp_path):
    """A start image in the file's HWC order gave gradients L-BFGS could not flatten (init=content crashed)."""
    path = tmp_path / "halves.png"
    halves().save(path)
    for image in (images.load(path, 40, 10**6), images.load_sized(path, (10, 20), 10**6)):
        assert image.is_contiguous() and image.shape[:2] == (1, 3)


# --- Paths that are not files: named by what they are, never fetched over ---------------------


@pytest.fixture
def counting_server(tmp_path):
    """A local HTTP server that serves an image at every path and counts the requests."""
    body = (tmp_path / "body.png", halves())
    body[1].save(body[0])
    data, requests = body[0].read_bytes(), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/image.png", requests
    server.shutdown()
    server.server_close()


def test_a_directory_is_named_as_such_and_never_fetched_over(tmp_path, counting_server):
    url, requests = counting_server
    folder = tmp_path / "paintings"
    folder.mkdir()
    halves().save(folder / "starry.png")
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(NstError) as error:
        image_files.resolve("paintings", str(tmp_path), url, what="style")
    message = str(error.value)
    assert f"'{folder}' is a directory, not a style image file" in message
    assert f"give the file inside it, e.g. {folder / 'starry.png'}" in message and "notes.txt" not in message
    assert "not found" not in message and requests == []
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == ["notes.txt", "starry.png"]


def test_an_empty_directory_says_it_holds_no_image(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NstError, match=r"is a directory, not a mask image file: .*holds no mask image file"):
        image_files.resolve("empty", str(tmp_path), what="mask")


def test_fifo_device_and_dangling_link_are_named(tmp_path, counting_server):
    url, requests = counting_server
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    cases = [
        ("pipe.png", "is a named pipe (FIFO), not a content image file"),
        ("/dev/null", "is a character device, not a content image file"),
        ("link.png", f"is a symbolic link to '{tmp_path / 'gone.png'}', which does not exist"),
    ]
    for path, message in cases:
        with pytest.raises(NstError, match=re.escape(message)):
            image_files.resolve(path, str(tmp_path), url, what="content")
    assert requests == [] and not (tmp_path / "gone.png").exists()


def test_reading_a_directory_or_fifo_is_refused_before_pillow_opens_it(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")  # Pillow would block reading it
    for path, kind in ((tmp_path, "is a directory"), (tmp_path / "pipe.png", "is a named pipe")):
        for read in (lambda p: images.load(p, 32), images.header_size):
            with pytest.raises(NstError, match=kind):
                read(path)


# --- Every Pillow mode at its right value scale -----------------------------------------------

GREY = 0.5


def grey_image(mode: str) -> Image.Image:
    """An 8 x 6 image of ``mode`` whose pixels are mid-grey on that mode's scale."""
    deep = {"I;16": 32768, "I;16B": 32768, "I;16L": 32768, "I": 32768, "F": 0.5}
    if mode in deep:
        return Image.new(mode, (8, 6), deep[mode])
    if mode == "HSV":
        return Image.new("HSV", (8, 6), (0, 0, 128))
    if mode == "LAB":
        return Image.new("LAB", (8, 6), (round(53.39 * 255 / 100), 128, 128))  # L* of sRGB 128 grey
    if mode == "1":
        return Image.fromarray(np.indices((6, 8)).sum(0) % 2 == 0)  # a checkerboard: half white
    return Image.new("RGB", (8, 6), (128, 128, 128)).convert(mode)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("1", "png"), ("L", "png"), ("LA", "png"), ("P", "png"), ("PA", "tif"), ("RGB", "png"),
        ("RGBA", "png"), ("CMYK", "jpg"), ("CMYK", "tif"), ("YCbCr", "tif"), ("YCbCr", "jpg"),
        ("LAB", "tif"), ("I", "tif"), ("I;16", "png"), ("I;16B", "png"), ("I;16", "tif"),
        ("I;16L", "tif"), ("F", "tif"),
    ],
)
def test_every_writable_mode_keeps_mid_grey(tmp_path, mode, suffix):
    path = tmp_path / f"grey.{suffix}"
    grey_image(mode).save(path)
    tensor = images.load(path, 8)
    assert tuple(tensor.shape) == (1, 3, 6, 8)
    assert tensor.mean().item() == pytest.approx(GREY, abs=0.02), mode
    assert (tensor.mean((2, 3)) - tensor.mean()).abs().max() < 0.02  # grey, not tinted


@pytest.mark.parametrize("mode", ["HSV", "RGBa", "La"])
def test_modes_no_format_writes_keep_mid_grey(mode):
    if mode == "HSV":
        image, expected = grey_image("HSV"), 0.5
    else:  # premultiplied: 50% grey at 50% opacity is stored as 64; over white it is 0.5 * 0.5 + 0.5
        image, expected = Image.frombytes(mode, (4, 4), bytes([64] * (len(mode) - 1) + [128]) * 16), 0.75
    assert images.to_tensor(srgb.to_rgb(image)).mean().item() == pytest.approx(expected, abs=0.01)


def test_float_images_in_0_255_and_out_of_range(tmp_path):
    Image.new("F", (4, 4), 127.5).save(tmp_path / "scaled.tif")
    assert images.load(tmp_path / "scaled.tif", 4).mean().item() == pytest.approx(0.5, abs=0.01)
    Image.fromarray(np.full((4, 4), 1000.0, np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(NstError, match=r"floating-point image with values from 1000 to 1000.*into \[0, 1\]"):
        images.load(tmp_path / "hdr.tif", 4)
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(NstError, match="32-bit integer image with values from 70000 to 70000"):
        images.load(tmp_path / "wide.tif", 4)


# --- Colour profiles ---------------------------------------------------------------------------

# sRGB's primaries, adapted to the ICC's D50 white.
SRGB_RED, SRGB_GREEN, SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)


def rgb_profile(name: str, red, green, blue, gamma: float) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile, built here so no profile file is needed."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    text = name.encode() + b"\0"
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))
    tags = [
        (b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(78)),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(*red)), (b"gXYZ", xyz(*green)), (b"bXYZ", xyz(*blue)),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (
        struct.pack(">I", offset + len(data)) + bytes(4) + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ " + bytes(12) + b"acsp" + bytes(28) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48)
    )
    return header + struct.pack(">I", len(tags)) + table + data


def test_a_linear_profile_is_converted_to_srgb(tmp_path):
    """Linear 0.5 is sRGB's 0.735 (the sRGB curve: 1.055 * 0.5 ** (1 / 2.4) - 0.055)."""
    linear = rgb_profile("linear RGB", SRGB_RED, SRGB_GREEN, SRGB_BLUE, 1.0)
    Image.new("RGB", (8, 6), (128, 128, 128)).save(tmp_path / "linear.png", icc_profile=linear)
    encoded = 1.055 * (128 / 255) ** (1 / 2.4) - 0.055
    assert images.load(tmp_path / "linear.png", 8).mean().item() == pytest.approx(encoded, abs=2 / 255)


def test_a_profile_with_other_primaries_moves_the_colour(tmp_path):
    """A profile whose red primary is sRGB's green: the file's red is shown green."""
    swapped = rgb_profile("swapped primaries", SRGB_GREEN, SRGB_RED, SRGB_BLUE, 2.2)
    source = Image.new("RGBA", (8, 6), (200, 30, 30, 255))
    source.save(tmp_path / "swapped.png", icc_profile=swapped)
    colour = images.load(tmp_path / "swapped.png", 8).mean((2, 3))[0]
    assert colour[1] > 0.75 and colour[0] < 0.15 and colour[2] < 0.15
    source.save(tmp_path / "plain.png")  # the same pixels without a profile stay red
    assert images.load(tmp_path / "plain.png", 8).mean((2, 3))[0, 0] > 0.75


def test_lab_pixels_are_converted_as_cie_lab(tmp_path):
    # sRGB's red is L* 53.24, a* 80.09, b* 67.20
    Image.new("LAB", (4, 4), (round(53.24 * 2.55), 128 + 80, 128 + 67)).save(tmp_path / "red.tif")
    colour = images.load(tmp_path / "red.tif", 4).mean((2, 3))[0]
    assert colour[0] > 0.95 and colour[1] < 0.05 and colour[2] < 0.08


def test_a_broken_or_mismatched_profile_warns_and_loads_as_stored(tmp_path, caplog):
    Image.new("RGB", (4, 4), (200, 30, 30)).save(tmp_path / "broken.png", icc_profile=b"not a profile")
    Image.new("L", (4, 4), 128).save(tmp_path / "grey.png", icc_profile=rgb_profile("rgb", SRGB_RED, SRGB_GREEN, SRGB_BLUE, 1.0))
    with caplog.at_level(logging.WARNING, logger="nst_exp.srgb"):
        red = images.load(tmp_path / "broken.png", 4).mean((2, 3))[0]
        grey = images.load(tmp_path / "grey.png", 4).mean().item()
    assert red.tolist() == pytest.approx([200 / 255, 30 / 255, 30 / 255], abs=1e-6)
    assert grey == pytest.approx(128 / 255, abs=1e-6)
    assert "broken.png: its embedded colour profile cannot be read" in caplog.text
    assert "grey.png: its embedded colour profile is for RGB pixels but the image is L" in caplog.text


# --- Sizes from the header: the shape load will give, without decoding -------------------------


@pytest.mark.parametrize("orientation", [1, 3, 5, 6, 7, 8])
@pytest.mark.parametrize(("size", "suffix"), [((1001, 13), "png"), ((333, 777), "jpg"), ((1601, 801), "jpg")])
def test_header_size_and_fit_size_agree_with_load(tmp_path, orientation, size, suffix):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"odd.{suffix}"
    halves(size).save(path, exif=exif)
    width, height = images.header_size(path)
    assert (width, height) == (size[::-1] if orientation >= 5 else size)
    for long_side in (7, 50, 99, 200, 257):
        assert tuple(images.load(path, long_side).shape[-2:]) == images.fit_size(width, height, long_side)


def test_header_size_does_not_decode_and_guards_pixels(tmp_path):
    halves((300, 200)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert images.header_size(tmp_path / "cut.png") == (300, 200)  # the pixels are never read
    with pytest.raises(NstError, match="over the limit of 1,000 pixels"):
        images.header_size(tmp_path / "whole.png", max_pixels=1000)


def test_fit_size_keeps_at_least_one_pixel():
    assert images.fit_size(1000, 10, 50) == (1, 50)
    assert images.fit_size(10, 1000, 50) == (50, 1)
    assert images.fit_size(640, 480, 32) == (24, 32)


def test_a_jpeg_draft_decode_does_not_change_the_shape(tmp_path):
    """Decoding at 1/8 rounds 1997 x 1985 up to 250 x 249, which scaled to 100 gave 100 x 100, not 100 x 99."""
    halves((1997, 1985)).save(tmp_path / "big.jpg")
    assert tuple(images.load(tmp_path / "big.jpg", 100).shape[-2:]) == (99, 100)
