"""The stored .npz reads back exactly, by the fast reader and by np.load alike (no database)."""
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monitoring.ingest.encoding import Channel, _plain_arrays, pack_window, unpack_window


def _np_load(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


samples = st.one_of(arrays(np.dtype("<i2"), st.integers(0, 9000)),
                    arrays(np.dtype("<f4"), st.integers(0, 9000), elements=st.floats(-1e6, 1e6, width=32)))


@settings(max_examples=60, deadline=None)
@given(ecg=samples, ppg=samples, fs=st.sampled_from([125.0, 250.0, 500.0]), scale=st.floats(1e-6, 10.0))
def test_the_fast_reader_gives_what_np_load_gives(ecg, ppg, fs, scale):
    blob = pack_window({"ecg": Channel(fs=fs, raw=ecg, scale=scale), "ppg": Channel(fs=fs, raw=ppg, offset=-3.0)})
    fast = _plain_arrays(blob)
    assert fast is not None, "pack_window's own layout must take the fast path"
    reference = _np_load(blob)
    assert set(fast) == set(reference)
    for key, values in reference.items():
        assert fast[key].dtype == values.dtype and np.array_equal(fast[key], values)
        assert fast[key].flags.writeable  # a copy, as np.load returns, not a view on the stored bytes
    channels = unpack_window(blob)
    assert np.array_equal(channels["ecg"].raw, ecg) and channels["ppg"].offset == -3.0 and channels["ecg"].fs == fs


def test_other_layouts_fall_back_to_np_load_and_objects_are_refused():
    two_d = io.BytesIO()
    np.savez(two_d, ecg_raw=np.zeros((2, 3), dtype="<i2"), ecg_meta=np.array([250.0, 1.0, 0.0]))
    assert _plain_arrays(two_d.getvalue()) is None
    assert unpack_window(two_d.getvalue())["ecg"].raw.shape == (2, 3)
    objects = io.BytesIO()
    np.savez(objects, ecg_raw=np.array([{"a": 1}], dtype=object), ecg_meta=np.array([250.0, 1.0, 0.0]))
    assert _plain_arrays(objects.getvalue()) is None
    with pytest.raises(ValueError):
        unpack_window(objects.getvalue())
    assert _plain_arrays(b"not a zip") is None
