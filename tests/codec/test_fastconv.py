"""The GEMM convolutions of the float64 entropy path agree with F.conv2d to float64 rounding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from codec.fastconv import GemmConv2d, conv2d_gemm, use_gemm_convs


@pytest.mark.parametrize(
    ("cin", "cout", "k", "stride", "padding", "groups"),
    [
        (8, 12, 1, 1, 0, 1),  # pointwise: one GEMM
        (8, 12, 3, 1, 1, 1),  # im2col
        (8, 6, 2, 2, 0, 1),  # strided (StridedBlock)
        (8, 6, 3, 2, 1, 1),  # strided, padded (Downsample)
        (8, 8, 3, 1, 1, 8),  # depthwise
        (8, 8, 5, 1, 2, 8),  # depthwise, 5x5
        (8, 8, 3, 1, 1, 2),  # grouped: falls back to F.conv2d
    ],
)
def test_conv2d_gemm_matches_conv2d(
    cin: int, cout: int, k: int, stride: int, padding: int, groups: int
) -> None:
    g = torch.Generator().manual_seed(k * 100 + cin + groups)
    x = torch.randn(2, cin, 9, 13, generator=g, dtype=torch.float64)
    weight = torch.randn(cout, cin // groups, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(cout, generator=g, dtype=torch.float64)
    want = F.conv2d(x, weight, bias, stride, padding, 1, groups)
    got = conv2d_gemm(x, weight, bias, stride, padding, 1, groups)
    assert got.shape == want.shape
    tol = 1e-12 * float(want.abs().max())
    assert torch.allclose(got, want, rtol=0, atol=tol)
    no_bias = conv2d_gemm(x, weight, None, stride, padding, 1, groups)
    assert torch.allclose(no_bias, want - bias[None, :, None, None], rtol=0, atol=tol)


def test_use_gemm_convs_keeps_parameters_and_state_dict() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1)).double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    want = net(x)
    use_gemm_convs(net)
    assert all(isinstance(m, GemmConv2d) for m in net if isinstance(m, nn.Conv2d))
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert torch.equal(net(x), want)  # on the CPU the swapped module is F.conv2d itself


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gemm", [False, True], ids=["conv2d", "gemm"])
def test_float64_convs_keep_the_weights_and_compute_what_a_float64_copy_computes(
    dtype: torch.dtype, gemm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``use_float64_convs`` gives, bit for bit, what ``.to(torch.float64)`` + ``use_gemm_convs`` gives,
    while the convolutions keep their weights in their own dtype (other parameters go to float64)."""
    import copy

    from codec import fastconv
    from codec.fastconv import Float64Conv2d, use_float64_convs

    if gemm:  # the GEMM forms a GPU takes, here on the CPU
        monkeypatch.setattr(fastconv, "_gemm_wanted", lambda x: x.dtype == torch.float64)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(6, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 12, 1), nn.GroupNorm(3, 12), nn.Conv2d(12, 6, 2, stride=2, bias=False),
    ).to(dtype)  # fmt: skip
    old = use_gemm_convs(copy.deepcopy(net).to(torch.float64))
    new = use_float64_convs(copy.deepcopy(net))
    assert [type(m) for m in new if isinstance(m, nn.Conv2d)] == [Float64Conv2d] * 4
    assert all(p.dtype == dtype for m in new if isinstance(m, nn.Conv2d) for p in m.parameters())
    assert all(p.dtype == torch.float64 for p in new[4].parameters())
    assert new.state_dict().keys() == net.state_dict().keys()
    x = torch.randn(2, 6, 9, 13, dtype=torch.float64)
    with torch.no_grad():
        want, got = old(x), new(x)
    assert got.dtype == torch.float64
    assert torch.equal(got.view(torch.int64), want.view(torch.int64))
