"""Entropy models of DiT-IC and the only place that touches the entropy coder (``constriction``).

* ``models``: ``EntropyBottleneck`` (factorized prior of the hyper-latent ``z``) and
  ``GaussianConditional`` (``y`` given its scales and means), CompressAI layout.
* ``coding``: the step-by-step ``GaussianStreamEncoder``/``GaussianStreamDecoder`` (one image or a
  batch per step) and the index guard.
* ``rangecoder``: the range-coder core under both: integer CDF tables and their cache, grouping by
  (image, table), escapes, stream check; the only module that imports ``constriction``.
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
