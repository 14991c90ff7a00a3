"""GPU utilisation for ``ditic bench``: a background sampler of each visible card's busy percentage and
memory in use, read through NVML (``pynvml``, from ``nvidia-ml-py``) where it is installed, else from a
``nvidia-smi --query-gpu ... -lms`` child process. Neither on a machine without NVIDIA GPUs: the
monitor is then inactive and reports nothing.

The driver's "utilization.gpu" is the share of its last sample period (1/6 s to 1 s, by card) in which a
kernel ran, so a window shorter than a few periods is blurred by what ran just before it. Samples are
timestamped with ``time.monotonic()``; ``mean_between`` averages those inside a window (a timed loop),
``busy_means`` averages each card over its own busy span (first to last sample above 0 %): a pipeline
run's Ray start-up and its tail do not dilute it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass

QUERY = "index,utilization.gpu,memory.used"


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic() when read
    gpu: int  # the card's index among the visible ones (0 = cuda:0)
    util_pct: float
    memory_mib: float


def visible_indexes(env: str | None = None) -> list[int] | None:
    """The physical indexes ``CUDA_VISIBLE_DEVICES`` names, in order; None when unset (all cards) or
    when it names cards by UUID (then every card is sampled under its physical index)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env
    if value is None or value.strip() == "":
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def parse_smi_line(line: str, t: float, visible: list[int] | None) -> Sample | None:
    """One line of ``nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,
    nounits`` as a Sample, its index mapped to the visible order; None for a card not visible or a
    line that is not a reading (a header, "[N/A]", an error message)."""
    fields = [f.strip() for f in line.split(",")]
    if len(fields) != 3:
        return None
    try:
        index, util, memory = int(fields[0]), float(fields[1]), float(fields[2])
    except ValueError:
        return None
    if visible is not None:
        if index not in visible:
            return None
        index = visible.index(index)
    return Sample(t, index, util, memory)


class GpuMonitor:
    """Samples every visible card each ``period_s`` in a daemon thread, from ``start()`` to ``stop()``
    (or a ``with`` block). ``active`` is False where there is nothing to read."""

    def __init__(self, period_s: float = 0.1, enabled: bool = True):
        self.period_s = period_s
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._nvml = None
        self.backend = self._pick_backend() if enabled else None

    @property
    def active(self) -> bool:
        return self.backend is not None

    def _pick_backend(self) -> str | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            return "nvml"
        except Exception:  # noqa: BLE001 - not installed, or no driver: try the command line tool
            pass
        return "nvidia-smi" if shutil.which("nvidia-smi") else None

    def start(self) -> GpuMonitor:
        if self.backend == "nvml":
            self._thread = threading.Thread(target=self._poll_nvml, daemon=True)
        elif self.backend == "nvidia-smi":
            ms = max(100, int(self.period_s * 1000))
            self._proc = subprocess.Popen(
                ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", f"-lms={ms}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
            )  # fmt: skip
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        if self._thread is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GpuMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _add(self, sample: Sample | None) -> None:
        if sample is not None:
            with self._lock:
                self.samples.append(sample)

    def _read_smi(self) -> None:
        visible = visible_indexes()
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._add(parse_smi_line(line, time.monotonic(), visible))
            if self._stop.is_set():
                break

    def _poll_nvml(self) -> None:
        nvml = self._nvml
        visible = visible_indexes()
        physical = visible if visible is not None else list(range(nvml.nvmlDeviceGetCount()))
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in physical]
        while not self._stop.is_set():
            now = time.monotonic()
            for gpu, handle in enumerate(handles):
                util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                memory = nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
                self._add(Sample(now, gpu, float(util), float(memory)))
            self._stop.wait(self.period_s)

    def _window(self, t0: float, t1: float, gpus: list[int] | None) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if t0 <= s.t <= t1 and (gpus is None or s.gpu in gpus)]

    def mean_between(self, t0: float, t1: float, gpus: list[int] | None = None) -> float:
        """Mean utilisation (%) of the samples taken in [t0, t1] on ``gpus`` (all: None); NaN if none."""
        values = [s.util_pct for s in self._window(t0, t1, gpus)]
        return statistics.fmean(values) if values else float("nan")

    def busy_means(self, t0: float, t1: float, gpus: list[int]) -> list[float]:
        """Per card of ``gpus``: its mean utilisation over its busy span inside [t0, t1], from its first
        to its last sample above 0 % (NaN for a card never busy)."""
        means = []
        for gpu in gpus:
            samples = self._window(t0, t1, [gpu])
            busy = [i for i, s in enumerate(samples) if s.util_pct > 0]
            span = samples[busy[0] : busy[-1] + 1] if busy else []
            means.append(statistics.fmean(s.util_pct for s in span) if span else float("nan"))
        return means
