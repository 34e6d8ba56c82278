"""`reslab demo` (what `make demo` runs) in its quick mode: every step runs and reports."""

import json
import re

import pytest

from reslab.cli.main import main


@pytest.mark.slow
def test_demo_quick_runs_all_four_steps(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--per-class", "3", "--epochs", "2", "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in text
    assert "strategy=gradual (3 images per class < 10" in text
    assert (out / "digits_3_per_class" / "train" / "7").is_dir()
    assert len(list((out / "digits_3_per_class" / "train").glob("*/*.png"))) == 30
    for run in ("finetuned", "scratch"):
        assert (out / run / "checkpoints" / "best.pt").exists()
        assert (out / run / "summary.json").exists()
    assert json.loads((out / "finetuned" / "finetune.json").read_text())["pretrained"] == "reslab:resnet20_fashion_mnist"
    # the comparison line states both test accuracies and their difference consistently
    m = re.search(r"Result: with 3 labels per class, fine-tuning (beats|does NOT beat) training from scratch "
                  r"on the (\d+) test images: ([\d.]+)% vs ([\d.]+)% \(([+-][\d.]+) points\)", text)
    assert m, text[-800:]
    ft, sc, gain = float(m[3]), float(m[4]), float(m[5])
    assert abs((ft - sc) - gain) < 0.11 and (m[1] == "beats") == (gain > 0)
    assert int(m[2]) == len(list((out / "digits_3_per_class" / "test").glob("*/*.png")))
    assert len(re.findall(r"test/\d/\d+\.png", text)) == 6  # six example predictions
    # one result, one number: the table's test accuracy is each training log's (summary.json)
    for run, pct in (("finetuned", ft), ("scratch", sc)):
        logged = json.loads((out / run / "summary.json").read_text())["test_acc"]
        assert pct == pytest.approx(100 * logged, abs=0.051), run
