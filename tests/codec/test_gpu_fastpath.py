"""The GPU fast path stays faithful (issue 6): CUDA-graph DiT replay equals the eager step, bf16 decodes
within 40 dB of fp32, and the float64 GEMM convolutions give the latents F.conv2d gives. GPU only: run
on the GPU machine (``python -m pytest tests/codec/test_gpu_fastpath.py``); skipped elsewhere."""

import numpy as np
import pytest
import torch
from helpers import example_photo_paths

from codec import bitstream
from codec.api import load_codec
from codec.latent import CONTEXT_MODULES
from codec.metrics import psnr
from codec.model import PAD_MULTIPLE

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    from PIL import Image, ImageOps

    paths = example_photo_paths()[:2]
    return [np.asarray(ImageOps.fit(Image.open(p).convert("RGB"), (512, 384))) for p in paths]


def test_graphed_dit_step_equals_eager(photos: list[np.ndarray]) -> None:
    graphed = load_codec("ditic-small", device="cuda")
    eager = load_codec("ditic-small", device="cuda")
    eager._dit_step.enabled = False
    payloads = graphed.encode(photos, 4)
    a = [np.asarray(im) for im in graphed.decode(payloads) + graphed.decode(payloads)]
    b = [np.asarray(im) for im in eager.decode(payloads)]
    assert graphed._dit_step.captures == 1 and graphed._dit_step.enabled
    assert all(np.array_equal(x, y) for x, y in zip(a, b + b, strict=True))


def test_bf16_decode_is_faithful_to_fp32(photos: list[np.ndarray]) -> None:
    fp32 = load_codec("ditic-small", device="cuda")
    bf16 = load_codec("ditic-small", device="cuda", dtype=torch.bfloat16)
    payloads = fp32.encode(photos, 4)
    for x, y in zip(fp32.decode(payloads), bf16.decode(payloads), strict=True):
        assert float(psnr(np.asarray(y), np.asarray(x))[0]) >= 40.0
    # and bf16 payloads decode on the fp32 codec (the entropy path is float64 in both)
    assert len(fp32.decode(bf16.encode(photos, 4))) == len(photos)


def test_the_fidelity_decoder_on_the_gpu_is_faithful_to_the_cpu(photos: list[np.ndarray]) -> None:
    """The embedded model's second decoder (session 16) on the fast path: CUDA graphs, bf16 and
    compile=True all decode within 40 dB of the CPU fp32 decoder, and differ from the perceptual one."""
    cpu = load_codec("ditic-small:fidelity", device="cpu")
    payloads = cpu.encode(photos, 4)
    reference = [np.asarray(im) for im in cpu.decode(payloads)]
    perceptual = load_codec("ditic-small", device="cuda").decode(payloads)
    assert all(not np.array_equal(np.asarray(a), b) for a, b in zip(perceptual, reference, strict=True))
    for options in ({}, {"dtype": torch.bfloat16}, {"dtype": torch.bfloat16, "compile": True}):
        codec = load_codec("ditic-small", device="cuda", decoder="fidelity", **options)
        for _ in range(2):  # the second pass replays the captured graphs
            decoded = codec.decode(payloads)
        for x, y in zip(decoded, reference, strict=True):
            assert float(psnr(np.asarray(x), y)[0]) >= 40.0, options


def test_gemm_convolutions_give_the_same_latents(photos: list[np.ndarray]) -> None:
    codec = load_codec("ditic-small", device="cuda")
    payload = codec.encode(photos[:1], 4)[0]
    header, strings, _ = bitstream.unpack(payload)
    shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
    fast = codec.model.decompress_heads([strings], shape, 4)["y_hat"]
    cpu = load_codec("ditic-small", device="cpu")
    slow = cpu.model.decompress_heads([strings], shape, 4)["y_hat"]
    assert torch.allclose(fast.cpu(), slow, rtol=0, atol=1e-9)


def test_entropy_path_graphs_share_one_pool_and_decode_as_eager(photos: list[np.ndarray]) -> None:
    """The float64 entropy path (the checkpoint's weights, cast at each call) replays its graphs, two sizes'
    worth, all from one memory pool, interleaved, and decodes the latents it decodes launched op by op."""
    codec = load_codec("ditic-small", device="cuda")
    crops = [np.ascontiguousarray(p[:256, :320]) for p in photos]
    payloads = codec.encode(photos[:1], 4) + codec.encode(crops[:1], 4)

    def latents() -> list[torch.Tensor]:
        out = []
        for payload in payloads:
            header, strings, _ = bitstream.unpack(payload)
            shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
            out.append(codec.model.decompress_heads([strings], shape, 4)["y_hat"])
        return out

    graphed = latents() + latents()
    path = codec.model.codec.entropy_path64()
    graphs = path.__dict__["_graphs"]
    assert len(graphs) == 9 and all(g.enabled and g.captures == 2 for g in graphs.values())
    assert len({g.pool for g in graphs.values()}) == 1 and None not in {g.pool for g in graphs.values()}
    originals = {p.dtype for name in CONTEXT_MODULES for p in getattr(codec.model.codec, name).parameters()}
    assert {(p.dtype, p.device.type) for p in path.parameters()} == {(d, "cuda") for d in originals}
    assert torch.float64 not in originals  # the checkpoint's own dtype (float16 for ditic-small), cast at use
    path.__dict__["_graphs"] = None  # the same path, launched op by op
    try:
        eager = latents()
    finally:
        path.__dict__["_graphs"] = graphs
    for a, b in zip(graphed, eager + eager, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("model", ["ditic-small", "ditic-official"])
def test_table_levels_on_the_gpu_decode_as_numpy_does(photos: list[np.ndarray], model: str) -> None:
    """The GPU decoder's table levels and y_hat in torch (``StepPositions.levels``/``place``) give the
    numpy path's latents bit for bit: a trained model (many tables) and random weights (every scale
    below the first level, a few value escapes)."""
    codec = load_codec(model, device="cuda", allow_untrained=True)
    latent_codec = codec.model.codec
    for quality in sorted({min(codec.qualities), max(codec.qualities)}):
        for payload in codec.encode(photos, quality):
            header, strings, _ = bitstream.unpack(payload)
            shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
            decoded = []
            for on_device in (None, False):
                latent_codec.levels_on_device = on_device
                try:
                    decoded.append(codec.model.decompress_heads([strings], shape, quality)["y_hat"])
                finally:
                    latent_codec.levels_on_device = None
            assert decoded[0].is_cuda and torch.equal(decoded[0], decoded[1])


def test_compiled_autoencoder_is_faithful(photos: list[np.ndarray]) -> None:
    eager = load_codec("ditic-small", device="cuda", dtype=torch.bfloat16)
    compiled = load_codec("ditic-small", device="cuda", dtype=torch.bfloat16, compile=True)
    assert compiled.model_id == eager.model_id
    payloads = eager.encode(photos, 4)
    for x, y in zip(eager.decode(payloads), compiled.decode(payloads), strict=True):
        assert float(psnr(np.asarray(y), np.asarray(x))[0]) >= 40.0
    assert len(eager.decode(compiled.encode(photos, 4))) == len(photos)


def test_graphed_dc_ae_decoder_is_exact_and_shares_one_pool(photos: list[np.ndarray]) -> None:
    """The compiled DC-AE decoder replayed from CUDA graphs (two shapes, one shared memory pool) gives
    the compiled decoder's own pixels, and replaying one shape's graph does not spoil the other's."""
    codec = load_codec("ditic-small", device="cuda", dtype=torch.bfloat16, compile=True)
    crops = [np.ascontiguousarray(p[:256, :320]) for p in photos]
    big, small = codec.encode(photos, 4), codec.encode(crops, 4)

    def decode(payloads: list[bytes]) -> list[np.ndarray]:
        return [np.asarray(im) for im in codec.decode(payloads)]

    first_big, first_small, again_big, again_small = decode(big), decode(small), decode(big), decode(small)
    assert codec._vae_decoder is not None and codec._vae_decoder.enabled
    assert codec._vae_decoder.captures == 2 and codec._vae_decoder.pool is not None
    first = first_big + first_small
    assert all(np.array_equal(x, y) for x, y in zip(first, again_big + again_small, strict=True))
    codec._vae_decoder.enabled = False  # the same compiled decoder, launched op by op
    plain = decode(big) + decode(small)
    assert all(np.array_equal(x, y) for x, y in zip(first, plain, strict=True))


def test_decode_only_leaves_the_encoders_and_fp32_originals_off_the_gpu(photos: list[np.ndarray]) -> None:
    full = load_codec("ditic-small", device="cuda")
    payloads = full.encode(photos, 4)
    expected = [np.asarray(im) for im in full.decode(payloads)]
    assert next(full.model.codec.h_s.parameters()).device.type == "cuda"
    reader = load_codec("ditic-small", device="cuda", decode_only=True)
    model = reader.model
    for part in (model.vae.encoder, model.aux_codec, model.codec.g_a, model.codec.h_s):
        assert next(part.parameters()).device.type == "cpu"
    assert next(reader.model.vae.decoder.parameters()).device.type == "cuda"
    decoded = reader.decode(payloads)
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(decoded, expected, strict=True))


def test_compiled_streamed_split_is_faithful(photos: list[np.ndarray]) -> None:
    """A compiled bf16 codec under a budget below its whole decode runs the streamed split (its steps
    through torch.compile), its local strips carried, and decodes within 40 dB of the fp32 eager whole
    decode, as it does with the strips in halo windows (the kind "halo"); the same payloads
    through session 5's blended tiles stay selectable (``decode_plan_kind``)."""
    from codec.autoencoder import SplitPlan, TilePlan

    fp32 = load_codec("ditic-small", device="cuda")
    payloads = fp32.encode(photos, 4)
    whole = [np.asarray(im) for im in fp32.decode(payloads)]
    compiled = load_codec("ditic-small", device="cuda", dtype=torch.bfloat16, compile=True)
    batch = len(photos)  # decode() takes the same-size photos in one call: plan for that batch
    full = compiled.decode_plan(512, 384, batch).estimated_bytes / 2**30
    compiled.decode_memory_gib = 0.5 * full
    plan = compiled.decode_plan(512, 384, batch)
    assert isinstance(plan, SplitPlan) and plan.global_strips >= 1 and plan.carry, plan.describe()
    for x, y in zip(whole, compiled.decode(payloads), strict=True):
        assert float(psnr(np.asarray(y), x)[0]) >= 40.0
    compiled.decode_plan_kind = "halo"  # the local strips in halo windows instead of carried
    assert not compiled.decode_plan(512, 384, batch).carry
    for x, y in zip(whole, compiled.decode(payloads), strict=True):
        assert float(psnr(np.asarray(y), x)[0]) >= 40.0
    compiled.decode_plan_kind = "tiles"  # selectable; at 512x384 one tile is the whole image, and the
    compiled.decode_memory_gib = None  # smallest tile does not fit the split's budget: the default one
    assert isinstance(compiled.decode_plan(512, 384, batch), TilePlan)
    assert len(compiled.decode(payloads)) == len(photos)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernels_equal_cudnn_and_diffusers(dtype: torch.dtype) -> None:
    """codec.kernels' Triton depthwise convolution and RMSNorm on the card, against cuDNN's convolution
    and diffusers' RMSNorm in float32: within the input dtype's rounding."""
    from diffusers.models.normalization import RMSNorm

    from codec import kernels

    gen = torch.Generator(device="cuda").manual_seed(0)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    for k, c, h, w in ((3, 8192, 33, 70), (5, 1536, 64, 64), (3, 40, 5, 3)):
        x = torch.randn(2, c, h, w, device="cuda", generator=gen).to(dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(c, 1, k, k, device="cuda", generator=gen) / k
        bias = torch.randn(c, device="cuda", generator=gen)
        assert kernels.triton_ok(x)
        out = kernels.depthwise_conv(x, weight, bias)
        ref = torch.nn.functional.conv2d(x.float(), weight, bias, padding=k // 2, groups=c)
        assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out.float(), ref, **tol)
    norm = RMSNorm(128, eps=1e-5, elementwise_affine=True, bias=True).cuda()
    with torch.no_grad():
        norm.weight.normal_(generator=gen)
        norm.bias.normal_(generator=gen)
        x = torch.randn(1, 300, 257, 128, device="cuda", generator=gen).to(dtype)
        out = kernels.rms_norm(x, norm.weight, norm.bias, norm.eps)
        torch.testing.assert_close(out.float(), norm(x.float()), **tol)
