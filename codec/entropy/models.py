"""Entropy models of DiT-IC: likelihoods for training and integer CDF tables for coding.

* ``EntropyBottleneck``: the factorized prior of Ballé et al. 2018 ("Variational image compression
  with a scale hyperprior", §6.1) for the hyper-latent ``z``.
* ``GaussianConditional``: ``y ~ N(mu, sigma)`` convolved with U(-1/2, 1/2), coded with one of 64
  integer tables chosen by ``sigma`` (scale table 0.11..256, log-spaced).

Parameter and buffer names and shapes follow the released checkpoint (CompressAI layout), so the
release maps onto these modules key for key. The coder itself lives in ``codec.entropy.coding``
(the Gaussian streams) over ``codec.entropy.rangecoder`` (the range-coder core).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from codec.entropy.coding import GaussianStreamDecoder, GaussianStreamEncoder, _finite_numpy, _representable
from codec.entropy.rangecoder import _pack_cdfs, _quantized_cdf, _Reader, _TableCache, _Tables, _Writer

__all__ = ["EntropyBottleneck", "GaussianConditional", "LowerBound", "default_scale_table"]

SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256.0, 64


def default_scale_table() -> Tensor:
    """64 scales log-spaced from 0.11 to 256 (the release's table)."""
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


class _LowerBoundFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, bound: Tensor) -> Tensor:
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound.to(x.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        x, bound = ctx.saved_tensors
        pass_through = (x >= bound) | (grad < 0)  # let gradients push values up off the bound
        return pass_through.to(grad.dtype) * grad, None


class LowerBound(nn.Module):
    """``max(x, bound)`` whose gradient still flows when it would move ``x`` back above the bound."""

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: Tensor) -> Tensor:
        return _LowerBoundFn.apply(x, self.bound)


def _ste_round(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


def _std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-x * (2**-0.5))


def _resize_buffers(module: nn.Module, state_dict: dict, prefix: str, names: tuple[str, ...]) -> None:
    """Let ``load_state_dict`` accept CDF tables of another length than the current ones."""
    for name in names:
        incoming = state_dict.get(prefix + name)
        current = getattr(module, name)
        if incoming is not None and incoming.shape != current.shape:
            module._buffers[name] = torch.empty(incoming.shape, dtype=current.dtype, device=current.device)


_CODING_BUFFERS = ("_offset", "_quantized_cdf", "_cdf_length")


class EntropyBottleneck(nn.Module):
    """Factorized prior p(z~) per channel (Ballé et al. 2018, appendix 6.1), CompressAI layout.

    ``forward(z)`` with ``z: (B, C, *spatial)`` returns ``(z_hat, likelihoods)`` of the same shape:
    additive uniform noise in training, rounding around the channel medians in eval.
    """

    def __init__(
        self,
        channels: int,
        *,
        tail_mass: float = 1e-9,
        init_scale: float = 10.0,
        filters: tuple[int, ...] = (3, 3, 3, 3),
        likelihood_bound: float = 1e-9,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels, self.filters, self.tail_mass = int(channels), tuple(filters), float(tail_mass)
        for name in _CODING_BUFFERS:
            self.register_buffer(name, torch.zeros(0, dtype=torch.int32))
        self.likelihood_lower_bound = LowerBound(likelihood_bound)
        dims = (1, *self.filters, 1)
        scale = init_scale ** (1 / (len(self.filters) + 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for i in range(len(self.filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(self.filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        self.quantiles = nn.Parameter(torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        target = math.log(2 / tail_mass - 1)
        self.register_buffer("target", torch.tensor([-target, 0.0, target]))
        self._cache = _TableCache()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        _resize_buffers(self, state_dict, prefix, _CODING_BUFFERS)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _medians(self) -> Tensor:
        return self.quantiles[:, 0, 1]  # (C,)

    def _logits_cumulative(self, x: Tensor, stop_gradient: bool, params: tuple | None = None) -> Tensor:
        """Cumulative logits of the density at ``x: (C, 1, N)``."""
        matrices, biases, factors = params or (self.matrices, self.biases, self.factors)
        logits = x
        for i, (matrix, bias) in enumerate(zip(matrices, biases, strict=True)):
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(F.softplus(matrix), logits) + bias
            if i < len(factors):
                factor = factors[i].detach() if stop_gradient else factors[i]
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def _likelihood(self, x: Tensor, params: tuple | None = None) -> tuple[Tensor, Tensor, Tensor]:
        lower = self._logits_cumulative(x - 0.5, stop_gradient=False, params=params)
        upper = self._logits_cumulative(x + 0.5, stop_gradient=False, params=params)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the flat tail for precision
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)), lower, upper

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if z.dim() < 2 or z.shape[1] != self.channels:
            raise ValueError(f"expected z of shape (B, {self.channels}, ...), got {tuple(z.shape)}")
        x = z.transpose(0, 1).reshape(self.channels, 1, -1)  # (C, 1, N)
        medians = self._medians().detach().view(-1, 1, 1)
        if self.training:
            x_hat = x + torch.empty_like(x).uniform_(-0.5, 0.5)
        else:
            x_hat = _ste_round(x - medians) + medians
        likelihood = self.likelihood_lower_bound(self._likelihood(x_hat)[0])
        shape = (self.channels, z.shape[0], *z.shape[2:])
        z_hat = x_hat.reshape(shape).transpose(0, 1)
        return z_hat, likelihood.reshape(shape).transpose(0, 1)

    def aux_loss(self) -> Tensor:
        """L1 distance of the density's CDF at ``quantiles`` to (tail/2, 1/2, 1 - tail/2) in logits."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    @torch.no_grad()
    def update(self, force: bool = False) -> bool:
        """Build the integer CDF tables (CPU, float64). Returns False when they exist and not ``force``."""
        if self._offset.numel() > 0 and not force:
            return False
        params = tuple(
            [p.detach().to("cpu", torch.float64) for p in group]
            for group in (self.matrices, self.biases, self.factors)
        )
        q = self.quantiles.detach().to("cpu", torch.float64)[:, 0, :]  # (C, 3)
        medians = q[:, 1]
        minima = torch.ceil(medians - q[:, 0]).clamp(min=0).long()
        maxima = torch.ceil(q[:, 2] - medians).clamp(min=0).long()
        pmf_length = minima + maxima + 1
        samples = torch.arange(int(pmf_length.max()), dtype=torch.float64)[None, :]
        samples = (samples + (medians - minima)[:, None]).unsqueeze(1)  # (C, 1, L)
        pmf, lower, upper = self._likelihood(samples, params=params)
        rows = []
        for c in range(self.channels):
            n = int(pmf_length[c])
            tail = float(torch.sigmoid(lower[c, 0, 0]) + torch.sigmoid(-upper[c, 0, n - 1]))
            rows.append(_quantized_cdf(pmf[c, 0, :n].numpy(), tail))
        self._set_tables(*_pack_cdfs(rows), -minima.to(torch.int32))
        return True

    def _set_tables(self, cdf: Tensor, cdf_length: Tensor, offset: Tensor) -> None:
        device = self.quantiles.device
        self._quantized_cdf, self._cdf_length, self._offset = (
            cdf.to(device),
            cdf_length.to(device),
            offset.to(device),
        )

    def _tables(self) -> _Tables:
        return self._cache.get(self._quantized_cdf, self._cdf_length, self._offset)

    @torch.no_grad()
    def compress(self, z: Tensor) -> list[bytes]:
        """One string per batch item; decode with ``decompress(strings, z.shape[2:])``."""
        if z.dim() != 4 or z.shape[1] != self.channels:
            raise ValueError(f"expected z of shape (B, {self.channels}, H, W), got {tuple(z.shape)}")
        tables = self._tables()
        medians = self._medians().detach().to(z.device, z.dtype).view(1, -1, 1, 1)
        # z - medians in z's dtype, as before; rounding (half to even, as torch.round) on the float64
        # host copy: exact, and no torch op on a busy CPU, where torch's thread pool may cost ms
        q = np.rint(_finite_numpy(z - medians, "z")).reshape(z.shape[0], -1)
        idx = np.repeat(np.arange(self.channels), z.shape[2] * z.shape[3])
        strings = []
        for item in q:
            writer = _Writer()
            writer.symbols(item, idx, tables)
            strings.append(writer.finish())
        return strings

    @torch.no_grad()
    def decompress(self, strings: list[bytes], size: tuple[int, int]) -> Tensor:
        """``(B, C, H, W)`` z_hat from ``compress`` strings; raises FormatError on a bad string."""
        h, w = (int(v) for v in size)
        if h < 1 or w < 1:
            raise ValueError(f"size must be positive, got {tuple(size)}")
        tables = self._tables()
        idx = np.repeat(np.arange(self.channels), h * w)
        items = []
        for data in strings:
            reader = _Reader(data)
            items.append(reader.symbols(idx, tables))
            reader.finish()
        medians = self._medians().detach().view(1, -1, 1, 1)
        q = torch.from_numpy(np.stack(items) if items else np.zeros((0, idx.size)))
        q = _representable(q.reshape(len(items), self.channels, h, w), medians.dtype)
        return q.to(medians.device) + medians


class GaussianConditional(nn.Module):
    """Conditional Gaussian model of ``y`` (mean-scale hyperprior), CompressAI layout.

    ``forward(y, scales, means)`` returns ``(y_hat, likelihoods)``: noise in training, straight-through
    rounding around the mean in eval. Coding goes through ``stream_encoder``/``stream_decoder`` so the
    model can code the four context steps one after the other into a single string.
    """

    def __init__(
        self,
        scale_table: Tensor | list[float] | None = None,
        *,
        scale_bound: float = SCALES_MIN,
        tail_mass: float = 1e-9,
        likelihood_bound: float = 1e-9,
        index_margin: float = 1e-7,
    ) -> None:
        super().__init__()
        table = (
            default_scale_table()
            if scale_table is None
            else torch.as_tensor(scale_table, dtype=torch.float32)
        )
        if table.dim() != 1 or len(table) < 2 or not (table > 0).all() or not (table.diff() > 0).all():
            raise ValueError(f"scale_table must be positive and strictly increasing, got {table.tolist()}")
        self.tail_mass, self.index_margin = float(tail_mass), float(index_margin)
        self.register_buffer("scale_table", table)
        self.register_buffer("scale_bound", torch.tensor([float(scale_bound)]))
        for name in _CODING_BUFFERS:
            self.register_buffer(name, torch.zeros(0, dtype=torch.int32))
        self.lower_bound_scale = LowerBound(scale_bound)
        self.likelihood_lower_bound = LowerBound(likelihood_bound)
        self._cache = _TableCache()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        _resize_buffers(self, state_dict, prefix, (*_CODING_BUFFERS, "scale_table"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def likelihood(self, y_hat: Tensor, scales: Tensor, means: Tensor | None = None) -> Tensor:
        """P(y_hat) under N(means, scales) * U(-1/2, 1/2), lower-bounded."""
        values = torch.abs(y_hat - means if means is not None else y_hat)
        scales = self.lower_bound_scale(scales)
        upper = _std_normal_cdf((0.5 - values) / scales)
        lower = _std_normal_cdf((-0.5 - values) / scales)
        return self.likelihood_lower_bound(upper - lower)

    def forward(
        self, y: Tensor, scales: Tensor, means: Tensor | None = None, *, noise: bool | None = None
    ) -> tuple[Tensor, Tensor]:
        """``noise`` overrides the mode (default: noise when training, STE rounding otherwise)."""
        if scales.shape != y.shape or (means is not None and means.shape != y.shape):
            raise ValueError(f"y {tuple(y.shape)}, scales {tuple(scales.shape)} and means must share a shape")
        if self.training if noise is None else noise:
            y_hat = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        elif means is None:
            y_hat = _ste_round(y)
        else:
            y_hat = _ste_round(y - means) + means
        return y_hat, self.likelihood(y_hat, scales, means)

    @torch.no_grad()
    def update(self, force: bool = False) -> bool:
        """Build one integer CDF per scale level (CPU, float64). False when present and not ``force``."""
        if self._offset.numel() > 0 and not force:
            return False
        multiplier = -NormalDist().inv_cdf(self.tail_mass / 2)
        table = self.scale_table.detach().to("cpu", torch.float64)
        pmf_center = torch.ceil(table * multiplier).long()
        rows = []
        for scale, center in zip(table, pmf_center.tolist(), strict=True):
            samples = torch.abs(torch.arange(2 * center + 1, dtype=torch.float64) - center)
            upper = _std_normal_cdf((0.5 - samples) / scale)
            lower = _std_normal_cdf((-0.5 - samples) / scale)
            rows.append(_quantized_cdf((upper - lower).numpy(), 2 * float(lower[0])))
        cdf, cdf_length = _pack_cdfs(rows)
        device = self.scale_table.device
        self._quantized_cdf, self._cdf_length = cdf.to(device), cdf_length.to(device)
        self._offset = (-pmf_center).to(torch.int32).to(device)
        return True

    def _coding_state(self) -> tuple[_Tables, np.ndarray]:
        if len(self._offset) != len(self.scale_table):
            raise RuntimeError("scale table and CDF tables disagree: run update(force=True)")
        tables = self._cache.get(self._quantized_cdf, self._cdf_length, self._offset)
        boundaries = self.scale_table.detach().to("cpu", torch.float64).numpy()[:-1]
        return tables, boundaries

    def stream_encoder(self) -> GaussianStreamEncoder:
        return GaussianStreamEncoder(*self._coding_state(), self.index_margin)

    def stream_decoder(self, data: bytes) -> GaussianStreamDecoder:
        return GaussianStreamDecoder(*self._coding_state(), data)
