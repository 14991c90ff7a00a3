"""The training loop: one :class:`Trainer` per process, alone or as one rank of a Ray Train group.

Staging (fractions of the schedule; the schedule is ``steps`` steps or ``minutes`` of training):

* **A, autoencoder** (MSE + ST-LPIPS, no rate): DC-AE alone, so a latent space exists for the latent
  codec to compress and for the distillation to pull toward. Without it the codec starts by
  compressing noise and the DiT by denoising towards noise.
* **B, full codec**: encoder frozen (y₀ becomes a fixed target), latent codec + rate + DiT one-step +
  prompter + distillation, decoder fine-tuned; each sample draws a quality q and pays λ_q·bpp.
* **C, adversarial** (optional): B plus a hinge PatchGAN, adaptive weight 0.5 (as the release).

Gradients are averaged across ranks by one all-reduce per step over the stage's trainable
parameters (what DDP does, without its unused-parameter bookkeeping when the stage changes
which parameters train). Random streams are seeded from (seed, rank, step), so a resumed run
draws the very crops and qualities an uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from codec.losses import (
    PatchDiscriminator,
    RateDistortionLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    rate_lambdas,
)
from jobs.train_log import JsonlLog, per_quality
from jobs.train_state import EMA, load_state, save_state, state_exists
from pipeline.train_data import CropBank, load_images

if TYPE_CHECKING:
    from jobs.train import TrainOptions

__all__ = ["Trainer", "stage_at"]

log = logging.getLogger("ditic.train")


def stage_at(progress: float, opts: TrainOptions) -> str:
    """The stage ("A", "B" or "C") at ``progress`` ∈ [0, 1] of the schedule."""
    if opts.stage != "auto":
        return opts.stage
    if progress < opts.stage_a:
        return "A"
    return "C" if progress >= 1.0 - opts.stage_c else "B"


class Trainer:
    """Model, EMA, optimizers, data and schedule of one training process (rank ``rank`` of ``world``)."""

    def __init__(self, opts: TrainOptions, rank: int = 0, world: int = 1, device: torch.device | None = None):
        from codec.model import DiTIC

        self.opts, self.rank, self.world = opts, rank, world
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.cuda = self.device.type == "cuda"
        torch.manual_seed(opts.seed)  # identical initial weights on every rank
        self.cfg = opts.codec_config()
        self.model = DiTIC(self.cfg).to(self.device)
        init, part = next(((p, k) for p, k in ((opts.init, ""), (opts.init_autoencoder, "vae."),
                                                (opts.init_encoder, "vae.encoder.")) if p), (None, ""))
        self.init_model_id = self._load_init(init, prefix=part) if init else None
        if opts.gain_ladder is not None:  # before the EMA copies the weights; a resume overwrites them
            self._set_gain_ladder(opts.gain_ladder)
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels once
            if opts.bf16:
                _run_in_fp32(self.model.codec)
        self.ema = EMA(self.model, opts.effective_ema_decay())
        self.criterion = RateDistortionLoss(
            rate_lambdas(len(self.cfg.qualities), opts.lambda_max, opts.lambda_min),
            perceptual=self._perceptual(),
            perceptual_weight=opts.perceptual_weight,
            distill_weight=opts.distill_weight if opts.distill else 0.0,
            latent_weight=opts.latent_weight,
            distill_margin=opts.distill_margin,
        ).to(self.device)
        self.disc = PatchDiscriminator().to(self.device)
        self.optimizers = self._optimizers()
        self.step, self.train_seconds, self.stage, self.stage_start = 0, 0.0, "", 0
        self._synced: float | None = None
        self.bank, self.held_out = self._data()

    # --- setup ---------------------------------------------------------------------------------
    def _perceptual(self) -> torch.nn.Module | None:
        if self.opts.perceptual == "none":
            return None
        from codec.perceptual import STLPIPS

        return STLPIPS(self.opts.perceptual)

    @torch.no_grad()
    def _load_init(self, path: str, prefix: str = "") -> str:
        """Copy the weights of an exported model (same config) into the fresh model, in fp32; the EMA,
        made after this, starts from them too. The coding tables are rebuilt at export. Returns its id.
        With ``prefix`` (``"vae."``: --init-autoencoder; ``"vae.encoder."``: --init-encoder) only that part's
        weights and config section (for the encoder: the DC-AE's, but for the decoder's own settings)."""
        from codec.weights import DERIVED_BUFFERS, canonical_names, load_checkpoint

        loaded, info = load_checkpoint(path, verify=True)  # a clear error for a missing or corrupt file

        def flat(cfg) -> dict:  # noqa: ANN001
            sections = cfg.to_dict().items()
            return {f"{s}.{k}": v for s, d in sections if isinstance(d, dict) for k, v in d.items()}

        ours, theirs = flat(self.cfg), flat(info.config)
        section = "vae." if prefix == "vae.encoder." else prefix
        keys = {k for k in ours.keys() | theirs.keys() if k.startswith(section)
                and not (prefix == "vae.encoder." and k.startswith("vae.decoder_"))
                and k != "vae.fidelity_decoder"}  # a shipped second decoder is not trained: left out
        differ = sorted(k for k in keys if ours.get(k) != theirs.get(k))
        if differ:
            option = {"": "--init", "vae.": "--init-autoencoder"}.get(prefix, "--init-encoder")
            raise ValueError(f"{option} {path}: its config differs from the run's in {differ} "
                             "(pass the switches it was trained with, e.g. --linear-path)")  # fmt: skip
        state = loaded.state_dict()
        names = {n for n in canonical_names(self.model) - set(DERIVED_BUFFERS) if n.startswith(prefix)}
        target = self.model.state_dict(keep_vars=True)
        for name in names:
            target[name].data.copy_(state[name].to(target[name].dtype))
        if self.rank == 0:
            log.info("initialised %sfrom %s (model %s)", f"{prefix}* " if prefix else "", path, info.model_id)
        return info.model_id

    def _set_gain_ladder(self, ladder: tuple[float, ...]) -> None:
        """Initial gains (and inverse gains) of y per quality, lowest first, the same on every channel."""
        codec = self.model.codec
        with torch.no_grad():
            values = torch.tensor(ladder, dtype=codec.gain.dtype, device=codec.gain.device)[:, None]
            codec.gain.copy_(values.expand_as(codec.gain))
            codec.inverse_gain.copy_((1.0 / values).expand_as(codec.inverse_gain))

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        named = list(self.model.named_parameters())
        main = [p for n, p in named if not n.endswith("quantiles")]
        aux = [p for n, p in named if n.endswith("quantiles")]
        kw = {"betas": (0.9, 0.999), "weight_decay": 0.0, "fused": self.cuda}
        if self.opts.gain_lr_mult != 1.0:  # a second group (lr_mult: see train_step); one group otherwise,
            # as the training states saved before this option have
            gains = {"codec.gain", "codec.inverse_gain"}
            rest = [p for n, p in named if n not in gains and not n.endswith("quantiles")]
            own = [p for n, p in named if n in gains]
            main = [{"params": rest}, {"params": own, "lr_mult": self.opts.gain_lr_mult}]
        return {
            "main": torch.optim.AdamW(main, lr=self.opts.lr, **kw),
            "aux": torch.optim.AdamW(aux, lr=self.opts.aux_lr, **kw),
            "disc": torch.optim.AdamW(self.disc.parameters(), lr=self.opts.lr, **{**kw, "betas": (0.5, 0.9)}),
        }

    def _data(self) -> tuple[CropBank, CropBank | None]:
        images = load_images(
            self.opts.data,
            self.opts.crop,
            max_side=self.opts.max_side,
            limit=self.opts.max_images,
            workers=self.opts.loader_threads,
            storage_options=self.opts.storage_options or None,
        )
        bank = CropBank(images, self.device)
        return bank.split(self.opts.holdout, seed=self.opts.seed)

    # --- schedule ------------------------------------------------------------------------------
    def progress(self) -> float:
        """Fraction of the schedule done. With several ranks it moves only at log steps, from rank 0's
        clock, so that every rank changes stage and learning rate at the same step."""
        if self.world > 1 and self._synced is not None:
            return self._synced
        if self.opts.minutes:
            return self.train_seconds / (60.0 * self.opts.minutes)
        return self.step / max(1, self.opts.steps)

    def lr_factor(self) -> float:
        """Linear warm-up at the start of each stage; linear decay to 10 % over the last 30 %."""
        warm = min(1.0, (self.step - self.stage_start + 1) / max(1, self.opts.warmup))
        tail = min(1.0, max(0.0, (1.0 - self.progress()) / 0.3))
        return warm * (0.1 + 0.9 * tail)

    def rate_scale(self) -> float:
        """The share of λ in force: 0 → 1 linearly over ``lambda_ramp`` of the schedule after stage A
        (from the schedule's progress, so a resumed run continues the ramp where it was)."""
        if self.opts.lambda_ramp <= 0:
            return 1.0
        return min(1.0, max(0.0, (self.progress() - self.opts.stage_a) / self.opts.lambda_ramp))

    def _enter(self, stage: str) -> None:
        """Switch which parameters train: A = DC-AE; B/C = all but the (optionally) frozen encoder/decoder."""
        self.stage, self.stage_start = stage, self.step
        self.model.requires_grad_(stage != "A")
        self.model.aux_codec.requires_grad_(False)  # its features enter detached (codec/model.py)
        if stage == "A":
            self.model.vae.requires_grad_(True)
            if self.opts.decoder_only:
                self.model.vae.encoder.requires_grad_(False)
        else:
            if self.opts.freeze_encoder:
                self.model.vae.encoder.requires_grad_(False)
            if self.opts.freeze_decoder:
                self.model.vae.decoder.requires_grad_(False)
        self.trainable = [
            p for n, p in self.model.named_parameters() if p.requires_grad and not n.endswith("quantiles")
        ]
        if self.rank == 0:
            log.info("step %d: stage %s, %d trainable tensors", self.step, stage, len(self.trainable))

    @torch.no_grad()
    def _init_linear_path(self, crops: int = 256) -> None:
        """Where the config has the latent codec's linear path: set it to the PCA code of the encoder's
        latents of ``crops`` training crops, once, as stage B begins (a resumed run keeps its own)."""
        codec = self.model.codec
        if not codec.cfg_linear_path:
            return
        rng = np.random.default_rng([self.opts.seed, self.rank, 2**31 - 1])
        latents = []
        for start in range(0, crops, self.opts.batch_size):
            x = self.bank.sample(min(self.opts.batch_size, crops - start), self.opts.crop, rng, augment=False)
            with self._autocast():
                latents.append(self.model.encode_latent(x)[0].float())
        codec.init_linear_path(torch.cat(latents))
        if self.world > 1:  # every rank starts B from rank 0's basis (the SVD's signs may differ)
            for p in (*codec.g_a_linear.parameters(), *codec.g_s_linear.parameters()):
                dist.broadcast(p.data, src=0)
        if self.rank == 0:
            log.info("step %d: latent codec's linear path set from %d crops", self.step, crops)

    # --- one step ------------------------------------------------------------------------------
    def _autocast(self):
        if self.cuda and self.opts.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _batch(self) -> tuple[Tensor, Tensor | None]:
        rng = np.random.default_rng([self.opts.seed, self.rank, self.step])
        torch.manual_seed(int(rng.integers(2**31)))  # the entropy bottleneck's training noise
        x = self.bank.sample(self.opts.batch_size, self.opts.crop, rng, min_scale=self.opts.min_scale)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.stage == "A":
            return x, None
        q = rng.integers(1, len(self.cfg.qualities) + 1, size=self.opts.batch_size)
        return x, torch.from_numpy(q).to(self.device)

    def _forward(self, x: Tensor, quality: Tensor | None) -> dict:
        if quality is not None:
            return self.model(x, quality)
        vae = self.model.vae
        latent = vae.encoder(x)
        return {"x_hat": vae.decoder(latent).clamp(-1, 1), "latent_clean": latent.detach()}

    def _reduce_and_clip(self, params: list[Tensor], clip: float | None) -> Tensor:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        if self.world > 1:
            flat = torch._utils._flatten_dense_tensors(grads).div_(self.world)
            dist.all_reduce(flat)
            for g, r in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
                g.copy_(r)
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())
        ok = torch.isfinite(norm)
        coef = (clip / (norm + 1e-6)).clamp(max=1.0) if clip else torch.ones_like(norm)
        torch._foreach_mul_(grads, torch.where(ok, coef, torch.zeros_like(coef)))  # a bad step moves nothing
        return torch.stack([norm.detach(), (~ok).float()])

    def _opt_step(self, name: str, loss: Tensor, params: list[Tensor], clip: float | None) -> Tensor:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        stats = self._reduce_and_clip(params, clip)
        opt.step()
        return stats

    def train_step(self) -> dict[str, Tensor]:
        """One optimisation step of the current stage; returns detached logging tensors."""
        for group in self.optimizers["main"].param_groups:
            group["lr"] = self.opts.lr * self.lr_factor() * group.get("lr_mult", 1.0)
        x, q = self._batch()
        self.criterion.rate_scale = self.rate_scale()
        a_weight = self.opts.stage_a_perceptual_weight
        stage_a = self.stage == "A" and a_weight is not None
        self.criterion.perceptual_weight = a_weight if stage_a else self.opts.perceptual_weight
        with self._autocast():
            out = self._forward(x, q)
            terms = self.criterion(x, out, q)
            loss = terms.loss
            if self.stage == "C":
                g = hinge_g_loss(self.disc(out["x_hat"]))
                # the release balances the two gradients at the decoder's last layer; a frozen decoder
                # (--freeze-decoder) has none, so they are balanced where they leave the trainable part:
                # at the latent the DiT hands the decoder
                last = self.model.vae.decoder.conv_out.weight
                ref = last if last.requires_grad else out["latent_hat"]
                loss = loss + adaptive_gan_weight(terms.loss, g, ref, self.opts.gan_weight) * g
                terms.parts["gan_g"] = g.detach()
        stats = self._opt_step("main", loss, self.trainable, self.opts.grad_clip)
        parts = dict(terms.parts, loss=loss.detach(), grad_norm=stats[0], skipped=stats[1])
        parts["latent_rms"] = out["latent_clean"].float().pow(2).mean().sqrt()  # scale of y0 for the DiT
        if q is not None:
            aux = self.model.codec.entropy_bottleneck.aux_loss()
            self._opt_step("aux", aux, self.optimizers["aux"].param_groups[0]["params"], None)
            parts["aux"] = aux.detach()
            gain = self.model.codec.gain.detach()  # the rates follow these (docs/TRAINING.md, session 8)
            parts["gain_q1"], parts[f"gain_q{gain.shape[0]}"] = gain[0].mean(), gain[-1].mean()
            parts |= per_quality(terms.bpp, terms.psnr, q, len(self.cfg.qualities))
        if self.stage == "C":
            with self._autocast():
                d = hinge_d_loss(self.disc(x), self.disc(out["x_hat"].detach()))
            self._opt_step("disc", d, list(self.disc.parameters()), self.opts.grad_clip)
            parts["gan_d"] = d.detach()
        self.step += 1
        self.ema.update(self.model, self.step)
        return parts

    # --- the loop ------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load ``out/state`` when it exists; returns whether it did."""
        folder = Path(self.opts.out) / "state"
        if not state_exists(folder):
            return False
        meta = load_state(folder, model=self.model, ema=self.ema, optimizers=self.optimizers,
                          modules={"disc": self.disc})
        self.step, self.train_seconds = int(meta["step"]), float(meta["train_seconds"])
        self.stage = meta.get("stage", "")
        if self.stage:
            self._enter(self.stage)
        # without the optimizer's moments (a lean state) the learning rate warms up again
        self.stage_start = int(meta.get("stage_start", 0)) if meta["optimizers"] else self.step
        if self.rank == 0:
            log.info(
                "resumed %s at step %d (%.0f s trained, %s%s)",
                folder,
                self.step,
                self.train_seconds,
                meta["precision"],
                "; the discriminator starts afresh: the state lacks it"
                if self.stage == "C" and not meta["restored_modules"] else "",
            )
        return True

    def save(self) -> dict:
        if self.rank != 0:
            return {}
        info = {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "stage": self.stage,
            "stage_start": self.stage_start,
            "config": self.cfg.to_dict(),
            "options": self.opts.to_dict(),
        }
        budget = None if self.opts.state_budget_mib is None else int(self.opts.state_budget_mib * 2**20)
        return save_state(
            Path(self.opts.out) / "state",
            model=self.model,
            ema=self.ema,
            optimizers=self.optimizers,
            info=info,
            budget_bytes=budget,
            modules={"disc": self.disc},
        )

    def fit(self, report: Callable[[dict], None] | None = None, until_step: int | None = None) -> dict:
        """Train until the schedule ends, the time budget runs out or ``until_step`` is reached; save
        the state; return a summary."""
        started = time.monotonic()
        budget = 60.0 * self.opts.time_budget_min if self.opts.time_budget_min else math.inf
        logger = JsonlLog(Path(self.opts.out) / "log.jsonl", self.rank, self.world)
        last_save, save_cost, reason = time.monotonic(), 5.0, "schedule done"
        self.model.train()
        while True:
            stop, reason = self._should_stop(started, budget, save_cost, reason)
            if until_step is not None and self.step >= until_step:
                stop, reason = True, "until_step"
            if stop:
                break
            stage = stage_at(self.progress(), self.opts)
            if stage != self.stage:
                fresh = not self.opts.init or self.opts.reset_linear_path
                if self.stage in ("", "A") and stage != "A" and fresh:
                    self._init_linear_path()  # an --init model keeps its own unless told otherwise
                self._enter(stage)
            tick = time.monotonic()
            parts = self.train_step()
            spent = time.monotonic() - tick
            self.train_seconds += spent
            if self.step > 2:  # the first steps pay for cuDNN autotuning and allocator warm-up
                ema = getattr(self, "_step_s", None)
                self._step_s = spent if ema is None else 0.9 * ema + 0.1 * spent
            logger.add(parts)
            if self.step % self.opts.log_every == 0:
                row = logger.flush(self.step, self.train_seconds, self.stage, self.opts.lr * self.lr_factor())
                if report is not None:
                    report(row)
                if time.monotonic() - last_save > 60.0 * self.opts.save_every_min:
                    t0 = time.monotonic()
                    self.save()
                    last_save, save_cost = time.monotonic(), time.monotonic() - t0
        logger.flush(self.step, self.train_seconds, self.stage, self.opts.lr * self.lr_factor())
        meta = self.save()
        return {
            "step": self.step,
            "train_seconds": round(self.train_seconds, 1),
            "stop": reason,
            "stage": self.stage,
            "state_precision": meta.get("precision"),
            "weights_checksum": sum(float(p.detach().double().sum()) for p in self.model.parameters()),
        }

    def _should_stop(self, started: float, budget: float, save_cost: float, reason: str) -> tuple[bool, str]:
        """Schedule end or time budget; ranks agree through rank 0 (checked at log steps only)."""
        if self.world > 1 and self.step % self.opts.log_every:
            return False, reason
        self._synced = None  # this rank's own progress; rank 0's replaces it below
        done = self.progress() >= 1.0
        # the steps until the next check (every step on one rank, log steps with several)
        step_cost = (getattr(self, "_step_s", None) or 0.0) * (self.opts.log_every if self.world > 1 else 1)
        late = time.monotonic() - started + 3 * save_cost + step_cost + self.opts.reserve_s > budget
        if self.world > 1:  # every rank must stop at the same step: rank 0 decides
            flag = torch.tensor([float(done), float(late), self.train_seconds], device=self.device)
            dist.broadcast(flag, src=0)
            done, late, self.train_seconds = bool(flag[0] > 0), bool(flag[1] > 0), float(flag[2])
            self._synced = self.progress()
        if done:
            return True, "schedule done"
        if late:
            return True, "time budget"
        return False, reason


def _run_in_fp32(module: torch.nn.Module) -> None:
    """Run ``module`` outside bf16 autocast, on fp32 inputs. For the latent codec: in bf16, y is
    represented to 0.5 above |y| = 64, so rounding and likelihoods (the rate) would be wrong.
    Done by subclassing in place, so copies of the model (EMA evaluation, export) behave alike."""
    base = type(module)

    def forward(self, *args, **kwargs):
        args = tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
        with torch.autocast("cuda", enabled=False):
            return base.forward(self, *args, **kwargs)

    module.__class__ = type(f"{base.__name__}InFP32", (base,), {"forward": forward})
