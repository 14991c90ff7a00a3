"""Entropy models of DiT-IC and the only place that touches the entropy coder (``constriction``).

* ``models``: ``EntropyBottleneck`` (factorized prior of the hyper-latent ``z``) and
  ``GaussianConditional`` (``y`` given its scales and means), CompressAI layout.
* ``coding``: the range coder over their integer CDF tables (escapes, index guard, stream check)
  and the step-by-step ``GaussianStreamEncoder``/``GaussianStreamDecoder``; the only module that
  imports ``constriction``.
"""

from codec.entropy.coding import CDF_PRECISION as CDF_PRECISION
from codec.entropy.coding import GaussianStreamDecoder, GaussianStreamEncoder
from codec.entropy.coding import scale_indexes as scale_indexes
from codec.entropy.models import SCALES_LEVELS as SCALES_LEVELS
from codec.entropy.models import SCALES_MAX as SCALES_MAX
from codec.entropy.models import SCALES_MIN as SCALES_MIN
from codec.entropy.models import EntropyBottleneck, GaussianConditional, LowerBound, default_scale_table

__all__ = [
    "EntropyBottleneck",
    "GaussianConditional",
    "GaussianStreamEncoder",
    "GaussianStreamDecoder",
    "LowerBound",
    "default_scale_table",
]
