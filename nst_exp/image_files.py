"""Finding and fetching image files: a path resolved under images_dir, a config's download, what is not a file.

``resolve`` turns a setting's path into a file (fetched from the config's ``url``
when missing, checked against its ``sha256``); ``not_a_file`` names what stands
at a path instead of a regular file (a directory, a FIFO, a device, a dangling
link), so nothing blocks on it or reports it as a damaged image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
import urllib.error
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from nst_exp.errors import NstError

log = logging.getLogger(__name__)


def not_a_file(path: Path, what: str, example: str = "image.jpg", suffixes: Sequence[str] = ()) -> str | None:
    """Why ``path`` cannot be read as a file (a directory, a FIFO, a device...), or None if it can or is absent.

    ``suffixes`` picks the files a directory's message offers as examples
    (all of them when empty); ``example`` stands in when it holds none.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"'{path}' is a symbolic link to '{os.readlink(path)}', which does not exist. Fix or remove the link."
        return None
    except OSError as error:  # permission denied on a parent folder, a loop of links...
        return f"'{path}' cannot be read ({error.strerror or error})."
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        try:
            inside = sorted(
                entry.name
                for entry in path.iterdir()
                if entry.is_file() and (not suffixes or entry.suffix.lower() in suffixes)
            )[:3]
        except OSError:
            inside = []
        examples = ", ".join(str(path / name) for name in inside) or f"{path / example} (it holds no {what} file now)"
        return f"'{path}' is a directory, not {_article(what)} file: give the file inside it, e.g. {examples}."
    kind = next(
        (name for test, name in _SPECIAL_FILES if test(mode)),
        "not a regular file",
    )
    return f"'{path}' is {kind}, not {_article(what)} file: give the path of a regular file."


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _article(what: str) -> str:
    return f"an {what}" if what[:1] in "aeiou" else f"a {what}"


def image_suffixes() -> tuple[str, ...]:
    """File extensions Pillow can open, e.g. ``.jpg``, ``.png``."""
    return tuple(sorted(Image.registered_extensions()))


def resolve(
    path: str, images_dir: str, url: str | None = None, what: str = "image", sha256: str | None = None
) -> Path:
    """The file for ``path``: absolute as given, else under ``images_dir``; fetched from ``url`` if missing.

    ``sha256``: the digest the download must have (the config's ``sha256``);
    None fetches without checking.

    ``url`` belongs to the config's own ``path`` (a shipped content or style
    whose file is downloaded on first use). Callers must pass it only while the
    path is that config's own, and ``url=None`` when the user gave the path:
    a user's file is never fetched, and a user's missing file is reported
    missing instead of being replaced by the config's download under its name.

    Something at ``path`` that is not a regular file (a directory, a FIFO, a
    device, a dangling link) is refused by what it is, never fetched over.
    """
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = Path(images_dir).expanduser() / candidate
    problem = not_a_file(candidate, f"{what} image", suffixes=image_suffixes())
    if problem:
        raise NstError(f"The {what} image {problem}")
    if candidate.is_file():
        return candidate
    fetch_error = ""
    if url:
        try:
            fetch(url, candidate, sha256)
            return candidate
        except (urllib.error.URLError, OSError) as error:
            fetch_error = f" Fetching it from {url} failed ({error})."
    raise NstError(
        f"The {what} image '{path}' was not found: looked for {candidate.resolve()} "
        f"(images_dir={images_dir!r}, set with images_dir=... or the NST_IMAGES environment variable).{fetch_error} "
        f"Put the file there, point images_dir at the folder that holds it, or give an absolute path "
        f"with {what}.path=/path/to/image.jpg."
    )


def fetch(url: str, destination: Path, sha256: str | None = None) -> None:
    """Download ``url`` to ``destination`` (torch.hub, with a progress bar on a terminal), checking ``sha256``.

    The download lands under a temporary name and is renamed to ``destination``
    only once its digest matches, so neither half a file nor a wrong one ever
    carries the name; a mismatch deletes it and raises NstError.
    """
    log.info("Fetching %s -> %s", url, destination)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.download")
    try:
        torch.hub.download_url_to_file(url, str(partial), hash_prefix=None, progress=sys.stderr.isatty())
        if sha256:
            actual = file_sha256(partial)
            if actual != sha256.lower():
                raise NstError(
                    f"The file downloaded from {url} has SHA-256 {actual}, not the expected {sha256.lower()}; "
                    f"it was deleted. The address may serve a different file now: put the right file at "
                    f"{destination} yourself, or, if the new file is the one you want, set the config's sha256 "
                    f"to {actual} (or null to skip the check)."
                )
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

