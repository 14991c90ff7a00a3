"""``jobs.gpu_monitor``: reading nvidia-smi's lines under CUDA_VISIBLE_DEVICES, and the window and
busy-span means the bench reports. No GPU here: the samples are fed in as the reader thread adds them."""

import math

import pytest

from jobs.gpu_monitor import GpuMonitor, Sample, parse_smi_line, visible_indexes


def test_visible_indexes_follow_cuda_visible_devices() -> None:
    assert visible_indexes("") is None and visible_indexes(" ") is None
    assert visible_indexes("3,1") == [3, 1]
    assert visible_indexes("GPU-8f2c1e,GPU-77aa") is None  # UUIDs: every card under its own index


@pytest.mark.parametrize(
    ("line", "visible", "expected"),
    [("0, 87, 40211", None, Sample(1.0, 0, 87.0, 40211.0)),
     ("3, 12, 100\n", [3, 1], Sample(1.0, 0, 12.0, 100.0)),  # physical 3 is cuda:0 here
     ("1, 50, 7", [3, 1], Sample(1.0, 1, 50.0, 7.0)),
     ("2, 50, 7", [3, 1], None),  # not visible to this process
     ("0, [N/A], 7", None, None),
     ("index, utilization.gpu [%], memory.used [MiB]", None, None),
     ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", None, None)],
)  # fmt: skip
def test_smi_lines_become_samples_of_visible_cards(line: str, visible, expected) -> None:  # noqa: ANN001
    assert parse_smi_line(line, 1.0, visible) == expected


def test_window_and_busy_span_means() -> None:
    monitor = GpuMonitor(enabled=False)
    assert not monitor.active
    # card 0: idle start-up, busy 60/80/100, idle tail; card 1 never busy
    for t, util in enumerate([0, 0, 60, 80, 100, 0, 0]):
        monitor._add(Sample(float(t), 0, float(util), 1.0))
        monitor._add(Sample(float(t), 1, 0.0, 1.0))
    assert monitor.mean_between(2.0, 4.0, gpus=[0]) == pytest.approx(80.0)
    assert monitor.mean_between(0.0, 6.0, gpus=[0]) == pytest.approx(240 / 7)
    assert monitor.mean_between(0.0, 6.0) == pytest.approx(240 / 14)  # both cards
    assert math.isnan(monitor.mean_between(10.0, 11.0))
    busy = monitor.busy_means(0.0, 6.0, gpus=[0, 1])
    assert busy[0] == pytest.approx(80.0) and math.isnan(busy[1])
    assert monitor.busy_means(0.0, 3.0, gpus=[0]) == [pytest.approx(70.0)]


def test_an_inactive_monitor_starts_and_stops_without_samples() -> None:
    with GpuMonitor(enabled=False) as monitor:
        pass
    assert monitor.samples == [] and math.isnan(monitor.mean_between(0.0, 1e12))
