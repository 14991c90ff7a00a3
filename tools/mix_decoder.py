"""Give a model another model's DC-AE decoder, or a weighted mix of the two: no training, on the CPU.

    python tools/mix_decoder.py BASE.safetensors DONOR.safetensors --alpha 0.5 --out MIX.safetensors

The DC-AE encoder is frozen in stages B and C (``ditic train`` without ``--train-encoder``), so every
model trained from one stage-A autoencoder codes the same latent space, and its latent codec and DiT
deliver a latent close to the clean one (docs/TRAINING.md, session 14: q4's relative error 0.003).
Which decoder turns that latent into pixels is then a free choice: stage C's decoder (GAN-trained,
perceptual) or stage A's (MSE with at most a light perceptual term, no GAN: higher PSNR). ``--alpha``
puts the two on one line, weight by
weight: ``(1 - alpha) * base + alpha * donor``; a mix is meaningful because stage C's decoder is a
fine-tune of stage A's (one basin), and alpha 1 is the donor's decoder outright, also one of other
widths (a decoder-only stage A: ``ditic train --init-encoder A.safetensors --decoder-only --stage A
--decoder-widths …``). Both models must share the encoder (the same latent space; refused otherwise).
Everything else, and the config but for those widths, is the base's; the export is a normal
checkpoint with a new model id, its metadata recording what was mixed.

``--fidelity`` does not mix: it gives the base a second decoder, the donor's, as its ``fidelity``
decoder (``vae.fidelity_decoder``; ``load_codec("…:fidelity")`` decodes with it), and ``--int8`` stores
the DC-AE decoders' weights in int8 (``codec.weights.quantize_int8``) so that both fit the 24 MiB cap:

    python tools/mix_decoder.py SHIPPED.safetensors MSE.safetensors --fidelity --int8 --out BOTH.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codec.weights import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402


def same_encoder(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two models code the same latent space: equal DC-AE encoders, tensor for tensor."""
    ea, eb = a.vae.encoder.state_dict(), b.vae.encoder.state_dict()
    if ea.keys() != eb.keys():
        return False
    return all(ea[k].shape == eb[k].shape and torch.equal(ea[k].float(), eb[k].float()) for k in ea)


def mix_decoder(base: torch.nn.Module, donor: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """``base`` with its DC-AE decoder set to ``(1 - alpha) * base + alpha * donor`` (fp32 arithmetic,
    stored in the base's dtypes). At alpha 1 the donor's decoder may have other widths (a decoder-only
    stage A, ``ditic train --init-encoder … --decoder-only --decoder-widths …``): then a new model of the
    base's config with the donor's decoder widths is returned. Otherwise ``base``, changed in place.
    Raises CheckpointError when the two encoders differ (another latent space: a decoder of one means
    nothing on the other's latent) or when decoders of other shapes are to be mixed."""
    from codec.model import DiTIC

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if not same_encoder(base, donor):
        raise CheckpointError("the two models' DC-AE encoders differ: they code different latent spaces")
    ours, theirs = base.vae.decoder.state_dict(), donor.vae.decoder.state_dict()
    if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
        if alpha != 1.0:
            raise CheckpointError("the two models' DC-AE decoders differ in shape (another "
                                  "--decoder-widths?): only --alpha 1 swaps one for the other")  # fmt: skip
        widths = donor.cfg.vae.decoder_block_out_channels or donor.cfg.vae.block_out_channels
        swapped = DiTIC(base.cfg.replace(**{"vae.decoder_block_out_channels": tuple(widths)}))
        state = {k: v for k, v in base.state_dict().items() if not k.startswith("vae.decoder.")}
        missing, unexpected = swapped.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("vae.decoder.") for k in missing):
            raise CheckpointError(f"cannot rebuild the base with another decoder: {unexpected or missing}")
        swapped.vae.decoder.load_state_dict(theirs, strict=True)
        return _dtypes_like(swapped, base).eval()
    if alpha == 1.0:  # the donor's tensors outright, bit for bit (0 · v would flip the sign of some zeros)
        mixed = {k: theirs[k].to(v.dtype) for k, v in ours.items()}
    else:
        mixed = {k: ((1 - alpha) * v.float() + alpha * theirs[k].float()).to(v.dtype)
                 for k, v in ours.items()}
    base.vae.decoder.load_state_dict(mixed, strict=True)
    return base


def attach_fidelity(base: torch.nn.Module, donor: torch.nn.Module) -> torch.nn.Module:
    """A model of the base's config with ``vae.fidelity_decoder``: the base's weights, and the donor's
    DC-AE decoder as the fidelity decoder. Raises CheckpointError when the encoders differ or the
    decoders' shapes do (the two must decode one latent the same size)."""
    from codec.model import DiTIC

    if not same_encoder(base, donor):
        raise CheckpointError("the two models' DC-AE encoders differ: they code different latent spaces")
    ours, theirs = base.vae.decoder.state_dict(), donor.vae.decoder.state_dict()
    if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
        raise CheckpointError("a fidelity decoder must have the base decoder's shapes")
    both = DiTIC(base.cfg.replace(**{"vae.fidelity_decoder": True}))
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("fidelity_decoder.")}
    missing, unexpected = both.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("fidelity_decoder.") for k in missing):
        raise CheckpointError(f"cannot rebuild the base with a fidelity decoder: {unexpected or missing}")
    both.fidelity_decoder.load_state_dict(theirs, strict=True)
    return _dtypes_like(both, base).eval()


def _dtypes_like(model: torch.nn.Module, base: torch.nn.Module) -> torch.nn.Module:
    """Each tensor of ``model`` in the dtype its namesake has in ``base`` (a fidelity decoder's, the
    base decoder's): a checkpoint keeps the entropy model's fp32 tensors beside fp16 weights, and casting
    the whole model to one dtype broke the rate (session 16: a bpp of inf from an fp16 likelihood bound)."""
    dtypes = {k: v.dtype for k, v in base.state_dict().items()}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        ref = dtypes.get(name) or dtypes.get(name.replace("fidelity_decoder.", "vae.decoder.", 1))
        if ref is not None and t.dtype != ref:
            t.data = t.data.to(ref)
    return model


INT8_PREFIXES = ("vae.decoder.", "fidelity_decoder.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="checkpoint whose everything-but-the-decoder is kept")
    p.add_argument("donor", help="checkpoint whose DC-AE decoder is mixed in (same decoder shapes)")
    p.add_argument("--alpha", type=float, default=1.0, help="the donor's weight (default 1: its decoder)")
    p.add_argument("--fidelity", action="store_true",
                   help="attach the donor's decoder as the base's fidelity decoder instead of mixing")
    p.add_argument("--int8", action="store_true", help="store the DC-AE decoders' weights in int8")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    base, info = load_checkpoint(args.base)
    donor, donor_info = load_checkpoint(args.donor)
    if args.fidelity:
        base = attach_fidelity(base, donor)
        extra = {**info.metadata, "fidelity_decoder": f"the decoder of {donor_info.model_id}"}
    else:
        base = mix_decoder(base, donor, args.alpha)
        extra = {**info.metadata, "decoder_mix": f"{1 - args.alpha:g} x {info.model_id} + "
                 f"{args.alpha:g} x {donor_info.model_id}"}  # fmt: skip
    extra.pop("int8_dtype", None)
    int8 = INT8_PREFIXES if args.int8 else ()
    print(save_checkpoint(base, args.out, trained=info.trained, extra=extra, int8=int8))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
