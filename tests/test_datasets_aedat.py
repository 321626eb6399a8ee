"""AEDAT 3.1 / 2.0 readers: round trips, equality with SpikingJelly, bad input, fuzz."""

import os
import signal

import numpy as np
import pytest

import sj_reference
from sj_qvm.datasets import read_aedat2, read_aedat31
from sj_qvm.datasets.aedat import EVENT_DTYPE, write_aedat2, write_aedat31

DVS128_RECORDINGS = ["dvs128_aedat2_alex_walking_again.aedat", "dvs128_aedat2_neal_walking.aedat",
                     "dvs128_aedat2_cam255_right_clamp_test1.aedat"]  # in $SJ_QVM_EVENTS_DIR (conftest)


def sj_load_aedat_v3(path):
    return sj_reference.require("load_aedat_v3")(str(path))


def sj_load_cifar10_dvs(path):
    return sj_reference.require("cifar10_dvs_reader")(str(path))


def assert_same_as_sj(ours, sj):
    assert ours.dtype == EVENT_DTYPE
    for key in "txyp":
        assert np.array_equal(ours[key], np.asarray(sj[key])), key


def random_events(n, seed=0, t_max=10_000_000):
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, t_max, n))
    events["x"] = rng.integers(0, 128, n)
    events["y"] = rng.integers(0, 128, n)
    events["p"] = rng.integers(0, 2, n)
    return events


@pytest.mark.parametrize("special_packets", [False, True])
@pytest.mark.parametrize("n", [0, 1, 4097])
def test_aedat31_round_trip_and_sj(tmp_path, n, special_packets):
    events = random_events(n, seed=n)
    path = tmp_path / "rec.aedat"
    write_aedat31(path, events, packet_events=1000, special_packets=special_packets)
    ours = read_aedat31(path)
    assert np.array_equal(ours, events)
    if n:
        assert_same_as_sj(ours, sj_load_aedat_v3(path))


def test_aedat31_honours_ts_overflow(tmp_path):
    events = random_events(3000, seed=1, t_max=2**34)  # spans 8 overflow epochs
    assert len(np.unique(events["t"] >> 31)) > 4
    path = tmp_path / "long.aedat"
    write_aedat31(path, events)
    ours = read_aedat31(path)
    assert np.array_equal(ours, events)
    assert_same_as_sj(ours, sj_load_aedat_v3(path))


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_aedat2_round_trip_and_sj(tmp_path, n):
    events = random_events(n, seed=n)
    path = tmp_path / "rec.aedat"
    write_aedat2(path, events)
    ours = read_aedat2(path)
    assert np.array_equal(ours, events)
    if n:
        assert_same_as_sj(ours, sj_load_cifar10_dvs(path))


@pytest.mark.parametrize("name", DVS128_RECORDINGS)
def test_real_dvs128_recordings(tmp_path, real_recording, name):
    path = real_recording(name)
    events = read_aedat2(path)
    if sj_reference.function("cifar10_dvs_reader") is not None:
        assert_same_as_sj(events, sj_load_cifar10_dvs(path))
    assert len(events) > 10_000 and set(np.unique(events["p"])) == {0, 1}

    rewritten = tmp_path / "aedat2.aedat"
    write_aedat2(rewritten, events)
    assert rewritten.read_bytes().endswith(path.read_bytes()[-8 * len(events):])
    assert np.array_equal(read_aedat2(rewritten), events)

    reencoded = tmp_path / "aedat31.aedat"
    write_aedat31(reencoded, events, packet_events=512, special_packets=True)
    ours = read_aedat31(reencoded)
    assert np.array_equal(ours, events)
    assert_same_as_sj(ours, sj_load_aedat_v3(reencoded))


def test_real_header_only_file_gives_zero_events(real_recording):
    events = read_aedat2(real_recording("aedat2_header_only_davis346red_tonic.aedat"))
    assert events.dtype == EVENT_DTYPE and events.shape == (0,)


def test_real_davis240c_is_rejected(real_recording):
    path = real_recording("davis240c_aedat2_IMU_translBoxes.aedat")
    with pytest.raises(ValueError, match=r"davis240c_aedat2_IMU_translBoxes\.aedat.*byte offset \d+"):
        read_aedat2(path)


def test_davis_addresses_rejected_in_aedat31(tmp_path):
    events = random_events(100)
    events["x"][60] = 239  # a DAVIS240C column
    path = tmp_path / "davis.aedat"
    write_aedat31(path, events, packet_events=50)
    header_len = len(path.read_bytes()) - 2 * 28 - 8 * 100
    expected_offset = header_len + 2 * 28 + 8 * 60
    with pytest.raises(ValueError, match=rf"davis\.aedat: event at byte offset {expected_offset} has x=239"):
        read_aedat31(path)


def test_header_only_files(tmp_path):
    path2 = tmp_path / "h2.aedat"
    write_aedat2(path2, random_events(0))
    assert read_aedat2(path2).shape == (0,)
    path31 = tmp_path / "h31.aedat"
    write_aedat31(path31, random_events(0))
    assert read_aedat31(path31).shape == (0,)


def test_aedat31_without_end_header(tmp_path):
    path = tmp_path / "noend.aedat"
    path.write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n" + bytes(28))
    with pytest.raises(ValueError, match=r"noend\.aedat: no #!END-HEADER .*byte offset 28"):
        read_aedat31(path)


def test_aedat31_truncated_packet_header(tmp_path):
    path = tmp_path / "rec.aedat"
    write_aedat31(path, random_events(10))
    data = path.read_bytes()
    path.write_bytes(data + bytes(5))
    with pytest.raises(ValueError, match=rf"rec\.aedat: truncated packet header at byte offset {len(data)}"):
        read_aedat31(path)


def test_aedat31_truncated_packet_body(tmp_path):
    path = tmp_path / "rec.aedat"
    write_aedat31(path, random_events(10))
    data = path.read_bytes()
    packet = len(data) - 28 - 80
    path.write_bytes(data[:-3])
    with pytest.raises(ValueError, match=rf"rec\.aedat: packet at byte offset {packet} declares 10 events"):
        read_aedat31(path)


def test_aedat31_polarity_event_size_must_be_8(tmp_path):
    path = tmp_path / "rec.aedat"
    write_aedat31(path, random_events(10))
    data = bytearray(path.read_bytes())
    packet = len(data) - 28 - 80
    data[packet + 4 : packet + 8] = (4).to_bytes(4, "little")  # 10 events of 4 bytes still fit
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"rec\.aedat: polarity packet at byte offset {packet} has eventSize 4"):
        read_aedat31(path)


def test_wrong_container_is_named(tmp_path):
    path2, path31 = tmp_path / "v2.aedat", tmp_path / "v31.aedat"
    write_aedat2(path2, random_events(5))
    write_aedat31(path31, random_events(5))
    with pytest.raises(ValueError, match=r"v2\.aedat: first line .*AER-DAT2\.0.* not AEDAT 3"):
        read_aedat31(path2)
    with pytest.raises(ValueError, match=r"v31\.aedat: first line .*AER-DAT3\.1.* not AEDAT 2"):
        read_aedat2(path31)


def test_aedat2_trailing_partial_event(tmp_path):
    path = tmp_path / "rec.aedat"
    write_aedat2(path, random_events(10))
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(ValueError, match=rf"rec\.aedat: truncated event at byte offset {len(data) - 8}"):
        read_aedat2(path)


def _check_fuzz_case(path, reader, reference, header):
    try:
        events = reader(path)
    except ValueError as error:
        assert str(path) in str(error)
        return "rejected"
    assert events.dtype == EVENT_DTYPE
    assert (events["x"] < 128).all() and (events["y"] < 128).all() and (events["p"] <= 1).all()
    if reference is not None and path.read_bytes().startswith(header):
        assert_same_as_sj(events, reference(str(path)))
    return "read"


FUZZ_CASES = {"aedat31": 220, "aedat2": 120}  # the default suite: a few hundred reads
SLOW_FUZZ_CASES = 10_000  # per reader, with SJ_QVM_SLOW=1 (see test_fuzz_slow)


@pytest.mark.parametrize("fmt", ["aedat31", "aedat2"])
def test_fuzz_flips_and_truncations(tmp_path, fmt):
    _fuzz(tmp_path, fmt, FUZZ_CASES[fmt], seed=0)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SJ_QVM_SLOW") != "1", reason="slow: set SJ_QVM_SLOW=1 to run")
@pytest.mark.parametrize("fmt", ["aedat31", "aedat2"])
def test_fuzz_slow(tmp_path, fmt):
    """10,000 mutated files per reader, other seeds than the default run's.

    Deselected by default; run it with
    ``SJ_QVM_SLOW=1 python -m pytest -q -m slow tests/test_datasets_aedat.py`` (20-80 s on 2 cores).
    """
    _fuzz(tmp_path, fmt, SLOW_FUZZ_CASES, seed=1)


def _fuzz(tmp_path, fmt, cases, seed):
    """Truncate or flip bytes of a valid file ``cases`` times: every read either returns DVS128
    events (equal to SpikingJelly's where the header survived) or raises ValueError naming the
    file, within 10 s."""
    events = random_events(120, seed=7)
    valid = tmp_path / "valid.aedat"
    if fmt == "aedat31":
        write_aedat31(valid, events, packet_events=40, special_packets=True)
        reader, reference = read_aedat31, sj_reference.function("load_aedat_v3")
    else:
        write_aedat2(valid, events)
        reader, reference = read_aedat2, sj_reference.function("cifar10_dvs_reader")
    data = valid.read_bytes()
    header = data[: data.index(b"END-HEADER\r\n") + 12] if fmt == "aedat31" else data[: -8 * len(events)]
    packet_bytes = [i for i in range(len(header), len(data)) if fmt == "aedat2" or _in_packet_header(data, header, i)]

    rng = np.random.default_rng(seed)
    outcomes = {"read": 0, "rejected": 0}
    path = tmp_path / "case.aedat"
    previous = signal.signal(signal.SIGALRM, _hang)
    try:
        for case in range(cases):
            mutated = bytearray(data)
            kind = case % 3
            if kind == 0:  # truncate anywhere
                mutated = mutated[: int(rng.integers(0, len(data)))]
            else:  # flip bytes, half the time inside packet headers / addresses
                pool = packet_bytes if kind == 1 else range(len(data))
                for i in rng.choice(pool, size=int(rng.integers(1, 4))):
                    mutated[i] = int(rng.integers(0, 256))
            path.write_bytes(bytes(mutated))
            signal.alarm(10)
            outcomes[_check_fuzz_case(path, reader, reference, header)] += 1
            signal.alarm(0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    print(fmt, outcomes)
    floor = max(10, cases // 20)
    assert outcomes["read"] > floor and outcomes["rejected"] > floor, outcomes


def _in_packet_header(data, header, i):
    """True for a byte inside one of the 28-byte packet headers of a write_aedat31 file."""
    pos = len(header)
    while pos < len(data):
        if pos <= i < pos + 28:
            return True
        capacity = int.from_bytes(data[pos + 20 : pos + 24], "little")
        pos += 28 + 8 * capacity
    return False


def _hang(signum, frame):
    raise AssertionError("a reader hung on fuzzed input")
