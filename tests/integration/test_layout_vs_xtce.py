"""Our own science layout table against the official XTCE through space-packet-parser."""

from __future__ import annotations

import json

import numpy as np
import pytest
import space_packet_parser as spp

from idexdask.packets.fields import extract_fields
from idexdask.packets.framing import index_packets
from idexdask.packets.layout import (
    EVENT_HEADER_FIELDS,
    SCIENCE_APID,
    SCIENCE_HEADER_FIELDS,
)

from ..conftest import REAL_L0_FILES

SCIENCE_FILES = [f for f in REAL_L0_FILES if "2024" not in f.name and "2025" not in f.name]


def raw(value) -> int:
    """The encoded integer of a parsed parameter (enumerated ones carry a label)."""
    return int(getattr(value, "raw_value", value))


@pytest.fixture(scope="module")
def science_definition(l0_dir):
    return spp.load_xtce(l0_dir / "idex_science_packet_definition.xml")


@pytest.mark.parametrize("file", SCIENCE_FILES, ids=lambda f: f.name)
def test_every_header_field_agrees_with_xtce(file, science_definition):
    data = file.read_bytes()
    buffer = np.zeros(len(data) + 16, dtype=np.uint8)
    buffer[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    index = index_packets(buffer[: len(data)])
    science = index.apid == SCIENCE_APID
    starts, lengths = index.start[science], index.length[science]
    ours = extract_fields(buffer, starts, SCIENCE_HEADER_FIELDS)
    header_rows = np.flatnonzero(ours["idx__sci0type"] == 1)
    ours_header = extract_fields(buffer, starts[header_rows], EVENT_HEADER_FIELDS)

    compared = 0
    for row, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        packet = science_definition.parse_bytes(data[start : start + length])
        for field in SCIENCE_HEADER_FIELDS:
            assert raw(packet[field.name.upper()]) == int(ours[field.name][row]), field.name
            compared += 1
        if ours["idx__sci0type"][row] == 1:
            header_row = int(np.searchsorted(header_rows, row))
            for field in EVENT_HEADER_FIELDS:
                expected = raw(packet[field.name.upper()])
                assert expected == int(ours_header[field.name][header_row]), field.name
                compared += 1
        sync = int.from_bytes(data[start + length - 4 : start + length - 2], "big")
        crc = int.from_bytes(data[start + length - 2 : start + length], "big")
        assert raw(packet["IDX__SYNCSCI0PKT"]) == sync == 0x3333
        assert raw(packet["IDX__CRCSCI0PKT"]) == crc
    expected = len(starts) * len(SCIENCE_HEADER_FIELDS) + len(header_rows) * len(
        EVENT_HEADER_FIELDS
    )
    assert compared == expected and len(header_rows) > 0


def test_other_apids_decoded_through_xtce_or_counted(l0_dir):
    from idexdask import read_l0

    definitions = [
        l0_dir / "idex_housekeeping_packet_definition.xml",
        l0_dir / "idex_science_packet_definition.xml",
    ]
    plain = read_l0(l0_dir / "imap_idex_l0_raw_20231218_v001.pkts")
    full = read_l0(l0_dir / "imap_idex_l0_raw_20231218_v001.pkts", xtce=definitions)
    # the science events never depend on XTCE
    for name in ("TOF_High", "Ion_Grid", "idx__txhdrblocks"):
        np.testing.assert_array_equal(plain[name].values, full[name].values)
    assert json.loads(full.attrs["decoded_apid_counts"]) == {"1418": 3}
    # housekeeping APIDs are not described by the two shipped XTCE files
    assert json.loads(full.attrs["undecoded_apid_counts"]) == {
        "1376": 262,
        "1377": 10,
        "1413": 12,
        "1414": 25,
    }
    assert full.sizes["packet_1418"] == 3
    assert (full["pkt_apid"].values == 1418).all()
    messages = read_l0(l0_dir / "imap_idex_l0_raw_20250108_v001.pkts", xtce=definitions)
    assert messages.sizes["packet_1418"] == 28
    catalog = read_l0(l0_dir / "imap_idex_l0_raw_20241206_v001.pkts", xtce=definitions)
    assert catalog.sizes["packet_1419"] == 1


def test_bad_xtce_path_is_a_project_error(l0_dir, tmp_path):
    from idexdask import read_l0
    from idexdask.errors import XtceError

    bogus = tmp_path / "not.xml"
    bogus.write_text("<nope/>")
    with pytest.raises(XtceError):
        read_l0(l0_dir / "imap_idex_l0_raw_20250108_v001.pkts", xtce=bogus)
