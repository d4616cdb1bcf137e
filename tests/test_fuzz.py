"""Damaged dualcodec files: every mutant decodes (concealed, one warning) or is refused in one
line, with no traceback, no hang and no partial output. A sample here; the 500-mutant run
is ``python experiments/fuzz_decode.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import fuzz_decode  # noqa: E402


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    return fuzz_decode.make_victim(tmp_path_factory.mktemp("fuzz"))


def test_the_mutants_reach_every_region(victim):
    from dualcodec.container import ContainerReader
    from dualcodec.sidestream import SideMode

    path, _ = victim
    modes = [side.mode for side in ContainerReader(path).side_frames()]
    assert modes == [SideMode.NEW, SideMode.KEEP, SideMode.KEEP, SideMode.KEEP] * 3  # GOP 4: both payloads
    spans = fuzz_decode.regions(path)
    assert all(spans[r] for r in fuzz_decode.REGIONS if r != "other"), spans  # header, base, side, index
    names = [name for name, _ in fuzz_decode.mutants(path, 36, seed=0)]
    for kind in fuzz_decode.KINDS:
        for region in ("header", "base", "side", "index"):
            assert any(n.startswith(f"{kind} {region} ") for n in names), (kind, region)


@pytest.mark.slow
def test_a_sample_of_mutants_decodes_or_is_refused_cleanly(victim):
    path, model = victim
    report = fuzz_decode.fuzz(path, model, count=120, seed=7)
    assert report.mutants == 120
    assert report.failures == [], report.failures[:3]
    assert report.decoded > 0 and report.refused > 0  # both ends are exercised
