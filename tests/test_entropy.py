"""dualcodec.entropy: activity classes, the latent coder's payload, its tables, damage, training."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from dualcodec.entropy import (
    ACTIVITY_THRESHOLDS,
    CLASSES,
    HEADER_BYTES,
    LEVELS,
    SCALE_MIN,
    LatentCoder,
    activity_classes,
)
from dualcodec.errors import DamagedData, DualcodecError

M = 8  # latent channels of the coders built here


# -- activity classes ------------------------------------------------------------------------

def _numpy_classes(codes: np.ndarray, stride: int, bit_depth: int) -> np.ndarray:
    """The module docstring's activity classes, written again in numpy: ``codes`` ``[B,1,h,w]``."""
    b, _, h, w = codes.shape
    y = np.pad(codes.astype(np.int64), ((0, 0), (0, 0), (0, -h % stride), (0, -w % stride)), mode="edge")
    grad = np.zeros_like(y)
    grad[..., :, 1:] += np.abs(np.diff(y, axis=-1))
    grad[..., 1:, :] += np.abs(np.diff(y, axis=-2))
    hb, wb = y.shape[-2] // stride, y.shape[-1] // stride
    sums = grad[:, 0].reshape(b, hb, stride, wb, stride).sum(axis=(2, 4))
    activity = sums * 16 // (stride * stride * 2 ** (bit_depth - 8))
    return np.searchsorted(np.array(ACTIVITY_THRESHOLDS), activity, side="right")


@pytest.mark.parametrize("bit_depth", [8, 10])
@pytest.mark.parametrize("stride, h, w", [(4, 29, 37), (4, 16, 24), (2, 7, 5), (8, 45, 19)])
def test_activity_classes_match_a_numpy_reimplementation(bit_depth, stride, h, w):
    rng = np.random.default_rng(h * w + bit_depth)
    top = (1 << bit_depth) - 1
    # Smooth areas, edges and noise of several strengths, so that every class occurs.
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = top * (0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0))
    noise = rng.normal(0, 1, (2, 1, h, w)) * rng.choice([0.0, 0.5, 2, 8, 32], (2, 1, h, w)) * 2 ** (bit_depth - 8)
    codes = np.clip(np.round(smooth + noise), 0, top).astype(np.int64)
    got = activity_classes(torch.from_numpy(codes), stride, bit_depth)
    assert got.dtype == torch.int64 and got.shape == (2, -(-h // stride), -(-w // stride))
    np.testing.assert_array_equal(got.numpy(), _numpy_classes(codes, stride, bit_depth))
    # Integer code values given as floats (as the model passes them) give the same classes.
    assert torch.equal(activity_classes(torch.from_numpy(codes).double(), stride, bit_depth), got)


def test_10_bit_codes_class_as_their_8_bit_values():
    rng = np.random.default_rng(7)
    strength = np.kron(rng.choice([0, 0.25, 1, 4, 16], (8, 11)), np.ones((4, 4)))[:30, :42]  # per 4x4 block
    codes8 = np.clip(np.round(128 + strength * rng.normal(0, 1, (30, 42))), 0, 255).astype(np.int64)[None, None]
    classes8 = activity_classes(torch.from_numpy(codes8), 4, 8)
    assert len(set(classes8.flatten().tolist())) > 3
    assert torch.equal(activity_classes(torch.from_numpy(codes8 * 4), 4, 10), classes8)
    assert torch.equal(activity_classes(torch.from_numpy(codes8 * 4 + 3), 4, 10), classes8)  # low bits: no activity


def test_activity_thresholds_are_inclusive_and_every_class_occurs():
    # One vertical step of d code values inside a 4x4 block: 4 differences of d, activity 4 d.
    for d, expected in [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (8, 4), (15, 4), (16, 5), (31, 5), (32, 6), (255, 6)]:
        block = torch.zeros(1, 1, 4, 4, dtype=torch.int64)
        block[..., 2:] = d
        activity = 16 * 4 * d // 16
        assert activity_classes(block, 4, 8).item() == sum(activity >= t for t in ACTIVITY_THRESHOLDS) == expected


# -- the coder ------------------------------------------------------------------------------

def _coder(seed: int = 0, channels: int = M) -> LatentCoder:
    """A latent coder with random learned parameters and its tables built."""
    gen = torch.Generator().manual_seed(seed)
    coder = LatentCoder(channels)
    with torch.no_grad():
        coder.log_sigma.copy_(torch.randn(CLASSES, channels, generator=gen) + torch.linspace(-1, 2, CLASSES)[:, None])
        coder.gain_log.copy_(0.3 * torch.randn(channels, generator=gen))
    coder.update()
    coder.eval()
    return coder


def _symbols(coder: LatentCoder, classes: torch.Tensor, level: int, seed: int = 0) -> torch.Tensor:
    """Symbols ``q`` ``[1, M, hb, wb]`` drawn from the coder's own densities (so the rate
    estimate applies), with a few large values that take the escape code."""
    gen = torch.Generator().manual_seed(seed)
    scales = coder.gaussian.scale_table[coder.index_table[level][classes[0]].long()].permute(2, 0, 1)[None]
    q = torch.round(scales * torch.randn(scales.shape, generator=gen)).to(torch.int32).contiguous()
    q.view(-1)[::97] = 300  # beyond the support of all but the widest tables: coded by escape
    q.view(-1)[13::97] = -1000
    return q


def _classes(hb: int, wb: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CLASSES, (1, hb, wb), generator=torch.Generator().manual_seed(seed))


def _masks(hb: int, wb: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(hb * wb)
    single = torch.zeros(hb, wb, dtype=torch.bool)
    single[hb // 2, wb - 1] = True
    return {"all": torch.ones(hb, wb, dtype=torch.bool), "single": single,
            "half": torch.rand(hb, wb, generator=gen) < 0.5, "few": torch.rand(hb, wb, generator=gen) < 0.1}


@pytest.mark.parametrize("level", [0, 30, 63])
@pytest.mark.parametrize("size", [(5, 4), (9, 13), (1, 2)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_round_trip_is_exact(level, size):
    coder = _coder(seed=level)
    classes = _classes(*size, seed=size[0])
    q = _symbols(coder, classes, level, seed=size[1])
    for name, enhanced in _masks(*size).items():
        if not enhanced.any():
            continue
        payload = coder.compress(q, classes, level, enhanced)
        decoded = coder.decompress(payload, classes)
        assert decoded.level == level, name
        assert decoded.enhanced.dtype == torch.bool and torch.equal(decoded.enhanced, enhanced), name
        # Skipped blocks decode to zero latents, enhanced ones to their symbols over the gain.
        assert torch.equal(decoded.w_hat, coder.dequantize(q * enhanced, level)), name
        assert decoded.w_hat.shape == (1, M, *size) and decoded.w_hat.dtype == torch.float32


def test_payload_layout():
    coder = _coder()
    classes = _classes(8, 8)
    q = _symbols(coder, classes, 40)
    masks = _masks(8, 8)
    for name, expected_p in [("all", 255), ("single", 4)]:  # P(enhanced) = 1 (clipped to 255/256), 1/64
        payload = coder.compress(q, classes, 40, masks[name])
        assert payload[0] == 40 and payload[1] == expected_p
        n = int.from_bytes(payload[2:5], "big")
        assert 0 < n and HEADER_BYTES + n < len(payload)
    # The flags string stands alone: the latents follow it.
    one = coder.compress(q, classes, 40, masks["single"])
    n = int.from_bytes(one[2:5], "big")
    other = q.clone()
    other[0, :, 4, 7] += 1  # the single enhanced block's symbols
    changed = coder.compress(other, classes, 40, masks["single"])
    assert changed[: HEADER_BYTES + n] == one[: HEADER_BYTES + n] and changed != one
    # Symbols of skipped blocks are never coded.
    other = q.clone()
    other[0, :, 0, 0] += 5
    assert coder.compress(other, classes, 40, masks["single"]) == one


def test_gains_follow_the_level():
    coder = LatentCoder(M)
    coder.update()
    g = coder.gain_table
    assert g.shape == (LEVELS, M)
    assert torch.allclose(g[32], torch.ones(M))  # a = 0 at initialisation
    assert torch.allclose(g[44], 0.5 * g[32]) and torch.allclose(g[20], 2 * g[32])  # halves every 12 QP
    assert torch.allclose(g, coder.gain(torch.arange(LEVELS).float().view(-1, 1)), rtol=1e-6)
    w = torch.full((1, M, 1, 1), 1.3)
    assert torch.equal(coder.quantize(w, 20), torch.full((1, M, 1, 1), 3, dtype=torch.int32))  # round(2.6)
    assert torch.equal(coder.quantize(w, 44), torch.full((1, M, 1, 1), 1, dtype=torch.int32))  # round(0.65)
    assert torch.allclose(coder.dequantize(coder.quantize(w, 20), 20), torch.full_like(w, 1.5))


def test_index_table_picks_the_first_table_scale_at_or_above_each_density():
    coder = _coder(seed=3)
    table = coder.gaussian.scale_table
    levels = torch.arange(LEVELS).float().view(-1, 1, 1)
    scales = torch.exp(coder.log_sigma.detach())[None] * torch.exp(
        coder.gain_log.detach() + coder.gain_slope.detach() * (levels - 32) / 6)
    index = coder.index_table.long()
    assert index.shape == (LEVELS, CLASSES, M) and 0 <= index.min() and index.max() < len(table)
    assert len(table) == 64 and torch.all(table[1:] > table[:-1])
    inside = scales <= table[-1]
    assert torch.all(table[index][inside] >= scales[inside] * (1 - 1e-6))
    below = index > 0
    assert torch.all(table[index - 1][below] < scales[below] * (1 + 1e-6))
    assert len(set(index.flatten().tolist())) > 10  # the levels and classes reach many tables


def test_tables_survive_save_and_load(tmp_path, monkeypatch):
    from dualcodec.model import load_model, save_model
    from helpers import TINY_LMBDA, build_tiny_model

    model, config = build_tiny_model(seed=0)
    with torch.no_grad():  # learned parameters away from their initial values
        model.latent_coder.log_sigma.normal_(0.0, 1.0)
        model.latent_coder.gain_log.normal_(0.0, 0.3)
    save_model(model, config, "tiny", tmp_path / "m.pt", lmbda=TINY_LMBDA)  # runs update()
    coder = model.latent_coder
    index, gain = coder.index_table.clone(), coder.gain_table.clone()
    assert not torch.equal(gain, torch.ones_like(gain)) and len(set(index.flatten().tolist())) > 10
    called = []
    with monkeypatch.context() as patch:  # the decoder never rebuilds tables
        patch.setattr(LatentCoder, "update", lambda self: called.append(self))
        loaded = load_model(str(tmp_path / "m.pt")).model.latent_coder
    assert not called
    assert torch.equal(loaded.index_table, index) and loaded.index_table.dtype == torch.int32
    assert torch.equal(loaded.gain_table, gain)
    for name in ("_quantized_cdf", "_cdf_length", "_offset", "scale_table"):
        assert torch.equal(getattr(loaded.gaussian, name), getattr(coder.gaussian, name)), name
    loaded.update()  # the tables are a function of the parameters: rebuilding changes nothing
    assert torch.equal(loaded.index_table, index) and torch.equal(loaded.gain_table, gain)


def test_a_fresh_coder_has_placeholder_tables_until_update():
    # update() before saving matters: the buffers of a fresh coder are placeholders.
    fresh = LatentCoder(M)
    assert torch.equal(fresh.index_table, torch.zeros_like(fresh.index_table))
    fresh.update()
    assert fresh.index_table.min() > 0


def test_the_coding_tables_are_compressais_gaussian_conditional_tables():
    from compressai.entropy_models import GaussianConditional

    reference = GaussianConditional(None, scale_bound=SCALE_MIN)
    fresh = LatentCoder(M)
    assert not fresh.gaussian.built  # empty until the first coding or update()
    reference.update_scale_table(fresh.gaussian.scale_table.tolist(), force=True)
    fresh.update()
    ours = fresh.gaussian.state_dict()
    assert ours.keys() == reference.state_dict().keys()  # a model file's keys, as before
    for name, value in reference.state_dict().items():
        assert torch.equal(ours[name], value) and ours[name].dtype == value.dtype, name
    # The index of a scale, as GaussianConditional.build_indexes gives it: the table's own
    # scales, values either side of them, below the least and above the largest.
    table = reference.scale_table
    scales = torch.cat([table, torch.nextafter(table, torch.zeros(())), torch.nextafter(table, table + 1),
                        torch.tensor([0.0, 1e-3, SCALE_MIN, 300.0, 1e6]), torch.rand(1000) * 300])
    assert torch.equal(fresh.gaussian.index(scales), reference.build_indexes(scales).long())


def test_coding_needs_no_compressai_init():
    # The package's __init__ imports its datasets and torch_geometric (seconds of start-up):
    # a model file's tables and the compiled coder do without it, until asked for more.
    script = textwrap.dedent("""
        import sys, torch
        from dualcodec.model import load_model
        coder = load_model("default_x1").model.latent_coder  # a built-in model with a side stream
        q = torch.randint(-3, 4, (1, coder.channels, 4, 5), dtype=torch.int32)
        classes = torch.randint(0, 7, (1, 4, 5))
        payload = coder.compress(q, classes, 32, torch.ones(4, 5, dtype=torch.bool))
        assert torch.equal(coder.quantize(coder.decompress(payload, classes).w_hat, 32), q)
        assert "torch_geometric" not in sys.modules and "compressai.zoo" not in sys.modules
        import compressai
        assert compressai.available_entropy_coders() == ["ans"] and "compressai.zoo" in sys.modules
        from compressai.zoo import bmshj2018_factorized
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_levels_outside_0_to_63_are_refused():
    coder = _coder()
    classes = _classes(3, 3)
    q = _symbols(coder, classes, 30)
    enhanced = torch.ones(3, 3, dtype=torch.bool)
    for level in (-1, 64, 200):
        with pytest.raises(DualcodecError, match=f"side level {level} is outside 0..63"):
            coder.compress(q, classes, level, enhanced)
    payload = bytearray(coder.compress(q, classes, 30, enhanced))
    payload[0] = 64
    with pytest.raises(DamagedData, match="malformed"):
        coder.decompress(bytes(payload), classes)


def _flags_only(flags: torch.Tensor, p: int) -> bytes:
    """A payload header and flag string (the latents left out), coded as compress codes them."""
    from dualcodec.entropy import _binary_cdf, _encode

    bits = _encode(flags.reshape(-1).tolist(), [0] * flags.numel(), ([_binary_cdf(p)], [4], [0]))
    return bytes([30, p]) + len(bits).to_bytes(3, "big") + bits


def _damaged_payloads(coder: LatentCoder, classes: torch.Tensor) -> dict[str, bytes]:
    q = _symbols(coder, classes, 30)
    good = coder.compress(q, classes, 30, torch.ones(classes.shape[-2:], dtype=torch.bool))
    n = int.from_bytes(good[2:5], "big")
    return {
        "empty": b"",
        "one byte": good[:1],
        "header cut": good[: HEADER_BYTES - 1],
        "level 64": bytes([64]) + good[1:],
        "level 255": bytes([255]) + good[1:],
        "p 0": good[:1] + b"\x00" + good[2:],
        "flags longer than the payload": good[:2] + (len(good)).to_bytes(3, "big") + good[5:],
        "flags length 2^24 - 1": good[:2] + b"\xff\xff\xff" + good[5:],
        "flag string cut": good[: HEADER_BYTES + n - 1],
        "no block enhanced": _flags_only(torch.zeros(classes.shape[-2:], dtype=torch.int32), 1) + good[5 + n:],
    }


@pytest.mark.parametrize("case", ["empty", "one byte", "header cut", "level 64", "level 255", "p 0",
                                  "flags longer than the payload", "flags length 2^24 - 1", "flag string cut",
                                  "no block enhanced"])
def test_a_malformed_payload_is_damaged_data_in_one_line(case):
    coder = _coder()
    classes = _classes(6, 7)
    payload = _damaged_payloads(coder, classes)[case]
    with pytest.raises(DamagedData, match=r"^it(s header|s skip flags|s latents| is truncated)[a-z ]*$"):
        coder.decompress(payload, classes)


def test_garbage_after_a_valid_header_never_escapes_as_anything_but_damaged_data():
    # Garbage either parses into latents of the right shape (only if it is exactly what the
    # encoder makes of them: decompress re-encodes and compares) or is DamagedData, never
    # another exception; random bytes essentially never are an encoder's output.
    coder = _coder()
    classes = _classes(5, 4)
    rng = np.random.default_rng(0)
    outcomes = {"parsed": 0, "damaged": 0}
    for trial in range(300):
        header = bytes([int(rng.integers(0, LEVELS)), int(rng.integers(1, 256))])
        body = rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8).tobytes()
        n = int(rng.integers(1, 16)) if trial % 2 else len(body) // 2
        try:
            decoded = coder.decompress(header + n.to_bytes(3, "big") + body, classes)
        except DamagedData as exc:
            assert "\n" not in str(exc)
            outcomes["damaged"] += 1
        else:
            assert decoded.w_hat.shape == (1, M, 5, 4) and torch.isfinite(decoded.w_hat).all()
            outcomes["parsed"] += 1
    assert outcomes["damaged"] >= 295, outcomes


@pytest.mark.parametrize("cut", [1, 4, "all"])
def test_latent_bytes_cut_short_are_damaged_data(cut):
    coder = _coder()
    classes = _classes(6, 7)
    q = _symbols(coder, classes, 30)
    payload = coder.compress(q, classes, 30, torch.ones(6, 7, dtype=torch.bool))
    n = int.from_bytes(payload[2:5], "big")
    cut_payload = payload[: HEADER_BYTES + n] if cut == "all" else payload[:-cut]
    with pytest.raises(DamagedData):
        coder.decompress(cut_payload, classes)


# CompressAI's encoder writes its string backwards from the end of a buffer of 4 bytes per
# symbol: a longer string has been written partly before the buffer, whether or not the
# process then dies. The snippets below run with this check around it.
CHECKED_ENCODER = """
from compressai import ans

class CheckedEncoder(ans.RansEncoder):
    def encode_with_indexes(self, symbols, *args):
        out = super().encode_with_indexes(symbols, *args)
        if len(out) > 4 * len(symbols):
            print(f"OVERFLOW: {len(out)} bytes for {len(symbols)} symbols")
        return out

ans.RansEncoder = CheckedEncoder
"""


def _run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (for what kills the process: heap corruption, a
    segfault), CompressAI's encoder checked as above."""
    return subprocess.run([sys.executable, "-c", CHECKED_ENCODER + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("channels, blocks, value", [(8, 1, None), (16, 2, 100000)],
                         ids=["a frame of one block", "latents far beyond the tables, clipped"])
def test_payloads_code_without_corrupting_memory(channels, blocks, value):
    result = _run_python(f"""
        import torch
        from dualcodec.entropy import MAX_SYMBOL, LatentCoder

        coder = LatentCoder({channels})
        coder.update()
        classes = torch.zeros(1, 1, {blocks}, dtype=torch.int64)
        enhanced = torch.ones(1, {blocks}, dtype=torch.bool)
        q = torch.arange({channels} * {blocks}, dtype=torch.int32).view(1, {channels}, 1, {blocks})
        if {value!r} is not None:
            q = torch.full_like(q, {value!r})
        decoded = coder.decompress(coder.compress(q, classes, 30, enhanced), classes)
        print(torch.equal(decoded.w_hat, coder.dequantize(q.clamp(-MAX_SYMBOL, MAX_SYMBOL), 30)))
    """)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-300:]}"
    assert result.stdout.strip() == "True", result.stdout  # no OVERFLOW line


@pytest.mark.slow
def test_compress_refuses_a_frame_with_no_block_enhanced():
    result = _run_python("""
        import torch
        from dualcodec.entropy import LatentCoder
        from dualcodec.errors import DualcodecError

        coder = LatentCoder(8)
        coder.update()
        try:
            coder.compress(torch.zeros(1, 8, 4, 4, dtype=torch.int32), torch.zeros(1, 4, 4, dtype=torch.int64), 30,
                           torch.zeros(4, 4, dtype=torch.bool))
        except DualcodecError as exc:
            print("refused")
    """)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-300:]}"
    assert result.stdout.strip() == "refused"


CRASH = textwrap.dedent("""
    import torch
    from dualcodec.entropy import CLASSES, LatentCoder

    coder = LatentCoder(16)
    coder.update()
    classes = torch.randint(0, CLASSES, (1, 68, 120), generator=torch.Generator().manual_seed(0))
    enhanced = torch.ones(68, 120, dtype=torch.bool)
    payload = coder.compress(torch.zeros(1, 16, 68, 120, dtype=torch.int32), classes, 32, enhanced)
    n = int.from_bytes(payload[2:5], "big")
    try:
        coder.decompress(payload[:5 + n], classes)  # a valid header and flags, no latent bytes
    except Exception as exc:
        print(type(exc).__name__)
""")


@pytest.mark.slow
def test_a_large_frame_with_its_latent_bytes_missing_does_not_crash_the_decoder():
    # In a subprocess: the failure is a segmentation fault.
    result = _run_python(CRASH)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-500:]}"
    assert result.stdout.strip() == "DamagedData"


# -- determinism ----------------------------------------------------------------------------

def _at_threads(threads: int, fn):
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(1)


def test_decoding_is_bit_identical_at_1_and_2_threads():
    coder = _coder(seed=5)
    classes = _classes(30, 40, seed=5)
    q = _symbols(coder, classes, 27, seed=5)
    enhanced = _masks(30, 40)["half"]
    payload = _at_threads(2, lambda: coder.compress(q, classes, 27, enhanced))
    assert payload == _at_threads(1, lambda: coder.compress(q, classes, 27, enhanced))
    one = _at_threads(1, lambda: coder.decompress(payload, classes))
    two = _at_threads(2, lambda: coder.decompress(payload, classes))
    assert torch.equal(one.w_hat, two.w_hat) and torch.equal(one.enhanced, two.enhanced)
    assert torch.equal(one.w_hat, coder.dequantize(q * enhanced, 27))


def _layers(mode: str, loaded):
    from dualcodec.codec import ModelLayers
    from helpers import new_latents_every_frame

    # Every block enhanced, or the encoder's own per-block choice with free side bits.
    return new_latents_every_frame(loaded, level=30) if mode == "every block" else ModelLayers(loaded, 0.0, 30)


@pytest.mark.parametrize("mode", ["every block", "chosen blocks"])
def test_a_file_encoded_at_2_threads_decodes_identically_at_1_and_2(mode, clip, tiny_model, tmp_path,
                                                                       monkeypatch):
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec, decode
    from dualcodec.container import ContainerReader
    from dualcodec.model import load_model
    from dualcodec.sidestream import SideMode

    paths = {threads: tmp_path / f"t{threads}.mp4" for threads in (1, 2)}
    for threads, path in paths.items():
        layers = _layers(mode, load_model(str(tiny_model.path)))
        codec = LayeredCodec(layers, BaseCodecSettings(codec="h264", qp=30))
        _at_threads(threads, lambda: codec.encode(clip.path, path))
    assert paths[1].read_bytes() == paths[2].read_bytes()  # the encoder does not depend on the thread count
    sides = list(ContainerReader(paths[2]).side_frames())
    assert SideMode.NEW in [s.mode for s in sides], [s.mode for s in sides]

    seen: list = []
    original = LatentCoder.decompress

    def recording(self, payload, classes):
        coded = original(self, payload, classes)
        seen.append((coded.w_hat.clone(), coded.enhanced.clone()))
        return coded

    monkeypatch.setattr(LatentCoder, "decompress", recording)
    decoded = {}
    for threads in (1, 2):
        seen.clear()
        frames = _at_threads(threads, lambda: list(decode(paths[2], str(tiny_model.path)).frames))
        decoded[threads] = (frames, list(seen))
    (frames1, latents1), (frames2, latents2) = decoded[1], decoded[2]
    assert len(latents1) == len(latents2) == [s.mode for s in sides].count(SideMode.NEW)
    assert any(w.abs().max() > 0 for w, _ in latents1)  # the entropy decoder had work
    if mode == "every block":
        assert all(bool(e.all()) for _, e in latents1)
    for (w1, e1), (w2, e2) in zip(latents1, latents2):
        assert torch.equal(w1, w2) and torch.equal(e1, e2)
    assert len(frames1) == len(frames2) == 3
    for a, b in zip(frames1, frames2):
        assert all(np.array_equal(p, q) for p, q in ((a.y, b.y), (a.u, b.u), (a.v, b.v)))


# -- the rate estimate and the training pass ------------------------------------------------

def test_block_bits_predict_the_payload_size():
    coder = _coder(seed=2)
    classes = _classes(24, 32, seed=2)
    for level in (22, 37):
        q = _symbols(coder, classes, level, seed=level)
        q.view(-1)[::97] = 0  # no escapes here: the estimate does not price them
        q.view(-1)[13::97] = 0
        bits = coder.block_bits(q, classes, level)
        assert bits.shape == (24, 32) and (bits >= 0).all()
        for name, enhanced in _masks(24, 32).items():
            if int(enhanced.sum()) * M < 400:  # enough symbols for the estimate to hold
                continue
            payload = coder.compress(q, classes, level, enhanced)
            n = int.from_bytes(payload[2:5], "big")
            latent_bits = 8 * (len(payload) - HEADER_BYTES - n)
            assert float(bits[enhanced].sum()) == pytest.approx(latent_bits, rel=0.15), (level, name)


def test_block_bits_are_the_minus_log2_likelihoods_of_the_table_gaussians():
    coder = _coder(seed=4)
    classes = _classes(3, 2, seed=4)
    q = _symbols(coder, classes, 30, seed=4)
    bits = coder.block_bits(q, classes, 30)
    table = coder.gaussian.scale_table.double()
    expected = torch.zeros(3, 2, dtype=torch.float64)
    for i in range(3):
        for j in range(2):
            for m in range(M):
                normal = torch.distributions.Normal(0.0, table[coder.index_table[30, classes[0, i, j], m].long()])
                v = abs(float(q[0, m, i, j]))
                p = float(normal.cdf(torch.tensor(v + 0.5, dtype=torch.float64)) -
                          normal.cdf(torch.tensor(v - 0.5, dtype=torch.float64)))
                expected[i, j] += -math.log2(max(p, 1e-9))
    assert torch.allclose(bits.double(), expected, rtol=1e-3)


def test_narrow_classes_price_zeros_low_and_large_values_high():
    coder = LatentCoder(M)
    with torch.no_grad():
        coder.log_sigma.copy_(torch.linspace(-2.0, 2.0, CLASSES)[:, None].expand(CLASSES, M))
    coder.update()
    flat, busy = torch.zeros(1, 1, 1, dtype=torch.int64), torch.full((1, 1, 1), CLASSES - 1)
    zeros, large = torch.zeros(1, M, 1, 1, dtype=torch.int32), torch.full((1, M, 1, 1), 6, dtype=torch.int32)
    assert coder.block_bits(zeros, flat, 32) < coder.block_bits(zeros, busy, 32)
    assert coder.block_bits(large, flat, 32) > coder.block_bits(large, busy, 32)


def _training_pass(w: torch.Tensor, classes: torch.Tensor, train: bool = True, seed: int = 0):
    coder = _coder(seed=1)
    coder.train(train)
    torch.manual_seed(seed)
    return coder(w, classes, 30.0)


def test_training_bits_go_down_as_the_latents_shrink():
    gen = torch.Generator().manual_seed(0)
    w = 3.0 * torch.randn(2, M, 8, 8, generator=gen)
    classes = torch.randint(0, CLASSES, (2, 8, 8), generator=gen)
    for train in (True, False):
        bits = [_training_pass(w * f, classes, train)[1] for f in (1.0, 0.5, 0.25, 0.0)]
        assert all(b.shape == (2, 8, 8) and torch.isfinite(b).all() and (b >= 0).all() for b in bits)  # per block
        for more, fewer in zip(bits, bits[1:]):
            assert (fewer.sum(dim=(1, 2)) < more.sum(dim=(1, 2))).all(), (train, more, fewer)


def test_training_bits_are_noisy_in_training_and_rounded_in_evaluation():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(1, M, 4, 4, generator=gen)
    classes = torch.zeros(1, 4, 4, dtype=torch.int64)
    assert not torch.equal(_training_pass(w, classes, True, 0)[1], _training_pass(w, classes, True, 1)[1])
    assert torch.equal(_training_pass(w, classes, False, 0)[1], _training_pass(w, classes, False, 1)[1])
    # In evaluation, the bits are the coder's own estimate for the rounded symbols (up to its
    # table's scales, which round the densities up to the next of 64).
    coder = _coder(seed=1)
    _, bits = _training_pass(w, classes, False)
    with torch.no_grad():
        q = torch.round(w * coder.gain(30.0).view(1, -1, 1, 1)).to(torch.int32)
    estimate = coder.block_bits(q, classes, 30)
    assert bits.shape == estimate[None].shape
    assert float(bits.detach().sum()) == pytest.approx(float(estimate.sum()), rel=0.15)


@pytest.mark.parametrize("train", [True, False])
def test_w_hat_is_rounded_straight_through(train):
    gen = torch.Generator().manual_seed(2)
    w = (2.0 * torch.randn(2, M, 3, 5, generator=gen)).requires_grad_()
    classes = torch.randint(0, CLASSES, (2, 3, 5), generator=gen)
    coder = _coder(seed=1)
    coder.train(train)
    w_hat, bits = coder(w, classes, 30.0)
    g = coder.gain(30.0).view(1, -1, 1, 1)
    assert torch.allclose(w_hat, torch.round(w * g) / g, atol=1e-6)  # the decoder's values
    weights = torch.randn(w.shape, generator=gen)
    (w_hat * weights).sum().backward(retain_graph=True)
    assert torch.allclose(w.grad, weights, atol=1e-6)  # the gradient passes the rounding unchanged
    w.grad = None
    bits.sum().backward()
    assert coder.log_sigma.grad.abs().sum() > 0
    # In training the rate trains the latents through the noisy values; in evaluation the
    # symbols are rounded and the rate has no gradient for them.
    assert (w.grad.abs().sum() > 0) == train


# -- keep flags (KEEP packets) -----------------------------------------------------------------

@pytest.mark.parametrize("bit_depth", [8, 10])
def test_change_classes_are_the_mean_change_per_block_against_the_thresholds(bit_depth):
    from dualcodec.entropy import CHANGE_CLASSES, CHANGE_THRESHOLDS, change_classes

    rng = np.random.default_rng(bit_depth)
    unit = 1 << (bit_depth - 8)
    previous = torch.from_numpy(rng.integers(0, 200 * unit, (1, 1, 6, 10)))
    # Blocks of 2x2 (the last column padded by repeating the edge): change d in one sample,
    # a mean change of d / 4, 16 x that = 4 d against the thresholds (inclusive).
    steps = [0, 1, 2, 8, 32, 100]  # one per block of the top row: classes 0, 1, 2, 3, 3, 3 with thresholds 1, 8, 32
    y = previous.clone()
    for col, d in enumerate(steps[:5]):
        y[0, 0, 0, 2 * col] += d * unit
    classes = change_classes(y, previous, 2, bit_depth)
    assert classes.shape == (1, 3, 5) and classes.dtype == torch.int64
    expected = [sum(4 * d >= t for t in CHANGE_THRESHOLDS) for d in steps[:5]]
    assert classes[0, 0].tolist() == expected and classes[0, 1:].eq(0).all()
    assert set(expected) == set(range(CHANGE_CLASSES))
    assert torch.equal(change_classes(previous, y, 2, bit_depth), classes)  # either way round
    assert torch.equal(change_classes(y[..., :5, :9], previous[..., :5, :9], 2, bit_depth)[0, 0, :4], classes[0, 0, :4])


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_keep_flags_round_trip(share):
    from dualcodec.entropy import CHANGE_CLASSES, compress_keep, decompress_keep, keep_probabilities

    gen = torch.Generator().manual_seed(3)
    classes = torch.randint(0, CHANGE_CLASSES, (1, 9, 13), generator=gen)
    kept = (torch.rand(9, 13, generator=gen) < share) | ((classes[0] == 0) & (share > 0))
    probabilities = keep_probabilities(kept, classes)
    assert all(1 <= p <= 255 for p in probabilities)
    payload = compress_keep(kept, classes, probabilities)
    assert payload[:CHANGE_CLASSES] == bytes(probabilities)
    assert torch.equal(decompress_keep(payload, classes), kept)


def test_keep_flags_cost_little_where_the_class_predicts_them():
    from dualcodec.entropy import compress_keep, keep_probabilities

    classes = torch.zeros(1, 40, 40, dtype=torch.int64)
    classes[0, 20:] = 3
    kept = classes[0] == 0  # every unchanged block kept, every changed one cleared
    payload = compress_keep(kept, classes, keep_probabilities(kept, classes))
    assert len(payload) < 4 + 1600 / 8 / 16  # far under a bit a flag


def test_damaged_keep_payloads_are_refused():
    from dualcodec.entropy import compress_keep, decompress_keep

    classes = torch.zeros(1, 4, 5, dtype=torch.int64)
    kept = torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) < 0.5
    payload = compress_keep(kept, classes, [128, 128, 128, 128])
    for bad, message in [(payload[:3], "probabilities"), (b"\x00" + payload[1:], "probabilities"),
                         (payload[:4], "flags"), (payload + b"\x01", "flags")]:
        with pytest.raises(DamagedData, match=message):
            decompress_keep(bad, classes)
    with pytest.raises(DualcodecError, match="keep probabilities"):
        compress_keep(kept, classes, [0, 128, 128, 128])
