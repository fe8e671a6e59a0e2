"""The manifest's unit records: one dataclass, written and read back as JSON."""

from __future__ import annotations

import json

import pytest

from idexdask.pipeline.manifest import Manifest, UnitRecord
from idexdask.pipeline.runner import _is_done
from idexdask.pipeline.tasks import PackResult
from idexdask.sources import Unit


def _ran() -> UnitRecord:
    return UnitRecord(
        uid="/d/a.pkts@0-100", status="done", input="/d/a.pkts", input_index=2,
        region=(512, 530), n_events=18, input_hash="ab" * 16, config_hash="c" * 24,
        reason="", run_id="r1", time="2026-12-07T07:00:00+00:00", elapsed_s=0.25,
        task_units=3, worker="host:12", attrs={"packets": 40, "source": "a.pkts"},
        overrides_hash="",
    )


def test_round_trip_through_the_journal(tmp_path):
    ran = _ran()
    failed = UnitRecord(uid="/d/b.pkts@plan", status="failed", input="/d/b.pkts",
                        input_index=3, region=(0, 0), n_events=0, input_hash="",
                        config_hash="c" * 24, reason="not IDEX L0 telemetry", run_id="r1",
                        time="2026-12-07T07:00:00+00:00")
    manifest = Manifest(tmp_path)
    manifest.extend([ran.to_json(), failed.to_json()])
    back = list(manifest.records())
    assert [UnitRecord.from_json(r) for r in back] == [ran, failed]
    assert back[0]["record"] == "unit" and back[0]["region"] == [512, 530]
    # a unit that never ran has no run fields in the journal (not nulls)
    assert {"elapsed_s", "worker", "attrs", "task_units", "overrides_hash"}.isdisjoint(back[1])
    assert manifest.latest_units()["/d/a.pkts@0-100"] == json.loads(json.dumps(ran.to_json()))


def test_from_json_ignores_unknown_keys_and_needs_the_required_ones():
    data = {**_ran().to_json(), "added_later": 1}
    assert UnitRecord.from_json(data) == _ran()
    del data["input_hash"]
    with pytest.raises(TypeError):
        UnitRecord.from_json(data)


def test_done_means_same_digests_and_rows():
    ran = _ran()
    unit = Unit(uid=ran.uid, kind="l0", path=ran.input, input_index=2, n_events=18,
                input_hash=ran.input_hash, region=(512, 530))
    assert ran.is_done(unit.input_hash, unit.region, ran.config_hash)
    assert _is_done(ran.to_json(), unit, ran.config_hash)
    assert not _is_done(ran.to_json(), unit, "d" * 24)  # another configuration
    moved = Unit(**{**unit.__dict__, "region": (0, 18)})
    assert not _is_done(ran.to_json(), moved, ran.config_hash)
    changed = Unit(**{**unit.__dict__, "input_hash": "cd" * 16})
    assert not _is_done(ran.to_json(), changed, ran.config_hash)
    assert not _is_done({**ran.to_json(), "status": "failed"}, unit, ran.config_hash)
    assert not _is_done({"record": "unit", "uid": ran.uid}, unit, ran.config_hash)  # unreadable
    assert not _is_done(None, unit, ran.config_hash)


def test_a_failed_task_fails_every_unit_of_its_pack():
    pack = tuple(Unit(uid=f"u{i}", kind="l0", path="f", input_index=0, n_events=1,
                      input_hash="") for i in range(3))
    result = PackResult.failed(pack, "KilledWorker: gone")
    assert result.status == {"u0": "failed", "u1": "failed", "u2": "failed"}
    assert set(result.reason.values()) == {"KilledWorker: gone"}
    assert result.worker == "" and result.attrs == {}
