"""Input sources: registration, detection, the factory's refusals, per-source defaults."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from idexdask.errors import InputError
from idexdask.sources import (
    L0Packets,
    L1aCdf,
    LecroyCaptures,
    Source,
    SourceDefaults,
    SourceFactory,
    sources,
)
from idexdask.sources.defaults import builtin_source_presets, resolve_preset, source_kind
from tests.conftest import REAL_L0_FILES


def test_every_source_is_registered_by_kind():
    assert Source.registry["l0"] is L0Packets
    assert Source.registry["cdf"] is L1aCdf
    assert Source.registry["trc"] is LecroyCaptures
    assert set(sources.kinds) >= {"l0", "cdf", "trc"}
    assert sources.by_kind("trc") is LecroyCaptures
    with pytest.raises(InputError, match="no source of kind 'nope'"):
        sources.by_kind("nope")


def test_a_second_source_of_a_kind_is_refused():
    with pytest.raises(TypeError, match="two sources of kind 'l0'"):

        class Clash(Source):  # noqa: F841 - defining it is the test
            kind = "l0"

    assert Source.registry["l0"] is L0Packets


def test_detection_of_real_inputs(l0_dir, trc_dir, tmp_path):
    for file in REAL_L0_FILES:
        assert sources.source_for(file) is L0Packets
    assert sources.source_for(trc_dir) is LecroyCaptures
    assert sources.source_for(trc_dir / "peridot_C1_00001.trc") is LecroyCaptures
    cdf = tmp_path / "x.cdf"
    cdf.write_bytes(b"\xcd\xf3\x00\x01")
    assert sources.source_for(cdf) is L1aCdf
    # telemetry under an unusual name is recognised by its first packet header
    renamed = tmp_path / "downlink.dat"
    shutil.copyfile(REAL_L0_FILES[0], renamed)
    assert sources.source_for(renamed) is L0Packets
    # a directory of telemetry is not itself an input: its files are
    found = sources.detect([l0_dir])
    assert [f.path.name for f in found] == [p.name for p in REAL_L0_FILES]
    assert all(f.source is L0Packets for f in found)  # the XTCE .xml and .txt are left out


def test_factory_refuses_what_no_source_reads(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not telemetry")
    with pytest.raises(InputError, match="no source reads"):
        sources.source_for(text)
    odd = tmp_path / "random.dat"
    odd.write_bytes(bytes(range(256)))  # first byte 0 but APID 1: no IDEX packet
    with pytest.raises(InputError, match="no source reads"):
        sources.detect([odd])
    with pytest.raises(InputError, match="input not found"):
        sources.detect([tmp_path / "missing.pkts"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no input files"):
        sources.detect([empty])


def test_factory_refuses_mixed_families_and_capture_files(l0_dir, trc_dir):
    with pytest.raises(InputError, match="mix"):
        sources.detect([l0_dir, trc_dir])
    with pytest.raises(InputError, match="as a directory"):
        sources.detect([trc_dir / "peridot_C1_00001.trc"])


class _AnyPkts(Source, register=False):
    """A test source that also claims ``.pkts`` files (ambiguous with L0)."""

    kind = "any"
    description = "anything ending .pkts"

    @classmethod
    def is_source_for(cls, path: Path) -> bool:
        return path.suffix == ".pkts"

    @classmethod
    def defaults(cls) -> SourceDefaults:
        return SourceDefaults("flight", "none")


def test_factory_refuses_an_input_two_sources_claim(tmp_path):
    assert "any" not in Source.registry  # register=False kept it out
    factory = SourceFactory({"l0": L0Packets, "any": _AnyPkts})
    file = tmp_path / "a.pkts"
    shutil.copyfile(REAL_L0_FILES[0], file)
    with pytest.raises(InputError, match=r"several sources claim.*l0.*any"):
        factory.source_for(file)
    with pytest.raises(InputError, match="several sources claim"):
        factory.detect([tmp_path])  # in a directory, too
    # the same file with only one of them registered is fine
    assert SourceFactory({"any": _AnyPkts}).source_for(file) is _AnyPkts


def test_source_defaults_are_the_builtin_presets():
    assert L0Packets.defaults().calibration_preset == "flight"
    assert L1aCdf.defaults().calibration_preset == "flight"
    assert LecroyCaptures.defaults().calibration_preset == "lab_peridot"
    assert "settings" in LecroyCaptures.defaults().channel_map
    assert builtin_source_presets() == {"idex_l0": "flight", "lecroy_trc": "lab_peridot"}
    # a dataset that lost its attributes is recognised by what its source writes
    assert source_kind({}, ["vertical_gain"]) == LecroyCaptures.source_kind
    assert resolve_preset({"preset": "auto"}, {}, ["vertical_gain"]) == "lab_peridot"
