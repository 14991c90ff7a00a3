"""The compact float64 entropy path (issue 6): ``LatentCodec.entropy_path64`` keeps the originals' float32
weights and casts them to float64 at each call (``fastconv.Float64Conv2d``). It must compute bit for bit
what the float64 copy it replaces computed (a deepcopy cast with ``.to(torch.float64)``, then
``use_gemm_convs``): through ``F.conv2d`` (the CPU) and through the GEMM forms (a GPU's; forced here on
the CPU), and so code the same payloads, in half the memory."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from codec import fastconv
from codec.api import load_codec
from codec.fastconv import Float64Conv2d, GemmConv2d, use_gemm_convs
from codec.latent import CONTEXT_MODULES, EntropyPath

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_path(codec: torch.nn.Module) -> EntropyPath:
    """The float64 path as it was built before: float64 copies of the weights."""
    copies = {name: copy.deepcopy(getattr(codec, name)) for name in CONTEXT_MODULES}
    return use_gemm_convs(EntropyPath(copies).to(torch.float64).eval().requires_grad_(False))


def param_bytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int64)  # bitwise: tells -0.0 from 0.0, any NaN payload


def run_path(path: EntropyPath, z_hat: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """y_hat, y's scales and every step's means and scales, y quantized around the means as the coder
    does."""
    seen: list[torch.Tensor] = []

    def code_step(k: int, means: torch.Tensor, scales: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seen.extend((means, scales))
        return (torch.round(y - means) + means) * mask

    with torch.no_grad():
        y_hat, y_scales = path.run(z_hat, tuple(y.shape[-2:]), code_step)
    return [y_hat, y_scales, *seen]


@pytest.mark.parametrize("gemm", [False, True], ids=["conv2d", "gemm"])
def test_compact_path_is_bit_identical_to_the_float64_copy(
    tiny_model, gemm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = tiny_model.codec
    if gemm:  # the GEMM forms a GPU takes (1x1 GEMM, im2col, depthwise), here on the CPU
        monkeypatch.setattr(fastconv, "_gemm_wanted", lambda x: x.dtype == torch.float64)
    compact, old = codec.entropy_path64(), reference_path(codec)
    assert all(isinstance(m, Float64Conv2d) for m in compact.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(type(m) is GemmConv2d for m in old.modules() if isinstance(m, torch.nn.Conv2d))
    g = torch.Generator().manual_seed(3)
    M = codec.M
    z_hat = torch.round(3 * torch.randn(2, M // 2, 2, 3, generator=g, dtype=torch.float64))
    y = 4 * torch.randn(2, M, 7, 9, generator=g, dtype=torch.float64)  # odd: z's grid is cropped
    got, want = run_path(compact, z_hat, y), run_path(old, z_hat, y)
    assert len(got) == len(want) == 10
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype == torch.float64
        assert torch.equal(bits(a), bits(b))
    assert 0 < float(got[1].abs().max())  # the scales are not all zero: the comparison means something


def test_compact_path_codes_the_same_payloads() -> None:
    """Payloads of the compact path and of the float64 copy are the same bytes, and each decodes the
    other's to the same latents, bit for bit."""
    from helpers import example_photo_paths

    photos = [np.asarray(Image.open(p).convert("RGB").resize((160, 96))) for p in example_photo_paths()[:2]]
    codec = load_codec("ditic-test")
    latent = codec.model.codec
    compact = latent.entropy_path64()
    old = reference_path(latent)

    def use(path: EntropyPath) -> None:
        latent.__dict__["_path64"] = (None, path)  # the codec pinned its path (freeze_entropy_path)

    def latents(payloads: list[bytes], quality: int) -> list[torch.Tensor]:
        from codec import bitstream

        out = []
        for payload in payloads:
            header, strings, _ = bitstream.unpack(payload)
            shape = (header.coded_height // 64, header.coded_width // 64)
            heads = codec.model.decompress_heads([strings], shape, quality)
            out.append(heads["y_hat"])
        return out

    for quality in (1, max(codec.qualities)):
        use(compact)
        new_payloads = codec.encode(photos, quality)
        new_latents = latents(new_payloads, quality)
        use(old)
        old_payloads = codec.encode(photos, quality)
        assert new_payloads == old_payloads
        for a, b in zip(latents(new_payloads, quality), new_latents, strict=True):
            assert torch.equal(bits(a), bits(b))
    assert latent.entropy_path64() is old  # the swap really was the one coding
    use(compact)


def test_ditic_official_entropy_path_holds_half_the_bytes() -> None:
    """ditic-official's path (built on "meta": no memory, no time) keeps float32 weights only: 0.40 GiB,
    where the float64 copy held 0.79 GiB."""
    from codec.config import get_config
    from codec.model import LatentCodec

    with torch.device("meta"):
        codec = LatentCodec(get_config("ditic-official"))
    compact, old = codec.entropy_path64(), reference_path(codec)
    assert {p.dtype for p in compact.parameters()} == {torch.float32}
    assert param_bytes(old) == 852_940_800  # 106.6 M parameters in float64
    assert param_bytes(compact) == param_bytes(old) // 2
