"""The DC-AE (``diffusers.AutoencoderDC``) with a memory-budgeted decoder. (The auxiliary ELIC analysis
transform, whose 1/16 features the latent codec fuses with the DC-AE latent, is in ``codec.elic``.)

Decoding within a memory budget. The DC-AE decoder's working memory is its full-resolution activations,
linear in the pixels decoded at once. ``plan_decode`` decodes the whole latent in one piece whenever it
fits the budget. Past that, two plans:

* The split decode (``SplitPlan``, exact). Only the decoder's deep, low-resolution stages are global
  (EfficientViT blocks: linear attention over the whole image); the stages after them (ResBlocks of 3x3
  convs and per-pixel RMSNorm, nearest-x2 upsampling blocks, the output head) are local with a finite
  receptive field. ``split_spec`` finds that split from the modules and counts the local part's halo
  in feature rows at the split (7 rows at 1/8 for ditic-official). The global part runs on the whole
  latent; the local part on horizontal strips of its features, top down, *carried* (``_carry_local``):
  each conv keeps the last rows of its input and puts them above the next strip's, each residual queues
  its skip rows, so every pixel is decoded once and the result equals the whole decode up to float
  rounding. A carried strip is estimated heavier than a halo window (``CARRY_FACTOR``); where none fits,
  or with ``kind="halo"``, the strips are windows with the halo either side, cropped back (sessions
  8-16's split: 1.1-1.8x the pixels at 2048²). The fewest strips whose call fits, as many images per
  call as fit. It runs the ``Decoder`` module's
  parts, never a graph-replayed whole decoder. Its estimate adds the global part's peak
  (``GLOBAL_LIVE_TENSORS`` of its widest tensor per pixel, measured on CPU), which for ditic-official
  at 1/8 is not small (2.77 GiB at 2048² in bf16). Where that does not fit, the global part is
  *streamed* (``_stream_global``): module by module in row windows, the EfficientViT blocks in two
  passes (their linear attention's key-value sums over all windows first, then each window's output),
  the result still exact; its estimate is per module (``StreamStep``: the module's whole input and
  output plus one window's measured working set, ``STREAM_WINDOW_TENSORS``). All windows of a step have
  one height (shifted inwards at the image's edges), so on a compiled decoder (``Codec(compile=True)``)
  each step function compiles once per shape (``_Steps``, ``torch.compile(dynamic=False)``); a compiled
  decoder always streams its global part (that is what compiles). ``plan_for(kind="tiles")`` (or
  ``DITIC_DECODE_PLAN=tiles``) keeps blended tiles instead, to compare.
* Blended tiles (``TilePlan``, approximate), for decoders that do not split, fixed ``tile=`` sizes, or
  a global part too big: the fewest tiles (so the least recomputed overlap) whose estimated peak fits,
  tiles of one shape decoded together as a batch when the budget holds several. Tiles overlap by
  ``overlap`` latent px and are blended with linear ramps, normalised by the summed weights (where
  three tiles meet along one axis the ramps do not sum to one). Each tile's attention sees only the
  tile, so the result differs slightly from a whole decode.

The estimate (``decoder_bytes_per_pixel``): the peak of one decoder call is set by its last,
full-resolution stage of ``C`` channels (``block_out_channels[0]``), where a ResBlock holds its residual,
two conv outputs and an activation at once, and the interpolate-upsample into it holds ``C_1 = 2C``
channels at full resolution. Measured peaks of eager decodes (CPU, ``torch.profiler`` allocation events,
256² outputs of the three named configs, 512² of ditic-test) are 4.4–4.6 full-width tensors per pixel in
float32 and 6.5–6.8 in bfloat16 (diffusers' RMSNorm upcasts its input to float32, two float32 copies of
a ``C``-channel tensor). Hence ``LIVE_TENSORS``. ``torch.compile`` fuses the elementwise tail and needs
less (~4 bf16 tensors: 1 KiB/px for ditic-official, inferred from two H200 peaks); pass a measured
``bytes_per_pixel`` to calibrate (a split plan applies it to its local part, compiled on a compiled
codec but in windows: a calibration from compiled whole decodes has not been checked against it).
Outside the estimate: weights and whatever else is resident. No split-plan estimate has been checked
on a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from codec import fastforms
from codec.config import CodecConfig
from codec.errors import LimitExceededError

__all__ = [
    "build_vae",
    "decode_latent",
    "plan_decode",
    "plan_for",
    "run_plan",
    "decoder_bytes_per_pixel",
    "default_budget_bytes",
    "fits_graphed",
    "GRAPH_POOL_FACTOR",
    "TilePlan",
    "SplitPlan",
    "SplitSpec",
    "DecodePlan",
    "StreamStep",
    "DECODE_PLANS",
    "split_spec",
    "DEFAULT_DECODE_MEMORY_GIB",
    "TILE_OVERLAP",
]

DOWNSCALE = 32
TILE_OVERLAP = 8  # latent px shared by neighbouring tiles (256 px)
MIN_TILE = 8  # latent px; a tile is at least max(MIN_TILE, 2 * overlap) a side (only neighbours overlap)
DEFAULT_DECODE_MEMORY_GIB = 4.0  # the default budget on CUDA; elsewhere no budget unless asked
LIVE_TENSORS = {4: 4.6, 2: 6.8}  # full-width tensors live per output pixel at the peak, by element size
_BLEND_BYTES = 7 * 4  # per tile pixel, float32: the piece (upcast), its weights, the weighted piece
GIB = 2**30
DECODE_PLANS = ("auto", "split", "halo", "tiles")  # plan_for's kinds
# widest tensors (of the global part, per output pixel) live at its peak, by element size: measured 23-24
# in float32 and ~40 in bfloat16 (the linear attention's float32 upcast), CPU, the three named configs
GLOBAL_LIVE_TENSORS = {4: 26.0, 2: 44.0}
# a carried strip (``_carry_local``) holds a conv's input and its copy below the rows handed on at once:
# about one full-width tensor more than a halo window's ~4.6 (fp32). At a 1x factor one official-like
# carried plan's CPU peak came out 0.6 % over its estimate; at 1.25 the test plans' estimates are
# 1.2-1.8x their measured peaks (tests/codec/test_carried_strips.py)
CARRY_FACTOR = 1.25


def build_vae(cfg: CodecConfig) -> nn.Module:
    """``AutoencoderDC.from_config`` (never from a hub)."""
    from diffusers import AutoencoderDC

    return AutoencoderDC.from_config(cfg.vae.diffusers_config())


def decoder_bytes_per_pixel(vae_config: Mapping[str, Any], dtype: torch.dtype) -> float:
    """Estimated peak bytes of a DC-AE decode per output pixel (``AutoencoderDC`` config keys)."""
    widths = vae_config["decoder_block_out_channels"]
    layers = vae_config["decoder_layers_per_block"]
    channels = widths[0] if layers[0] > 0 else widths[1]
    size = torch.empty((), dtype=dtype).element_size()
    return LIVE_TENSORS.get(size, LIVE_TENSORS[4]) * channels * size


def default_budget_bytes(device: torch.device | str) -> float:
    """The budget when none is given: ``DEFAULT_DECODE_MEMORY_GIB`` on CUDA, unlimited elsewhere."""
    return DEFAULT_DECODE_MEMORY_GIB * GIB if torch.device(device).type == "cuda" else math.inf


@dataclass(frozen=True)
class TilePlan:
    """How to decode a (batch, C, h, w) latent: tiles of ``tile`` latent px starting at ``rows`` x ``cols``,
    ``per_call`` (image, tile) pieces per decoder call. One tile covering the latent: a whole decode."""

    latent_size: tuple[int, int]
    batch: int
    tile: tuple[int, int]
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    overlap: int
    per_call: int
    bytes_per_pixel: float | None  # None: unknown decoder (fixed tiles only, one per call)
    out_itemsize: int = 4

    @property
    def tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def tiled(self) -> bool:
        return self.tiles > 1

    @property
    def calls(self) -> int:
        return math.ceil(self.batch * self.tiles / self.per_call)

    @property
    def call_pixels(self) -> int:
        """Output pixels of one decoder call."""
        return self.per_call * self.tile[0] * self.tile[1] * DOWNSCALE**2

    @property
    def decoded_pixels(self) -> int:
        """Output pixels the decoder computes, overlaps included (image pixels when whole)."""
        return self.batch * self.tiles * self.tile[0] * self.tile[1] * DOWNSCALE**2

    @property
    def estimated_bytes(self) -> float:
        """Estimated peak of the decode on top of what is already resident (weights, the latent)."""
        if self.bytes_per_pixel is None:
            return math.nan
        return _estimate(self.latent_size, self.batch, self.tile, self.tiled, self.per_call,
                         self.bytes_per_pixel, self.out_itemsize)  # fmt: skip

    def describe(self) -> str:
        h, w = self.latent_size
        size = f"{w * DOWNSCALE}x{h * DOWNSCALE}"
        est = f"est. {self.estimated_bytes / GIB:.2f} GiB"
        if not self.tiled:
            return f"{size}x{self.batch}: whole, {self.calls} call(s) of {self.per_call}, {est}"
        th, tw = self.tile
        return (
            f"{size}x{self.batch}: {len(self.rows)}x{len(self.cols)} tiles of {tw * DOWNSCALE}x"
            f"{th * DOWNSCALE} px (overlap >= {self.overlap * DOWNSCALE} px), {self.calls} call(s) of "
            f"{self.per_call}, {self.decoded_pixels / (self.batch * h * w * DOWNSCALE**2):.2f}x the pixels, "
            f"{est}"
        )


def _estimate(
    latent_size: tuple[int, int], batch: int, tile: tuple[int, int], tiled: bool, per_call: int,
    bytes_per_pixel: float, out_itemsize: int,
) -> float:  # fmt: skip
    """Peak bytes: ``per_call`` pieces of the decoder at once plus the output buffers."""
    image_px = latent_size[0] * latent_size[1] * DOWNSCALE**2
    tile_px = tile[0] * tile[1] * DOWNSCALE**2
    if not tiled:  # the decoder's output is the result; split batches are concatenated
        concat = 2 * batch * 3 * image_px * out_itemsize if per_call < batch else 0
        return per_call * tile_px * bytes_per_pixel + concat
    result = 0 if out_itemsize == 4 else batch * 3 * image_px * out_itemsize  # cast of the float32 sum
    buffers = batch * 3 * image_px * 4 + image_px * 4 + result  # float32 sum and summed weights
    return per_call * tile_px * (bytes_per_pixel + _BLEND_BYTES) + buffers


def _axis(length: int, count: int, overlap: int) -> tuple[int, tuple[int, ...]]:
    """The smallest size (and starts) of ``count`` tiles covering ``length``, sharing >= ``overlap``."""
    if count == 1:
        return length, (0,)
    size = -(-(length + (count - 1) * overlap) // count)
    return size, _starts(length, size, count)


def _starts(length: int, size: int, count: int) -> tuple[int, ...]:
    """Evenly spread starts: consecutive tiles share >= size - ceil((length - size) / (count - 1))."""
    if count == 1:
        return (0,)
    return tuple(round(k * (length - size) / (count - 1)) for k in range(count))


def _fixed_axis(length: int, tile: int, overlap: int) -> tuple[int, tuple[int, ...]]:
    if length <= tile:
        return length, (0,)
    count = math.ceil((length - overlap) / (tile - overlap))
    return tile, _starts(length, tile, count)


def _axis_options(length: int, overlap: int) -> list[tuple[int, tuple[int, ...]]]:
    """Every (size, starts) split of one axis whose tiles are no smaller than the minimum tile."""
    smallest = min(length, max(MIN_TILE, 2 * overlap))
    options, count = [], 1
    while True:
        size, starts = _axis(length, count, overlap)
        if size < smallest or (count > 1 and size >= length):
            return options
        options.append((size, starts))
        count += 1


@functools.lru_cache(maxsize=256)  # a pure function of hashable arguments: a decode loop plans once
def plan_decode(
    latent_size: tuple[int, int],
    *,
    batch: int = 1,
    bytes_per_pixel: float | None,
    budget_bytes: float,
    overlap: int = TILE_OVERLAP,
    tile: int | None = None,
    out_itemsize: int = 4,
    split: SplitSpec | None = None,
    stream: bool = False,
    carry: bool = True,
) -> DecodePlan:
    """The decode of a (batch, C, h, w) latent within ``budget_bytes`` (``math.inf``: whole, one call).

    Whole when one image fits. Else, given the decoder's ``split`` (``split_spec``), the exact split
    decode in the fewest strips that fit (``SplitPlan``). Else (no split, or not even the global part
    fits) blended tiles: the fewest whose single piece fits (ties: the fewest decoded pixels, then row
    strips), then as many pieces per call as fit, spread over equal calls. The split's global part runs
    whole where it fits, else streamed in row windows (``split.stream``); ``stream`` always streams it
    (a compiled decoder: the streamed steps are what it compiles); ``carry`` runs the local strips
    carried (``_carry_local``) where they fit, else in halo windows. ``tile`` fixes a square tile
    side instead (and so blended tiles). Raises ``LimitExceededError`` when not even the smallest tile
    fits the budget.
    """
    h, w = latent_size
    if overlap < 1:
        raise ValueError(f"tile overlap must be at least 1 latent px (the blend needs it), not {overlap!r}")
    if tile is not None:
        if not overlap < tile:
            raise ValueError(f"tile side must exceed the overlap ({overlap}), got {tile}")
        grids = [(_fixed_axis(h, tile, overlap), _fixed_axis(w, tile, overlap))]
    elif math.isinf(budget_bytes):
        grids = [((h, (0,)), (w, (0,)))]
    else:
        grids = sorted(((r, c) for r in _axis_options(h, overlap) for c in _axis_options(w, overlap)),
                       key=_grid_order)  # fmt: skip
    plans = [TilePlan((h, w), batch, (th, tw), rows, cols, overlap, 1, bytes_per_pixel, out_itemsize)
             for (th, rows), (tw, cols) in grids]  # fmt: skip
    for plan in plans:
        per_call = _pieces_per_call(plan, budget_bytes)
        if per_call:
            return dataclasses.replace(plan, per_call=per_call)
        if not plan.tiled and split is not None and tile is None and bytes_per_pixel is not None:
            args = ((h, w), batch, split, bytes_per_pixel, budget_bytes, out_itemsize, stream)
            strips = _split_plan(*args, carry) if carry else None
            if strips is None:  # a carried strip is estimated heavier: halo windows may still fit
                strips = _split_plan(*args, False)
            if strips is not None:  # whole did not fit: the exact split before blended tiles
                return strips
    smallest = min(plans, key=lambda p: p.estimated_bytes)
    raise LimitExceededError(
        f"a decode memory budget of {budget_bytes / GIB:.3f} GiB cannot hold even the smallest tile, "
        f"{smallest.tile[1] * DOWNSCALE}x{smallest.tile[0] * DOWNSCALE} px (est. "
        f"{smallest.estimated_bytes / GIB:.3f} GiB at {bytes_per_pixel:.0f} bytes/px); raise the budget "
        "(decode_memory_gib)"
    )


def _grid_order(grid: tuple[tuple[int, tuple[int, ...]], ...]) -> tuple[int, int, int]:
    """Fewest tiles, then fewest decoded latent px, then row strips (full-width tiles) first."""
    (th, rows), (tw, cols) = grid
    return len(rows) * len(cols), len(rows) * th * len(cols) * tw, -len(rows)


def _pieces_per_call(plan: TilePlan, budget_bytes: float) -> int:
    """As many (image, tile) pieces per call as fit, spread over equal calls; 0 if one does not fit."""
    pieces = plan.batch * plan.tiles
    if plan.bytes_per_pixel is None:
        return 1
    if math.isinf(budget_bytes):
        return pieces
    fits = 0
    while fits < pieces and _estimate(plan.latent_size, plan.batch, plan.tile, plan.tiled, fits + 1,
                                      plan.bytes_per_pixel, plan.out_itemsize) <= budget_bytes:  # fmt: skip
        fits += 1
    return math.ceil(pieces / math.ceil(pieces / fits)) if fits else 0


def plan_for(
    vae: nn.Module,
    latent: Tensor | tuple[torch.Size, torch.dtype, torch.device],
    tiled: bool | None = None,
    *,
    budget_bytes: float | None = None,
    bytes_per_pixel: float | None = None,
    overlap: int = TILE_OVERLAP,
    tile: int | None = None,
    kind: str | None = None,
) -> DecodePlan:
    """``decode_latent``'s plan for this latent, or for a (shape, dtype, device) of one: see there.

    ``kind`` (None: the ``DITIC_DECODE_PLAN`` environment variable, else "auto"): past the budget,
    "auto" takes the exact split where the decoder has one (its local strips carried), else blended
    tiles; "tiles" always blended tiles (session 5's plan, to compare); "split" the split or a
    ``LimitExceededError``; "halo" as "split", but its local strips in halo windows (sessions 8-16's
    split, to compare)."""
    if isinstance(latent, Tensor):
        latent = (latent.shape, latent.dtype, latent.device)
    shape, dtype, device = latent
    if bytes_per_pixel is None and hasattr(vae, "config"):
        bytes_per_pixel = decoder_bytes_per_pixel(vae.config, dtype)
    budget = default_budget_bytes(device) if budget_bytes is None else budget_bytes
    if tiled is False or (tiled is None and math.isinf(budget)):
        budget, tile = math.inf, None
    elif tiled and math.isinf(budget):
        budget = DEFAULT_DECODE_MEMORY_GIB * GIB
    if bytes_per_pixel is None and tile is None and not math.isinf(budget):
        raise ValueError("the decoder has no DC-AE config to estimate its memory from: pass bytes_per_pixel")
    kind = kind or os.environ.get("DITIC_DECODE_PLAN") or "auto"
    if kind not in DECODE_PLANS:
        raise ValueError(f"decode plan kind must be one of {DECODE_PLANS}, not {kind!r}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    decoder = getattr(vae, "decoder", None)
    # a compiled decoder (Codec(compile=True)) runs the split's parts through their own torch.compile
    # (_Steps), its global part always streamed (the streamed steps are what compiles)
    compiled = getattr(decoder, "_compiled_call_impl", None) is not None
    usable = tile is None and isinstance(decoder, nn.Module) and kind != "tiles"
    split = split_spec(decoder, dtype) if usable else None
    plan = plan_decode((shape[-2], shape[-1]), batch=shape[0], bytes_per_pixel=bytes_per_pixel,
                       budget_bytes=budget, overlap=overlap, tile=tile, out_itemsize=itemsize,
                       split=split, stream=compiled, carry=kind != "halo")  # fmt: skip
    if kind in ("split", "halo") and plan.tiled and not isinstance(plan, SplitPlan):
        raise LimitExceededError(f"no split decode fits: {plan.describe()} (decode plan kind {kind!r})")
    return plan


# A CUDA graph of the compiled decoder held 1.88-1.89x the working set that the same decoder allocates
# op by op (ditic-official bf16 on an H200, 1024² and 2048², session 4), and keeps it between calls.
GRAPH_POOL_FACTOR = 2.0


def fits_graphed(plan: DecodePlan, budget_bytes: float) -> bool:
    """Whether ``plan``'s decoder calls may replay from a CUDA graph within ``budget_bytes`` (never a
    split plan's: it runs the decoder's parts, not the whole decoder)."""
    if isinstance(plan, SplitPlan):
        return False
    return plan.estimated_bytes * GRAPH_POOL_FACTOR <= budget_bytes


def decode_latent(
    vae: nn.Module,
    latent: Tensor,
    tiled: bool | None = None,
    *,
    budget_bytes: float | None = None,
    bytes_per_pixel: float | None = None,
    overlap: int = TILE_OVERLAP,
    tile: int | None = None,
    decoder: Callable[[Tensor], Tensor] | None = None,
    kind: str | None = None,
) -> Tensor:
    """DC-AE decode of an (unscaled) latent (B, C, h, w) -> (B, 3, 32h, 32w), in the latent's dtype.

    ``tiled``: None decodes whole when the estimate fits ``budget_bytes`` (None: ``default_budget_bytes``
    of the latent's device), else by ``plan_decode``; True always follows the plan (under the default
    CUDA budget when there is none); False decodes whole. ``bytes_per_pixel`` calibrates the estimate.
    ``decoder`` runs ``vae.decoder``'s computation in its place (a compiled, graph-replayed copy) for
    whole and tiled decodes; a split decode runs ``vae.decoder``'s parts instead. ``kind``: past the
    budget, the split or blended tiles (``plan_for``).
    """
    plan = plan_for(vae, latent, tiled, budget_bytes=budget_bytes, bytes_per_pixel=bytes_per_pixel,
                    overlap=overlap, tile=tile, kind=kind)  # fmt: skip
    if isinstance(plan, SplitPlan):
        return run_plan(vae.decoder, latent, plan)
    return run_plan(decoder or vae.decoder, latent, plan)


def run_plan(decoder: Callable[[Tensor], Tensor], latent: Tensor, plan: DecodePlan) -> Tensor:
    """Decode ``latent`` as ``plan`` says: whole (in equal batches), tiles blended into one image, or
    (``SplitPlan``, ``decoder`` the DC-AE ``Decoder`` module itself) the global part whole and the
    local part in strips."""
    if isinstance(plan, SplitPlan):
        return _run_split(decoder, latent, plan)
    if not plan.tiled:
        if plan.per_call >= latent.shape[0]:
            return decoder(latent)
        return torch.cat([decoder(part) for part in latent.split(plan.per_call)])
    (th, tw), batch = plan.tile, latent.shape[0]
    h, w = plan.latent_size
    places = [(i, j) for i in range(len(plan.rows)) for j in range(len(plan.cols))]
    crops = torch.cat([latent[..., plan.rows[i] : plan.rows[i] + th, plan.cols[j] : plan.cols[j] + tw]
                       for i, j in places])  # fmt: skip  # (tiles * B, C, th, tw), tile-major
    out = latent.new_zeros((batch, 3, h * DOWNSCALE, w * DOWNSCALE), dtype=torch.float32)
    total = latent.new_zeros((h * DOWNSCALE, w * DOWNSCALE), dtype=torch.float32)
    for start in range(0, crops.shape[0], plan.per_call):
        pieces = decoder(crops[start : start + plan.per_call]).float()  # (n, 3, 32 th, 32 tw)
        for k, piece in enumerate(pieces, start):
            i, j = places[k // batch]
            weight = _tile_weights(plan, i, j, latent.device)
            region = (slice(plan.rows[i] * DOWNSCALE, (plan.rows[i] + th) * DOWNSCALE),
                      slice(plan.cols[j] * DOWNSCALE, (plan.cols[j] + tw) * DOWNSCALE))  # fmt: skip
            out[(k % batch, slice(None), *region)] += piece * weight
            if k % batch == 0:
                total[region] += weight
    return out.div_(total).to(latent.dtype)


def _ramp(length: int, lead: int, trail: int, device: torch.device) -> Tensor:
    """1-D blend weights: rising over ``lead`` samples, flat, falling over ``trail`` samples."""
    w = torch.ones(length, device=device)
    if lead:
        w[:lead] = (torch.arange(lead, device=device) + 0.5) / lead
    if trail:
        w[length - trail :] = torch.minimum(
            w[length - trail :], (torch.arange(trail, 0, -1, device=device) - 0.5) / trail
        )
    return w


def _tile_weights(plan: TilePlan, i: int, j: int, device: torch.device) -> Tensor:
    """Pixel weights of tile (i, j): ramps only where it overlaps a neighbour."""

    def edges(starts: tuple[int, ...], k: int, size: int) -> tuple[int, int]:
        lead = (starts[k - 1] + size - starts[k]) * DOWNSCALE if k > 0 else 0
        trail = (starts[k] + size - starts[k + 1]) * DOWNSCALE if k + 1 < len(starts) else 0
        return lead, trail

    th, tw = plan.tile
    wy = _ramp(th * DOWNSCALE, *edges(plan.rows, i, th), device)
    wx = _ramp(tw * DOWNSCALE, *edges(plan.cols, j, tw), device)
    return wy[:, None] * wx[None, :]


# --- the split decode: global stages whole, local stages in strips ------------------------------------

_POINTWISE = (nn.SiLU, nn.ReLU, nn.ReLU6, nn.GELU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.Hardswish,
              nn.Identity)  # fmt: skip


class _NotLocal(Exception):
    """A module whose output rows depend on more than a fixed band of input rows (or one not known)."""


def _rows_in(module: nn.Module, rows: int) -> tuple[int, int]:
    """(halo rows at ``module``'s input, its upsampling factor) for a halo of ``rows`` at its output.

    A stride-1 conv with zero padding of its radius widens the halo by the radius; a x``f`` upsample
    (nearest interpolation then a conv, or a conv then a pixel shuffle, plus the channel-repeat
    shortcut) needs ceil(rows / f) input rows; per-pixel norms and activations need nothing more."""
    from diffusers.models.autoencoders.autoencoder_dc import DCUpBlock2d, ResBlock
    from diffusers.models.normalization import RMSNorm

    if isinstance(module, nn.Conv2d):
        k, d, p = module.kernel_size[0], module.dilation[0], module.padding
        radius = d * (k - 1) // 2
        if module.stride[0] != 1 or k % 2 == 0 or module.padding_mode != "zeros" or p in ("valid",):
            raise _NotLocal(module)
        if p != "same" and p[0] != radius:
            raise _NotLocal(module)
        return rows + radius, 1
    if isinstance(module, nn.Sequential):
        factor = 1
        for child in reversed(module):
            rows, f = _rows_in(child, rows)
            factor *= f
        return rows, factor
    if isinstance(module, ResBlock):
        if not isinstance(module.norm, RMSNorm) or not isinstance(module.nonlinearity, _POINTWISE):
            raise _NotLocal(module)  # a batch norm in training mode would be global
        return _rows_in(module.conv1, _rows_in(module.conv2, rows)[0])[0], 1
    if isinstance(module, DCUpBlock2d):
        f = module.factor
        if module.interpolate:
            if module.interpolation_mode != "nearest":
                raise _NotLocal(module)
            return -(-_rows_in(module.conv, rows)[0] // f), f
        return _rows_in(module.conv, -(-rows // f))[0], f
    if isinstance(module, (RMSNorm, *_POINTWISE)):
        return rows, 1
    raise _NotLocal(module)


@dataclass(frozen=True)
class SplitSpec:
    """Where a DC-AE decoder splits, and what its parts cost (per output pixel, at the decode's dtype).

    ``stage``: the local part is ``up_blocks[stage - 1] .. up_blocks[0]`` and the output head; the global
    part, ``conv_in`` and ``up_blocks[-1] .. up_blocks[stage]``. ``scale``: output px per feature row at
    the split; ``halo``: feature rows either side of a strip that the local part's receptive field
    reaches. ``feature_bytes``: the split features; ``global_bytes``: the global part's estimated peak."""

    stage: int
    scale: int
    halo: int
    channels: int
    feature_bytes: float
    global_bytes: float
    stream: tuple[StreamStep, ...] | None = None  # the global part's steps, streamed; None: it cannot be


@dataclass(frozen=True)
class StreamStep:
    """One module of the global part run in row windows (``_stream_module``): its input is at 1/``downscale``
    with ``channels_in``, its output ``factor`` times finer with ``channels_out``; a window holds ``halo``
    rows either side and costs ``window_bytes`` per window pixel (of its input) at its peak."""

    downscale: int
    factor: int
    halo: int
    channels_in: int
    channels_out: int
    window_bytes: float
    itemsize: int

    def peak(self, latent_size: tuple[int, int], images: int, strips: int) -> float:
        """Peak bytes of the step on ``images`` images in ``strips`` windows: its whole input and output
        (both live while it runs) and one window's working set."""
        rows, cols = (n * DOWNSCALE // self.downscale for n in latent_size)
        count = max(1, min(strips, rows))
        window = min(rows, -(-rows // count) + 2 * self.halo)
        whole = rows * cols * (self.channels_in + self.channels_out * self.factor**2) * self.itemsize
        return images * (whole + window * cols * self.window_bytes)


def _stage_width(stage: nn.Module) -> int:
    """The widest input of a stage's blocks (channels of its first conv or linear layer)."""
    return max((_block_width(block) for block in stage), default=0)


def _block_width(block: nn.Module) -> int:
    first = next(m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    return first.in_channels if isinstance(first, nn.Conv2d) else first.in_features


def _stage_values(stage: nn.Module, downscale: int) -> float:
    """Values per output pixel of a stage's widest block input; an upsample's input is at half the
    resolution of the stage (``downscale``: output px per stage px along one axis)."""
    return max((_block_width(b) / (downscale * (b.factor if _is_upsample(b) else 1)) ** 2 for b in stage),
               default=0.0)  # fmt: skip


def split_spec(decoder: nn.Module, dtype: torch.dtype = torch.float32) -> SplitSpec | None:
    """How a diffusers DC-AE ``Decoder`` splits into a global and a local part; None where it cannot.

    The local part is the longest run of the last stages (``up_blocks[0]``, ``up_blocks[1]``, ... run
    last) whose every module is local (``_rows_in``: ResBlocks, up-sampling blocks), plus the output
    head (``norm_out``, ``conv_act``, ``conv_out``); the global part is what comes before (``conv_in``
    and the stages holding EfficientViT blocks, whose linear attention sees the whole image). None: not
    a diffusers ``Decoder``, or no local stage at its end."""
    try:
        from diffusers.models.autoencoders.autoencoder_dc import Decoder
    except ImportError:  # pragma: no cover - diffusers is a dependency
        return None
    if not isinstance(decoder, Decoder):
        return None
    try:
        halo, scale = _rows_in(nn.Sequential(decoder.norm_out, decoder.conv_act, decoder.conv_out), 0)
    except _NotLocal:
        return None
    stage = 0
    for block in decoder.up_blocks:
        try:
            halo, factor = _rows_in(block, halo)
        except _NotLocal:
            break
        stage, scale = stage + 1, scale * factor
    # _rows_in rounds up at every upsample: ``halo`` is whole feature rows at the split
    if stage == 0 or DOWNSCALE % scale:
        return None
    size = torch.empty((), dtype=dtype).element_size()
    channels = _stage_width(decoder.up_blocks[stage - 1]) if len(decoder.up_blocks[stage - 1]) else 0
    if not channels:  # an empty last local stage: the features are the deepest non-empty stage's width
        channels = max((_stage_width(b) for b in decoder.up_blocks[stage:] if len(b)),
                       default=decoder.conv_in.out_channels)  # fmt: skip
    # values per output pixel of the widest global tensor: stage i runs at 1/(scale * 2^(i - stage))
    widest, downscale = decoder.conv_in.out_channels / DOWNSCALE**2, scale
    for block in list(decoder.up_blocks)[stage:]:
        widest = max(widest, _stage_values(block, downscale))
        downscale *= math.prod(m.factor for m in block if _is_upsample(m))
    live = GLOBAL_LIVE_TENSORS.get(size, GLOBAL_LIVE_TENSORS[4])
    return SplitSpec(stage, scale, halo, channels, channels / scale**2 * size, live * widest * size,
                     _stream_steps(decoder, stage, scale, size))  # fmt: skip


# Working set of one streamed window per pixel of its input, in units of (input channels x element size),
# by the module's kind and the element size: CPU profiler peaks of one window (tools-free: the runs of
# tests/codec/test_streamed_decode.py's estimate test) were, fp32 / bf16: EfficientViT block pass 1
# 12.0 / 20.3, pass 2 17.1 / 18.0 (C = 128 and 256, head dim 32, one 5x5 scale: the float32 q, k, v
# and the 8C-wide GLUMBConv); ResBlock 4.5-6.0 / 6.1-10.1; interpolate-upsample block (C -> C/2, its
# 4x output included) 10.8-11.5 / 12.9-15.6. With ~15 % margin:
STREAM_WINDOW_TENSORS = {"evit": {4: 20.0, 2: 24.0}, "res": {4: 7.0, 2: 11.0}, "up": {4: 13.0, 2: 18.0}}


def _stream_steps(decoder: nn.Module, stage: int, scale: int, size: int) -> tuple[StreamStep, ...] | None:
    """The global part's modules as ``StreamStep`` s (``conv_in``, at the latent's size, stays whole and
    is counted as the first step's input); None where one of them cannot run in row windows."""
    from diffusers.models.autoencoders.autoencoder_dc import EfficientViTBlock, ResBlock

    steps, downscale = [], DOWNSCALE
    try:
        for block in reversed(decoder.up_blocks[stage:]):
            for module in block:
                c_in = _block_width(module)
                if isinstance(module, EfficientViTBlock):
                    halo, factor, kind, c_out = sum(_evit_halos(module)), 1, "evit", c_in
                else:
                    (halo, factor), kind = _rows_in(module, 0), "up" if _is_upsample(module) else "res"
                    if not isinstance(module, ResBlock) and not _is_upsample(module):
                        raise _NotLocal(module)
                    c_out = (
                        module.conv.out_channels
                        if kind == "up" and module.interpolate
                        else (
                            module.conv2.out_channels
                            if kind == "res"
                            else module.conv.out_channels // factor**2
                        )
                    )
                live = STREAM_WINDOW_TENSORS[kind].get(size, STREAM_WINDOW_TENSORS[kind][4])
                steps.append(StreamStep(downscale, factor, halo, c_in, c_out, live * c_in * size, size))
                downscale //= factor
    except _NotLocal:
        return None
    return tuple(steps) if downscale == scale else None


def _is_upsample(module: nn.Module) -> bool:
    from diffusers.models.autoencoders.autoencoder_dc import DCUpBlock2d

    return isinstance(module, DCUpBlock2d)


def _global_part(decoder: nn.Module, stage: int, latent: Tensor) -> Tensor:
    """``decoder``'s computation from the latent to the features that ``up_blocks[stage]`` puts out."""
    x = decoder.conv_in(latent)
    if decoder.in_shortcut:
        reps = decoder.in_shortcut_repeats
        x = x + latent.repeat_interleave(reps, dim=1, output_size=latent.shape[1] * reps)
    for block in reversed(decoder.up_blocks[stage:]):
        x = block(x)
    return x


def _local_part(decoder: nn.Module, stage: int, features: Tensor) -> Tensor:
    """``decoder``'s computation from the split features to pixels."""
    x = features
    for block in reversed(decoder.up_blocks[:stage]):
        x = block(x)
    x = decoder.norm_out(x.movedim(1, -1)).movedim(-1, 1)
    return decoder.conv_out(decoder.conv_act(x))


# --- the local part in carried strips: rows handed on, not recomputed ---------------------------------
#
# A 3x3 conv needs one row either side of each output row. Run top to bottom, a conv can keep the last
# 2r rows of its input (its zero padding on the first strip) and put them above the next strip's rows,
# so every output row is computed once. Each conv then lags r rows behind its input; a residual adds its
# skip rows from a queue that lags as much. The rows a strip hands on are the state (``states``, in the
# order the modules run); the first strip's output is ``lag`` px short and the last's that much longer.
# Unlike halo windows, nothing is computed twice: 1.00x the pixels at any strip count.


def _fresh(rows: Tensor) -> Tensor:
    """A copy of ``rows`` (a slice of a strip's buffer) in new memory, channels-last where it is: never a
    view that would keep the whole buffer alive. (Not ``clone()``: inductor drops a clone whose strides
    equal its source's, and a row slice's strides do, so under ``torch.compile`` every handed-on slice
    kept its layer's whole strip alive: 2.5-11.6 GiB on the H200 at 2048², session 17.)"""
    cl = rows.is_contiguous(memory_format=torch.channels_last) and not rows.is_contiguous()
    fmt = torch.channels_last if cl else torch.contiguous_format
    return torch.empty(rows.shape, dtype=rows.dtype, device=rows.device, memory_format=fmt).copy_(rows)


def _carry_conv(conv: nn.Conv2d, x: Tensor, old: list[Tensor] | None, new: list[Tensor], last: bool
                ) -> Tensor:  # fmt: skip
    """``conv`` on ``x``'s rows, below the rows the previous strip handed on (zeros above the first), and
    zeros below the last strip: ``2 r`` fewer rows than it is given."""
    r = conv.dilation[0] * (conv.kernel_size[0] - 1) // 2
    pad = conv.dilation[1] * (conv.kernel_size[1] - 1) // 2
    zeros = torch.zeros_like(x[:, :, :1]).expand(-1, -1, r, -1) if r else None
    parts = [zeros if old is None else old[len(new)], x]
    if last and r:
        parts.append(zeros)
    x = torch.cat([p for p in parts if p is not None], dim=2)
    new.append(_fresh(x[:, :, x.shape[2] - 2 * r :]))
    return nn.functional.conv2d(x, conv.weight, conv.bias, 1, (0, pad), conv.dilation, conv.groups)


def _carry_upsample(conv: nn.Conv2d, x: Tensor, old: list[Tensor] | None, new: list[Tensor], last: bool
                    ) -> Tensor:  # fmt: skip
    """``_carry_conv(conv, nearest_x2(x))`` for a 3x3 conv, as ``fastforms.upsample_conv_pairs`` on the low
    resolution rows: the row handed on is ``x``'s last (the two upsampled rows it makes, before), and the
    output rows are the same (the first strip's one short, the last's one long)."""
    zeros = torch.zeros_like(x[:, :, :1])
    parts = [zeros if old is None else old[len(new)], x, *([zeros] if last else [])]
    new.append(_fresh(x[:, :, x.shape[2] - 1 :]))
    y = fastforms.upsample_conv_pairs(torch.cat(parts, dim=2), conv.weight, conv.bias)
    return y[:, :, (1 if old is None else 0) : y.shape[2] - (1 if last else 0)]


def _carry_skip(skip: Tensor, rows: int, old: list[Tensor] | None, new: list[Tensor]) -> Tensor:
    """The first ``rows`` rows of the skip rows queued (those held back, then ``skip``); holds the rest."""
    queue = skip if old is None else torch.cat([old[len(new)], skip], dim=2)
    new.append(_fresh(queue[:, :, rows:]))
    return queue[:, :, :rows]


def _carry_module(module: nn.Module, x: Tensor, old: list[Tensor] | None, new: list[Tensor], last: bool
                  ) -> Tensor:  # fmt: skip
    """One module of the local part (those ``_rows_in`` accepts) on a strip, diffusers' computation."""
    from diffusers.models.autoencoders.autoencoder_dc import DCUpBlock2d, ResBlock

    if isinstance(module, nn.Sequential):
        for child in module:
            x = _carry_module(child, x, old, new, last)
        return x
    if isinstance(module, ResBlock):  # RMSNorm (checked by _rows_in): per pixel, over channels
        y = _carry_conv(module.conv1, x, old, new, last)
        y = _carry_conv(module.conv2, module.nonlinearity(y), old, new, last)
        y = module.norm(y.movedim(1, -1)).movedim(-1, 1)
        return y + _carry_skip(x, y.shape[2], old, new)
    if isinstance(module, DCUpBlock2d):
        phase = getattr(module, "phase_convs", False) and fastforms.phase_ok(module)  # fastforms' form
        if phase and fastforms.active():
            y = _carry_upsample(module.conv, x, old, new, last)
        elif module.interpolate:
            y = nn.functional.interpolate(x, scale_factor=module.factor, mode=module.interpolation_mode)
            y = _carry_conv(module.conv, y, old, new, last)
        else:
            y = nn.functional.pixel_shuffle(_carry_conv(module.conv, x, old, new, last), module.factor)
        if not module.shortcut:
            return y
        s = x.repeat_interleave(module.repeats, dim=1, output_size=x.shape[1] * module.repeats)
        return y + _carry_skip(nn.functional.pixel_shuffle(s, module.factor), y.shape[2], old, new)
    if isinstance(module, nn.Conv2d):
        return _carry_conv(module, x, old, new, last)
    if isinstance(module, _POINTWISE):
        return module(x)
    raise _NotLocal(module)


def _carry_local(decoder: nn.Module, stage: int, strip: Tensor, states: list[Tensor] | None, last: bool
                 ) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
    """``_local_part`` on one strip of the split features, in order from the top: (the output rows it
    completes, the rows it hands on to the next strip). ``states`` None: the first strip; ``last``: the
    last one, which completes every remaining row."""
    new: list[Tensor] = []
    x = strip
    for block in reversed(decoder.up_blocks[:stage]):
        x = _carry_module(block, x, states, new, last)
    x = decoder.norm_out(x.movedim(1, -1)).movedim(-1, 1)
    return _carry_module(decoder.conv_out, decoder.conv_act(x), states, new, last), new


def _carry_starts(rows: int, count: int, halo: int) -> tuple[int, ...]:
    """Starts of ``count`` (or fewer) carried strips over ``rows`` feature rows: one height but for the
    last, the first at least ``halo + 1`` rows (its output lags by up to ``halo`` rows of it)."""
    height = -(-rows // max(1, count))
    first = min(rows, max(height, halo + 1))
    return (0, *range(first, rows, height))


@dataclass(frozen=True)
class SplitPlan:
    """The exact decode in strips: the global part of ``per_call`` images at once on their whole latents
    (``global_strips`` 0), or streamed module by module in that many row windows (``_stream_global``),
    then the local part on horizontal strips of its features (starting at feature rows ``starts``), each
    with ``split.halo`` rows either side where the image goes on, cropped back to the strip."""

    latent_size: tuple[int, int]
    batch: int
    split: SplitSpec
    starts: tuple[int, ...]
    per_call: int  # images per call of the global part, and per call of the local part on one strip
    bytes_per_pixel: float
    out_itemsize: int = 4
    global_strips: int = 0  # 0: the global part whole; n: streamed in n row windows per module
    carry: bool = False  # the local strips hand rows on (``_carry_local``) instead of recomputing a halo

    @property
    def feature_rows(self) -> int:
        return self.latent_size[0] * DOWNSCALE // self.split.scale

    @property
    def strips(self) -> tuple[tuple[int, int, int, int], ...]:
        """(first, end, window first, window end) feature rows of each strip: its window holds the halo
        either side where the image goes on, all windows one height (shifted inwards at the edges); a
        carried strip's window is the strip itself."""
        if self.carry:
            ends = (*self.starts[1:], self.feature_rows)
            return tuple((a, b, a, b) for a, b in zip(self.starts, ends, strict=True))
        return _windows(self.feature_rows, len(self.starts), self.split.halo, self.starts)

    @property
    def tiles(self) -> int:
        return len(self.starts)

    @property
    def tiled(self) -> bool:
        return True

    @property
    def calls(self) -> int:
        """Calls of the local part (the global part takes one per ``per_call`` images on top)."""
        return math.ceil(self.batch / self.per_call) * self.tiles

    @property
    def call_pixels(self) -> int:
        """Output pixels, halo included, of the largest call of the local part. A carried strip is
        counted with both halos too (the rows handed on and the last strip's lagging ones stand in them),
        but the first with one: its output is short by the lag, its only extra rows the zeros on top."""
        rows = max(hi - lo for _, _, lo, hi in self.strips)
        if self.carry:
            heights = [b - a for a, b, _, _ in self.strips]
            rows = max(heights[0] + self.split.halo, max(heights[1:], default=0) + 2 * self.split.halo)
            rows = min(self.feature_rows, rows)
        return self.per_call * rows * self.split.scale * self._width_px

    @property
    def decoded_pixels(self) -> int:
        """Output pixels the local part computes, halos included (the global part runs at 1/scale)."""
        return self.batch * sum(hi - lo for _, _, lo, hi in self.strips) * self.split.scale * self._width_px

    @property
    def _width_px(self) -> int:
        return self.latent_size[1] * DOWNSCALE

    @property
    def estimated_bytes(self) -> float:
        """Estimated peak: the output, plus either the global part's peak or the split features and a
        call of the local part (``bytes_per_pixel`` times its output pixels, halo included)."""
        return self._out_bytes + max(self.global_bytes, self.local_bytes)

    @property
    def _out_bytes(self) -> float:
        return self.batch * 3 * self._image_px * self.out_itemsize

    @property
    def global_bytes(self) -> float:
        """The global part's peak: whole (``split.global_bytes`` per pixel), or streamed (the largest
        ``StreamStep.peak``: a step's whole input and output plus one window's working set)."""
        if not self.global_strips:
            return self.per_call * self._image_px * self.split.global_bytes
        n, strips = self.per_call, self.global_strips
        return max(step.peak(self.latent_size, n, strips) for step in self.split.stream)

    @property
    def _image_px(self) -> int:
        return self.latent_size[0] * self.latent_size[1] * DOWNSCALE**2

    @property
    def local_bytes(self) -> float:
        """The split features and one call of the local part (``bytes_per_pixel`` per output px, times
        ``CARRY_FACTOR`` for a carried strip: a conv's input and its copy below the handed-on rows)."""
        features = self.per_call * self._image_px * self.split.feature_bytes
        return features + self.call_pixels * self.bytes_per_pixel * (CARRY_FACTOR if self.carry else 1.0)

    def describe(self) -> str:
        h, w = self.latent_size
        heights = sorted({b - a for a, b, _, _ in self.strips})
        rows = f"{heights[0]}" if len(heights) == 1 else f"{heights[0]}-{heights[-1]}"
        kind = "split" if not self.global_strips else "streamed split"
        windows = f"{self.global_strips} strip{'s' if self.global_strips > 1 else ''}"
        local = f"{self.tiles} strips"
        if self.global_strips:
            local = f"global {windows}, local {local}"
        halo = "rows carried" if self.carry else f"+{self.split.halo} halo rows"
        return (
            f"{w * DOWNSCALE}x{h * DOWNSCALE}x{self.batch}: {kind} at 1/{self.split.scale}: "
            f"{local} of {rows} rows ({halo}), {self.calls} call(s) of "
            f"{self.per_call}, "
            f"{self.decoded_pixels / (self.batch * h * w * DOWNSCALE**2):.2f}x the pixels, "
            f"est. {self.estimated_bytes / GIB:.2f} GiB"
        )


DecodePlan = TilePlan | SplitPlan


def _split_plan(
    latent_size: tuple[int, int], batch: int, split: SplitSpec, bytes_per_pixel: float, budget_bytes: float,
    out_itemsize: int, stream: bool = False, carry: bool = True,
) -> SplitPlan | None:  # fmt: skip
    """The fewest local strips whose call fits the budget, with as many images per call as fit, and the
    global part whole where it fits beside the output (unless ``stream``), else streamed in the fewest
    windows that fit; None where nothing fits. ``carry``: strips that hand rows on (``_carry_starts``:
    one height but the last), else halo windows (heights as equal as possible)."""
    rows = latent_size[0] * DOWNSCALE // split.scale
    tried = set()
    for count in range(2, rows + 1):
        if carry:
            starts = _carry_starts(rows, count, split.halo)
            if len(starts) < 2 or starts in tried:
                continue
            tried.add(starts)
        else:
            starts = tuple(k * rows // count for k in range(count))  # heights differ by at most one row
        plan = SplitPlan(latent_size, batch, split, starts, 1, bytes_per_pixel, out_itemsize, carry=carry)
        fits = 0
        while fits < batch and _fit_global(dataclasses.replace(plan, per_call=fits + 1), budget_bytes,
                                           stream):  # fmt: skip
            fits += 1
        if fits:
            return _fit_global(dataclasses.replace(plan, per_call=math.ceil(batch / math.ceil(batch / fits))),
                               budget_bytes, stream)  # fmt: skip
        lightest = plan.global_bytes  # the global part whole, or in the most windows
        if split.stream is not None:
            lightest = min(lightest, dataclasses.replace(plan, global_strips=rows).global_bytes)
        if plan._out_bytes + lightest > budget_bytes:
            return None  # the global part alone does not fit: more local strips will not help
    return None


def _fit_global(plan: SplitPlan, budget_bytes: float, stream: bool) -> SplitPlan | None:
    """``plan`` with its global part whole (unless ``stream``) or in the fewest windows that fit, None
    where its local part or even the most windows do not fit."""
    if plan._out_bytes + plan.local_bytes > budget_bytes:
        return None
    if not stream and plan.estimated_bytes <= budget_bytes:
        return plan
    if plan.split.stream is None:
        return None
    lo, hi = 1, plan.feature_rows  # the fewest windows that fit: the peak never grows with more windows
    if dataclasses.replace(plan, global_strips=hi).estimated_bytes > budget_bytes:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if dataclasses.replace(plan, global_strips=mid).estimated_bytes <= budget_bytes:
            hi = mid
        else:
            lo = mid + 1
    return dataclasses.replace(plan, global_strips=lo)


def _run_split(decoder: nn.Module, latent: Tensor, plan: SplitPlan) -> Tensor:
    """The split decode: per group of ``plan.per_call`` images, the global part on their whole latents
    (whole, or streamed in ``plan.global_strips`` windows), then the local part on each strip's window of
    its features, cropped into the output. A compiled decoder (``Codec(compile=True)``) runs the streamed
    steps and the local part through ``torch.compile`` (``_Steps``)."""
    spec = split_spec(decoder) if isinstance(decoder, nn.Module) else None
    planned = plan.split
    if spec is None or (spec.stage, spec.scale, spec.halo) != (planned.stage, planned.scale, planned.halo):
        raise TypeError(f"a split plan runs the DC-AE Decoder module it was planned for, not {type(decoder)}")
    steps = _steps_for(decoder)
    s, (h, w) = plan.split.scale, plan.latent_size
    out = None
    for first in range(0, latent.shape[0], plan.per_call):
        group = latent[first : first + plan.per_call]
        with torch.profiler.record_function("dcae.split.global"):  # labels for tools/streamed_decode.py
            if plan.global_strips:
                features = _stream_global(decoder, spec.stage, group, plan.global_strips, steps)
            else:
                features = _global_part(decoder, spec.stage, group)
        if features.shape[-2:] != (h * DOWNSCALE // s, w * DOWNSCALE // s):
            raise ValueError(f"split features {tuple(features.shape)} do not fit the plan: {plan.describe()}")
        if plan.carry:
            with torch.profiler.record_function("dcae.split.local"):
                out = _run_carried(decoder, spec.stage, features, plan, steps, out, first, latent.shape[0])
            del features
            continue
        with torch.profiler.record_function("dcae.split.local"):
            for a, b, lo, hi in plan.strips:
                piece = steps("local")(decoder, spec.stage, features[:, :, lo:hi])
                if out is None:
                    out = piece.new_empty((latent.shape[0], piece.shape[1], h * DOWNSCALE, w * DOWNSCALE))
                rows = slice((a - lo) * s, (b - lo) * s)
                out[first : first + group.shape[0], :, a * s : b * s] = piece[:, :, rows]
                del piece  # not alive through the next strip's call
        del features
    return out


def _run_carried(decoder: nn.Module, stage: int, features: Tensor, plan: SplitPlan, steps: _Steps,
                 out: Tensor | None, first: int, batch: int) -> Tensor:  # fmt: skip
    """The local part of one group of images (``out[first:]``) in ``plan``'s carried strips, top down."""
    h, w = plan.latent_size
    states, row = None, 0
    for a, b, _, _ in plan.strips:
        piece, states = steps("carry")(decoder, stage, features[:, :, a:b], states, b == plan.feature_rows)
        if out is None:
            out = piece.new_empty((batch, piece.shape[1], h * DOWNSCALE, w * DOWNSCALE))
        out[first : first + features.shape[0], :, row : row + piece.shape[2]] = piece
        row += piece.shape[2]
        del piece
    if row != h * DOWNSCALE:
        raise RuntimeError(f"carried strips put out {row} rows, not {h * DOWNSCALE}: {plan.describe()}")
    return out


# --- the streamed split: the global stages in strips too ------------------------------------------------
#
# In an EfficientViT block only the linear attention's key-value sums are global: per head,
# S = sum_n [v_n; 1] k_n^T (float32, diffusers' ``apply_linear_attention`` with its row of ones), and
# each pixel's output is a function of S and its own query. So the block runs in two passes over row
# windows of its input: pass 1 adds up each window's S over the window's own rows (a 0/1 row mask);
# pass 2 recomputes the queries, applies S, the projection, norm and residual, then the GLUMBConv, and
# keeps the window's own rows. The stages' ResBlocks and upsample blocks are local: windows with a halo.
# Every window of a step has the same height (shifted inwards at the image's edges, never padded), so a
# compiled step serves all windows with one graph.


def _windows(rows: int, count: int, halo: int, starts: tuple[int, ...] | None = None
             ) -> tuple[tuple[int, int, int, int], ...]:  # fmt: skip
    """(first, end, window first, window end) rows of ``count`` strips of near-equal height covering
    ``rows``: every window holds its strip and ``halo`` rows either side where the image goes on, and all
    windows have one height (the tallest strip plus both halos, at most ``rows``)."""
    if starts is None:
        count = max(1, min(count, rows))
        starts = tuple(k * rows // count for k in range(count))
    ends = (*starts[1:], rows)
    length = min(rows, max(b - a for a, b in zip(starts, ends, strict=True)) + 2 * halo)
    return tuple((a, b, min(max(a - halo, 0), rows - length), min(max(a - halo, 0), rows - length) + length)
                 for a, b in zip(starts, ends, strict=True))  # fmt: skip


def _evit_halos(block: nn.Module) -> tuple[int, int]:
    """(rows the multiscale qkv projections reach, rows the GLUMBConv reaches) of an EfficientViT block;
    ``_NotLocal`` where its parts are not the per-pixel ones the streamed passes assume."""
    from diffusers.models.attention_processor import SanaMultiscaleAttnProcessor2_0
    from diffusers.models.normalization import RMSNorm
    from diffusers.models.transformers.sana_transformer import GLUMBConv

    attn, glu = block.attn, block.conv_out
    processors = (SanaMultiscaleAttnProcessor2_0, fastforms.LinearAttnProcessor)
    if type(attn.processor) not in processors or not isinstance(glu, GLUMBConv):
        raise _NotLocal(block)
    per_pixel = isinstance(attn.norm_out, RMSNorm) if attn.norm_type == "rms_norm" else (
        isinstance(attn.norm_out, nn.BatchNorm2d) and not attn.norm_out.training)  # fmt: skip
    if not per_pixel or not isinstance(attn.nonlinearity, nn.ReLU) or glu.norm_type not in (None, "rms_norm"):
        raise _NotLocal(block)
    if not isinstance(glu.nonlinearity, _POINTWISE):
        raise _NotLocal(block)
    qkv = max((_rows_in(nn.Sequential(p.proj_in, p.proj_out), 0)[0] for p in attn.to_qkv_multiscale),
              default=0)  # fmt: skip
    return qkv, _rows_in(nn.Sequential(glu.conv_inverted, glu.conv_depth, glu.conv_point), 0)[0]


def _evit_sums(block: nn.Module, window: Tensor, mask: Tensor) -> Tensor:
    """Pass 1: the window's share of each head's [v; 1] k^T (float32), over the rows where ``mask`` is 1."""
    attn = block.attn
    _, key, value = fastforms.qkv(attn, window).chunk(3, dim=2)
    b, g, d, n = key.shape
    key = (attn.nonlinearity(key).reshape(b, g, d, mask.shape[0], -1) * mask[:, None]).reshape(b, g, d, n)
    return fastforms.kv_sums(key, value)


def _evit_apply(block: nn.Module, window: Tensor, sums: Tensor) -> Tensor:
    """Pass 2: the block's output on the window (exact on its rows that the halo covers), given the
    whole image's sums: diffusers' ``SanaMultiscaleAttnProcessor2_0`` linear branch, then the GLUMBConv."""
    attn = block.attn
    query = attn.nonlinearity(fastforms.qkv(attn, window).chunk(3, dim=2)[0])
    return block.conv_out(fastforms.attend(attn, query, sums, window))


def _call_module(module: nn.Module, window: Tensor) -> Tensor:
    return module(window)


_STEP_FUNCTIONS = {"sums": _evit_sums, "apply": _evit_apply, "module": _call_module, "local": _local_part,
                   "carry": _carry_local}  # fmt: skip
_COMPILE_OPTIONS: dict[str, Any] = {"dynamic": False}  # tests swap in backend="eager" (no C++ on CPU runs)


class _Steps:
    """The functions a split decode runs per window: eager, or (a compiled decoder) each through its own
    ``torch.compile(dynamic=False)``, shared by every module and window of one shape (the modules are
    inputs of the graph, not constants). One per decoder (``_steps_for``), made on first use."""

    def __init__(self, compiled: bool):
        self.compiled = compiled
        self._fns: dict[str, Callable] = {}

    def __call__(self, name: str) -> Callable:
        fn = self._fns.get(name)
        if fn is None:
            fn = _STEP_FUNCTIONS[name]
            if self.compiled:
                import torch._dynamo

                cfg = torch._dynamo.config  # each function sees every stage's shape of every decoded size
                for key in ("recompile_limit", "cache_size_limit"):
                    if hasattr(cfg, key):
                        setattr(cfg, key, max(getattr(cfg, key), 64))
                fn = torch.compile(fn, **_COMPILE_OPTIONS)
            self._fns[name] = fn
        return fn


_STEPS: weakref.WeakKeyDictionary[nn.Module, _Steps] = weakref.WeakKeyDictionary()


def _steps_for(decoder: nn.Module) -> _Steps:
    """The decoder's ``_Steps`` (kept beside it, not in it: copies and state dicts never see them)."""
    compiled = getattr(decoder, "_compiled_call_impl", None) is not None
    steps = _STEPS.get(decoder)
    if steps is None or steps.compiled != compiled:
        steps = _STEPS[decoder] = _Steps(compiled)
    return steps


def _memory_format(decoder: nn.Module) -> torch.memory_format:
    """Channels-last where the decoder's weights are (``Codec(compile=True)``), else contiguous: the
    streamed buffers' layout, one for every step, so that a compiled step sees windows of one layout."""
    weight = decoder.conv_in.weight
    cl = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _stream_module(module: nn.Module, x: Tensor, strips: int, steps: _Steps, fmt: torch.memory_format
                   ) -> Tensor:  # fmt: skip
    """One module of the global stages on ``x`` (B, C, h, w) in ``strips`` row windows (see above)."""
    from diffusers.models.autoencoders.autoencoder_dc import EfficientViTBlock

    rows, cols = x.shape[-2:]
    out = None
    if strips <= 1:  # one window is the whole input: the module as it is (no second pass over the queries)
        return steps("module")(module, x).contiguous(memory_format=fmt)
    if isinstance(module, EfficientViTBlock):
        if rows * cols <= module.attn.attention_head_dim:  # diffusers' quadratic branch: tiny, whole
            return module(x)
        reach, glu = _evit_halos(module)
        sums = None
        mask = x.new_zeros(_windows(rows, strips, reach)[0][3], dtype=torch.float32)
        for a, b, lo, hi in _windows(rows, strips, reach):
            mask.zero_()
            mask[a - lo : b - lo] = 1
            part = steps("sums")(module, x[:, :, lo:hi], mask)
            sums = part if sums is None else sums.add_(part)
        for a, b, lo, hi in _windows(rows, strips, reach + glu):
            piece = steps("apply")(module, x[:, :, lo:hi], sums)
            if out is None:
                out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
            out[:, :, a:b] = piece[:, :, a - lo : b - lo]
            del piece
        return out
    halo, f = _rows_in(module, 0)
    for a, b, lo, hi in _windows(rows, strips, halo):
        piece = steps("module")(module, x[:, :, lo:hi])
        if out is None:
            shape = (x.shape[0], piece.shape[1], rows * f, cols * f)
            out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        out[:, :, a * f : b * f] = piece[:, :, (a - lo) * f : (b - lo) * f]
        del piece
    return out


def _stream_global(decoder: nn.Module, stage: int, latent: Tensor, strips: int, steps: _Steps) -> Tensor:
    """``_global_part`` with every module after ``conv_in`` run in ``strips`` row windows: the same
    features, without any whole-image tensor wider than a module's input or output."""
    x = decoder.conv_in(latent)  # at the latent's resolution: small
    if decoder.in_shortcut:
        reps = decoder.in_shortcut_repeats
        x = x + latent.repeat_interleave(reps, dim=1, output_size=latent.shape[1] * reps)
    fmt = _memory_format(decoder)
    x = x.contiguous(memory_format=fmt)
    for block in reversed(decoder.up_blocks[stage:]):
        for module in block:
            x = _stream_module(module, x, strips, steps, fmt)
    return x
