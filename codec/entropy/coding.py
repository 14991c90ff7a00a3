"""The Gaussian ``y`` streams of DiT-IC and their index guard, over the range coder of ``rangecoder``.

Index guard (bit-exact decoding across devices): the table index of a ``y`` symbol is a function of
its scale, which the decoder recomputes with tiny float differences. Whenever the encoder's scale
lies within ``index_margin`` (relative, log space) of a boundary between two table levels, the
encoder signals that symbol's index in the stream; the decoder uses the signalled index there and
its own elsewhere. On real data this costs a flag of ~1e-5 bits per ``encode()`` call.

Speed: one stream per image, but the work around the coder runs once per batch and step, in numpy
(``encode_batch``/``decode_batch``): no Python loop over symbols (guards aside, which real data
almost never has) and no torch ops (on a busy CPU torch's thread pool costs more than this work).
The range coder itself (tables, escapes, stream check) is ``codec.entropy.rangecoder``, the only
module that imports ``constriction``. ``StepPositions`` moves one context step's elements between the
model's tensors and the coder.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from codec import host
from codec.entropy.rangecoder import CDF_PRECISION as CDF_PRECISION
from codec.entropy.rangecoder import _read_symbols, _Reader, _Tables, _write_symbols, _Writer
from codec.errors import FormatError

__all__ = ["GaussianStreamEncoder", "GaussianStreamDecoder", "StepPositions", "scale_indexes"]


def _finite_numpy(x: Tensor, what: str) -> np.ndarray:
    return _finite(x.detach().to("cpu", torch.float64).contiguous().numpy().reshape(-1), what)


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return a


_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def _rounded(x: Tensor) -> Tensor:
    """``torch.round`` (half to even); in numpy on the CPU, where torch's thread pool may cost ms."""
    if x.device.type == "cpu" and x.dtype in _NUMPY_FLOATS:
        return torch.from_numpy(np.rint(x.detach().numpy()))
    return torch.round(x)


def _representable(q: Tensor, dtype: torch.dtype) -> Tensor:
    """``q`` in ``dtype``; a value that overflows it can only come from a corrupt stream."""
    q = q.to(dtype)
    host = q.detach().cpu()  # numpy checks it: torch's thread pool can cost ms for this on a busy CPU
    finite = np.isfinite(host.numpy()).all() if host.dtype in _NUMPY_FLOATS else torch.isfinite(host).all()
    if not finite:
        raise FormatError(f"entropy-coded stream is corrupt: a decoded value overflows {dtype}")
    return q


# ----------------------------------------------------------------------------- index guard, y streams


def scale_indexes(scales: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """Table level of each scale: the first level whose scale is >= it (CompressAI's rule).

    Exactly ``np.searchsorted(boundaries, scales, side="left")`` for finite scales, but faster."""
    return _levels(np.asarray(scales, dtype=np.float64), boundaries, 0.0)[0]


def _levels(scales: np.ndarray, boundaries: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(table level, within ``margin`` of a boundary in log space) of each finite scale.

    One pass for a log-spaced table: a scale's position on the log-linear grid through the first and
    last boundary gives its level, unless it lies within ``tol`` of a grid point, ``tol`` covering the
    margin plus how far the real boundaries sit off the grid (float32 rounding: ~1e-7 for the
    release's table). Those few scales take the exact rule (``searchsorted``, the log distance to the
    boundaries either side). Any increasing table is exact; an irregular one sends more scales there.
    """
    log_b, n = np.log(boundaries), len(boundaries)
    step = (log_b[-1] - log_b[0]) / max(n - 1, 1) or 1.0
    off_grid = np.abs(log_b - (log_b[0] + step * np.arange(n))).max()
    pos = np.maximum(scales, 1e-300)  # -> position on the grid, in place (these arrays are large)
    np.log(pos, out=pos)
    pos -= log_b[0]
    pos /= step
    level = pos + 1
    idx = np.clip(level, 0, n, out=level).astype(np.intp)  # = floor(pos) + 1 away from grid points
    np.subtract(pos, np.rint(pos), out=pos)
    tol = (max(margin, 0.0) + off_grid + 1e-9) / step
    close = np.flatnonzero(np.abs(pos, out=pos) < tol) if n > 1 else np.arange(scales.size)
    near = np.zeros(scales.shape, dtype=bool)
    if close.size:
        s = scales.reshape(-1)[close]
        ls = np.log(np.maximum(s, 1e-300))
        exact = np.searchsorted(boundaries, s, side="left")
        below, above = log_b[np.clip(exact - 1, 0, n - 1)], log_b[np.clip(exact, 0, n - 1)]
        idx.reshape(-1)[close] = exact
        near.reshape(-1)[close] = np.minimum(np.abs(ls - below), np.abs(ls - above)) < margin
    return idx, near


class GaussianStreamEncoder:
    """Codes ``y`` step by step into one string (one encoder per image, steps in context order)."""

    def __init__(self, tables: _Tables, boundaries: np.ndarray, margin: float) -> None:
        self._tables, self._boundaries, self._margin = tables, boundaries, margin
        self._writer: _Writer | None = _Writer()

    def encode(self, y: Tensor, scales: Tensor, means: Tensor | None = None) -> Tensor:
        """Code ``round(y - means)`` with tables chosen by ``scales``; returns ``y_hat`` (y's shape)."""
        if scales.shape != y.shape or (means is not None and means.shape != y.shape):
            raise ValueError(f"y {tuple(y.shape)}, scales {tuple(scales.shape)} and means must share a shape")
        q_t = _rounded(y - means if means is not None else y)
        q = _finite_numpy(q_t, "y - means")
        _encode_rows([self], q.reshape(1, -1), _finite_numpy(scales, "scales").reshape(1, -1))
        return q_t + means if means is not None else q_t

    @staticmethod
    def encode_batch(
        encoders: Sequence[GaussianStreamEncoder], y: np.ndarray, scales: np.ndarray, means: np.ndarray
    ) -> np.ndarray:
        """One step for a batch: row b of ``y``, ``scales``, ``means`` (float64, (B, n)) into
        ``encoders[b]``; the same bytes as ``encode`` per image. Returns y_hat (B, n)."""
        y, scales, means = (np.asarray(a, dtype=np.float64) for a in (y, scales, means))
        if y.ndim != 2 or y.shape[0] != len(encoders) or scales.shape != y.shape or means.shape != y.shape:
            raise ValueError(
                f"y {y.shape}, scales {scales.shape} and means {means.shape} must be ({len(encoders)}, n)"
            )
        q = np.rint(y - means)
        _encode_rows(encoders, _finite(q, "y - means"), _finite(scales, "scales"))
        return q + means

    def finish(self) -> bytes:
        if self._writer is None:
            raise RuntimeError("finish() called twice")
        data, self._writer = self._writer.finish(), None
        return data


def _encode_rows(encoders: Sequence[GaussianStreamEncoder], q: np.ndarray, scales: np.ndarray) -> None:
    """Guards then symbols of (B, n) values ``q`` (finite integers) for each encoder's stream."""
    if not encoders:
        return
    first = encoders[0]
    if any(e._writer is None for e in encoders):
        raise RuntimeError("encode() after finish()")
    if any(e._tables is not first._tables for e in encoders):
        raise ValueError("the encoders of a batch must come from one entropy model")
    idx, near = _levels(scales, first._boundaries, first._margin)
    for e, row_near, row_idx in zip(encoders, near, idx, strict=True):
        guarded = np.flatnonzero(row_near)
        e._writer.flag(guarded.size > 0)
        if guarded.size:
            deltas = np.diff(guarded, prepend=0)
            e._writer.uints([guarded.size, *deltas.tolist(), *row_idx[guarded].tolist()])
    _write_symbols([e._writer for e in encoders], q + 0.0, idx, first._tables)


class GaussianStreamDecoder:
    """Mirror of ``GaussianStreamEncoder``: call ``decode`` with the same steps, then ``finish``."""

    def __init__(self, tables: _Tables, boundaries: np.ndarray, data: bytes) -> None:
        self._tables, self.boundaries = tables, boundaries
        self._reader = _Reader(data)

    def _read_guards(self, n: int) -> tuple[np.ndarray, list[int]] | None:
        """The stream's index escapes for a step of ``n`` symbols: (positions, levels), or None."""
        if not self._reader.flag():
            return None
        (count,) = self._reader.uints(1)
        if not 0 < count <= n:
            raise FormatError(f"entropy-coded stream is corrupt: {count} index escapes for {n} symbols")
        deltas, levels = self._reader.uints(count), self._reader.uints(count)
        if sum(deltas) >= n or max(levels) >= len(self._tables.models):
            raise FormatError("entropy-coded stream is corrupt: index escape out of range")
        return np.cumsum(deltas), levels

    def decode(self, scales: Tensor, means: Tensor | None = None) -> Tensor:
        """``y_hat`` of ``scales``' shape, on ``means``' (else ``scales``') device and dtype."""
        s = _finite_numpy(scales, "scales").reshape(1, -1)
        q = torch.from_numpy(_decode_rows([self], s)).reshape(scales.shape)
        q = _representable(q, (means if means is not None else scales).dtype)
        return q.to(scales.device) if means is None else q.to(means.device) + means

    @staticmethod
    def decode_batch(
        decoders: Sequence[GaussianStreamDecoder], scales: np.ndarray, means: np.ndarray
    ) -> np.ndarray:
        """Mirror of ``GaussianStreamEncoder.encode_batch``: y_hat (B, n) float64."""
        scales, means = np.asarray(scales, dtype=np.float64), np.asarray(means, dtype=np.float64)
        if scales.ndim != 2 or scales.shape[0] != len(decoders) or means.shape != scales.shape:
            raise ValueError(f"scales {scales.shape} and means {means.shape} must be ({len(decoders)}, n)")
        return _decode_rows(decoders, _finite(scales, "scales")) + means

    @staticmethod
    def decode_levels(
        decoders: Sequence[GaussianStreamDecoder], levels: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """One step for a batch from the table levels of its scales, computed where the scales are
        (``StepPositions.levels``; -1 marks a scale that is not finite): the integers q (B, n), float64,
        that ``decode_batch`` would return before adding the means, written to ``out`` if given
        (``StepPositions.host_values``: page-locked memory on a GPU). Same levels, same symbols: these
        are ``scale_indexes`` of the same float64 scales, and the stream's index escapes apply as there.
        ``levels`` is only read."""
        levels = np.asarray(levels)
        if levels.ndim != 2 or levels.shape[0] != len(decoders):
            raise ValueError(f"levels {levels.shape} must be ({len(decoders)}, n)")
        if out is not None and not (
            out.shape == levels.shape and out.dtype == np.float64 and out.flags.c_contiguous
        ):
            raise ValueError(f"out must be C-contiguous float64 {levels.shape}, not {out.dtype} {out.shape}")
        if levels.size and levels.min() < 0:
            raise ValueError("scales contains NaN or infinite values")
        if levels.size and decoders and (top := levels.max()) >= (count := len(decoders[0]._tables.models)):
            raise ValueError(f"table level {top} out of range: the model has {count}")
        return _decode_levels(decoders, levels, out, owned=False)

    def finish(self) -> None:
        """Raises FormatError (ChecksumError) if the stream is corrupt, short or has data left over."""
        self._reader.finish()


def _decode_rows(decoders: Sequence[GaussianStreamDecoder], scales: np.ndarray) -> np.ndarray:
    if not decoders:
        return np.zeros(scales.shape)
    return _decode_levels(decoders, _levels(scales, decoders[0].boundaries, 0.0)[0])


def _decode_levels(
    decoders: Sequence[GaussianStreamDecoder],
    idx: np.ndarray,
    out: np.ndarray | None = None,
    owned: bool = True,
) -> np.ndarray:
    """Guards then symbols of (B, n) integer table levels ``idx``, each in range (``_levels`` makes them
    so; ``decode_levels`` checks the caller's). The stream's index escapes overwrite some levels: in
    ``idx`` itself where ``owned``, else in a copy (real data almost never has them)."""
    first = decoders[0]
    if any(d._tables is not first._tables for d in decoders):
        raise ValueError("the decoders of a batch must come from one entropy model")
    for b, d in enumerate(decoders):
        if (guards := d._read_guards(idx.shape[1])) is not None:
            if not owned:
                idx, owned = idx.copy(), True
            idx[b, guards[0]] = guards[1]
    return _read_symbols([d._reader for d in decoders], idx, first._tables, out)


class StepPositions:
    """The elements of y (flattened per image) that one context step codes, from its (1, C, h, w) mask.

    Moves a step's tensors to the CPU coder and back: on a GPU the step's quarter of each tensor is
    picked there and copied in one transfer; on the CPU numpy indexes the tensors' memory directly
    (torch's thread pool costs more than this work on a loaded CPU). A GPU decoder does more there
    (``levels``, ``place``): the coder gets the table levels alone and hands back integers."""

    def __init__(self, mask: Tensor):
        self.host = np.flatnonzero(mask[0].reshape(-1).cpu().numpy())
        self.numel = mask[0].numel()
        self._on_device: dict[torch.device, Tensor] = {}

    def _index(self, device: torch.device) -> Tensor:
        if device not in self._on_device:
            self._on_device[device] = torch.from_numpy(self.host).to(device)
        return self._on_device[device]

    def gather(self, *tensors: Tensor, torch_ops: bool | None = None) -> list[np.ndarray]:
        """Each (B, C, h, w) tensor's coded elements as float64 numpy (B, n).

        ``torch_ops`` (default: off the CPU) picks them with torch on the tensors' device."""
        flat = [t.reshape(t.shape[0], -1).to(torch.float64) for t in tensors]
        if not (flat[0].device.type != "cpu" if torch_ops is None else torch_ops):
            return [np.take(f.numpy(), self.host, axis=1) for f in flat]
        picked = torch.stack(flat).index_select(2, self._index(flat[0].device))
        return list(picked.cpu().numpy())

    def scatter(self, values: np.ndarray, like: Tensor, torch_ops: bool | None = None) -> Tensor:
        """(B, n) values at the coded elements of a float64 zero tensor shaped and placed like ``like``."""
        if not (like.device.type != "cpu" if torch_ops is None else torch_ops):
            out = np.zeros((like.shape[0], self.numel))
            out[:, self.host] = values
            return torch.from_numpy(out).view(like.shape)
        out = torch.zeros((like.shape[0], self.numel), dtype=torch.float64, device=like.device)
        out.index_copy_(1, self._index(like.device), torch.from_numpy(values).to(like.device))
        return out.view(like.shape)

    def levels(self, scales: Tensor, means: Tensor, boundaries: Tensor) -> tuple[np.ndarray, Tensor]:
        """The decoder's half of a step where ``scales`` are: (the table level of each coded element,
        int32 numpy (B, n), -1 where its scale is not finite; the coded means, float64 (B, n), left
        there for ``place``). ``boundaries``: float64 (T - 1,), the table's as ``scale_indexes`` takes
        them; a level is the same searchsorted (left) of the same float64 scale as there.

        Copies 4 bytes per element to the host instead of 16 (scales and means), and moves the level
        search off the CPU (in numpy it took ~0.85 ms per 2048² step on the 2-core VM, session 18's
        profile)."""
        index = self._index(scales.device)
        s = scales.reshape(scales.shape[0], -1).to(torch.float64).index_select(1, index)
        m = means.reshape(means.shape[0], -1).to(torch.float64).index_select(1, index)
        level = torch.bucketize(s, boundaries.to(s.device, torch.float64)).to(torch.int32)
        return host.to_numpy(level.masked_fill_(~torch.isfinite(s), -1)), m

    def host_values(self, batch: int, device: torch.device) -> Tensor:
        """A float64 (B, n) host buffer for a step's decoded integers (``decode_levels``' ``out``):
        page-locked memory from torch's caching host allocator when ``device`` is a GPU, so the copy to
        ``place`` is direct, and the coder writes to memory that is already mapped."""
        return torch.empty((batch, self.host.size), dtype=torch.float64, pin_memory=device.type == "cuda")

    def place(self, q: np.ndarray | Tensor, means: Tensor, like: Tensor) -> Tensor:
        """``q`` (B, n; host) + the coded ``means`` from ``levels`` at the coded elements of a float64
        zero tensor shaped and placed like ``like``: ``scatter`` of the same sum (float64 either side)."""
        device = means.device
        out = torch.zeros((like.shape[0], self.numel), dtype=torch.float64, device=device)
        q = q if isinstance(q, Tensor) else torch.from_numpy(np.ascontiguousarray(q, dtype=np.float64))
        values = q.to(device, torch.float64, non_blocking=True) + means
        return out.index_copy_(1, self._index(device), values).view(like.shape)
