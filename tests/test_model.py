"""dualcodec.model: forward pass, side-stream bytes, model files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from dualcodec.config import ModelConfig
from dualcodec.errors import DualcodecError
from dualcodec.model import (
    BaseLayerOutput,
    DualLayerModel,
    load_model,
    resolve_model_path,
    save_model,
)
from dualcodec.nets.common import bicubic_down, bicubic_up
from helpers import TINY_CONFIG, TINY_LMBDA, build_tiny_model

TINY = ModelConfig(**TINY_CONFIG)


def fake_base(x_lr: torch.Tensor) -> BaseLayerOutput:
    """A lossless base layer that costs nothing."""
    return BaseLayerOutput(x_lr, torch.zeros(x_lr.shape[0]))


def _images(b=2, h=64, w=48, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(b, 3, h // 8, w // 8, generator=gen), size=(h, w),
                                             mode="bilinear", align_corners=False)
    return (smooth * 255).round().to(torch.uint8)


def test_forward_shapes():
    torch.manual_seed(0)
    model = DualLayerModel(TINY)
    x = _images()
    out = model(x, fake_base)
    assert out.x_hat.shape == (2, 3, 64, 48)
    assert out.x_lr.shape == out.x_lr_hat.shape == (2, 3, 32, 24)
    assert out.side_bits.shape == out.base_bits.shape == (2,)
    assert torch.isfinite(out.side_bits).all() and (out.side_bits > 0).all()
    assert torch.equal(out.base_bits, torch.zeros(2))


def test_forward_scale_4_and_sizes_not_multiple_of_the_latent_stride():
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=4, **TINY_CONFIG))
    x = _images(b=1, h=40, w=56)  # low resolution 10x14: not a multiple of 8
    out = model(x, fake_base)
    assert out.x_lr.shape == (1, 3, 10, 14)
    assert out.x_hat.shape == (1, 3, 40, 56)


def test_forward_without_side_stream_has_zero_side_bits():
    model = DualLayerModel(ModelConfig(side_stream=False, downsampler="bicubic", **TINY_CONFIG))
    assert not model.has_side_stream
    out = model(_images(), fake_base)
    assert torch.equal(out.side_bits, torch.zeros(2))
    assert out.x_hat.shape == (2, 3, 64, 48)


def test_entropy_model_stays_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = DualLayerModel(TINY)
    x = _images()
    reference = model(x, fake_base).side_bits
    torch.manual_seed(0)
    model = DualLayerModel(TINY)
    seen = {}
    model.entropy_bottleneck.register_forward_hook(lambda m, args, out: seen.update(y=args[0], y_hat=out[0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, fake_base)
    assert out.x_hat.dtype == torch.bfloat16  # the networks did run in bf16
    assert seen["y"].dtype == seen["y_hat"].dtype == torch.float32
    assert torch.isfinite(out.side_bits).all()
    assert torch.allclose(out.side_bits, reference, rtol=0.1)  # bits from bf16 features, fp32 likelihoods


def test_forward_is_differentiable_end_to_end():
    model, _ = build_tiny_model(seed=0)
    out = model(_images(), fake_base)
    loss = (out.x_hat - _images().float() / 255).abs().mean() + 1e-3 * out.side_bits.mean()
    loss.backward()
    for module in (model.downsampler, model.g_a, model.g_s, model.upsampler):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), module.__class__.__name__


def test_base_layer_sees_the_downsampled_frame():
    seen = {}

    def spy(x_lr):
        seen["x_lr"] = x_lr
        return BaseLayerOutput(x_lr * 0 + 0.5, torch.full((x_lr.shape[0],), 123.0))

    model = DualLayerModel(TINY)
    out = model(_images(), spy)
    assert seen["x_lr"] is out.x_lr
    assert torch.equal(out.base_bits, torch.full((2,), 123.0))
    assert torch.equal(out.x_lr_hat, torch.full_like(out.x_lr, 0.5))


def test_untrained_downsampler_is_bicubic():
    model = DualLayerModel(TINY)
    x = _images()
    assert torch.allclose(model.downsample(x), bicubic_down(x.float() / 255, 2), atol=1e-6)


@pytest.mark.parametrize("scale", [2, 4])
def test_untrained_upsampler_is_bicubic_in_the_interior(scale):
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=scale, **TINY_CONFIG))
    x_lr_hat = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(3))
    y_hat = torch.randn(2, TINY.latent_channels, 2, 3)  # the side features cannot matter yet
    up = model.upsample(x_lr_hat, y_hat)
    ref = bicubic_up(x_lr_hat, scale)
    assert up.shape == ref.shape == (2, 3, 16 * scale, 24 * scale)
    border = 2 * scale
    assert (up - ref)[..., border:-border, border:-border].abs().max() < 1e-5


def test_trained_upsampler_is_not_bicubic():
    model, _ = build_tiny_model(seed=0)  # perturbed kernel predictor
    x_lr_hat = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert (model.upsample(x_lr_hat, None) - bicubic_up(x_lr_hat, 2)).abs().max() > 1e-3


def test_save_load_round_trip(tmp_path):
    model, config = build_tiny_model(seed=0)
    path = tmp_path / "sub" / "m.pt"
    fingerprint = save_model(model, config, "tiny", path, lmbda=TINY_LMBDA)
    assert path.is_file() and not list(path.parent.glob("*.partial*"))
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    loaded = load_model(str(path))
    assert loaded.fingerprint == fingerprint and loaded.name == "tiny" and loaded.config == config
    assert loaded.lmbda == TINY_LMBDA
    assert not loaded.model.training
    model.eval()
    x = _images()
    with torch.no_grad():
        a = model(x, fake_base)
        b = loaded.model(x, fake_base)
    assert torch.equal(a.x_hat, b.x_hat)
    assert torch.equal(a.side_bits, b.side_bits)
    # Saving the loaded model again gives the same fingerprint: it covers weights and config.
    again = save_model(loaded.model, loaded.config, "tiny", tmp_path / "again.pt", lmbda=TINY_LMBDA)
    assert again == fingerprint


def test_fingerprint_depends_on_weights_and_config(tmp_path):
    model, config = build_tiny_model(seed=0)
    other, _ = build_tiny_model(seed=1)
    a = save_model(model, config, "a", tmp_path / "a.pt", lmbda=TINY_LMBDA)
    b = save_model(other, config, "a", tmp_path / "b.pt", lmbda=TINY_LMBDA)
    assert a != b
    # Same weights, a config that differs in a field the weights do not show.
    changed = ModelConfig(down_bound=0.3, **TINY_CONFIG)
    c = save_model(model, changed, "a", tmp_path / "c.pt", lmbda=TINY_LMBDA)
    assert c != a


@pytest.fixture()
def saved(tmp_path):
    model, config = build_tiny_model(seed=0)
    path = tmp_path / "m.pt"
    save_model(model, config, "tiny", path, lmbda=TINY_LMBDA)
    return path


@pytest.mark.parametrize("where", [0.2, 0.5, 0.8, 0.97])
def test_damaged_file_is_rejected(saved, where):
    data = bytearray(saved.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0xFF
    data[i + 1] ^= 0x5A
    saved.write_bytes(bytes(data))
    with pytest.raises(DualcodecError, match="m.pt"):
        load_model(str(saved))


def test_truncated_file_is_rejected(saved):
    saved.write_bytes(saved.read_bytes()[:1000])
    with pytest.raises(DualcodecError, match="cannot read model file"):
        load_model(str(saved))


def test_other_torch_file_is_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(DualcodecError, match="not a dualcodec model file"):
        load_model(str(path))


def test_future_version_is_rejected(saved):
    payload = torch.load(saved, weights_only=True)
    payload["version"] = 99
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    saved.write_bytes(buffer.getvalue())
    with pytest.raises(DualcodecError, match="version 99"):
        load_model(str(saved))


def test_unknown_model_name(tmp_path):
    with pytest.raises(DualcodecError, match="no model named or at"):
        resolve_model_path(str(tmp_path / "missing.pt"))
    with pytest.raises(DualcodecError):
        load_model("no-such-built-in-model")


def test_compress_decompress_side_reproduces_y_hat(saved):
    model = load_model(str(saved)).model  # save_model ran update(): coding tables are ready
    x = _images(b=2, h=64, w=48, seed=1)
    x_lr_hat = model.downsample(x).clamp(0, 1)
    strings = model.compress_side(x, x_lr_hat)
    assert len(strings) == 2 and all(isinstance(s, bytes) and len(s) > 0 for s in strings)
    y_hat = model.decompress_side(strings, 32, 24)
    assert y_hat.shape == (2, TINY.latent_channels, 4, 3)
    with torch.no_grad():
        y = model._analysis(x, x_lr_hat)
        reference, _ = model.entropy_bottleneck(y, training=False)
    assert reference.abs().max() > 0  # the latents carry something
    assert torch.equal(y_hat, reference)
    # Per frame: the strings are independent.
    assert torch.equal(model.decompress_side(strings[1:], 32, 24), reference[1:])


def test_side_stream_size_follows_the_latents(saved):
    model = load_model(str(saved)).model
    big = _images(b=1, h=128, w=128, seed=2)
    small = _images(b=1, h=32, w=32, seed=2)
    n_big = len(model.compress_side(big, model.downsample(big))[0])
    n_small = len(model.compress_side(small, model.downsample(small))[0])
    assert n_big > n_small


def test_latent_size_rounds_up():
    model = DualLayerModel(TINY)
    assert model.latent_size(16, 24) == (2, 3)
    assert model.latent_size(17, 1) == (3, 1)


def test_model_file_is_self_describing(saved):
    payload = torch.load(saved, weights_only=True)
    assert payload["format"] == "dualcodec-model" and payload["version"] == 1
    assert payload["config"]["up_width"] == 8
    # The coding tables are in the file (update() ran before saving).
    assert any(k.endswith("_quantized_cdf") and v.numel() > 0 for k, v in payload["state_dict"].items())


def test_builtin_dir_resolution(tmp_path, monkeypatch):
    import dualcodec.model as m

    model, config = build_tiny_model(seed=0)
    save_model(model, config, "mine", tmp_path / "mine.pt", lmbda=TINY_LMBDA)
    monkeypatch.setattr(m, "BUILTIN_DIR", tmp_path)
    assert resolve_model_path("mine") == tmp_path / "mine.pt"
    assert load_model("mine").name == "mine"
    with pytest.raises(DualcodecError, match="built-in: mine"):
        resolve_model_path("other")


def test_default_model_loads(default_model_path):
    loaded = load_model("default")
    assert loaded.config.scale in (2, 4)
    assert Path(resolve_model_path("default")) == default_model_path
