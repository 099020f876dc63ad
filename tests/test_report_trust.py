"""Opening someone else's sweep (#21): the report writes only what it owns, escapes what it shows,
and reports every damaged or unusual run directory as a row instead of dying.

One real two-job sweep (vgg19 with random weights, 32 px, 2 iterations: the first two jobs of the session's
sweep, conftest.cli_sweep) is built once; each test copies it and damages the copy.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_python
from markdown_it import MarkdownIt

from nst_exp.errors import NstError
from nst_exp.evaluate import main as evaluate_main
from nst_exp.report import build_report, main
from nst_exp.report.build import MANIFEST
from nst_exp.runner import result_in

# a real sweep made in a subprocess once per session (conftest.cli_sweep: about 15 s on 2 cores)
pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.fixture(scope="module")
def made(cli_sweep, tmp_path_factory) -> Path:
    """A real sweep, beta=1e3,1e4: jobs 0 and 1, both completed (the session's sweep, test_cli's, less its job 2)."""
    assert cli_sweep.done.returncode == 0, cli_sweep.done.stderr[-3000:]
    source = cli_sweep.cwd / "outputs" / "sweep"
    sweep = tmp_path_factory.mktemp("made") / "sweep"
    shutil.copytree(source, sweep, ignore=lambda folder, names: ["2"] if Path(folder) == source else [])
    return sweep


def copy_of(made: Path, tmp_path: Path, jobs: int = 2) -> Path:
    """The sweep copied; jobs beyond 2 are copies of job 1 numbered 2, 3... (their hydra.yaml says so)."""
    sweep = tmp_path / "sweep"
    shutil.copytree(made, sweep)
    for number in range(2, jobs):
        shutil.copytree(sweep / "1", sweep / str(number))
        record = sweep / str(number) / ".hydra"
        (record / "hydra.yaml").write_text((record / "hydra.yaml").read_text().replace("num: 1\n", f"num: {number}\n"))
        lines = (record / "overrides.yaml").read_text().splitlines()
        (record / "overrides.yaml").write_text("".join(
            f"- beta={number}e4\n" if line.startswith("- beta=") else f"{line}\n" for line in lines))
    return sweep


def test_a_report_replaces_only_the_files_it_wrote(made, tmp_path, capsys):
    sweep = copy_of(made, tmp_path)
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--self-contained"]) == 0
    listed = set(json.loads((out / MANIFEST).read_text())["files"])
    assert {"index.html", "results.md", "curves/job_1.png", "jobs/1/result.png"} <= listed
    mine = {out / "notes.md": "top", out / "curves" / "notes.txt": "curves", out / "jobs" / "1" / "mine.txt": "jobs"}
    for path, text in mine.items():
        path.write_text(text)
    victim = tmp_path / "victim.txt"  # outside the report folder: a manifest must not lead there
    victim.write_text("keep")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "job_9.png").write_text("keep")
    (out / "linked").symlink_to(tmp_path / "elsewhere")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"] += ["../victim.txt", str(victim), "linked/job_9.png", "curves/../../victim.txt"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    shutil.rmtree(sweep / "1")  # a job gone from the sweep: its files of the earlier report go

    assert main([str(sweep), "--out", str(out)]) == 0  # not self-contained now: jobs/ is the report's to empty
    assert all(path.read_text() == text for path, text in mine.items())  # a user's files survive
    assert victim.read_text() == "keep" and (tmp_path / "elsewhere" / "job_9.png").read_text() == "keep"
    assert not (out / "curves" / "job_1.png").exists() and (out / "curves" / "job_0.png").is_file()
    assert sorted(p.relative_to(out).as_posix() for p in (out / "jobs").rglob("*") if p.is_file()) == ["jobs/1/mine.txt"]
    assert set(json.loads((out / MANIFEST).read_text())["files"]).isdisjoint({"../victim.txt", str(victim)})
    capsys.readouterr()

    # refused, with one message and exit 2: a file of the report's name it did not write, a link, --out a file
    for name, make in (("results.md", lambda p: p.write_text("a user's")), ("curves", lambda p: p.symlink_to(tmp_path))):
        folder = tmp_path / f"theirs_{name}"
        folder.mkdir()
        make(folder / name)
        assert main([str(sweep), "--out", str(folder)]) == 2
        said = capsys.readouterr().err
        assert said.startswith(f"error: {folder} holds files the report did not write ({name}") and "Traceback" not in said
        assert sorted(p.name for p in folder.iterdir()) == [name]  # nothing written, nothing removed
    assert main([str(sweep), "--out", str(victim)]) == 2
    said = capsys.readouterr().err
    assert said == f"error: --out {victim} is a file, not a folder. Give a folder for the report (it is created " \
                   f"if missing), e.g. --out {tmp_path / 'victim'}_report.\n"
    assert victim.read_text() == "keep"
    assert main([str(victim)]) == 2  # a file given as the sweep
    assert capsys.readouterr().err == f"error: Sweep directory '{victim}' is not a directory. Pass the folder a " \
                                      "multirun wrote, e.g. outputs/multirun/<date>/<time>, or one run's directory.\n"


RUN_TEXT = {  # strings a shared sweep may carry, none of which may become markup in results.md
    "eval/<img src=x onerror=alert(1)>": 0.5,
    "message": "a | b <script>alert(1)</script> [click](javascript:alert(1)) `code` *em*\n&",
}


def test_results_md_shows_every_string_from_runs_as_text(made, tmp_path):
    sweep = copy_of(made, tmp_path)
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    (sweep / "0" / "metrics.json").write_text(json.dumps({**metrics, **RUN_TEXT}))
    for job, value in (("0", "'<b>bold</b>|pipe'"), ("1", "plain")):  # a swept value with markup
        overrides = sweep / job / ".hydra" / "overrides.yaml"
        overrides.write_text(overrides.read_text() + f"- +note={value}\n")
    text = build_report(sweep, tmp_path / "out").written["results.md"].read_text()
    assert "<" not in text  # no tag from a run, however the Markdown is rendered
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    assert not [token for token in tokens if token.type in ("html_inline", "html_block")]
    inline = [child for token in tokens if token.children for child in token.children]
    assert not [child for child in inline if child.type in ("link_open", "code_inline", "em_open", "html_inline")]
    jobs_table = tokens[: next(i for i, token in enumerate(tokens) if token.type == "table_close")]
    rows: list[int] = []  # cells per row
    for token in jobs_table:
        rows += [0] if token.type == "tr_open" else []
        rows[-1:] = [rows[-1] + 1] if token.type in ("th_open", "td_open") else rows[-1:]
    assert len(rows) == 3 and len(set(rows)) == 1  # no pipe from a run split a cell
    shown = MarkdownIt("commonmark").enable("table").render(text)
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown and "&lt;b&gt;bold&lt;/b&gt;|pipe" in shown
    assert "a | b &lt;script&gt;alert(1)&lt;/script&gt; [click](javascript:alert(1)) `code` *em*" in shown


def test_one_job_sweep_and_single_run_get_a_one_row_report(made, tmp_path, capsys):
    sweep = copy_of(made, tmp_path)
    shutil.rmtree(sweep / "1")
    for root, out in ((sweep, tmp_path / "one_job"), (sweep / "0", tmp_path / "single_run")):
        assert main([str(root), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith("1 jobs (1 completed); swept: nothing; figure 1 x 1")
        table = pd.read_csv(out / "results.csv", dtype={"dir": str})
        assert list(table["dir"]) == ["0" if root == sweep else "."] and list(table["status"]) == ["completed"]
        assert {"figure.png", "losses.png", "index.html"} <= {path.name for path in out.iterdir()}
    build_report(sweep, self_contained=True)  # into <sweep>/report, with copies of the jobs' records
    assert list(build_report(sweep).sweep.jobs["dir"]) == ["0"]  # the copies are not jobs


def damage(sweep: Path) -> dict[int, str]:
    """Jobs 1 to 7 damaged each another way; job 0 left whole. Job -> what its row must say."""
    (sweep / "1" / "metrics.json").write_text("[1, 2, 3]")
    text = (sweep / "2" / "metrics.json").read_text()
    (sweep / "2" / "metrics.json").write_text(text[: len(text) // 2])  # truncated
    (sweep / "3" / ".hydra" / "overrides.yaml").write_text("- beta=[1,\n  :: {")
    (sweep / "4" / ".hydra" / "hydra.yaml").unlink()
    (sweep / "5" / "result.png").unlink()
    (sweep / "6" / ".hydra" / "overrides.yaml").write_text("beta: 3\n")  # YAML, but not a list of overrides
    (sweep / "7" / "metrics.json").write_text('"completed"')
    return {
        1: "metrics.json holds a JSON list, not an object",
        2: "metrics.json is damaged (",
        3: ".hydra/overrides.yaml is damaged (",
        4: ".hydra/hydra.yaml is missing",
        5: f"result.png is missing (deleted?); to make it again, delete the job's folder {sweep / '5'} and run "
           f"the sweep again with hydra.sweep.dir={sweep}",
        6: ".hydra/overrides.yaml is damaged (it is not a list of key=value lines)",
        7: "metrics.json holds a JSON str, not an object",
    }


def test_each_damaged_job_is_a_flagged_row_and_the_rest_is_reported(made, tmp_path, capsys):
    sweep = copy_of(made, tmp_path, jobs=8)
    expected = damage(sweep)
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 1
    said = capsys.readouterr()
    assert "Traceback" not in said.err and said.out.startswith("8 jobs (")
    assert said.err.startswith("7 of 8 jobs are damaged (their rows say so in the 'problem' column")
    table = pd.read_csv(out / "results.csv", keep_default_na=False).set_index("job")
    assert sorted(table.index) == list(range(8))  # numbered as Hydra numbered them, the damaged ones too
    assert table.at[0, "problem"] == "" and table.at[0, "status"] == "completed"
    for job, problem in expected.items():
        assert problem in table.at[job, "problem"], job
        assert f"  job {job} ({job}): {table.at[job, 'problem']}" in said.err
    assert table.at[5, "status"] == "completed" and table.at[1, "status"] == "unreadable"
    assert "- Damaged: 7 job(s) (1, 2, 3, 4, 5, 6, 7)" in (out / "results.md").read_text()
    page = (out / "index.html").read_text()  # the gallery flags them too, a completed one included
    rows = {int(job): html for job, html in re.findall(r'<tr data-job="(\d+)"(.*?)</tr>', page, flags=re.S)}
    assert "damaged" not in rows[0] and all("damaged: " in rows[job] for job in expected)
    assert "--help" not in said.err
    assert "Exit status: 0 when every job could be read; 1 when" in " ".join(
        run_python("-m", "nst_exp.report", "--help", cwd=tmp_path).stdout.split())


def test_damaged_runs_are_named_by_evaluate_and_a_rerun_and_the_others_scored(made, tmp_path, capsys):
    sweep = copy_of(made, tmp_path)
    text = (sweep / "0" / "metrics.json").read_text()
    (sweep / "0" / "metrics.json").write_text(text[:40])  # truncated
    assert evaluate_main([str(sweep)]) == 1
    said = capsys.readouterr()
    assert f"error: Cannot evaluate '{sweep / '0'}': {sweep / '0' / 'metrics.json'} is damaged (" in said.err
    assert said.err.endswith("1 of 2 runs could not be scored (above); the others were.\n")
    assert "Traceback" not in said.err and f"{sweep / '1'}" in said.out
    assert (sweep / "0" / "metrics.json").read_text() == text[:40]  # left as it was
    (sweep / "1" / "result.png").unlink()  # a finished run asked again: missing, and how to make it again
    with pytest.raises(NstError, match=r"finished, but its result\.png is missing \(deleted\?\)\. To make it again, "
                                       r"delete the folder .*1 and run the same command again"):
        result_in(sweep / "1")
