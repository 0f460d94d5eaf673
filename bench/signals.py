"""Benchmark: monitoring.signals.pipeline.analyse_window against neurokit2 on real 30-s 250 Hz windows.

Loads the first 10 back-to-back 30-s windows of the first 20 challenge2015 records (200 windows,
ECG lead II + finger PLETH, 250 Hz) and prints, in one run:
- windows/s on one core (this process, pinned to one CPU, BLAS limited to one thread) and ms per
  window for the full analyse_window (quality gate + R-peaks + PPG feet + beat features);
- windows/s for neurokit2's nk.ecg_process + nk.ppg_process on the same windows (a subset by
  default, since neurokit2 takes ~0.4 s per window: see --neurokit-windows) and the ratio;
- how many of neurokit2's R-peaks (nk.ecg_peaks on nk.ecg_clean, method "neurokit") our
  detector finds within +-50 ms, over all 200 windows, and how many of ours are extra.

No Django and no database: monitoring.signals.recordings and monitoring.signals.pipeline are plain Python.

    .venv/bin/python bench/signals.py
    .venv/bin/python bench/signals.py --neurokit-windows 200 --repeats 10
"""
from __future__ import annotations

import os

# One core means one thread too: keep BLAS from spreading the few small matrix products.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import neurokit2 as nk  # noqa: E402
import numpy as np  # noqa: E402

from monitoring.signals.pipeline import PIPELINE_VERSION, analyse_window, detect_r_peaks, matched_event_count  # noqa: E402
from monitoring.signals.recordings import CHALLENGE2015_PLETH_DELAY_S as PLETH_DELAY_S  # noqa: E402
from monitoring.signals.recordings import RecordingWindow, challenge2015_records, iter_windows, load_challenge2015  # noqa: E402

RECORDINGS = ROOT / "data" / "recordings"
TOLERANCE_S = 0.050


def load_windows(records: int, per_record: int) -> list[RecordingWindow]:
    windows: list[RecordingWindow] = []
    for name in challenge2015_records(RECORDINGS)[:records]:
        windows += list(iter_windows(load_challenge2015(RECORDINGS, name), window_s=30))[:per_record]
    return windows


def time_ours(windows: list[RecordingWindow], repeats: int) -> float:
    """Best-of-repeats seconds per window for analyse_window over all windows."""
    for win in windows[:10]:  # warm the filter caches and the allocator
        analyse_window(win.ecg, win.ecg_fs, win.ppg, win.ppg_fs, ppg_delay_s=PLETH_DELAY_S)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for win in windows:
            analyse_window(win.ecg, win.ecg_fs, win.ppg, win.ppg_fs, ppg_delay_s=PLETH_DELAY_S)
        best = min(best, (time.perf_counter() - started) / len(windows))
    return best


def time_neurokit(windows: list[RecordingWindow]) -> tuple[float, int]:
    """Seconds per window for nk.ecg_process + nk.ppg_process (one pass; it is slow and steady),
    and how many windows made neurokit2 raise (their time up to the error is counted)."""
    nk.ecg_process(windows[0].ecg, sampling_rate=windows[0].ecg_fs)  # first-call imports
    failures = 0
    started = time.perf_counter()
    for win in windows:
        try:
            nk.ecg_process(win.ecg, sampling_rate=win.ecg_fs)
            nk.ppg_process(win.ppg, sampling_rate=win.ppg_fs)
        except Exception:  # noqa: BLE001 - e.g. ppg_process on a flat PLETH stretch
            failures += 1
    return (time.perf_counter() - started) / len(windows), failures


def agreement(windows: list[RecordingWindow]) -> tuple[int, int, int, int, int]:
    """(neurokit2 beats, of them found by us, our beats, of ours found by neurokit2, of our
    unconfirmed beats those in a window's first 300 ms, where neurokit2's refractory check that
    starts from sample 0 reports none)."""
    reference_total = recalled = ours_total = confirmed = at_start = 0
    for win in windows:
        cleaned = nk.ecg_clean(win.ecg, sampling_rate=win.ecg_fs, method="neurokit")
        _, info = nk.ecg_peaks(cleaned, sampling_rate=win.ecg_fs, method="neurokit")
        reference = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
        ours = detect_r_peaks(win.ecg, win.ecg_fs)
        tolerance = TOLERANCE_S * win.ecg_fs
        reference_total += reference.size
        recalled += matched_event_count(ours, reference, tolerance)
        ours_total += ours.size
        confirmed += matched_event_count(reference, ours, tolerance)
        early = ours[ours <= 0.3 * win.ecg_fs]
        at_start += early.size - matched_event_count(reference, early, tolerance)
    return reference_total, recalled, ours_total, confirmed, at_start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20, help="first N challenge2015 records (default 20)")
    parser.add_argument("--windows-per-record", type=int, default=10, help="first N 30-s windows each (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timing passes over all windows for ours (best)")
    parser.add_argument("--neurokit-windows", type=int, default=40,
                        help="windows timed with nk.ecg_process + nk.ppg_process, spread evenly (default 40)")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        core = f"pinned to CPU {cpu}"
    else:
        core = "not pinned"
    warnings.filterwarnings("ignore")  # neurokit2 warns about short signals and its own defaults

    windows = load_windows(args.records, args.windows_per_record)
    if not windows:
        print("no windows found under", RECORDINGS)
        return 1
    fs = sorted({w.ecg_fs for w in windows} | {w.ppg_fs for w in windows})
    print(f"signals pipeline {PIPELINE_VERSION}: {len(windows)} real 30-s windows "
          f"({args.records} challenge2015 records x {args.windows_per_record}), ECG + PPG at {fs} Hz; "
          f"one process, {core}")

    ours_s = time_ours(windows, args.repeats)
    print(f"ours      analyse_window: {1 / ours_s:8.1f} windows/s per core, {ours_s * 1000:.3f} ms per window "
          f"(best of {args.repeats} passes over {len(windows)} windows)")

    step = max(1, len(windows) // max(1, args.neurokit_windows))
    subset = windows[::step][: args.neurokit_windows]
    subset_note = (
        "all windows" if len(subset) == len(windows)
        else f"subset: every {step}th window, {len(subset)} of {len(windows)}"
    )
    nk_s, failures = time_neurokit(subset)
    failed_note = f"; {failures} raised inside neurokit2" if failures else ""
    print(f"neurokit2 ecg_process + ppg_process: {1 / nk_s:8.2f} windows/s per core, {nk_s * 1000:.1f} ms per window "
          f"({subset_note}{failed_note})")
    print(f"speed-up  ours vs neurokit2: {nk_s / ours_s:.0f}x")

    reference_total, recalled, ours_total, confirmed, at_start = agreement(windows)
    print(f"R-peaks   vs neurokit2 ecg_peaks (+-{TOLERANCE_S * 1000:.0f} ms, {len(windows)} windows): "
          f"{recalled / reference_total:.2%} of {reference_total} neurokit2 beats found; "
          f"{confirmed / ours_total:.2%} of our {ours_total} beats confirmed "
          f"({ours_total - confirmed} extra, {at_start} of them in a window's first 300 ms, "
          f"where neurokit2 never reports a beat)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
