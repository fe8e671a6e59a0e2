"""``/noise?event=N&channel=TOF_High``: baseline histogram, Welch PSD, autocorrelation.

Everything is computed by :func:`idexdask.analysis.noise.noise_diagnostics` on
the one event row; the page only draws it.
"""

from __future__ import annotations

import logging

import holoviews as hv
import numpy as np
import panel as pn
import param

from idexdask.analysis.noise import noise_diagnostics
from idexdask.dashboard.common import error_pane, guarded, hv_pane, page_shell, query_int, query_str
from idexdask.dashboard.pages.event import event_controls, sync_event_to_url
from idexdask.dashboard.state import ReviewState, ServerContext

__all__ = ["noise_page"]

logger = logging.getLogger(__name__)


class NoiseView(param.Parameterized):
    """The baseline window, µs from the trigger."""

    start_us = param.Number(default=-7.0)
    stop_us = param.Number(default=-5.0)


def noise_page(context: ServerContext) -> pn.Column:
    """Build the ``/noise`` page of one session."""
    data = context.data
    index, message = query_int("event", 0)
    state = ReviewState(context)
    state.event = max(index, 0)
    names = data.waveform_names()
    asked = query_str("channel", names[0] if names else "TOF_High")
    if asked not in names:
        message = (f"channel {asked!r} is not a waveform of this store; "
                   f"choose one of {', '.join(names)}")
        asked = names[0] if names else asked
    state.channel = asked
    window = (context.config.get("analysis", {}).get("quality", {}).get("noise", {})
              .get("window_us", (-7.0, -5.0)))
    view = NoiseView(start_us=float(window[0]), stop_us=float(window[1]))
    sync_event_to_url(state)

    def channel_to_url(event):
        if pn.state.location is not None:
            pn.state.location.update_query(channel=event.new)
    state.param.watch(channel_to_url, "channel")

    @guarded
    def diagnostics(event, channel, start, stop):
        if not start < stop:
            return error_pane(f"baseline window: start {start} must be below stop {stop} µs")
        row = data.event(event).dataset
        result = noise_diagnostics(row, channel, window=(start, stop)).isel(epoch=0)
        unit = row[channel].attrs.get("units", "")
        lower = result["bin_lower"].values
        upper = result["bin_upper"].values
        counts = result["histogram"].values
        model = result["histogram_model"].values
        centers = 0.5 * (lower + upper)
        hist = hv.Histogram((np.append(lower, upper[-1]), counts),
                            kdims=[hv.Dimension("baseline", unit=unit)], vdims=["samples"])
        fit = hv.Curve((centers, model), hv.Dimension("baseline", unit=unit), "samples").opts(
            color="red", line_width=2)

        def pm(name):
            return f"{float(result[name]):.4g} ± {float(result[name + '_err']):.2g}"
        text = (f"<b>Gaussian fit</b> ({'ok' if bool(result['fit_ok']) else 'failed'}): "
                f"mean {pm('gauss_mean')} {unit}, sigma {pm('gauss_sigma')} {unit}, "
                f"area {pm('gauss_amplitude')} samples, reduced χ² "
                f"{float(result['reduced_chi2']):.3g}; robust sigma "
                f"{float(result['robust_sigma']):.4g} {unit} over "
                f"{int(result['n_samples'])} samples in [{start}, {stop}) µs")
        frequency = result["frequency"].values
        psd = result["psd"].values
        keep = frequency > 0
        spectrum = hv.Curve((frequency[keep], psd[keep]), hv.Dimension("frequency", unit="MHz"),
                            hv.Dimension("psd", label=f"PSD ({unit}²/MHz)")).opts(
            logx=True, logy=True, title="Welch power spectral density", responsive=True,
            height=300)
        lag = result["lag"].values
        acf = hv.Curve((lag, result["autocorrelation"].values), hv.Dimension("lag", unit="µs"),
                       "autocorrelation").opts(title="autocorrelation", responsive=True,
                                               height=300)
        return pn.Column(
            pn.pane.HTML(text, css_classes=["idx-noise-fit"]),
            pn.Row(hv_pane((hist * fit).opts(title=f"{channel} baseline histogram",
                                                        responsive=True, height=300),
                                     sizing_mode="stretch_width"),
                   hv_pane(spectrum, sizing_mode="stretch_width"),
                   hv_pane(acf, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width", css_classes=["idx-noise-plots"]),
            sizing_mode="stretch_width")

    controls = pn.Row(
        pn.widgets.Select.from_param(state.param.channel, options=names, name="channel")
        if names else pn.pane.HTML("no waveforms"),
        pn.widgets.FloatInput.from_param(view.param.start_us, name="baseline start (µs)",
                                         width=150),
        pn.widgets.FloatInput.from_param(view.param.stop_us, name="baseline stop (µs)",
                                         width=150),
    )
    body = pn.Column(
        event_controls(state, message), controls,
        pn.panel(pn.bind(diagnostics, state.param.event, state.param.channel,
                         view.param.start_us, view.param.stop_us)),
        sizing_mode="stretch_width",
    )
    return page_shell("/noise", "Noise", str(data.path), body, event=state.event)
