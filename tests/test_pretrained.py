"""Pretrained weights in: every source layout against the library that defines it (timm,
transformers, torchvision, with random weights and no network), the named caches, the
safety rules and the head / input-channel adaptation report.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import reslab
from reslab.errors import WeightsError
from reslab.files import save_checkpoint
from reslab.models import catalog, create_model
from reslab.models.convert import adapt_input_conv, convert_hf_state_dict, detect_layout
from reslab.models.fetch import hf_cached_file
from reslab.models.pretrained import load_pretrained, weights_info


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics: a fresh BN is an identity, which would hide swapped keys."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor, b_out=lambda y: y) -> float:
    a.eval(), b.eval()
    with torch.no_grad():
        return (a(x) - b_out(b(x))).abs().max().item()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty torch.hub and Hugging Face caches, downloads off."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    return tmp_path


X64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


# ---- timm ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet50d"])
def test_timm_weights_give_timm_logits(name, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model(name, pretrained=False))
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    model = create_model(name)
    report = load_pretrained(model, path, log=None)
    assert report.layout == ("timm" if name.endswith("d") else "torchvision")
    assert not report.skipped and not report.adapted
    assert max_diff(model, ref, X64) <= 1e-4


def test_timm_squeeze_excitation_is_refused(tmp_path):
    timm = pytest.importorskip("timm")
    path = tmp_path / "se.safetensors"
    save_file(timm.create_model("seresnet18", pretrained=False).state_dict(), str(path))
    with pytest.raises(WeightsError, match="squeeze-excitation"):
        load_pretrained(create_model("resnet18"), path, log=None)


def test_timm_training_checkpoint_with_ddp_prefix_loads(tmp_path):
    torch.manual_seed(0)
    src = randomize_bn(create_model("resnet20"))
    wrapped = {"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}}
    torch.save(wrapped, tmp_path / "train.pth.tar")
    model = create_model("resnet20")
    load_pretrained(model, tmp_path / "train.pth.tar", log=None)
    assert max_diff(model, src, torch.randn(2, 3, 32, 32)) == 0


# ---- Hugging Face transformers ------------------------------------------------------------------
def _hf_model(**config):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(**config)
    return randomize_bn(transformers.ResNetForImageClassification(cfg).eval())


def test_hf_basic_folder_gives_hf_logits(tmp_path):
    ref = _hf_model(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                    num_labels=10)
    ref.save_pretrained(tmp_path / "hf18")  # config.json + model.safetensors
    model = create_model("resnet18", num_classes=10)
    report = load_pretrained(model, tmp_path / "hf18", log=None)
    assert report.layout == "hf" and not report.skipped and not report.notes
    assert report.info["architecture"] == "resnet18" and report.info["num_classes"] == 10
    assert max_diff(model, ref, X64, lambda y: y.logits) <= 1e-4


def test_hf_default_resnet50_bin_without_config(tmp_path):
    ref = _hf_model(num_labels=1000)  # transformers' default ResNetConfig is a ResNet-50
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    model = create_model("resnet50")
    report = load_pretrained(model, tmp_path / "pytorch_model.bin", log=None)
    assert any("downsample_in_bottleneck=False" in n for n in report.notes)
    assert max_diff(model, ref, X64, lambda y: y.logits) <= 1e-4


def test_hf_stride_in_first_1x1_is_refused(tmp_path):
    ref = _hf_model(layer_type="bottleneck", depths=[1, 1, 1, 1], downsample_in_bottleneck=True)
    ref.save_pretrained(tmp_path / "v1")
    with pytest.raises(WeightsError, match="downsample_in_bottleneck=True"):
        load_pretrained(create_model("resnet50"), tmp_path / "v1", log=None)


def test_hf_keys_map_one_to_one():
    sd = {
        "resnet.embedder.embedder.convolution.weight": torch.zeros(1),
        "resnet.encoder.stages.2.layers.0.shortcut.normalization.running_var": torch.zeros(1),
        "resnet.encoder.stages.3.layers.1.layer.2.convolution.weight": torch.zeros(1),
        "classifier.1.bias": torch.zeros(1),
    }
    assert detect_layout(sd) == "hf"
    assert sorted(convert_hf_state_dict(sd)) == sorted([
        "conv1.weight", "layer3.0.downsample.1.running_var", "layer4.1.conv3.weight", "fc.bias"])
    with pytest.raises(WeightsError, match="pooler.extra"):
        convert_hf_state_dict({**sd, "resnet.pooler.extra": torch.zeros(1)})


# ---- named sources through the owners' caches ---------------------------------------------------
def test_torchvision_name_from_cache_keeps_fresh_head(offline):
    tv_models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    tv = randomize_bn(tv_models.resnet18())
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(tv.state_dict(), cache / "resnet18-f37072fd.pth")
    torch.manual_seed(1)
    model = create_model("resnet18", num_classes=10)
    fresh_fc = model.fc.weight.detach().clone()
    lines = []
    report = load_pretrained(model, "torchvision:resnet18.IMAGENET1K_V1", log=lines.append)
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert "(1000, 512)" in report.skipped["fc.weight"] and "fc.weight" in lines[0]
    assert torch.equal(model.fc.weight, fresh_fc)  # the head stays as initialised
    assert report.info["preprocess"]["resize"] == 256 and report.info["top1"] == 69.758
    tv.eval(), model.eval()
    with torch.no_grad():  # the backbone is torchvision's: same pooled features
        tv_feats = torch.flatten(tv.avgpool(tv.layer4(tv.layer3(tv.layer2(tv.layer1(
            tv.maxpool(tv.relu(tv.bn1(tv.conv1(X64))))))))), 1)
        ours = model.forward_head(model.forward_features(X64), pre_logits=True)
    assert (ours - tv_feats).abs().max().item() <= 1e-4


def test_hf_name_from_cache(offline):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    ref = _hf_model(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                    num_labels=1000)
    snap = offline / "hf" / "models--microsoft--resnet-18" / "snapshots" / "abc123"
    ref.save_pretrained(snap)
    (snap / "preprocessor_config.json").write_text(json.dumps({
        "crop_pct": 0.875, "size": {"shortest_edge": 224}, "resample": 3,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    # oracle: huggingface_hub's own cache lookup finds the same file
    ours = hf_cached_file("microsoft/resnet-18", "model.safetensors")
    assert ours == snap / "model.safetensors"
    found = huggingface_hub.try_to_load_from_cache("microsoft/resnet-18", "model.safetensors",
                                                   cache_dir=offline / "hf")
    assert os.path.samefile(found, snap / "model.safetensors")
    model = create_model("resnet18")
    report = load_pretrained(model, "hf:microsoft/resnet-18", log=None)
    assert report.layout == "hf" and not report.skipped
    assert max_diff(model, ref, X64, lambda y: y.logits) <= 1e-4
    pre = weights_info("hf:microsoft/resnet-18")["preprocess"]
    assert (pre["resize"], pre["crop"], pre["interpolation"]) == (256, 224, "bicubic")


def test_timm_name_from_hf_cache(offline):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model("resnet18d", pretrained=False))
    snap = offline / "hf" / "models--timm--resnet18d.ra2_in1k" / "snapshots" / "0f0f"
    snap.mkdir(parents=True)
    save_file(ref.state_dict(), str(snap / "model.safetensors"))
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0f0f")
    model = create_model("resnet18d")
    report = load_pretrained(model, "timm:resnet18d", log=None)  # timm's default tag
    assert report.info["source"] == "timm:resnet18d.ra2_in1k"
    assert max_diff(model, ref, X64) <= 1e-4
    # the same repository downloaded with `hf download --local-dir`: timm's own config.json
    # sits beside the weights, and must not be mistaken for a transformers config
    (snap / "config.json").write_text(json.dumps({"architecture": "resnet18d", "num_classes": 1000}))
    model = create_model("resnet18d")
    assert load_pretrained(model, snap, log=None).layout == "timm"
    assert max_diff(model, ref, X64) <= 1e-4


@pytest.mark.parametrize("source, expect", [
    ("torchvision:resnet50.IMAGENET1K_V2",
     ["resnet50-11ad3fa6.pth", "curl -L", "download.pytorch.org/models/resnet50-11ad3fa6.pth"]),
    ("timm:resnet50.a1_in1k",
     ["timm/resnet50.a1_in1k", "hf download", "resnet50_a1_0-14fe96d1.pth"]),
    ("hf:microsoft/resnet-50", ["hf download microsoft/resnet-50 model.safetensors config.json",
                                "models--microsoft--resnet-50"]),
])
def test_offline_and_not_cached_says_how_to_get_it(offline, source, expect):
    with pytest.raises(WeightsError, match="offline") as err:
        load_pretrained(create_model("resnet50"), source, log=None)
    for text in expect:
        assert text in str(err.value)
    assert str(offline) in str(err.value)  # the exact cache folder to place the file in


def test_download_false_never_touches_the_network(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("RESLAB_OFFLINE", raising=False)
    with pytest.raises(WeightsError, match=re.escape(str(tmp_path / "hub" / "checkpoints"))):
        load_pretrained(create_model("resnet18"), "torchvision:resnet18", download=False, log=None)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(WeightsError, match="IMAGENET1K_V2"):
        weights_info("torchvision:resnet50.IMAGENET1K_V9")
    with pytest.raises(WeightsError, match="squeeze-excitation"):
        weights_info("timm:seresnet50.a1_in1k")
    with pytest.raises(WeightsError, match="neither an existing file nor a known name"):
        weights_info("no/such/file.pth")


def test_torchvision_records_match_torchvision():
    tvm = pytest.importorskip("torchvision.models")
    names = catalog.list_named_weights("torchvision")
    assert len(names) == 16
    for source in names:
        info = weights_info(source)
        arch, tag = source.split(":")[1].split(".")
        w = tvm.get_weight(f"{tvm.get_model_weights(arch).__name__}.{tag}")
        t = w.transforms()
        pre = info["preprocess"]
        assert info["url"] == w.url
        assert (pre["resize"], pre["crop"]) == (t.resize_size[0], t.crop_size[0])
        assert pre["mean"] == list(t.mean) and pre["std"] == list(t.std)
        assert pre["interpolation"] == t.interpolation.value
        assert info["num_classes"] == len(w.meta["categories"])
        assert info["top1"] == w.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert info["params"] == w.meta["num_params"]
        assert info["architecture"] == arch
    for arch in {s.split(":")[1].split(".")[0] for s in names}:  # DEFAULT is torchvision's
        default = tvm.get_model_weights(arch).DEFAULT
        assert weights_info(f"torchvision:{arch}")["url"] == default.url


def test_timm_records_match_timm():
    # reslab's own table resolves these names without timm installed; it must say what timm says
    timm_models = pytest.importorskip("timm.models")
    assert len(catalog._TIMM) >= 9
    for name, meta in catalog._TIMM.items():
        cfg = timm_models.get_pretrained_cfg(name)
        pre = meta.preprocess()
        assert meta.url == cfg.url and meta.hf_repo == cfg.hf_hub_id
        assert meta.architecture == cfg.architecture and meta.num_classes == cfg.num_classes
        assert pre["crop"] == cfg.input_size[-1]
        assert pre["resize"] == int(cfg.input_size[-1] / cfg.crop_pct)
        assert pre["interpolation"] == cfg.interpolation
        assert tuple(pre["mean"]) == tuple(cfg.mean) and tuple(pre["std"]) == tuple(cfg.std)
        # with timm installed the name resolves through timm to the same record
        assert weights_info(f"timm:{name}") == meta.to_dict()
    for arch, meta in catalog._TIMM_DEFAULT.items():  # "timm:resnet50" means timm's default tag
        assert meta.source == f"timm:{arch}.{timm_models.get_pretrained_cfg(arch).tag}"


# ---- reslab's own weights -----------------------------------------------------------------------
def _write_reslab_weights(folder, name="digits_resnet20"):
    torch.manual_seed(0)
    model = randomize_bn(create_model("resnet20", num_classes=10, in_chans=1))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(model.state_dict(), str(path))
    card = {
        "architecture": "resnet20",
        "model_args": {"name": "resnet20", "num_classes": 10, "in_chans": 1},
        "classes": [str(i) for i in range(10)],
        "preprocess": {"input_size": [1, 32, 32], "resize": 32, "crop": 32, "mean": [0.5],
                       "std": [0.25], "interpolation": "bilinear"},
        "accuracy": {"val_acc": 0.9},
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    (folder / f"{name}.json").write_text(json.dumps(card))
    return model, path


def test_reslab_name_from_weights_dir(monkeypatch, tmp_path):
    ref, path = _write_reslab_weights(tmp_path / "w")
    monkeypatch.setenv("RESLAB_WEIGHTS_DIR", str(tmp_path / "w"))
    model = create_model("resnet20", num_classes=10, in_chans=1)
    report = load_pretrained(model, "reslab:digits_resnet20", log=None)
    assert report.layout == "reslab" and not report.skipped
    ref_sd = ref.state_dict()
    assert all(torch.equal(v, ref_sd[k]) for k, v in model.state_dict().items())
    info = weights_info("reslab:digits_resnet20")
    assert info["preprocess"]["mean"] == [0.5] and info["num_classes"] == 10
    assert info["classes"][3] == "3" and info["architecture"] == "resnet20"
    # a different architecture is refused even when its keys would fit (plain20 == resnet20 keys)
    with pytest.raises(WeightsError, match="'resnet20'.*'plain20'"):
        plain = create_model("plain20", num_classes=10, in_chans=1)
        load_pretrained(plain, "reslab:digits_resnet20", log=None)
    with pytest.raises(WeightsError, match="digits_resnet20"):  # lists what is available
        load_pretrained(model, "reslab:nope", log=None)
    # a replaced file no longer matches the card's SHA-256
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_pretrained(model, "reslab:digits_resnet20", log=None)


def test_weights_dir_argument_overrides_env(monkeypatch, tmp_path):
    _write_reslab_weights(tmp_path / "mine")
    monkeypatch.setenv("RESLAB_WEIGHTS_DIR", str(tmp_path / "empty"))
    model = create_model("resnet20", num_classes=10, in_chans=1)
    report = load_pretrained(model, "reslab:digits_resnet20", weights_dir=tmp_path / "mine",
                             log=None)
    assert report.loaded


# ---- reslab checkpoints and run folders ---------------------------------------------------------
def test_run_folder_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = randomize_bn(create_model("resnet20", num_classes=4))
    state = {"model": src.state_dict(), "model_args": dict(src.model_args), "classes": list("abcd"),
             "preprocess": {"input_size": [3, 32, 32], "resize": 32, "crop": 32,
                            "mean": [0.5] * 3, "std": [0.2] * 3, "interpolation": "bilinear"},
             "optimizer": {"state": {}, "param_groups": []}}
    save_checkpoint(state, tmp_path / "run" / "checkpoints" / "best.pt")
    model = create_model("resnet20", num_classes=4)
    report = load_pretrained(model, tmp_path / "run", log=None)
    assert report.file.endswith("best.pt") and report.layout == "reslab"
    assert max_diff(model, src, torch.randn(2, 3, 32, 32)) == 0
    info = weights_info(tmp_path / "run")
    assert info["classes"] == list("abcd") and info["preprocess"]["mean"] == [0.5] * 3
    # a new task: same backbone, new head of 2 classes
    report = load_pretrained(create_model("resnet20", num_classes=2),
                             tmp_path / "run" / "checkpoints" / "best.pt", log=None)
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    # create_model(pretrained=...) goes through the same path
    again = create_model("resnet20", num_classes=4, pretrained=str(tmp_path / "run"))
    assert max_diff(again, src, torch.randn(2, 3, 32, 32)) == 0


def test_ema_run_loads_the_weights_it_evaluated(tmp_path):
    from reslab.models.checkpoint import model_from_checkpoint

    torch.manual_seed(0)
    raw, ema = (randomize_bn(create_model("resnet20"), seed=s) for s in (1, 2))
    save_checkpoint({"model": raw.state_dict(), "model_args": dict(raw.model_args),
                     "ema": {"model": ema.state_dict()}, "config": {"ema": {"enabled": True}}},
                    tmp_path / "last.pt")
    model = create_model("resnet20")
    report = load_pretrained(model, tmp_path / "last.pt", log=None)
    assert any("EMA" in n for n in report.notes)
    x = torch.randn(2, 3, 32, 32)
    assert max_diff(model, ema, x) == 0
    assert max_diff(model, model_from_checkpoint(tmp_path / "last.pt"), x) == 0  # same choice


# ---- safety -------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this would create a file: the stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    sd = create_model("resnet20").state_dict()
    torch.save({"model": sd, "extra": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="pickled Python objects") as err:
        load_pretrained(create_model("resnet20"), tmp_path / "evil.pt", log=None)
    assert "safetensors" in str(err.value)
    assert not marker.exists()
    # the file really carries code: an unsafe load runs it (which is why reslab never does)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_not_a_weights_file_is_refused(tmp_path):
    (tmp_path / "page.pth").write_text("<html>404 Not Found</html>")
    with pytest.raises(WeightsError, match="neither a PyTorch file nor a .safetensors"):
        load_pretrained(create_model("resnet20"), tmp_path / "page.pth", log=None)
    torch.save(create_model("resnet20").state_dict(), tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:5000])
    with pytest.raises(WeightsError, match="cut.pth"):
        load_pretrained(create_model("resnet20"), tmp_path / "cut.pth", log=None)


# ---- head, input channels and anything else -----------------------------------------------------
def test_strict_head_and_headless_models(tmp_path):
    torch.manual_seed(0)
    src = randomize_bn(create_model("resnet20"))  # 10 classes
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match="strict_head"):
        load_pretrained(create_model("resnet20", num_classes=3), tmp_path / "w.safetensors",
                        strict_head=True, log=None)
    backbone = create_model("resnet20", num_classes=0)
    report = load_pretrained(backbone, tmp_path / "w.safetensors", log=None)
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    x = X64[:, :, :32, :32]
    with torch.no_grad():
        pooled = src.eval().forward_head(src.forward_features(x), pre_logits=True)
        torch.testing.assert_close(backbone.eval()(x), pooled)
    # weights without a head (a backbone) into a model with one: the head is reported as kept
    headless = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    save_file(headless, str(tmp_path / "backbone.safetensors"))
    report = load_pretrained(create_model("resnet20"), tmp_path / "backbone.safetensors", log=None)
    assert report.skipped == {"fc.weight": "not in the weights: left as initialised",
                              "fc.bias": "not in the weights: left as initialised"}


@pytest.mark.parametrize("in_chans", [1, 2, 4])
def test_adapt_input_conv_matches_timm(in_chans):
    timm_models = pytest.importorskip("timm.models")
    w = torch.randn(8, 3, 7, 7)
    ours, how = adapt_input_conv(in_chans, w)
    torch.testing.assert_close(ours, timm_models.adapt_input_conv(in_chans, w.clone()))
    assert str(in_chans) in how


def test_grayscale_model_sees_a_gray_image_like_the_rgb_model(tmp_path):
    # Summing conv1 over RGB is exact for gray input: conv(w, [g, g, g]) == conv(sum_c w_c, g).
    torch.manual_seed(0)
    rgb = randomize_bn(create_model("resnet18d", num_classes=5))
    torch.save({"state_dict": rgb.state_dict()}, tmp_path / "rgb.pth")
    gray = create_model("resnet18d", num_classes=5, in_chans=1)
    report = load_pretrained(gray, tmp_path / "rgb.pth", log=None)
    assert list(report.adapted) == ["conv1.0.weight"]
    assert "summed" in report.adapted["conv1.0.weight"]
    g = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray.eval()(g), rgb.eval()(g.expand(-1, 3, -1, -1)),
                                   atol=1e-4, rtol=1e-4)


def test_other_mismatches_list_the_keys(tmp_path):
    save_file(create_model("resnet18").state_dict(), str(tmp_path / "r18.safetensors"))
    with pytest.raises(WeightsError, match=r"missing from the weights \(\d+\): layer1\.2\.") as err:
        load_pretrained(create_model("resnet34"), tmp_path / "r18.safetensors", log=None)
    assert "blocks per stage (2, 2, 2, 2)" in str(err.value)
    assert "blocks per stage (3, 4, 6, 3)" in str(err.value)
    sd = create_model("resnet20").state_dict()
    sd["layer2.0.conv1.weight"] = torch.zeros(32, 16, 1, 1)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match=r"layer2\.0\.conv1\.weight \(32, 16, 1, 1\) -> model "
                                           r"\(32, 16, 3, 3\)"):
        load_pretrained(create_model("resnet20"), tmp_path / "bad.safetensors", log=None)
    with pytest.raises(WeightsError, match=r"not in the model .*running_mean"):
        load_pretrained(create_model("resnet20", norm_layer="groupnorm"),
                        tmp_path / "bad.safetensors", log=None)


def test_top_level_function_forwards():
    assert reslab.load_pretrained.__doc__ and callable(reslab.load_pretrained)
    with pytest.raises(WeightsError):
        reslab.load_pretrained(create_model("resnet20"), "missing.safetensors", log=None)


def test_weights_with_nan_are_refused_naming_the_file_and_tensors(tmp_path):
    src = create_model("resnet20", num_classes=10)
    state = src.state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"diverged\.pt holds NaN or infinite values in 1 tensor\(s\) "
                                           r"\(layer1\.0\.conv1\.weight\)"):
        load_pretrained(create_model("resnet20", num_classes=10), path, log=None)
