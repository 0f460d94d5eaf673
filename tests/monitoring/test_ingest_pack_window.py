"""pack_window writes the .npz itself (no np.savez, for the upload's CPU): the same .npy members,
byte for byte, as np.savez, in a zip that zipfile, np.load and the fast reader all read (no database)."""
import io
import zipfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monitoring.ingest.encoding import Channel, _plain_arrays, pack_window, unpack_window

samples = st.one_of(arrays(np.dtype("<i2"), st.integers(0, 9000)),
                    arrays(np.dtype("<f4"), st.integers(0, 9000), elements=st.floats(-1e6, 1e6, width=32)))


def _savez(channels: dict[str, Channel]) -> bytes:
    arrays_ = {}
    for name, channel in channels.items():
        arrays_[f"{name}_raw"] = channel.raw
        arrays_[f"{name}_meta"] = np.array([channel.fs, channel.scale, channel.offset], dtype=np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays_)
    return buffer.getvalue()


@settings(max_examples=60, deadline=None)
@given(ecg=samples, ppg=samples, fs=st.sampled_from([125.0, 250.0, 1000.0]), scale=st.floats(1e-6, 10.0))
def test_the_members_are_those_np_savez_writes(ecg, ppg, fs, scale):
    channels = {"ecg": Channel(fs=fs, raw=ecg, scale=scale), "ppg": Channel(fs=fs, raw=ppg, offset=-3.0)}
    blob = pack_window(channels)
    ours, reference = zipfile.ZipFile(io.BytesIO(blob)), zipfile.ZipFile(io.BytesIO(_savez(channels)))
    assert ours.testzip() is None  # every member's CRC checks
    assert ours.namelist() == reference.namelist()
    for name in reference.namelist():
        assert ours.getinfo(name).compress_type == zipfile.ZIP_STORED
        assert ours.read(name) == reference.read(name)
    assert _plain_arrays(blob) is not None
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        assert np.array_equal(archive["ecg_raw"], ecg) and archive["ecg_raw"].dtype == ecg.dtype
    back = unpack_window(blob)
    assert np.array_equal(back["ppg"].raw, ppg) and back["ppg"].offset == -3.0 and back["ecg"].scale == scale


def test_other_arrays_are_still_written_by_np_savez():
    two_d = np.zeros((2, 3), dtype="<i2")
    blob = pack_window({"ecg": Channel(fs=250.0, raw=two_d)})
    assert unpack_window(blob)["ecg"].raw.shape == (2, 3)
    big_endian = np.arange(5, dtype=">i2")
    assert np.array_equal(unpack_window(pack_window({"ecg": Channel(fs=250.0, raw=big_endian)}))["ecg"].raw, big_endian)
