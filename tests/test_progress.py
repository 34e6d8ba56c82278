"""Progress bars are readable at 80 columns and silent where nobody watches."""

from __future__ import annotations

import io

from rich.console import Console

from reslab.engine.progress import EpochProgress, TaskProgress, track


def render(progress) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(*progress._progress.get_renderables())
    return console.file.getvalue()


def test_the_epoch_bar_shows_every_figure_at_80_columns():
    bar = EpochProgress(469, 9, 12, console=Console(width=80))
    bar.update(234, loss=0.43214, acc=0.8721, lr=0.0123, images_per_s=8079)
    text = render(bar)
    for part in ("epoch 10/12", "234/469", "eta", "loss 0.4321", "acc 87.21%", "lr 0.0123",
                 "8,079 img/s"):  # fmt: skip
        assert part in text, (part, text)
    assert "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_a_task_bar_fits_80_columns():
    bar = TaskProgress("parity: artifact", 40, console=Console(width=80))
    bar.advance(12)
    text = render(bar)
    assert "parity: artifact" in text and "12/40" in text and "…" not in text


def test_no_bar_when_the_stream_is_not_a_terminal(capsys):
    assert list(track(range(5), "evaluate")) == [0, 1, 2, 3, 4]  # pytest captures: no tty
    assert capsys.readouterr().err == ""
    assert not EpochProgress(10, 0, 1).active
