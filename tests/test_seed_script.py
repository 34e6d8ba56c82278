"""examples/seed_script_corrected.py: the seed's section 5.2.1 script runs, corrected."""

import importlib.util
from pathlib import Path

import pytest
import torch

from reslab.data import write_digits_folder

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "seed_script_corrected.py"


@pytest.fixture(scope="module")
def seed_script():
    spec = importlib.util.spec_from_file_location("seed_script_corrected", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_block_is_residual(seed_script):
    # The seed's block had no shortcut. With the branch's last BN zeroed, a residual block
    # is relu(x): the identity path alone (oracle: torch.relu).
    block = seed_script.BasicBlock(8, 8).eval()
    torch.nn.init.zeros_(block.bn2.weight)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_stages_and_head_match_torchvision(seed_script):
    # Same parameter names and shapes as torchvision's resnet18 (the oracle), with a head
    # sized to the folder's classes rather than the seed's fixed 1000.
    from torchvision.models import resnet18

    ours = seed_script.ResNet(seed_script.BasicBlock, [2, 2, 2, 2], num_classes=7)
    ref = resnet18(num_classes=7)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x))


def test_script_trains_and_saves(seed_script, tmp_path, one_thread):
    write_digits_folder(tmp_path / "digits", per_class=8, size=28)
    out = tmp_path / "best.pt"
    best = seed_script.main([
        "--data", str(tmp_path / "digits"), "--image-size", "32", "--epochs", "1",
        "--batch-size", "32", "--workers", "0", "--out", str(out),
    ])
    assert 0.0 <= best <= 100.0
    saved = torch.load(out, weights_only=True)
    assert saved["classes"] == [str(d) for d in range(10)]
    assert saved["model"]["fc.weight"].shape == (10, 512)


def test_mismatched_splits_are_refused(seed_script, tmp_path):
    write_digits_folder(tmp_path / "d", per_class=1, size=8)
    for f in (tmp_path / "d" / "val" / "9").iterdir():
        f.unlink()
    (tmp_path / "d" / "val" / "9").rmdir()
    with pytest.raises(SystemExit, match="same class sub-folders"):
        seed_script.make_loaders(tmp_path / "d", 32, 8, 0)
