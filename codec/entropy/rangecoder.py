"""The range-coder core of DiT-IC's entropy models; the only module that imports ``constriction``.

Coding is exact and platform independent: integer CDF tables (16-bit) are built once on the CPU in
float64 (``update()``) and travel with the weights; both sides build identical ``constriction``
categorical models from them (``_Tables``, cached by ``_TableCache``). Symbols outside a table's
range take an escape symbol followed by their exact value (15-bit digits), so any finite integer
round-trips.

Each stream ends with a 16-bit check of the decoded values so a truncated or garbled stream raises
``ChecksumError`` instead of yielding a silently wrong latent.

Speed: the symbols of a batch are grouped once per call by (image, table) in numpy (``_Groups``), then
coded with one ``constriction`` call per non-empty group; no Python loop over symbols (escapes aside,
which real data almost never has) and no torch ops. The Gaussian streams and the index guard built on
this core live in ``codec.entropy.coding``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import constriction
import numpy as np
import torch
from torch import Tensor

from codec.errors import ChecksumError, FormatError

__all__ = ["CDF_PRECISION"]  # the rest is the private core of codec.entropy.coding and .models

CDF_PRECISION = 16
_DIGIT_BITS = 15  # escape values: 15 payload bits + 1 continuation bit per 16-bit symbol
_DIGIT_MASK = (1 << _DIGIT_BITS) - 1
_MAX_DIGITS = 72  # 1080 bits: beyond any finite float64
_GUARD_FLAG_PROBS = np.array([65535.0, 1.0])
_queue = constriction.stream.queue
_model = constriction.stream.model
_UNIFORM16 = _model.Uniform(1 << 16)
_GUARD_FLAG = _model.Categorical(_GUARD_FLAG_PROBS, perfect=False)


# ----------------------------------------------------------------------------- integer tables


def _quantized_cdf(pmf: np.ndarray, tail_mass: float) -> np.ndarray:
    """pmf (n,) + tail mass -> CDF (n + 2,) in [0, 2^16], every bin (escape included) >= 1."""
    total = 1 << CDF_PRECISION
    if len(pmf) >= total:
        raise ValueError(f"a table of {len(pmf)} values does not fit {CDF_PRECISION}-bit precision")
    p = np.append(np.clip(pmf, 0.0, None), max(tail_mass, 0.0))
    freq = np.maximum(np.rint(p / p.sum() * total).astype(np.int64), 1)
    while freq.sum() != total:  # take from / give to the largest bins that can afford it
        excess = int(freq.sum() - total)
        order = np.argsort(-freq, kind="stable")
        step = np.sign(excess)
        for k in order[: min(abs(excess), len(freq))]:
            if freq[k] - step >= 1:
                freq[k] -= step
    return np.concatenate([[0], np.cumsum(freq)])


def _pack_cdfs(rows: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    table = np.zeros((len(rows), width), dtype=np.int32)
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    return torch.from_numpy(table), torch.tensor([len(r) for r in rows], dtype=torch.int32)


@dataclass(frozen=True)
class _Tables:
    """Coding view of the CDF buffers: one categorical model per row, escape = last symbol."""

    models: tuple
    offset: np.ndarray  # float64 (T,): value = symbol + offset
    n_regular: np.ndarray  # int64 (T,): symbols 0..n_regular-1 are values, n_regular is the escape

    @staticmethod
    def build(cdf: Tensor, cdf_length: Tensor, offset: Tensor) -> _Tables:
        cdf_np, lengths = cdf.cpu().numpy().astype(np.int64), cdf_length.cpu().numpy().astype(np.int64)
        if not len(lengths) == len(cdf_np) == offset.numel():
            raise ValueError(
                f"CDF tables disagree: {len(cdf_np)} rows, {len(lengths)} lengths, {offset.numel()} offsets"
            )
        models = []
        for row, n in zip(cdf_np, lengths, strict=True):
            pmf = np.diff(row[:n]).astype(np.float64)
            if not 3 <= n <= len(row) or (pmf <= 0).any():
                raise ValueError(
                    f"invalid quantized CDF row of length {n}; rebuild it with update(force=True)"
                )
            models.append(_model.Categorical(pmf, perfect=False))
        return _Tables(tuple(models), offset.cpu().numpy().astype(np.float64), lengths - 2)

    def symbols(self, q: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int32 symbol, escaped) of integer values ``q`` coded with tables ``idx`` (same shapes)."""
        s = q - self.offset[idx]
        n_reg = self.n_regular[idx]
        regular = (s >= 0) & (s < n_reg)
        return np.where(regular, s, n_reg).astype(np.int32), ~regular


def _stamp(t: Tensor) -> tuple:
    try:
        return t, t._version, t.data_ptr()
    except RuntimeError:  # inference tensors keep no version counter: compare contents every time
        return t, None, None


def _same(stamps: tuple, seen: tuple) -> bool:
    return len(stamps) == len(seen) and all(
        a[0] is b[0] and a[1] is not None and a[1:] == b[1:] for a, b in zip(stamps, seen, strict=True)
    )


class _TableCache:
    """Caches ``_Tables`` for the CDF buffers, rebuilt when their content changes (update, load).

    The content (a CRC of ~1 MB, copied off the GPU first) is only read when a buffer is another
    tensor or was modified in place (its version counter moved) since the last call."""

    def __init__(self) -> None:
        self._key, self._stamps, self._tables = None, (), None

    def get(self, cdf: Tensor, cdf_length: Tensor, offset: Tensor) -> _Tables:
        if offset.numel() == 0:
            raise RuntimeError("entropy model tables are empty: run update() first")
        stamps = tuple(_stamp(t) for t in (cdf, cdf_length, offset))  # holding them keeps ids unique
        if self._tables is not None and _same(stamps, self._stamps):
            return self._tables
        key = tuple((tuple(t.shape), zlib.crc32(t.detach().cpu().contiguous().numpy())) for t, *_ in stamps)
        if key != self._key:
            self._tables, self._key = _Tables.build(cdf, cdf_length, offset), key
        self._stamps = stamps
        return self._tables


# ----------------------------------------------------------------------------- range coder


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _crc(values: np.ndarray, crc: int) -> int:
    return zlib.crc32(np.ascontiguousarray(values, dtype="<f8"), crc)


@dataclass(frozen=True)
class _Groups:
    """How the format orders (B, n) symbols: per image, by table, then by position.

    ``flat[order]`` lists them in that order; the non-empty (image, table) groups follow each other
    there, group i being image ``image[i]``, table ``table[i]``, ``count[i]`` symbols. ``order`` is None
    where that is the flat order already: each image uses one table (an untrained model's scales all
    fall below the first level). A stable sort of 16-bit keys is a radix sort in numpy (linear time,
    ~10x faster than sorting 64-bit indexes)."""

    order: np.ndarray | None
    image: np.ndarray
    table: np.ndarray
    count: np.ndarray

    @staticmethod
    def of(idx: np.ndarray, n_tables: int) -> _Groups:
        batch, n = idx.shape
        if n and (table := idx.min(axis=1)).tolist() == idx.max(axis=1).tolist():  # one table per image
            return _Groups(None, np.arange(batch), table, np.full(batch, n))
        key = idx + (np.arange(batch) * n_tables)[:, None]
        key = key.astype(np.uint16 if batch * n_tables <= 1 << 16 else np.int64).reshape(-1)
        counts = np.bincount(key, minlength=batch * n_tables)
        used = np.flatnonzero(counts)
        return _Groups(np.argsort(key, kind="stable"), used // n_tables, used % n_tables, counts[used])

    def spans(self) -> zip:
        """(image, table, start, stop) of each group, as Python ints (fast to slice with)."""
        stops = np.cumsum(self.count)
        columns = (self.image, self.table, stops - self.count, stops)
        return zip(*(c.tolist() for c in columns), strict=True)

    def per_symbol(self, per_table: np.ndarray) -> np.ndarray:
        """``per_table[table]`` of every symbol, in stream order."""
        return np.repeat(per_table[self.table], self.count)


class _Writer:
    """A range encoder plus a running check over every value it codes."""

    def __init__(self) -> None:
        self.enc = _queue.RangeEncoder()
        self.crc = 0

    def uints(self, values: list[int]) -> None:
        if values and max(values) <= _DIGIT_MASK:  # the usual case: one digit each
            self.enc.encode(np.asarray(values, dtype=np.int32), _UNIFORM16)
            return
        digits = []
        for u in values:
            while u >> _DIGIT_BITS:
                digits.append((u & _DIGIT_MASK) | (1 << _DIGIT_BITS))
                u >>= _DIGIT_BITS
            digits.append(u)
        if digits:
            self.enc.encode(np.asarray(digits, dtype=np.int32), _UNIFORM16)

    def escape_values(self, values: np.ndarray) -> None:
        """Integer values (float64) as zigzag ``uints``: in numpy where each takes one digit (|v| < 2^14)."""
        if values.size and np.abs(values).max() < 1 << (_DIGIT_BITS - 1):
            self.enc.encode(np.where(values >= 0, 2 * values, -2 * values - 1).astype(np.int32), _UNIFORM16)
        elif values.size:
            self.uints([_zigzag(int(v)) for v in values])

    def flag(self, bit: bool) -> None:
        """A rare yes/no (the index guard's): ~1e-5 bits when no."""
        self.enc.encode(np.array([int(bit)], dtype=np.int32), _GUARD_FLAG)

    def symbols(self, q: np.ndarray, idx: np.ndarray, tables: _Tables) -> None:
        """Code integer values ``q`` (float64, flat) with table ``idx[i]`` each, grouped by table."""
        _write_symbols([self], q.reshape(1, -1) + 0.0, idx.reshape(1, -1), tables)

    def finish(self) -> bytes:
        self.enc.encode(np.array([self.crc & 0xFFFF], dtype=np.int32), _UNIFORM16)
        return self.enc.get_compressed().astype("<u4").tobytes()


def _write_symbols(writers: Sequence[_Writer], q: np.ndarray, idx: np.ndarray, tables: _Tables) -> None:
    """Row b of ``q`` (B, n; integers as float64, no -0.0) into ``writers[b]``, tables ``idx``."""
    sym, escaped = tables.symbols(q, idx)
    groups = _Groups.of(idx, len(tables.models))
    sym = sym.reshape(-1) if groups.order is None else sym.reshape(-1)[groups.order]
    for writer, row in zip(writers, q, strict=True):
        writer.crc = _crc(row, writer.crc)
    for b, t, start, stop in groups.spans():
        writers[b].enc.encode(sym[start:stop], tables.models[t])
    for b in np.flatnonzero(escaped.any(axis=1)).tolist():
        writers[b].escape_values(q[b][escaped[b]])


class _Reader:
    """Mirror of ``_Writer``; every coder failure becomes a ``FormatError``."""

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"entropy-coded data must be bytes, got {type(data).__name__}")
        if len(data) % 4:
            raise FormatError(f"entropy-coded stream of {len(data)} bytes is not a whole number of words")
        words = np.frombuffer(bytes(data), dtype="<u4").astype(np.uint32)
        self.dec = _queue.RangeDecoder(words)
        self.crc = 0

    def _decode(self, model, n: int) -> np.ndarray:
        try:
            return np.asarray(self.dec.decode(model, n))
        except Exception as e:  # constriction raises AssertionError/ValueError on invalid data
            raise FormatError(f"entropy-coded stream is corrupt: {e}") from e

    def uints(self, count: int) -> list[int]:
        """``count`` values, digits read in runs: each value left takes one digit at least."""
        return self._assemble(self._decode(_UNIFORM16, count), count) if count > 0 else []

    def _assemble(self, digits: np.ndarray, count: int) -> list[int]:
        """``count`` values from their first run of digits (one per value), reading more as needed."""
        out: list[int] = []
        u = shift = 0
        while True:
            for d in digits.tolist():
                u |= (d & _DIGIT_MASK) << shift
                if not d >> _DIGIT_BITS:
                    out.append(u)
                    u = shift = 0
                    continue
                shift += _DIGIT_BITS
                if shift >= _MAX_DIGITS * _DIGIT_BITS:
                    raise FormatError("entropy-coded stream is corrupt: escape value too long")
            if len(out) >= count:
                return out
            digits = self._decode(_UNIFORM16, count - len(out))

    def escape_values(self, count: int) -> np.ndarray:
        """Mirror of ``_Writer.escape_values``: ``count`` zigzag values as float64, in numpy when each
        took one digit (the usual case), else digit by digit."""
        digits = self._decode(_UNIFORM16, count)
        if not (digits >> _DIGIT_BITS).any():
            u = digits.astype(np.int64)
            return np.where(u & 1, -((u + 1) >> 1), u >> 1).astype(np.float64)
        try:
            return np.array([_unzigzag(u) for u in self._assemble(digits, count)], dtype=np.float64)
        except OverflowError as e:
            raise FormatError("entropy-coded stream is corrupt: escape value out of range") from e

    def flag(self) -> bool:
        """Mirror of ``_Writer.flag``."""
        return bool(self._decode(_GUARD_FLAG, 1)[0])

    def symbols(self, idx: np.ndarray, tables: _Tables) -> np.ndarray:
        return _read_symbols([self], idx.reshape(1, -1), tables).reshape(idx.shape)

    def finish(self) -> None:
        check = int(self._decode(_UNIFORM16, 1)[0])
        if check != self.crc & 0xFFFF:
            raise ChecksumError("entropy-coded stream check failed: the stream is truncated or corrupt")
        if not self.dec.maybe_exhausted():
            raise FormatError("entropy-coded stream has data left over after the last symbol")


def _unzigzag(u: int) -> int:
    return (u >> 1) if u % 2 == 0 else -((u + 1) >> 1)


def _read_symbols(
    readers: Sequence[_Reader], idx: np.ndarray, tables: _Tables, out: np.ndarray | None = None
) -> np.ndarray:
    """Mirror of ``_write_symbols``: (B, n) float64 values, row b from ``readers[b]``, written to ``out``
    (C-contiguous float64, (B, n)) if given. An image of one table (``_Groups.order`` None) takes no
    gather nor scatter: its symbols are in position order already."""
    batch, n = idx.shape
    groups = _Groups.of(idx, len(tables.models))
    q = np.empty((batch, n)) if out is None else out
    flat = q.reshape(-1)
    parts = [
        (b, t, start, readers[b]._decode(tables.models[t], stop - start))
        for b, t, start, stop in groups.spans()
    ]
    if groups.order is None:  # stream order is position order, one group per image
        escaped = []
        for _, t, start, sym in parts:
            np.add(sym, tables.offset[t], out=flat[start : start + sym.size])
            escaped.append(np.flatnonzero(sym == tables.n_regular[t]) + start)
        escaped = np.concatenate(escaped) if escaped else np.empty(0, np.intp)
    else:
        sym = np.concatenate([p[3] for p in parts]) if parts else np.empty(0, np.int64)
        flat[groups.order] = sym + groups.per_symbol(tables.offset)
        escaped = np.sort(groups.order[sym == groups.per_symbol(tables.n_regular)])
    if escaped.size:  # each image's escapes in position order
        stops = np.searchsorted(escaped, np.arange(1, batch + 1) * n).tolist()
        for b, (start, stop) in enumerate(zip([0, *stops[:-1]], stops, strict=True)):
            if stop > start:
                flat[escaped[start:stop]] = readers[b].escape_values(stop - start)
    for reader, row in zip(readers, q, strict=True):
        reader.crc = _crc(row, reader.crc)
    return q
