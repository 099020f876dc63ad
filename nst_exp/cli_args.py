"""``nst-exp CONTENT STYLE [STYLE ...] [-o OUT.png] [overrides ...]``: files on the command line, as overrides.

The first image is the content (``content.path=``), a second is the style
(``style.path=``), several are ``styles=[...]`` (equal weights unless
``style_blend=`` says otherwise). Everything else goes to Hydra as typed. An
argument is an image if it is an existing file, or, when it is neither a flag
(``-m``, ``--cfg job``) nor an override (``key=value``, ``+key=``, ``~key``),
if its name ends in an image suffix; a name not found in the current folder is
looked up under ``images_dir``, as ``content.path=`` is. ``-o OUT`` copies the
run's result.png to OUT once the run is done; the run directory is written as
without it.

Torch-free: it runs before Hydra parses the command line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nst_exp.config import Config, conf_dir
from nst_exp.errors import NstError, nearest
from nst_exp.styles import IMAGE_SUFFIXES

log = logging.getLogger("nst_exp")
OUTPUT_FLAGS = ("-o", "--output")
# Hydra's options that take the next argument as their value (hydra/_internal/utils.py, get_args_parser).
HYDRA_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun")
INFO_FLAGS = ("--info", "-i")  # an optional value: one of INFO_CHOICES
INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
MULTIRUN_FLAGS = ("-m", "--multirun")
COMPLETION_FLAGS = ("-sc", "--shell-completion")
# Hydra flags that print something (help, the Hydra info, completions) and run nothing: no config check needed
PRINT_ONLY_FLAGS = ("--help", "-h", "--hydra-help", "--info", *COMPLETION_FLAGS)


def asks_for_information(argv: Sequence[str]) -> bool:
    """``argv`` only asks Hydra to print something (``--help``, ``--info``, a completion): nothing will run."""
    return any(argument.startswith(PRINT_ONLY_FLAGS) for argument in argv)


@dataclass(frozen=True)
class CommandLine:
    """What the user typed, split: Hydra's arguments (the images as overrides) and the output file."""

    hydra_args: list[str]
    output: Path | None = None


def parse(argv: Sequence[str]) -> CommandLine:
    """Split ``argv`` (without the program name); an NstError says what is wrong with it (a misspelt key too).

    For Hydra's tab completion (``-sc query=bash``) it also takes the images
    out of the shell's line (``COMP_LINE``), which Hydra reads as overrides.
    """
    args, found, output = [], [], None
    position = 0
    while position < len(argv):
        argument, position = argv[position], position + 1
        following = argv[position] if position < len(argv) else None
        flag, equals, value = argument.partition("=")
        if flag in OUTPUT_FLAGS:
            if not equals:
                value, position = _needs(flag, following), position + 1
            output = Path(os.path.expanduser(value))
        elif argument in HYDRA_VALUE_FLAGS or (argument in INFO_FLAGS and following in INFO_CHOICES):
            args += [argument, _needs(argument, following)]
            position += 1
        elif argument.startswith("-") and not Path(argument).is_file():
            args.append(argument)
        elif is_image(argument):
            found.append(argument)
        elif "=" in argument or argument.startswith(("+", "~")):
            args.append(argument)
        else:
            raise NstError(not_an_image(argument))
    if output is not None:
        check_output(output, multirun=any(argument in MULTIRUN_FLAGS for argument in args))
    if any(argument in COMPLETION_FLAGS for argument in args):
        if "COMP_LINE" in os.environ:  # what Hydra's tab completion reads, as the shell wrote it
            os.environ["COMP_LINE"] = completion_line(os.environ["COMP_LINE"])
    else:
        misspelt_key(args)
    return CommandLine([*image_overrides(found), *args], output)


def completion_line(line: str) -> str:
    """The shell's line for Hydra's tab completion without the image files and ``-o OUT``, which are not overrides."""
    program, *typed = line.split(" ")
    if not typed:
        return line
    *done, partial = typed  # the word being completed stays
    kept, skip = [], False
    for word in done:
        if skip or word in OUTPUT_FLAGS:
            skip = word in OUTPUT_FLAGS
            continue
        if word.startswith(tuple(f"{flag}=" for flag in OUTPUT_FLAGS)) or (word[:1] not in ("", "-") and is_image(word)):
            continue
        kept.append(word)
    return " ".join([program, *kept, partial])


def _needs(flag: str, value: str | None) -> str:
    """The value that must follow ``flag``."""
    if value is None:
        raise NstError(f"{flag} needs a value, e.g. {flag} out.png" if flag in OUTPUT_FLAGS else f"{flag} needs a value.")
    return value


def is_image(argument: str) -> bool:
    """An existing file, or (not an override) a name with an image suffix."""
    path = Path(os.path.expanduser(argument))
    if path.is_file():
        return True
    if "=" in argument or argument.startswith(("+", "~", "-")):
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES


def not_an_image(argument: str) -> str:
    """Why a bare word is refused: it names no file and is no override; a config name it might mean."""
    hint = ""
    for group in ("style", "content"):
        names = sorted(path.stem for path in (Path(conf_dir()) / group).glob("*.yaml"))
        if argument in names:
            hint = f" For the shipped {group} '{argument}', write {group}={argument}."
            break
    return (
        f"'{argument}' is neither an image file nor an override: no such file"
        f" (looked in {Path.cwd()}), and an override has the form key=value.{hint}"
    )


def image_overrides(found: Sequence[str]) -> list[str]:
    """``content.path=...`` and ``content.name=...`` for the first image, the style's (or ``styles=[...]``) for the rest."""
    if not found:
        return []
    content, *styles = [absolute(argument) for argument in found]
    overrides = [*file_overrides("content", content)]
    if len(styles) == 1:
        overrides += file_overrides("style", styles[0])
    else:
        overrides.append(f"styles=[{','.join(quoted(style) for style in styles)}]")
    return overrides


def file_overrides(key: str, path: str) -> list[str]:
    """A user's file in place of the ``key`` config's: its path and name, and no download address."""
    return [f"{key}.path={quoted(path)}", f"{key}.name={quoted(Path(path).stem)}", f"{key}.url=null", f"{key}.sha256=null"]


def absolute(argument: str) -> str:
    """An existing file's absolute path; a name not found here stays as typed, so it is looked up under images_dir."""
    path = Path(os.path.expanduser(argument))
    return str(path.absolute()) if path.exists() or path.is_absolute() else argument


def quoted(text: str) -> str:
    """``text`` as one quoted value of Hydra's override grammar: ``=``, commas, spaces and quotes stay literal.

    In a quoted value Hydra reads ``\\'`` as a quote and ``\\\\`` as a backslash only
    before a quote or at the end; OmegaConf reads ``\\${`` as a literal ``${``.
    """
    text = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, text)
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def check_output(output: Path, multirun: bool) -> None:
    """Refuse, before anything runs, an ``-o`` that cannot be honoured."""
    if multirun:
        raise NstError(
            f"-o {output} copies one run's result, but -m starts a sweep of several runs. Drop -o: each job's "
            "result.png is in the sweep dir (outputs/multirun/<date>/<time>/<job>), and "
            "python -m nst_exp.report <sweep dir> shows them side by side."
        )
    if output.is_dir():
        raise NstError(f"-o {output} is a folder; give a file name, e.g. -o {output / 'result.png'}.")
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise NstError(
            f"-o {output}: the name says no image type. End it in one of {', '.join(IMAGE_SUFFIXES)}, e.g. -o out.png."
        )


def copy_result(run_dir: Path, output: Path) -> None:
    """Write ``run_dir``/result.png to ``output`` (converted if its suffix is not .png), and log it."""
    from nst_exp.results import RunDir

    status = RunDir(run_dir).read_metrics().get("status") if RunDir(run_dir).metrics.is_file() else None
    source = RunDir(run_dir).result
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial{output.suffix}")
    try:
        if output.suffix.lower() == ".png":
            shutil.copyfile(source, partial)
        else:
            from PIL import Image

            with Image.open(source) as image:
                image.convert("RGB").save(partial)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    if status == "diverged":
        log.warning(
            "The run diverged (the loss turned NaN or infinite): %s holds its last finite image, copied from %s; "
            "see %s.", output, source, RunDir(run_dir).metrics,
        )
    else:
        log.info("Wrote %s (a copy of %s).", output, source)


def misspelt_key(args: Sequence[str]) -> None:
    """Refuse an override of a top-level key that is neither a key nor a config group, naming the nearest."""
    groups = [path.name for path in Path(conf_dir()).iterdir() if path.is_dir()]
    known = sorted({*groups, *(field.name for field in dataclasses.fields(Config))})
    for argument in args:
        if argument.startswith(("-", "+", "~")) or "=" not in argument:
            continue
        key = re.split(r"[.@/]", argument.split("=", 1)[0], maxsplit=1)[0]
        if key in known:
            continue
        close = nearest(key, known)
        if close is not None:  # no near name: Hydra's own message says what it could not override
            kind = "config group" if close in groups else "key"
            raise NstError(
                f"Could not override '{key}': nst_exp has no key or config group of that name. "
                f"Did you mean {close}= (the {kind})? Every key and group: nst-exp --help."
            )


def program(module: str) -> str:
    """The name the user typed: the console script's (``nst-exp-report``), else ``python -m <module>``."""
    name = Path(sys.argv[0]).name
    return name if name.startswith("nst-exp") else f"python -m {module}"
