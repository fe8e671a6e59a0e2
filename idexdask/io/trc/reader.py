"""Reading a directory (or files) of captures into one event dataset, in steps."""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.adccodes import (
    CODE_DTYPE,
    CODE_FILL,
    RECORDED_CODES_KEY,
    CodeScale,
    RecordedCodes,
    code_encoding,
)
from idexdask.compat.lazy import lazy_variable, outer_index
from idexdask.errors import TraceFileError
from idexdask.io.trc.channels import (
    channel_map,
    channel_variable_name,
    default_polarity,
    parse_trc_filename,
)
from idexdask.io.trc.format import TrcHeader, read_codes_into, read_trc_header, volts_into
from idexdask.timeaxis import AxisTerms, uniform_axis_variable

__all__ = ["read_trc"]

_log = get_logger(__name__)


def tt2000(stamp: _dt.datetime | None, extra_ns: int) -> int:
    """TT2000 ns of a naive datetime taken as UTC (cdflib handles leap seconds)."""
    import cdflib

    if stamp is None:
        return np.iinfo(np.int64).min  # CDF fill value
    us = stamp.microsecond
    value = cdflib.cdfepoch.compute_tt2000(
        [stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second,
         us // 1000, us % 1000, extra_ns]
    )
    return int(np.asarray(value).ravel()[0])


def collect_files(
    path: Path | tuple[Path, ...], errors: str
) -> tuple[Path, dict[int, dict[int, TrcHeader]], dict[int, list[str]]]:
    """The checked headers of the read's files, by impact and channel (the samples
    are read later, each into its place in the read's arrays)."""
    if isinstance(path, tuple):  # given files (one impact of a campaign), not a directory
        if not path:
            raise TraceFileError("no .trc files given")
        # the files' names as strings: a pack's 64 paths, not ~4 Path objects each
        directory, files = path[0].parent, sorted(path, key=str)
        folder = os.path.dirname(str(path[0]))
        if any(os.path.dirname(str(f)) != folder for f in files):
            raise TraceFileError(f"files of one read must share a directory: {files}")
    elif path.is_dir():
        directory = path
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".trc" and p.is_file())
    elif path.is_file():
        directory, files = path.parent, [path]
    else:
        raise TraceFileError(f"{path}: no such file or directory")
    impacts: dict[int, dict[int, TrcHeader]] = {}
    bad: dict[int, list[str]] = {}
    for f in files:
        parsed = parse_trc_filename(os.path.basename(str(f)))
        if parsed is None:
            msg = f"{f}: name does not match <...>C<channel><sep>...<impact>.trc"
            if errors == "raise" and (isinstance(path, tuple) or path.is_file()):
                raise TraceFileError(msg)
            _log.warning("%s; skipped", msg)
            continue
        channel, impact = parsed
        try:
            header = read_trc_header(f)
        except TraceFileError:
            if errors == "raise":
                raise
            _log.warning("skipping bad trace file %s", f, exc_info=True)
            bad.setdefault(impact, []).append(f.name)
            continue
        if channel in impacts.get(impact, {}):
            raise TraceFileError(
                f"{f}: channel {channel} of impact {impact} also in "
                f"{impacts[impact][channel].path}"
            )
        impacts.setdefault(impact, {})[channel] = header
    if not impacts:
        raise TraceFileError(f"{path}: no readable .trc traces")
    return directory, impacts, bad


def read_trc(
    path: str | Path | Sequence[str | Path],
    *,
    settings: str | Path | Mapping[int, Any] | None = None,
    errors: Literal["raise", "skip"] = "raise",
    polarity: Mapping[str, int] | None = None,
    keep_codes: bool = False,
    lazy_volts: Collection[str] = (),
) -> xr.Dataset:
    """Read LeCroy captures (one file or a directory of impacts) into an event dataset.

    Parameters
    ----------
    path : str, Path or sequence of them
        One ``.trc`` file, a directory of them, or files of one directory (the
        settings file is looked for beside them).  Files are grouped into impacts
        by :data:`TRC_NAME_PATTERN`.
    settings : str, Path or mapping, optional
        Channel names: a settings text file (line *n* names C\\ *n*) or a mapping
        ``{1: "QD 1", ...}`` whose values may also be ``{"name": ..., "polarity": ±1}``.
        Default: the ``*settings*.txt`` beside the traces; channels left unnamed are
        called ``C<n>``.
    errors : {"raise", "skip"}
        What a bad file (truncated, not LeCroy, ...) does: raise
        :class:`~idexdask.errors.TraceFileError`, or be logged and skipped (its
        impact keeps its other channels; the missing one is NaN).
    polarity : mapping of str to int, optional
        ``signal_polarity`` per variable name (±1), overriding the defaults
        (``channels.polarity`` of ``configs/scope.yaml``: -1 for ``TOF_*`` and the
        lab's ``QD_1``/``QD_2``; +1 for any other channel) and the settings.
    keep_codes : bool
        Keep each waveform's recorded codes beside its volts
        (:class:`~idexdask.adccodes.RecordedCodes` in its ``encoding``; the volts
        are then read-only), so that a store writes them as they are: the
        campaign pipeline's reads.  Half the waveforms' bytes again in memory.
    lazy_volts : collection of str
        Waveforms (variable names) whose volts are decoded only when first
        indexed, once (the same values), for readers that take their recorded
        codes instead (:func:`idexdask.adccodes.recorded_codes`: the store, the
        pickup): the read writes no float32 volts for them.  Needs
        ``keep_codes``; a channel whose codes cannot stand for its volts (gains
        differ between impacts, the fill code recorded) is decoded in the read.

    Returns
    -------
    xarray.Dataset
        Dimensions ``epoch`` (one per impact, sorted by impact number), ``channel``,
        and the time index dimension(s).  Variables: ``impact_number`` (epoch,),
        one float32 waveform per channel (V, attrs ``time_variable``,
        ``signal_polarity``, ``channel``, ``units``...), the float64 µs time axes,
        ``channel_missing`` (epoch,) bool, ``channel_present``, ``channel_clipped``,
        ``vertical_gain`` (V/count), ``vertical_offset`` (V) and
        ``channel_time_offset`` (µs) on (epoch, channel).

    Raises
    ------
    TraceFileError
        Bad input (see ``errors``), no traces, or duplicate channels of an impact.
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
    if lazy_volts and not keep_codes:
        raise ValueError("lazy_volts needs keep_codes: the volts are decoded from the codes")
    if isinstance(path, str | Path):
        path = Path(path)
        directory, impacts, bad = collect_files(path, errors)
    else:
        directory, impacts, bad = collect_files(tuple(Path(p) for p in path), errors)
        path = directory
    layout = _layout(impacts, settings, directory)
    arrays = _impact_arrays(impacts, layout, errors, keep_codes, frozenset(lazy_volts))
    for number, names in arrays.unreadable.items():
        bad.setdefault(number, []).extend(names)
    data_vars = {
        **_time_variables(layout, arrays),
        **_waveform_variables(layout, arrays, polarity),
        **_channel_variables(layout, arrays),
    }
    coords = {
        "epoch": ("epoch", arrays.epoch, {"units": "ns", "long_name": "TT2000 of the trigger",
                                          "time_scale": "TT2000 (scope clock taken as UTC)"}),
        "channel": ("channel", [layout.var_of[c] for c in layout.channels]),
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update({
        "source": "lecroy_trc",
        "source_kind": "lecroy_trc",  # picks the per-source defaults (calibration preset)
        "instrument_name": ", ".join(sorted(arrays.instruments)),
        "source_path": str(path),
        "settings_source": layout.settings_source or "",
        "channel_map": ", ".join(f"C{c}={layout.var_of[c]}" for c in layout.channels),
        "skipped_files": ", ".join(f for v in bad.values() for f in v),
    })
    _log.info("read %d impacts x %d channels from %s", len(layout.numbers),
              len(layout.channels), path)
    return ds


@dataclass
class _Layout:
    """How a read's files map to variables: channels, names, time axes."""

    numbers: list[int]  #: impact numbers, sorted (the epoch order)
    channels: list[int]  #: scope channels present in some impact, sorted
    var_of: dict[int, str]  #: variable name per channel
    names: dict[int, str]  #: channel names of the settings (long names)
    polarity_of: dict[int, int]  #: polarities given by the settings
    settings_source: str | None
    length_of: dict[int, int]  #: samples per channel (its longest record)
    axis_of: dict[int, str]  #: time axis of each channel
    axis_ref: dict[str, int]  #: reference channel of each axis
    ref: int  #: the reference channel of the impact's time stamp (first TOF channel)


def _layout(
    impacts: dict[int, dict[int, TrcHeader]],
    settings: str | Path | Mapping[int, Any] | None,
    directory: Path,
) -> _Layout:
    """Step 1: channel names and time axes.  Channels sampled like the first TOF
    channel share ``high_sample_rate``; the others share ``low_sample_rate`` when
    alike, else get an axis each."""
    trace_names = [os.path.basename(h.path) for ch in impacts.values() for h in ch.values()]
    names, pol_override, settings_source = channel_map(settings, directory, trace_names)
    channels = sorted({c for ch in impacts.values() for c in ch} | set(names))
    if settings is None and not names:
        _log.info("%s: no settings file; channels named C<n>", directory)
    var_of = {c: channel_variable_name(names.get(c, f"C{c}")) for c in channels}
    if len(set(var_of.values())) != len(var_of):
        raise TraceFileError(f"{directory}: channel names collide: {var_of}")
    # keep channels only if some impact has them (a settings file may name unused ones)
    present = [c for c in channels if any(c in ch for ch in impacts.values())]
    var_of = {c: var_of[c] for c in present}
    numbers = sorted(impacts)

    def signature(c: int) -> tuple[float, int]:  # (interval of its first impact, length)
        lengths = [impacts[i][c].wave_array_count for i in numbers if c in impacts[i]]
        first = next(impacts[i][c] for i in numbers if c in impacts[i])
        return (first.horiz_interval, max(lengths))

    def same(a: tuple[float, int], b: tuple[float, int]) -> bool:
        return a[1] == b[1] and abs(a[0] - b[0]) <= 1e-6 * abs(b[0])

    sigs = {c: signature(c) for c in present}
    order = ("TOF_High", "TOF_Mid", "TOF_Low")
    tof = sorted((c for c in present if var_of[c] in order), key=lambda c: order.index(var_of[c]))
    ref = tof[0] if tof else present[0]
    others = [c for c in present if not same(sigs[c], sigs[ref])]
    axis_of: dict[int, str] = {}
    for c in present:
        if c not in others:
            axis_of[c] = "high_sample_rate"
        elif all(same(sigs[o], sigs[others[0]]) for o in others):
            axis_of[c] = "low_sample_rate"
        else:
            axis_of[c] = var_of[c]
    axis_ref = {axis_of[ref]: ref}
    for c in present:
        axis_ref.setdefault(axis_of[c], c)
    return _Layout(numbers=numbers, channels=present, var_of=var_of, names=names,
                   polarity_of=pol_override, settings_source=settings_source,
                   length_of={c: sigs[c][1] for c in present}, axis_of=axis_of,
                   axis_ref=axis_ref, ref=ref)


@dataclass
class _ImpactArrays:
    """Per impact (and channel) values of a read, filled in place by :func:`_impact_arrays`."""

    #: (impacts, samples) float32 V per channel; None: decoded later (``lazy_volts``)
    waves: dict[int, np.ndarray | None]
    codes: dict[int, np.ndarray] | None  #: their int16 codes (CODE_FILL where NaN), if kept
    present: np.ndarray  #: (impacts, channels) bool
    count: np.ndarray  #: (impacts, channels) samples read (0: missing)
    clipped: np.ndarray
    gain: np.ndarray  #: V/count
    offset: np.ndarray  #: V
    time_offset: np.ndarray  #: µs, channel's first sample minus its axis's
    files: np.ndarray  #: file names, object
    epoch: np.ndarray  #: TT2000 of the trigger
    trigger_iso: list[str]
    axis_start: dict[str, np.ndarray]  #: s, HORIZ_OFFSET of the axis's reference
    axis_step: dict[str, np.ndarray]  #: s
    axis_count: dict[str, np.ndarray]
    fill_code_seen: set[int] = field(default_factory=set)  #: channels with a code = CODE_FILL
    instruments: set[str] = field(default_factory=set)
    unreadable: dict[int, list[str]] = field(default_factory=dict)  #: by impact, skipped files


def _impact_arrays(
    impacts: dict[int, dict[int, TrcHeader]], layout: _Layout, errors: str = "raise",
    keep_codes: bool = False, lazy_volts: frozenset[str] = frozenset(),
) -> _ImpactArrays:
    """Step 2: every impact's volts and header values.

    Each file's codes are read into one scratch reused for every file (warm in
    the cache, no fresh memory per file) and converted in one pass into their
    row of the read's float32 array: one copy from the page cache, one pass.
    A file that cannot be read then (it shrank since its header was read) raises,
    or with ``errors="skip"`` leaves its channel missing (NaN).  ``keep_codes``:
    each file's codes are read into their row of an int16 array kept beside the
    volts instead (``CODE_FILL`` where a volt is NaN), the same one copy; the
    channels of ``lazy_volts`` get no volts here (:func:`_waveform_variables`).
    """
    n_ev, shape = len(layout.numbers), (len(layout.numbers), len(layout.channels))
    out = _ImpactArrays(
        # written in place below; NaN only where no sample is (missing channel, padding)
        waves={c: (None if keep_codes and layout.var_of[c] in lazy_volts
                   else np.empty((n_ev, layout.length_of[c]), np.float32))
               for c in layout.channels},
        codes=({c: np.empty((n_ev, layout.length_of[c]), CODE_DTYPE) for c in layout.channels}
               if keep_codes else None),
        present=np.zeros(shape, bool), count=np.zeros(shape, np.int64),
        clipped=np.zeros(shape, bool),
        gain=np.full(shape, np.nan), offset=np.full(shape, np.nan),
        time_offset=np.full(shape, np.nan), files=np.full(shape, "", dtype=object),
        epoch=np.full(n_ev, np.iinfo(np.int64).min, dtype=np.int64), trigger_iso=[""] * n_ev,
        axis_start={a: np.full(n_ev, np.nan) for a in layout.axis_ref},
        axis_step={a: np.full(n_ev, np.nan) for a in layout.axis_ref},
        axis_count={a: np.zeros(n_ev, np.int64) for a in layout.axis_ref},
    )
    scratch = np.empty(max((h.wave_array_count * h.dtype.itemsize
                            for chans in impacts.values() for h in chans.values()), default=0),
                       np.uint8)
    for e, number in enumerate(layout.numbers):
        chans = impacts[number]
        _axis_terms_of(out, e, chans, layout)
        for k, c in enumerate(layout.channels):
            if c in chans:
                try:
                    _channel_of(out, e, k, c, chans[c], layout, scratch)
                    continue
                except TraceFileError:
                    if errors == "raise":
                        raise
                    _log.warning("skipping bad trace file %s", chans[c].path, exc_info=True)
                    out.unreadable.setdefault(number, []).append(Path(chans[c].path).name)
            if out.waves[c] is not None:
                out.waves[c][e] = np.nan
            if out.codes is not None:
                out.codes[c][e] = CODE_FILL
        h0 = chans[layout.ref] if layout.ref in chans else next(iter(chans.values()))
        out.epoch[e] = tt2000(h0.trigger_time, h0.trigger_time_ns)
        out.trigger_iso[e] = h0.trigger_time.isoformat() if h0.trigger_time else ""
        stamps = {h.trigger_time for h in chans.values()}
        if len(stamps) > 1:
            _log.warning("impact %d: channels carry different trigger times %s", number, stamps)
    return out


def _axis_terms_of(
    out: _ImpactArrays, e: int, chans: dict[int, TrcHeader], layout: _Layout
) -> None:
    """Axis times of impact ``e`` from the axis's reference channel, else any on the axis."""
    for axis in layout.axis_ref:
        on_axis = [c for c in layout.channels if layout.axis_of[c] == axis and c in chans]
        if not on_axis:
            continue
        c0 = layout.axis_ref[axis] if layout.axis_ref[axis] in chans else on_axis[0]
        h = chans[c0]
        out.axis_start[axis][e] = h.horiz_offset
        out.axis_step[axis][e] = h.horiz_interval
        out.axis_count[axis][e] = h.wave_array_count


def _channel_of(
    out: _ImpactArrays, e: int, k: int, c: int, h: TrcHeader, layout: _Layout,
    scratch: np.ndarray,
) -> None:
    """Channel ``c`` (column ``k``) of impact ``e``: its codes read into ``scratch``,
    then V = gain * code - offset in float64, rounded once to float32, written in
    place in the same pass that finds the extreme codes (clipping) and the fill code.
    A channel without volts (``lazy_volts``): the extreme codes alone, from its
    kept codes."""
    n = h.wave_array_count
    kept = out.codes[c][e] if out.codes is not None else None
    waves = out.waves[c]
    if n:
        if kept is not None and h.dtype.itemsize == CODE_DTYPE.itemsize:
            codes = read_codes_into(h, kept.view(np.uint8))  # read into its kept row
        else:
            codes = read_codes_into(h, scratch)
            if kept is not None:
                kept[:n] = codes
        if waves is None:  # two SIMD reductions over the row still in cache
            lo, hi = int(codes.min()), int(codes.max())
            fill_seen = hi >= CODE_FILL  # no code is above it
        else:
            lo, hi, fill_seen = volts_into(codes, h.vertical_gain, h.vertical_offset,
                                            CODE_FILL, waves[e, :n])
        low, high = (-128, 127) if h.comm_type == 0 else (-32768, 32752)
        out.clipped[e, k] = bool(hi >= high or lo <= low)
        if fill_seen:
            out.fill_code_seen.add(c)
    out.present[e, k] = True
    out.count[e, k] = n
    if waves is not None:
        waves[e, n:] = np.nan
    if kept is not None:
        kept[n:] = CODE_FILL
    out.gain[e, k], out.offset[e, k] = h.vertical_gain, h.vertical_offset
    out.time_offset[e, k] = (h.horiz_offset * 1e6
                             - out.axis_start[layout.axis_of[c]][e] * 1e6)
    out.files[e, k] = os.path.basename(h.path)
    out.instruments.add(h.instrument_name)


def _time_variables(layout: _Layout, arrays: _ImpactArrays) -> dict[str, Any]:
    """Step 3: each axis by formula, (HORIZ_OFFSET + i * HORIZ_INTERVAL) * 1e6 µs, and its terms."""
    data_vars: dict[str, Any] = {}
    for axis, ref in layout.axis_ref.items():
        tname, dim = f"time_{axis}", f"time_{axis}_index"
        terms = AxisTerms.for_axis(tname)
        length = max(layout.length_of[c] for c in layout.channels if layout.axis_of[c] == axis)
        start, step, count = arrays.axis_start[axis], arrays.axis_step[axis], \
            arrays.axis_count[axis]
        data_vars[tname] = uniform_axis_variable(
            ("epoch", dim), start, step, count, length, scale=1e6, terms=terms, attrs={
                "units": "us",
                "long_name": "time from the trigger of the axis's reference channel",
                "reference_channel": layout.var_of[ref],
            })
        data_vars[terms.start] = (("epoch",), start, {
            "units": "s", "long_name": f"{tname}: HORIZ_OFFSET of its reference channel"})
        data_vars[terms.step] = (("epoch",), step, {
            "units": "s", "long_name": f"{tname}: HORIZ_INTERVAL of its reference channel"})
        data_vars[terms.count] = (("epoch",), count, {
            "units": "1", "long_name": f"{tname}: samples recorded (NaN times beyond)"})
    return data_vars


def _waveform_variables(
    layout: _Layout, arrays: _ImpactArrays, polarity: Mapping[str, int] | None
) -> dict[str, xr.Variable]:
    """Step 4: one float32 waveform per channel, with its polarity and ADC scale."""
    data_vars: dict[str, xr.Variable] = {}
    pol_table = default_polarity()
    for k, c in enumerate(layout.channels):
        var = layout.var_of[c]
        pol = layout.polarity_of.get(c, pol_table.get(var, 1))
        if polarity and var in polarity:
            pol = int(polarity[var])
        here = arrays.present[:, k]
        g, o = arrays.gain[here, k], arrays.offset[here, k]
        attrs = {
            "units": "V",
            "long_name": layout.names.get(c, f"C{c}"),
            "channel": f"C{c}",
            "time_variable": f"time_{layout.axis_of[c]}",
            "signal_polarity": pol,
            "vertical_gain": float(g[0]) if np.all(g == g[0]) else [float(x) for x in g],
            "vertical_offset": float(o[0]) if np.all(o == o[0]) else [float(x) for x in o],
            "source_files": [str(x) for x in arrays.files[:, k]],
        }
        dims = ("epoch", f"time_{layout.axis_of[c]}_index")
        coded = bool(g.size and np.all(g == g[0]) and np.all(o == o[0])
                     and c not in arrays.fill_code_seen)
        if not coded and arrays.waves[c] is None:  # lazy_volts: decoded here after all
            arrays.waves[c] = _decoded_volts(arrays.codes[c], arrays.count[:, k],
                                             arrays.gain[:, k], arrays.offset[:, k])
        if not coded:
            data_vars[var] = xr.Variable(dims, arrays.waves[c], attrs)
            continue
        # one gain and offset: the store keeps the codes (idexdask.adccodes)
        encoding = code_encoding(float(g[0]), -float(o[0]))
        if arrays.codes is None:
            data_vars[var] = xr.Variable(dims, arrays.waves[c], attrs, encoding)
            continue
        recorded = RecordedCodes(arrays.waves[c], arrays.codes[c],
                                 CodeScale(float(g[0]), -float(o[0]), CODE_FILL))
        encoding[RECORDED_CODES_KEY] = recorded
        if arrays.waves[c] is None:
            data_vars[var] = lazy_variable(dims, _RecordedVolts(
                recorded, arrays.count[:, k], float(g[0]), float(o[0])),
                attrs=attrs, encoding=encoding)
        else:
            data_vars[var] = xr.Variable(dims, arrays.waves[c], attrs, encoding)
    return data_vars


def _decoded_volts(codes: np.ndarray, count: np.ndarray, gain: np.ndarray,
                   offset: np.ndarray) -> np.ndarray:
    """float32 volts of kept codes, as the read writes them: each row's first
    ``count`` codes through :func:`volts_into` with its gain and offset, NaN
    beyond (and for a missing channel, whose count is 0)."""
    volts = np.empty(codes.shape, np.float32)
    for e, n in enumerate(count.tolist()):
        if n:
            volts_into(codes[e, :n], float(gain[e]), float(offset[e]), CODE_FILL,
                       volts[e, :n])
        volts[e, n:] = np.nan
    return volts


class _RecordedVolts:
    """The volts of a channel read with ``lazy_volts``, decoded when first indexed.

    A source of :func:`~idexdask.compat.lazy.lazy_variable`: the whole array is
    decoded once (:func:`_decoded_volts`, the read's own pass, so the values are
    those an eager read gives) and attached to the channel's
    :class:`~idexdask.adccodes.RecordedCodes`, so that
    :meth:`~idexdask.adccodes.RecordedCodes.codes_of` knows them; every
    selection is a view of them.  :func:`idexdask.adccodes.recorded_codes`
    gives the codes of a selection without decoding.  Pickled, it carries the
    codes (decoded again where it lands, no longer tied to the variable's
    ``RecordedCodes``, which stays in this process).
    """

    def __init__(self, recorded: RecordedCodes, count: np.ndarray, gain: float,
                 offset: float) -> None:
        self.recorded = recorded
        self.count = np.asarray(count, np.int64)
        self.gain, self.offset = float(gain), float(offset)
        self.shape = tuple(recorded.codes.shape)
        self.dtype = np.dtype(np.float32)
        self._lock = threading.Lock()

    def volts(self) -> np.ndarray:
        """The whole array's volts (read-only), decoded on the first call."""
        with self._lock:
            if self.recorded.volts is None:
                gain = np.full(self.count.size, self.gain)
                offset = np.full(self.count.size, self.offset)
                self.recorded.attach(_decoded_volts(self.recorded.codes, self.count, gain,
                                                    offset))
            return self.recorded.volts

    def compute(self, key: tuple) -> np.ndarray:
        """Volts at the outer-indexing ``key``."""
        return outer_index(self.volts(), key)

    def __deepcopy__(self, memo: dict) -> _RecordedVolts:
        return self  # the codes are never written; the volts are read-only

    def __reduce__(self) -> tuple:
        # the codes themselves (a RecordedCodes pickles empty: see its docstring)
        return (_restored_volts, (self.recorded.codes, self.recorded.scale, self.count,
                                  self.gain, self.offset))


def _restored_volts(codes: np.ndarray, scale: CodeScale, count: np.ndarray, gain: float,
                    offset: float) -> _RecordedVolts:
    """A pickled :class:`_RecordedVolts`, with codes of its own."""
    return _RecordedVolts(RecordedCodes(None, codes, scale), count, gain, offset)


def _channel_variables(layout: _Layout, arrays: _ImpactArrays) -> dict[str, Any]:
    """Step 5: per impact and channel: presence, clipping, gain, offset, files."""
    present = arrays.present
    return {
        "impact_number": (("epoch",), np.asarray(layout.numbers, dtype=np.int64),
                          {"long_name": "trailing number of the trace file names"}),
        "channel_missing": (("epoch",), ~present.all(axis=1),
                            {"long_name": "some channel of this impact is missing (NaN)"}),
        "channel_present": (("epoch", "channel"), present),
        "channel_clipped": (("epoch", "channel"), arrays.clipped,
                            {"long_name": "ADC reached full scale"}),
        "vertical_gain": (("epoch", "channel"), arrays.gain, {"units": "V/count"}),
        "vertical_offset": (("epoch", "channel"), arrays.offset, {"units": "V"}),
        "channel_time_offset": (("epoch", "channel"), arrays.time_offset, {
            "units": "us",
            "long_name": "first-sample time of the channel minus that of its time axis",
        }),
        "source_file": (("epoch", "channel"), arrays.files.astype(str)),
        "trigger_time": (("epoch",), np.asarray(arrays.trigger_iso, dtype=str),
                         {"long_name": "scope clock at the trigger (ISO 8601)"}),
    }
