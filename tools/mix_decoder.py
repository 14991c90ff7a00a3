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
        return swapped.to(next(base.parameters()).dtype).eval()
    if alpha == 1.0:  # the donor's tensors outright, bit for bit (0 · v would flip the sign of some zeros)
        mixed = {k: theirs[k].to(v.dtype) for k, v in ours.items()}
    else:
        mixed = {k: ((1 - alpha) * v.float() + alpha * theirs[k].float()).to(v.dtype)
                 for k, v in ours.items()}
    base.vae.decoder.load_state_dict(mixed, strict=True)
    return base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="checkpoint whose everything-but-the-decoder is kept")
    p.add_argument("donor", help="checkpoint whose DC-AE decoder is mixed in (same decoder shapes)")
    p.add_argument("--alpha", type=float, default=1.0, help="the donor's weight (default 1: its decoder)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    base, info = load_checkpoint(args.base)
    donor, donor_info = load_checkpoint(args.donor)
    base = mix_decoder(base, donor, args.alpha)
    extra = {**info.metadata, "decoder_mix": f"{1 - args.alpha:g} x {info.model_id} + "
             f"{args.alpha:g} x {donor_info.model_id}"}
    print(save_checkpoint(base, args.out, trained=info.trained, extra=extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
