"""Evidence for the quality-gate thresholds of monitoring.signals.pipeline, on the real challenge2015 data.

Each 30-s window of the 60 records (first 300 s, before the alarm) is judged by witnesses that do
not use the gate's own template correlation:
- ECG confirmed: neurokit2's detector finds the same number of R-peaks (+-1) and the arterial line
  (ABP) shows the same number of pressure beats (+-2), so the R-peak series is real.
- PPG confirmed: the band-passed finger PPG tracks the band-passed arterial pressure, shifted by
  the monitor's PLETH latency (peak cross-correlation >= 0.8 at lags 0.7-1.25 s).

Chosen thresholds (monitoring/signals/pipeline.py) and what they give here:
- mean beat-to-template correlation: ECG >= 0.80 (QRS, -60..+100 ms, detrended), PPG >= 0.85
  (-50..+300 ms from the diastolic minimum). Confirmed windows sit at median 0.99 and their 1st
  percentile at 0.87 (PPG) / 0.76 (ECG); windows reviewed as noisy sit at 0.2-0.8.
- flatline: >= 2 s of 1-s stretches with a peak-to-peak under 1 % of the channel's typical 2-s
  peak-to-peak. Over the 600 windows flat time is 0 or >= 2.1 s except for five windows
  (1.2-1.8 s: short pauses).
- clipping: > 1 % of samples within 0.2 % of the window's range from its min or max. The PLETH
  channel saturates at the monitor's +-2.54 full scale and the ECG amplifier at +-13 mV; windows
  where that happens over several beats are flagged, single touches are not.
- too few beats: < 5 matched beats, or < 70 % of the PPG pulses matched to an R-peak (every pulse
  needs a heartbeat; windows with a steady PAT match over 80 % of their pulses, 1st percentile).
"""
from __future__ import annotations

from pathlib import Path

import neurokit2 as nk
import numpy as np
import pytest
from django.conf import settings
from scipy.signal import butter, sosfiltfilt

from monitoring.signals.pipeline import QualityReason, analyse_window, detect_ppg_beats
from monitoring.signals.recordings import CHALLENGE2015_PLETH_DELAY_S as PLETH_DELAY_S  # measured in test_signals.py
from monitoring.signals.recordings import challenge2015_records, iter_windows, load_challenge2015

RECORDINGS = Path(settings.RECORDINGS_DIR)
FS = 250.0
PULSE_BAND = butter(2, (0.5, 8.0), btype="bandpass", fs=FS, output="sos")


def pleth_tracks_arterial_line(abp: np.ndarray, ppg: np.ndarray) -> float:
    """Peak normalised cross-correlation of band-passed ABP and PPG, PPG lagging 0.7-1.25 s."""
    a, p = sosfiltfilt(PULSE_BAND, abp), sosfiltfilt(PULSE_BAND, ppg)
    a = (a - a.mean()) / (a.std() + 1e-12)
    p = (p - p.mean()) / (p.std() + 1e-12)
    n = a.size
    return max(float(a[: n - lag] @ p[lag:]) / (n - lag) for lag in range(int(0.7 * FS), int(1.25 * FS), 2))


@pytest.fixture(scope="module")
def judged_windows() -> list[dict]:
    rows = []
    for name in challenge2015_records(RECORDINGS):
        for win in iter_windows(load_challenge2015(RECORDINGS, name), window_s=30):
            if win.start_s >= 300:
                continue
            result = analyse_window(win.ecg, FS, win.ppg, FS, ppg_delay_s=PLETH_DELAY_S)
            cleaned = nk.ecg_clean(win.ecg, sampling_rate=FS, method="neurokit")
            neurokit_beats = len(nk.ecg_peaks(cleaned, sampling_rate=FS, method="neurokit")[1]["ECG_R_Peaks"])
            arterial_beats = len(detect_ppg_beats(win.abp, FS)[0])
            rows.append({
                "name": name,
                "start_s": win.start_s,
                "result": result,
                "ecg_confirmed": abs(len(result.r_peaks) - neurokit_beats) <= 1
                and abs(arterial_beats - len(result.r_peaks)) <= 2,
                "ppg_confirmed": pleth_tracks_arterial_line(win.abp, win.ppg) >= 0.8,
            })
    return rows


def low_correlation_on(row: dict, channel: str) -> bool:
    return any(
        issue.reason is QualityReason.LOW_TEMPLATE_CORRELATION and issue.channel == channel
        for issue in row["result"].issues
    )


def test_the_ppg_template_threshold_keeps_windows_whose_pleth_tracks_the_arterial_line(judged_windows):
    confirmed = [row for row in judged_windows if row["ppg_confirmed"]]
    assert len(confirmed) >= 250
    rejected = [f"{r['name']}@{r['start_s']:.0f}" for r in confirmed if low_correlation_on(r, "ppg")]
    assert len(rejected) <= 0.02 * len(confirmed), rejected


def test_the_ecg_template_threshold_keeps_windows_whose_r_peaks_are_confirmed(judged_windows):
    confirmed = [row for row in judged_windows if row["ecg_confirmed"]]
    assert len(confirmed) >= 300
    rejected = [f"{r['name']}@{r['start_s']:.0f}" for r in confirmed if low_correlation_on(r, "ecg")]
    assert len(rejected) <= 0.03 * len(confirmed), rejected


def test_windows_confirmed_on_both_channels_are_nearly_all_usable(judged_windows):
    confirmed = [row for row in judged_windows if row["ecg_confirmed"] and row["ppg_confirmed"]]
    usable = [row for row in confirmed if row["result"].usable]
    # The few rejected ones hold real ECG amplifier saturation or lead-off stretches.
    assert len(usable) >= 0.95 * len(confirmed)


@pytest.mark.parametrize(("name", "start_s"), [("v460s", 210), ("v489l", 150), ("v489l", 180)])
def test_real_pleth_saturation_at_the_monitor_full_scale_is_clipping(judged_windows, name, start_s):
    row = next(r for r in judged_windows if r["name"] == name and r["start_s"] == start_s)
    assert any(i.reason is QualityReason.CLIPPING and i.channel == "ppg" for i in row["result"].issues)


def test_real_recorded_flatlines_are_rejected(judged_windows):
    # v399l's PLETH is constant from ~16 s to the end: every later window is flat on the PPG.
    v399l = [r for r in judged_windows if r["name"] == "v399l" and r["start_s"] >= 30]
    assert v399l and all(
        any(i.reason is QualityReason.FLATLINE and i.channel == "ppg" for i in r["result"].issues) for r in v399l
    )
