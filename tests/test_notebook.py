"""The progress bar in a Jupyter notebook, run by a real kernel (nbclient), with and without ipywidgets."""

from __future__ import annotations

import pytest
from tqdm.std import tqdm as text_bar

from nst_exp import progress


@pytest.mark.subprocess
def test_a_notebook_without_ipywidgets_shows_a_text_bar_and_no_warning(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    cells = [
        "import sys\nsys.modules['ipywidgets'] = None  # as where it is not installed",
        "from nst_exp.callbacks import ProgressBar\n"
        "bar = ProgressBar(3, enabled=True)\n"
        "for _ in range(3):\n    bar.bar.update(1)\n"
        "with bar.logging_above():\n    pass\n"
        "bar.bar.close()\n"
        "print(type(bar.bar).__module__)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    resources = {"metadata": {"path": str(tmp_path)}}
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", resources=resources).execute()
    outputs = notebook.cells[1].outputs
    stderr = "".join(output.get("text", "") for output in outputs if output.get("name") == "stderr")
    stdout = "".join(output.get("text", "") for output in outputs if output.get("name") == "stdout")
    assert stdout == "tqdm.std\n"
    assert "3/3 [" in stderr and "IProgress" not in stderr and "Warning" not in stderr
    assert all(output.output_type == "stream" for output in outputs)


def test_the_bar_is_a_widget_where_the_notebook_can_draw_one(monkeypatch):
    from tqdm.notebook import tqdm as widget_bar

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(progress, "widgets_available", lambda: True)
    assert progress.bar_class(True) == (widget_bar, False)
    monkeypatch.setattr(progress, "widgets_available", lambda: False)
    assert progress.bar_class(True) == (text_bar, False)  # shown although a kernel's stderr is no terminal
    assert progress.bar_class(False) == (text_bar, True)
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    assert progress.bar_class(True) == (text_bar, None)  # a terminal: hidden when the output is redirected
    monkeypatch.undo()
    assert progress.in_notebook() is False  # pytest is no kernel
