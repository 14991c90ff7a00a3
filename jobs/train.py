"""``ditic train``: train a DiT-IC model in one process or on Ray Train, then export its weights.

    ditic train --config ditic-small --data .carry/train --out runs/small --minutes 8 \\
        --time-budget-min 8.5 --export runs/small/ditic-small.safetensors
    ditic train ... --resume            # continue from runs/small/state (another GPU session)
    ditic train ... --ray --num-workers 4   # DDP over 4 GPUs through ray.train.torch.TorchTrainer
    python -m torch.distributed.run --standalone --nproc-per-node 4 -m jobs.cli train ...   # the same, no Ray

The loop itself is :class:`jobs.train_loop.Trainer`; see there for the stages. docs/TRAINING.md
holds the recipe and the runs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codec.config import CodecConfig, get_config
from codec.losses import LAMBDA_MAX, LAMBDA_MIN

__all__ = [
    "TrainOptions",
    "add_arguments",
    "run",
    "train",
    "train_ray",
    "export_weights",
    "evaluate_held_out",
]

log = logging.getLogger("ditic.train")


@dataclass
class TrainOptions:
    """Everything one training run needs; plain data, so it travels to Ray workers as a dict."""

    data: str = ""
    config: str = "ditic-small"
    out: str = "runs/train"
    steps: int = 3000
    minutes: float | None = None  # schedule by minutes of training (across resumes) instead of steps
    batch_size: int = 16
    crop: int = 256
    min_scale: float = 1.0  # < 1: crops from the photo downscaled by s ~ log-U[min_scale, 1] (augmentation)
    lr: float = 3e-4
    aux_lr: float = 1e-3
    warmup: int = 100
    stage: str = "auto"  # auto | A | B | C
    init: str | None = None  # start from these exported weights (fine-tuning), not a random init
    init_autoencoder: str | None = None  # only the DC-AE of this export; the rest starts fresh
    init_encoder: str | None = None  # only the DC-AE encoder (the latent space); decoder and the rest fresh
    reset_linear_path: bool = False  # with init: set the linear path's PCA basis anyway as B begins
    stage_a: float = 0.25
    stage_c: float = 0.0
    lambda_max: float = LAMBDA_MAX
    lambda_min: float = LAMBDA_MIN
    lambda_ramp: float = 0.0  # fraction of the schedule after stage A over which λ rises from 0 to full
    gain_lr_mult: float = 1.0  # the per-quality gains of y learn this many times faster than the rest
    gain_ladder: tuple[float, ...] | None = None  # initial gain of each quality (default 2^(q - Q))
    perceptual: str = "vgg"  # vgg | alex | none
    perceptual_weight: float = 1.0
    stage_a_perceptual_weight: float | None = None  # None: perceptual_weight in stage A too
    distill_weight: float = 0.05
    distill_margin: float = 0.5  # the release's; the hinge acts where cos(x̂₀, y₀) < 1 − margin
    latent_weight: float = 0.0
    gan_weight: float = 0.5
    distill: bool = True
    variance_guidance: bool = True
    linear_path: bool | None = None  # the latent codec's PCA-initialised linear path, forced on or off
    # (a config change); None: the config's (ditic-small: on), or with --init the init model's
    decoder_widths: tuple[int, ...] | None = None  # the DC-AE decoder's stage widths (a config change)
    latent_m: int | None = None  # y's width, latent.M (a config change; default the config's)
    context_width: int | None = None  # the context model's width, latent.context_width (a config change)
    prompter: bool = True
    freeze_encoder: bool = True
    freeze_decoder: bool = False  # B/C keep stage A's DC-AE decoder: the codec must reach its latent
    decoder_only: bool = False  # stage A trains the DC-AE decoder alone: the (initialised) latent space stays
    ema_decay: float = 0.999
    grad_clip: float = 4.0
    seed: int = 0
    bf16: bool = True
    holdout: int = 0
    max_side: int | None = None
    max_images: int | None = None
    loader_threads: int = 16
    storage_options: dict[str, Any] = field(default_factory=dict)
    log_every: int = 25
    save_every_min: float = 3.0
    time_budget_min: float | None = None
    reserve_s: float = 5.0  # kept free at the end of the budget for export and evaluation
    state_budget_mib: float | None = None

    def codec_config(self) -> CodecConfig:
        """The named config with the ablation switches applied (they travel in the checkpoint)."""
        cfg = get_config(self.config)
        changes: dict[str, Any] = {}
        if not self.variance_guidance:
            changes["flow.variance_guidance"] = False
        if not self.prompter:
            changes["prompter.mode"] = "learned"  # learned tokens only: no latent condition
        inherited = self.init_architecture() if self.init else {}
        if self.init_autoencoder:  # the autoencoder's widths; the latent codec is the run's own
            widths = self.init_architecture(self.init_autoencoder)["vae.decoder_block_out_channels"]
            inherited = {"vae.decoder_block_out_channels": widths}
        chosen = {"vae.decoder_block_out_channels": self.decoder_widths, "latent.M": self.latent_m,
                  "latent.context_width": self.context_width, "latent.linear_path": self.linear_path}
        for key, value in chosen.items():
            if value is not None:
                changes[key] = tuple(value) if isinstance(value, (list, tuple)) else value
            elif key in inherited:
                changes[key] = inherited[key]
        return cfg.replace(**changes) if changes else cfg

    def init_architecture(self, path: str | None = None) -> dict[str, Any]:
        """The widths (the decoder's stages, y's M, the context model's) and the linear path of the
        ``--init`` model (or of ``path``: --init-autoencoder takes its decoder widths), for the options
        left unset: fine-tuning keeps the architecture it starts from
        (session 11 lost two device calls to an --init without --latent-m), also where it differs from
        today's named config (a None width is the config default of that model). An option given
        explicitly still wins, and :meth:`Trainer._load_init` refuses a mismatch."""
        from codec.weights import read_checkpoint_info

        cfg = read_checkpoint_info(path or self.init).config
        arch = {"vae.decoder_block_out_channels": cfg.vae.decoder_block_out_channels,
                "latent.M": cfg.latent.M, "latent.context_width": cfg.latent.context_width,
                "latent.linear_path": cfg.latent.linear_path}
        return {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}

    def effective_ema_decay(self) -> float:
        """``ema_decay``, capped so that the average spans at most a tenth of a step-scheduled run:
        a 3,000-step run averages over ~300 steps, not the 1,000 that 0.999 would."""
        if self.minutes:
            return self.ema_decay
        return min(self.ema_decay, max(0.0, 1.0 - 10.0 / max(1, self.steps)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        if not self.data:
            raise ValueError("--data is required (a folder, prefix or glob of training images)")
        if self.stage not in ("auto", "A", "B", "C"):
            raise ValueError(f"--stage must be auto, A, B or C, got {self.stage!r}")
        if self.crop % 64:
            raise ValueError(f"--crop must be a multiple of 64, got {self.crop}")
        if not (0 <= self.stage_a <= 1 and 0 <= self.stage_c <= 1 and self.stage_a + self.stage_c <= 1):
            raise ValueError(f"bad stage fractions: A {self.stage_a}, C {self.stage_c}")
        if not 0.0 <= self.lambda_ramp <= 1.0:
            raise ValueError(f"--lambda-ramp must be a fraction in [0, 1], got {self.lambda_ramp}")
        if self.gain_lr_mult <= 0:
            raise ValueError(f"--gain-lr-mult must be positive, got {self.gain_lr_mult}")
        if self.gain_ladder is not None:
            qualities = get_config(self.config).latent.num_qualities
            ladder = list(self.gain_ladder)
            if len(ladder) != qualities or any(g <= 0 for g in ladder) or ladder != sorted(ladder):
                raise ValueError(f"--gain-ladder needs {qualities} positive gains in rising order (one per "
                                 f"quality of {self.config}), got {self.gain_ladder}")  # fmt: skip
        if sum(bool(p) for p in (self.init, self.init_autoencoder, self.init_encoder)) > 1:
            raise ValueError("--init, --init-autoencoder and --init-encoder exclude each other (--init "
                             "copies the whole model, --init-autoencoder the DC-AE, --init-encoder its "
                             "encoder)")  # fmt: skip
        if self.decoder_only and not (self.init or self.init_autoencoder or self.init_encoder):
            raise ValueError("--decoder-only keeps the encoder as initialised: give --init-encoder (or "
                             "--init-autoencoder, --init) a trained one")  # fmt: skip
        if self.reset_linear_path and not (self.init and self.codec_config().latent.linear_path):
            raise ValueError("--reset-linear-path needs --init and a linear path (--linear-path, or the "
                             "init model's)")  # fmt: skip
        if self.decoder_widths is not None and any(w < 1 for w in self.decoder_widths):
            raise ValueError(f"--decoder-widths must be positive, got {self.decoder_widths}")
        if (self.decoder_widths, self.latent_m, self.context_width) != (None, None, None):
            # the config's own checks, with clear errors: one decoder width per stage, M a multiple of 8,
            # a context width >= 8
            self.codec_config()
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError(
                f"--batch-size and --steps must be positive, got {self.batch_size}, {self.steps}"
            )


def train(
    opts: TrainOptions, resume: bool = False, device: str | None = None, until_step: int | None = None
) -> tuple[Any, dict]:
    """Train in this process; returns (trainer, summary)."""
    from jobs.train_loop import Trainer

    opts.check()
    trainer = Trainer(opts, device=torch.device(device) if device else None)
    if resume and not trainer.resume():
        log.info("no state in %s/state: starting fresh", opts.out)
    return trainer, trainer.fit(until_step=until_step)


def _ray_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from jobs.train_loop import Trainer

    ctx = ray.train.get_context()
    resume, until_step = config.pop("_resume", False), config.pop("_until_step", None)
    trainer = Trainer(
        TrainOptions(**config), ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()
    )
    if resume:
        trainer.resume()
    summary = trainer.fit(
        report=lambda row: ray.train.report({k: v for k, v in row.items() if not isinstance(v, list)}),
        until_step=until_step,
    )
    _write_rank_summary(trainer, summary)


def _write_rank_summary(trainer: Any, summary: dict) -> None:
    """Each rank's summary in OUT (``summary.json`` for rank 0, ``summary-rank{r}.json`` for the others):
    Ray keeps reported metrics only beside checkpoints, and the ranks' weights checksums must agree."""
    name = "summary.json" if trainer.rank == 0 else f"summary-rank{trainer.rank}.json"
    (Path(trainer.opts.out) / name).write_text(json.dumps(summary))


def torchrun_rank() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when ``torchrun`` started this process as one of several, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def train_torchrun(
    opts: TrainOptions, resume: bool = False, device: str | None = None, until_step: int | None = None
) -> tuple[Any, dict]:
    """DDP without Ray: this process is one rank of those ``torchrun`` started
    (``python -m torch.distributed.run --standalone --nproc-per-node N -m jobs.cli train ...``), over
    NCCL on GPUs (one per local rank) or gloo on the CPU. The same loop as one process or Ray Train:
    one all-reduce of the gradients per step, rank 0 logs and saves. Returns (trainer, summary)."""
    import torch.distributed as dist

    from jobs.train_loop import Trainer

    ranks = torchrun_rank()
    if ranks is None:
        raise RuntimeError("train_torchrun: not started by torchrun with more than one process")
    rank, world, local = ranks
    opts.check()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    try:
        trainer = Trainer(opts, rank, world, dev)
        if resume and not trainer.resume() and rank == 0:
            log.info("no state in %s/state: starting fresh", opts.out)
        summary = trainer.fit(until_step=until_step)
    finally:
        dist.destroy_process_group()  # the export and evaluation after this are rank 0's alone
    if rank != 0:  # rank 0's summary is what `ditic train` prints
        _write_rank_summary(trainer, summary)
    return trainer, summary


def train_ray(
    opts: TrainOptions,
    num_workers: int,
    resume: bool = False,
    use_gpu: bool | None = None,
    cpus_per_worker: float = 1.0,
    until_step: int | None = None,
) -> dict:
    """DDP over ``num_workers`` Ray Train workers; rank 0 writes ``out/state`` and ``out/log.jsonl``
    (``out`` must be a folder every worker can reach: local for one node, shared storage beyond)."""
    import ray

    opts.check()
    opts = dataclasses.replace(
        opts,
        out=str(Path(opts.out).resolve()),
        data=str(Path(opts.data).resolve()) if "://" not in opts.data else opts.data,
    )
    started_ray = not ray.is_initialized()
    if started_ray:
        repo = str(Path(__file__).resolve().parent.parent)
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": repo}}, include_dashboard=False)
    try:
        return _fit_on_ray(opts, num_workers, use_gpu, cpus_per_worker, resume, until_step)
    finally:
        if started_ray:  # leave the process as we found it (callers may start their own Ray next)
            ray.shutdown()


def _fit_on_ray(
    opts: TrainOptions,
    num_workers: int,
    use_gpu: bool | None,
    cpus_per_worker: float,
    resume: bool,
    until_step: int | None,
) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={**opts.to_dict(), "_resume": resume, "_until_step": until_step},
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(name="ditic-train", storage_path=str(Path(opts.out) / "ray")),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"Ray Train failed: {result.error}") from result.error
    return json.loads((Path(opts.out) / "summary.json").read_text())


def export_weights(
    model: torch.nn.Module,
    ema: dict[str, torch.Tensor],
    path: str | Path,
    extra: dict[str, str] | None = None,
) -> str:
    """Write ``model`` with the EMA weights ``ema`` as a shippable checkpoint: coding tables built,
    fp16 except the entropy models (``FP32_NAMES``). Returns its model id."""
    from codec.weights import save_checkpoint
    from jobs.train_state import FP32_NAMES

    model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float()
    state = model.state_dict()
    with torch.no_grad():
        for k, v in ema.items():
            state[k].copy_(v)
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point() and not any(k in name for k in FP32_NAMES):
                t.data = t.data.to(torch.float16)
    model.eval().update(force=True)  # coding tables from the averaged weights, not stale ones
    return save_checkpoint(model, path, trained=True, extra=extra)


def export_trainer(trainer: Any, path: str | Path) -> str:
    """:func:`export_weights` of a trainer's model and EMA, with its provenance in the metadata."""
    extra = {
        "trained_steps": str(trainer.step),
        "train_seconds": f"{trainer.train_seconds:.0f}",
        "train_options": json.dumps(trainer.opts.to_dict(), sort_keys=True),
    }
    return export_weights(trainer.model, trainer.ema.shadow, path, extra)


def export_state(state_folder: str | Path, path: str | Path) -> str:
    """:func:`export_weights` from a saved training state (e.g. one brought back from a GPU run)."""
    from codec.config import CodecConfig
    from codec.model import DiTIC
    from jobs.train_state import read_state

    meta, tensors = read_state(state_folder)
    model = DiTIC(CodecConfig.from_dict(meta["config"]))
    ema = {k[len("ema/") :]: v.float() for k, v in tensors.items() if k.startswith("ema/")}
    extra = {
        "trained_steps": str(meta["step"]),
        "train_seconds": f"{meta['train_seconds']:.0f}",
        "train_options": json.dumps(meta["options"], sort_keys=True),
    }
    return export_weights(model, ema, path, extra)


@torch.no_grad()
def evaluate_held_out(model: torch.nn.Module, images: torch.Tensor, qualities: list[int]) -> dict[str, Any]:
    """Estimated bpp (from the likelihoods, rounding as in coding) and PSNR per quality on ``images``
    (N, 3, H, W) in [-1, 1]."""
    from codec.losses import bits_per_pixel, psnr

    model.eval()
    results = {}
    for q in qualities:
        out = model(images, q)
        bpp = bits_per_pixel(out["likelihoods"], images.shape[-2] * images.shape[-1])
        results[f"q{q}"] = {
            "bpp": round(bpp.mean().item(), 5),
            "psnr": round(psnr(images, out["x_hat"]).mean().item(), 3),
        }
    return results


# --- command line ------------------------------------------------------------------------------
def _comma_list(kind: type, what: str):  # noqa: ANN202
    """An argparse type: ``"0.25,0.5,1"`` -> (0.25, 0.5, 1.0) for ``kind`` float, and so on."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


_floats, _ints = _comma_list(float, "numbers"), _comma_list(int, "integers")


def add_arguments(parser: argparse.ArgumentParser, command_name: str = "train") -> None:
    d = TrainOptions()
    a = parser.add_argument
    a("--data", required=True, help="training images: folder, prefix, glob or fsspec URL (s3://...)")
    a("--config", default=d.config, help="named model config (ditic-small, ditic-test, ditic-official)")
    a("--out", default=d.out, help="run folder: state/ (resume), log.jsonl, eval.json")
    a("--steps", type=int, default=d.steps, help="schedule length in steps")
    a("--minutes", type=float, help="schedule length in minutes of training instead of steps")
    a("--batch-size", type=int, default=d.batch_size)
    a("--crop", type=int, default=d.crop, help="square crop side, a multiple of 64")
    a("--min-scale", type=float, default=d.min_scale,
      help="scale augmentation: each crop comes from the photo downscaled by a factor drawn log-uniformly "
           "from [MIN_SCALE, 1] (default 1: none)")  # fmt: skip
    a("--lr", type=float, default=d.lr)
    a(
        "--stage",
        default=d.stage,
        choices=["auto", "A", "B", "C"],
        help="force one stage (default: scheduled)",
    )
    a("--init", help="start from these exported weights (a .safetensors of the same config, e.g. the shipped "
      "model) with fresh optimizers: fine-tuning, e.g. --stage C for the adversarial stage alone")
    a("--init-autoencoder",
      help="copy only the DC-AE (encoder and decoder) of these exported weights; the latent codec, the DiT "
           "and the rest start fresh, so they may differ from the export's (e.g. another --latent-m). "
           "For stage B on a stage-A export with a new latent codec; the linear path is set as B begins")
    a("--init-encoder",
      help="copy only the DC-AE encoder of these exported weights: the latent space they code. The decoder "
           "(its widths: --decoder-widths or the config's), the latent codec and the DiT start fresh. With "
           "--decoder-only, stage A then trains a new decoder for that latent space, which "
           "tools/mix_decoder.py can give to any model trained on the same encoder")  # fmt: skip
    a("--decoder-only", action="store_true",
      help="stage A trains the DC-AE decoder alone; the encoder stays as initialised, so the latent space "
           "the export's latent codec and DiT were trained on does not move")  # fmt: skip
    a("--reset-linear-path", action="store_true",
      help="with --init: set the linear path to the PCA code of the encoder's latents as stage B "
           "begins, as a fresh run does (for an --init from a stage-A-only export, whose basis was "
           "never set)")  # fmt: skip
    a("--gan-weight", type=float, default=d.gan_weight,
      help="stage C: the generator's hinge-GAN term, times the adaptive weight (default 0.5, as released)")
    a("--stage-a", type=float, default=d.stage_a, help="fraction of the schedule in stage A (autoencoder)")
    a("--stage-c", type=float, default=d.stage_c, help="fraction at the end in stage C (adversarial)")
    a("--lambda-max", type=float, default=d.lambda_max, help="λ of quality 1 (lowest rate)")
    a("--lambda-min", type=float, default=d.lambda_min, help="λ of the highest quality")
    a("--lambda-ramp", type=float, default=d.lambda_ramp,
      help="fraction of the schedule, from the end of stage A, over which λ rises linearly from 0 "
           "(lets the decoder learn to use bits before the rate term squeezes them; 0: off)")  # fmt: skip
    a("--distill-margin", type=float, default=d.distill_margin,
      help="self-distillation hinge ReLU(1 − margin − cos): 0.5 as released, idle once the decoded latent's "
           "cosine to the clean one exceeds 0.5 (always, with --linear-path: docs/EVALUATION.md); e.g. 0.01 "
           "acts below 0.99")  # fmt: skip
    a("--gain-lr-mult", type=float, default=d.gain_lr_mult,
      help="learning-rate multiplier of y's per-quality gain vectors (at 1 they barely leave their "
           "initial values in a short run, so those, not λ, set the rates: docs/TRAINING.md, "
           "session 8)")  # fmt: skip
    a("--gain-ladder", type=_floats,
      help="initial gain of each quality, lowest first, comma-separated (default 2^(q - Q): "
           "0.125,0.25,0.5,1 for four); a finer top quality codes y more finely from the start")  # fmt: skip
    a("--latent-weight", type=float, default=d.latent_weight,
      help="weight of the decoded latent's relative MSE to the clean latent in stages B/C (not in the "
           "release's objective; 0: off)")  # fmt: skip
    a("--train-encoder", dest="freeze_encoder", action="store_false",
      help="stages B/C also train the DC-AE encoder, so its latent adapts to what the latent codec can "
           "code (default: frozen, as the release, which starts from a pretrained DC-AE)")  # fmt: skip
    a("--linear-path", action=argparse.BooleanOptionalAction,
      help="give the latent codec a linear path beside g_a and the mean head, set to the PCA code of the "
           "encoder's latents as stage B begins (not the release's; docs/TRAINING.md). Default: the "
           "config's (ditic-small: on; ditic-test, ditic-official: off), with --init the init "
           "model's")  # fmt: skip
    a("--decoder-widths", type=_ints,
      help="the DC-AE decoder's stage widths, full resolution first, comma-separated (default: the "
           "encoder's, e.g. 16,32,64,128,128,128 for ditic-small); a config change that travels in the "
           "weights (docs/TRAINING.md, session 10)")  # fmt: skip
    a("--latent-m", type=int,
      help="y's width (latent.M; ditic-small: 96 since session 11, 48 before), a multiple of 8; a config "
           "change that travels in the weights (docs/TRAINING.md, session 10: M = 48 discards much of a "
           "longer-trained autoencoder)")  # fmt: skip
    a("--context-width", type=int,
      help="the four-step context model's width (latent.context_width; ditic-small: 64; else 2M with the "
           "release's adapters): a wider y fits the 24 MiB budget only with a narrower context model. "
           "With --init, this, --latent-m and --decoder-widths default to the init model's own")  # fmt: skip
    a("--freeze-decoder", action="store_true",
      help="stages B/C keep the DC-AE decoder as stage A left it, so the latent codec and DiT must "
           "reach the latent it decodes, not the decoder adapt to theirs (not the release's)")  # fmt: skip
    a("--perceptual", default=d.perceptual, choices=["vgg", "alex", "none"])
    a("--perceptual-weight", type=float, default=d.perceptual_weight, help="weight of the perceptual term")
    a("--stage-a-perceptual-weight", type=float,
      help="its weight in stage A alone (default: --perceptual-weight); 0 trains the autoencoder on MSE, "
           "which decoded unseen photos 8 dB better in session 5 (docs/TRAINING.md)")  # fmt: skip
    a("--ema-decay", type=float, default=d.ema_decay)
    a("--seed", type=int, default=d.seed)
    a("--holdout", type=int, default=d.holdout, help="images kept out of training for the final evaluation")
    a("--max-side", type=int, help="downsize images whose longer side exceeds this")
    a("--max-images", type=int)
    a("--log-every", type=int, default=d.log_every)
    a("--time-budget-min", type=float, help="stop cleanly (state saved) before this many minutes")
    a("--stop-at-step", type=int, help="stop this process at this step (state saved; resume later)")
    a("--state-budget-mib", type=float, help="save the training state in at most this many MiB")
    a("--resume", action="store_true", help="continue from OUT/state when it exists")
    a("--export", help="write the final EMA weights here (fp16 safetensors)")
    a("--device", help="cuda, cpu, ... (default: cuda when available)")
    a("--no-variance-guidance", action="store_true", help="ablation: plain one-step flow")
    a("--no-distill", action="store_true", help="ablation: no self-distillation loss")
    a("--no-prompter", action="store_true", help="ablation: learned tokens instead of the latent prompt")
    a("--no-bf16", action="store_true", help="train in fp32 on CUDA")
    a("--ray", action="store_true", help="run on Ray Train (TorchTrainer, DDP)")
    a("--num-workers", type=int, default=1, help="Ray Train workers (one GPU each when GPUs exist)")
    a("--storage-options", help="JSON options for the data URL's filesystem")


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    from pipeline.storage import parse_storage_options

    names = {f.name for f in dataclasses.fields(TrainOptions)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None and k != "storage_options"}
    opts = TrainOptions(**given)
    opts.storage_options = parse_storage_options(args.storage_options)
    opts.distill, opts.variance_guidance = not args.no_distill, not args.no_variance_guidance
    opts.prompter, opts.bf16 = not args.no_prompter, not args.no_bf16
    return opts


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    opts = options_from_args(args)
    if args.ray:
        summary = train_ray(opts, args.num_workers, resume=args.resume, until_step=args.stop_at_step)
        if args.export:
            summary["model_id"] = export_state(Path(opts.out) / "state", args.export)
            summary["export"] = str(args.export)
        print(json.dumps(summary))
        return 0
    if torchrun_rank() is not None:
        trainer, summary = train_torchrun(opts, args.resume, args.device, args.stop_at_step)
        if trainer.rank != 0:
            return 0  # rank 0 evaluates, exports and prints the summary
    else:
        trainer, summary = train(opts, resume=args.resume, device=args.device, until_step=args.stop_at_step)
    if trainer.held_out is not None:
        summary["held_out"] = _evaluate_ema(trainer)
        (Path(opts.out) / "eval.json").write_text(json.dumps(summary["held_out"], indent=1))
    if args.export:
        summary["model_id"] = export_trainer(trainer, args.export)
        summary["export"] = str(args.export)
        summary["export_mib"] = round(os.path.getsize(args.export) / 2**20, 2)
    print(json.dumps(summary))
    return 0


def _evaluate_ema(trainer: Any) -> dict[str, Any]:
    model = copy.deepcopy(trainer.model)
    trainer.ema.copy_to(model)
    images = trainer.held_out.center_crops(trainer.opts.crop)
    return evaluate_held_out(model, images, trainer.cfg.qualities)
