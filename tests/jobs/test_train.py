"""Training on CPU with ditic-test: the loss falls, resume is exact, exports load, the CLI path runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_small_photos

from codec.weights import canonical_state_dict
from jobs.train import TrainOptions, add_arguments, export_state, export_trainer, options_from_args
from jobs.train_loop import Trainer, stage_at


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three real photos, downsized so that 64² crops are cheap."""
    return write_small_photos(tmp_path_factory.mktemp("train"))


def _opts(photos: Path, out: Path, **kw) -> TrainOptions:
    base = dict(
        data=str(photos),
        config="ditic-test",
        out=str(out),
        steps=2,
        batch_size=1,
        crop=64,
        perceptual="none",
        log_every=1,
        loader_threads=2,
        stage_a=0.5,
        warmup=1,
    )
    return TrainOptions(**{**base, **kw})


def test_stage_schedule():
    opts = TrainOptions(data="x", stage_a=0.25, stage_c=0.1)
    assert [stage_at(p, opts) for p in (0.0, 0.24, 0.25, 0.89, 0.9, 1.0)] == ["A", "A", "B", "B", "C", "C"]
    assert stage_at(0.0, dataclasses.replace(opts, stage="B")) == "B"


def test_lambda_ramp_scales_the_rate_term_from_zero(photos: Path, tmp_path: Path):
    trainer = Trainer(_opts(photos, tmp_path, lambda_ramp=0.25, stage_a=0.5, steps=100))
    scales = []
    for step in (0, 50, 60, 75, 90):
        trainer.step = step
        scales.append(trainer.rate_scale())
    assert scales == pytest.approx([0.0, 0.0, 0.4, 1.0, 1.0])
    x = trainer.bank.sample(1, 64, np.random.default_rng(0))
    out = trainer.model(x, 2)
    trainer.criterion.rate_scale = 0.0
    no_rate = trainer.criterion(x, out, 2)
    trainer.criterion.rate_scale = 1.0
    full = trainer.criterion(x, out, 2)
    distortion = trainer.criterion.distortion(x, out["x_hat"])[0].mean()
    lam = trainer.criterion.lambdas[1]
    distill = trainer.criterion.distill_weight * no_rate.parts["distill"]
    assert torch.allclose(no_rate.loss, distortion + distill)
    assert torch.allclose(full.loss - no_rate.loss, lam * full.bpp.mean(), rtol=1e-4)
    assert Trainer(_opts(photos, tmp_path)).rate_scale() == 1.0  # off by default


def test_bad_options_are_refused(photos: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="--data"):
        TrainOptions().check()
    with pytest.raises(ValueError, match="multiple of 64"):
        _opts(photos, tmp_path, crop=100).check()
    with pytest.raises(ValueError, match="stage fractions"):
        _opts(photos, tmp_path, stage_a=0.8, stage_c=0.5).check()
    with pytest.raises(ValueError, match="lambda-ramp"):
        _opts(photos, tmp_path, lambda_ramp=-0.1).check()


def _fixed_loss(trainer: Trainer, x: torch.Tensor, q: int) -> float:
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.criterion(x, trainer.model(x, q), q).loss.item()
    trainer.model.train()
    return loss


def test_training_lowers_the_loss_on_a_fixed_batch(photos: Path, tmp_path: Path):
    """Overfit check: a few full-codec steps (rate, DiT, distillation) on one photo's crops."""
    opts = _opts(photos, tmp_path, stage="B", steps=6, lr=2e-3, max_images=1, batch_size=2)
    trainer = Trainer(opts)
    x = trainer.bank.center_crops(64)
    before = _fixed_loss(trainer, x, 2)
    summary = trainer.fit()
    after = _fixed_loss(trainer, x, 2)
    assert summary["step"] == 6 and summary["stop"] == "schedule done"
    assert after < 0.9 * before, (before, after)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(r["stage"] == "B" and r["bpp"] > 0 and r["skipped"] == 0 for r in rows)
    assert any(k.startswith("bpp_q") for k in rows[0])


def _snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {f"model/{k}": v.clone() for k, v in canonical_state_dict(trainer.model).items()}
    state |= {f"ema/{k}": v.clone() for k, v in trainer.ema.shadow.items()}
    for i, slot in trainer.optimizers["main"].state_dict()["state"].items():
        state |= {f"opt/{i}/{k}": torch.as_tensor(v).clone() for k, v in slot.items()}
    return state


@pytest.fixture(scope="module")
def resumed(photos: Path, tmp_path_factory) -> tuple[Trainer, Trainer]:
    """The same 2-step schedule (1 step of stage A, 1 of B) run straight and split by a resume."""
    straight_dir, split_dir = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("split")
    straight = Trainer(_opts(photos, straight_dir))
    straight.fit()
    first = Trainer(_opts(photos, split_dir))
    assert first.fit(until_step=1)["stop"] == "until_step"
    second = Trainer(_opts(photos, split_dir))
    assert second.resume()
    second.fit()
    return straight, second


def test_resume_reproduces_an_uninterrupted_run(resumed):
    straight, split = resumed
    assert split.step == straight.step == 2 and split.stage == straight.stage == "B"
    a, b = _snapshot(straight), _snapshot(split)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def test_export_loads_through_the_api_and_matches_the_ema(resumed, tmp_path: Path):
    from codec.api import load_codec

    trainer = resumed[1]
    path = tmp_path / "ditic-test-trained.safetensors"
    model_id = export_trainer(trainer, path)
    codec = load_codec(str(path))
    assert codec.model_id == model_id and codec.trained and codec.name == "ditic-test"
    assert path.stat().st_size < 24 * 2**20
    loaded = canonical_state_dict(codec.model)
    for k, v in trainer.ema.shadow.items():
        assert torch.allclose(loaded[k].float(), v, rtol=2e-3, atol=1e-4), k
    payload = codec.encode(
        [trainer.bank.center_crops(64)[0].add(1).mul(127.5).byte().permute(1, 2, 0).numpy()], quality=1
    )
    assert codec.decode(payload)[0].size == (64, 64)
    # the state alone, as a GPU run brings it back, gives the very same file
    again = export_state(Path(trainer.opts.out) / "state", tmp_path / "again.safetensors")
    assert again == model_id


def test_cli_trains_and_exports(photos: Path, tmp_path: Path):
    from jobs.cli import main

    out = tmp_path / "run"
    argv = [
        "train",
        "--config",
        "ditic-test",
        "--data",
        str(photos),
        "--out",
        str(out),
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--crop",
        "64",
        "--perceptual",
        "none",
        "--holdout",
        "1",
        "--export",
        str(out / "w.safetensors"),
        "--no-prompter",
        "--no-variance-guidance",
        "--no-distill",
    ]
    assert main(argv) == 0
    assert (out / "w.safetensors").is_file() and (out / "state" / "state.json").is_file()
    assert set(json.loads((out / "eval.json").read_text())) == {"q1", "q2", "q3", "q4"}
    from codec.weights import read_checkpoint_info

    cfg = read_checkpoint_info(out / "w.safetensors").config
    assert cfg.prompter.mode == "learned" and cfg.flow.variance_guidance is False
    assert main(["train", "--data", str(tmp_path / "nothing"), "--config", "ditic-test"]) == 1


def test_adversarial_stage_with_a_frozen_decoder(photos: Path, tmp_path: Path):
    """--freeze-decoder in stage C: the adaptive GAN weight cannot take its gradient at the frozen
    decoder's last layer (session 14 found that crash on the CPU), so it balances at the decoder's input;
    the decoder stays as it was and the DiT still trains."""
    trainer = Trainer(_opts(photos, tmp_path, stage="C", steps=1, perceptual="vgg", freeze_decoder=True))
    decoder = [p.detach().clone() for p in trainer.model.vae.decoder.parameters()]
    dit = [p.detach().clone() for p in trainer.model.DiT.parameters()]
    trainer.fit()
    row = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert row["skipped"] == 0 and math.isfinite(row["gan_g"])
    frozen = trainer.model.vae.decoder.parameters()
    assert all(torch.equal(a, b) for a, b in zip(decoder, frozen, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(dit, trainer.model.DiT.parameters(), strict=True))


def _straight_and_resumed(photos: Path, tmp_path: Path, **kw) -> tuple[Trainer, Trainer]:
    """A schedule run straight through, and the same stopped at step 1 and resumed (not yet fitted on)."""
    straight = Trainer(_opts(photos, tmp_path / "straight", **kw))
    straight.fit()
    first = Trainer(_opts(photos, tmp_path / "split", **kw))
    assert first.fit(until_step=1)["stop"] == "until_step"
    second = Trainer(_opts(photos, tmp_path / "split", **kw))
    assert second.resume()
    return straight, second


def test_resume_in_the_adversarial_stage_reproduces_an_uninterrupted_run(photos: Path, tmp_path: Path):
    """Stage C split by a resume equals stage C straight: the discriminator's weights travel in the
    state and its one-element bias resumes (session 16's first stage-C resume crashed on the H200)."""
    straight, second = _straight_and_resumed(photos, tmp_path, stage="C", steps=2, perceptual="none")
    assert second.fit()["step"] == 2
    a, b = _snapshot(straight), _snapshot(second)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    for p, q in zip(straight.disc.parameters(), second.disc.parameters(), strict=True):
        assert torch.equal(p, q)
    disc = [straight.optimizers["disc"].state[p]["exp_avg"] for p in straight.disc.parameters()]
    assert all(torch.equal(m, second.optimizers["disc"].state[q]["exp_avg"])
               for m, q in zip(disc, second.disc.parameters(), strict=True))


def test_adversarial_stage_updates_generator_and_discriminator(photos: Path, tmp_path: Path):
    trainer = Trainer(_opts(photos, tmp_path, stage="C", steps=1, perceptual="vgg"))
    disc_before = [p.detach().clone() for p in trainer.disc.parameters()]
    summary = trainer.fit()
    assert summary["stage"] == "C" and summary["step"] == 1
    row = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert {"gan_g", "gan_d", "perceptual", "bpp", "distill"} <= set(row)
    assert row["gan_d"] > 0 and row["skipped"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, trainer.disc.parameters(), strict=True))


@pytest.mark.parametrize(("freeze_encoder", "freeze_decoder"), [(True, False), (True, True), (False, False)])
def test_stage_b_freezes_the_encoder_and_decoder_only_when_asked(
    photos: Path, tmp_path: Path, freeze_encoder: bool, freeze_decoder: bool
):
    frozen = {"freeze_encoder": freeze_encoder, "freeze_decoder": freeze_decoder}
    trainer = Trainer(_opts(photos, tmp_path, stage="B", steps=1, **frozen))
    vae = trainer.model.vae
    decoder = [p.detach().clone() for p in vae.decoder.parameters()]
    encoder = [p.detach().clone() for p in vae.encoder.parameters()]
    head = [p.detach().clone() for p in trainer.model.codec.g_s.parameters()]
    assert trainer.fit()["step"] == 1

    def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
        return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))

    assert moved(decoder, vae.decoder) is not freeze_decoder
    assert moved(encoder, vae.encoder) is not freeze_encoder  # frozen in B by default
    assert moved(head, trainer.model.codec.g_s)


def test_train_encoder_flag_unfreezes_the_encoder():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert options_from_args(parser.parse_args(["--data", "x"])).freeze_encoder is True
    assert options_from_args(parser.parse_args(["--data", "x", "--train-encoder"])).freeze_encoder is False


def test_stage_a_can_train_on_mse_alone_while_b_keeps_the_perceptual_term(photos: Path, tmp_path: Path):
    opts = _opts(photos, tmp_path, steps=2, stage_a=0.5, perceptual="alex", stage_a_perceptual_weight=0.0)
    Trainer(opts).fit()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    by_stage = {row["stage"]: row for row in rows if "stage" in row and "loss" in row}
    assert set(by_stage) == {"A", "B"}
    assert "perceptual" not in by_stage["A"] and by_stage["A"]["loss"] == pytest.approx(by_stage["A"]["mse"])
    assert by_stage["B"]["perceptual"] > 0


def test_linear_path_is_set_to_an_orthonormal_pca_basis_as_stage_b_begins(photos: Path, tmp_path: Path):
    trainer = Trainer(_opts(photos, tmp_path, steps=2, stage_a=0.5, linear_path=True))
    codec = trainer.model.codec
    assert codec.cfg_linear_path
    before = codec.g_s_linear.weight.detach().clone()
    trainer.fit()  # step 1 in stage A, then the basis is set, then step 2 in stage B
    weight = codec.g_s_linear.weight.detach()[:, :, 0, 0]  # (4C, M): the basis as columns
    assert not torch.allclose(weight, before[:, :, 0, 0])
    gram = weight.T @ weight  # one step of lr 3e-4 after an orthonormal start
    assert torch.allclose(gram, torch.eye(codec.M), atol=0.02)
    assert trainer.cfg.latent.linear_path and TrainOptions().linear_path is None


def test_gain_ladder_sets_the_initial_gains_and_the_multiplier_lets_them_move(photos: Path, tmp_path: Path):
    """The per-quality gains of y set the rates; at the shared learning rate they barely move in a short
    run (docs/TRAINING.md, session 8). --gain-ladder sets where they start, --gain-lr-mult how fast."""
    ladder = (0.5, 1.0, 2.0, 4.0)
    trainer = Trainer(_opts(photos, tmp_path / "ladder", gain_ladder=ladder))
    codec = trainer.model.codec
    assert torch.allclose(codec.gain, torch.tensor(ladder)[:, None].expand_as(codec.gain))
    assert torch.allclose(codec.gain * codec.inverse_gain, torch.ones_like(codec.gain))
    assert torch.allclose(trainer.ema.shadow["codec.gain"].float(), codec.gain.detach())  # EMA too

    moved = {}
    for mult in (1.0, 50.0):
        t = Trainer(_opts(photos, tmp_path / f"mult{mult}", stage="B", steps=2, gain_lr_mult=mult))
        before = t.model.codec.gain.detach().clone()
        t.fit()
        moved[mult] = (t.model.codec.gain.detach() - before).abs().max().item()
        log_text = (tmp_path / f"mult{mult}" / "log.jsonl").read_text()
        rows = [json.loads(line) for line in log_text.splitlines()]
        assert any("gain_q1" in row and "gain_q4" in row for row in rows)
    assert moved[1.0] > 0 and moved[50.0] > 10 * moved[1.0]


def test_gain_options_are_checked_and_parsed(photos: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="gain-ladder"):
        _opts(photos, tmp_path, gain_ladder=(1.0, 0.5, 2.0, 4.0)).check()  # not rising
    with pytest.raises(ValueError, match="gain-ladder"):
        _opts(photos, tmp_path, gain_ladder=(1.0, 2.0)).check()  # ditic-test has four qualities
    with pytest.raises(ValueError, match="gain-lr-mult"):
        _opts(photos, tmp_path, gain_lr_mult=0.0).check()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", str(photos), "--gain-ladder", "0.25,0.5,1,2", "--gain-lr-mult", "20",
                              "--distill-margin", "0.01", "--gan-weight", "0.2"])  # fmt: skip
    opts = options_from_args(args)
    assert opts.gain_ladder == (0.25, 0.5, 1.0, 2.0) and opts.gain_lr_mult == 20.0
    assert opts.distill_margin == 0.01 and TrainOptions().distill_margin == 0.5  # the release's by default
    assert opts.gan_weight == 0.2 and TrainOptions().gan_weight == 0.5
    assert Trainer(_opts(photos, tmp_path, distill_margin=0.01)).criterion.distill_margin == 0.01
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "x", "--gain-ladder", "a,b"])


def test_resume_keeps_the_gains_own_learning_rate(photos: Path, tmp_path: Path):
    """The gains' second optimizer group (and its lr_mult) survives a save and resume exactly."""
    straight, second = _straight_and_resumed(photos, tmp_path, gain_lr_mult=30.0,
                                             gain_ladder=(0.25, 0.5, 1.0, 2.0))
    assert [g.get("lr_mult", 1.0) for g in second.optimizers["main"].param_groups] == [1.0, 30.0]
    second.fit()
    a, b = _snapshot(straight), _snapshot(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_starts_a_fine_tuning_run_from_an_export(photos: Path, tmp_path: Path):
    """--init copies an exported model (fp16) into the run and its EMA; the linear path is not re-set;
    a run of another config is refused, naming the difference."""
    path = tmp_path / "base.safetensors"
    trainer = Trainer(_opts(photos, tmp_path / "base", steps=2, stage_a=0.5, linear_path=True))
    trainer.fit()
    model_id = export_trainer(trainer, path)
    exported = {k: v.float() for k, v in canonical_state_dict(load_codec_model(path)).items()}

    tuned = Trainer(_opts(photos, tmp_path / "tuned", init=str(path), stage="C", steps=1, linear_path=True))
    assert tuned.init_model_id == model_id
    start = canonical_state_dict(tuned.model)
    for name in ("codec.g_s_linear.weight", "vae.decoder.conv_out.weight", "codec.gain"):
        assert torch.equal(start[name], exported[name]), name
        assert torch.equal(tuned.ema.shadow[name].float(), exported[name]), name
    fresh = Trainer(_opts(photos, tmp_path / "fresh", steps=1, linear_path=True))
    assert not torch.equal(canonical_state_dict(fresh.model)["vae.decoder.conv_out.weight"],
                           start["vae.decoder.conv_out.weight"])  # fmt: skip
    resets = []
    tuned._init_linear_path = lambda: resets.append(tuned.step)  # a fresh run calls it as B or C begins
    summary = tuned.fit()
    assert summary["stage"] == "C" and summary["step"] == 1 and resets == []
    state = json.loads((tmp_path / "tuned" / "state" / "state.json").read_text())
    assert state["options"]["init"] == str(path)

    reset = Trainer(_opts(photos, tmp_path / "reset", init=str(path), stage="B", steps=1, linear_path=True,
                          reset_linear_path=True))  # fmt: skip
    resets = []
    reset._init_linear_path = lambda: resets.append(reset.step)  # e.g. from a stage-A-only export
    assert reset.fit()["stage"] == "B" and resets == [0]
    with pytest.raises(ValueError, match="reset-linear-path"):
        _opts(photos, tmp_path, reset_linear_path=True, linear_path=True).check()  # without --init
    with pytest.raises(ValueError, match="latent.linear_path"):
        Trainer(_opts(photos, tmp_path / "other", init=str(path), linear_path=False))  # --no-linear-path
    inherits = Trainer(_opts(photos, tmp_path / "inherits", init=str(path), stage="C", steps=1))
    assert inherits.cfg.latent.linear_path  # left unset: the init model's linear path
    with pytest.raises(Exception, match="not found"):
        Trainer(_opts(photos, tmp_path / "none", init=str(tmp_path / "missing.safetensors")))


def load_codec_model(path: Path) -> torch.nn.Module:
    from codec.weights import load_checkpoint

    return load_checkpoint(path)[0]


def test_decoder_widths_train_export_and_decode(photos: Path, tmp_path: Path):
    """--decoder-widths widens the DC-AE decoder alone; the widths travel in the export, which then
    loads and round-trips a real bitstream; a wrong number of stages is refused."""
    from codec.api import load_codec

    widths = (16, 16, 16, 16, 16, 32)  # ditic-test's encoder: 8, 8, 16, 16, 16, 32
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", str(photos), "--decoder-widths", "16,16,16,16,16,32"])
    opts = options_from_args(args)
    assert opts.decoder_widths == widths and TrainOptions().decoder_widths is None
    trainer = Trainer(_opts(photos, tmp_path / "wide", decoder_widths=widths))
    cfg = trainer.cfg.vae
    assert cfg.decoder_block_out_channels == widths and cfg.block_out_channels == (8, 8, 16, 16, 16, 32)
    assert trainer.model.vae.decoder.conv_out.weight.shape[1] == 16  # the full-resolution stage widened
    assert trainer.model.vae.encoder.conv_in.weight.shape[0] == 8  # the encoder is not
    trainer.fit()
    path = tmp_path / "wide.safetensors"
    export_trainer(trainer, path)
    codec = load_codec(str(path), device="cpu")
    assert codec.model.cfg.vae.decoder_block_out_channels == widths
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    item = codec.encode_items([image], quality=4)[0]
    assert np.asarray(codec.decode_items([item.payload])[0].image).shape == image.shape
    with pytest.raises(ValueError, match="one width per stage"):
        _opts(photos, tmp_path, decoder_widths=(16, 32)).check()
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "x", "--decoder-widths", "16,a"])


def test_latent_width_options_change_the_config(photos: Path, tmp_path: Path):
    """--latent-m and --context-width build the run's codec at those widths (they travel in its config)
    and train; a width the config refuses is refused when the options are checked."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", str(photos), "--latent-m", "24", "--context-width", "8"])
    opts = options_from_args(args)
    assert (opts.latent_m, opts.context_width) == (24, 8) and TrainOptions().latent_m is None
    trainer = Trainer(_opts(photos, tmp_path / "wide", latent_m=24, context_width=8, stage_a=0.0))
    assert (trainer.cfg.latent.M, trainer.cfg.latent.context_width) == (24, 8)
    assert trainer.model.codec.gain.shape == (4, 24)
    assert trainer.fit()["stage"] == "B"
    with pytest.raises(ValueError, match="multiple of 8"):
        _opts(photos, tmp_path, latent_m=20).check()
    with pytest.raises(ValueError, match="context_width"):
        _opts(photos, tmp_path, context_width=4).check()


def test_init_keeps_the_widths_it_starts_from(photos: Path, tmp_path: Path):
    """An --init run takes y's width, the context model's and the decoder's from the model it starts
    from when the options leave them unset (session 11 lost two device calls to a stage-B run without
    --latent-m); a width given explicitly that differs from the init's is still refused."""
    wide = Trainer(_opts(photos, tmp_path / "wide", steps=1, latent_m=24, context_width=8,
                         decoder_widths=(16, 16, 16, 16, 16, 32)))  # fmt: skip
    wide.fit()
    path = tmp_path / "wide.safetensors"
    export_trainer(wide, path)
    opts = _opts(photos, tmp_path / "tuned", init=str(path), stage="B", steps=1)
    expected = {"latent.M": 24, "latent.context_width": 8, "latent.linear_path": False,
                "vae.decoder_block_out_channels": (16, 16, 16, 16, 16, 32)}  # fmt: skip
    assert opts.init_architecture() == expected
    tuned = Trainer(opts)
    assert (tuned.cfg.latent.M, tuned.cfg.latent.context_width) == (24, 8)
    assert tuned.cfg.vae.decoder_block_out_channels == (16, 16, 16, 16, 16, 32)
    assert tuned.init_model_id and tuned.fit()["stage"] == "B"
    with pytest.raises(ValueError, match="latent.M"):
        Trainer(_opts(photos, tmp_path / "narrow", init=str(path), latent_m=16, stage="B"))


def test_decoder_only_stage_a_on_an_init_encoder_keeps_the_latent_space(photos: Path, tmp_path: Path):
    """--init-encoder copies the DC-AE encoder alone (a decoder of other widths starts fresh), and
    --decoder-only trains the decoder alone in stage A: the export codes the same latent space, so
    tools/mix_decoder.py can give its decoder to any model trained on that encoder."""
    base = Trainer(_opts(photos, tmp_path / "base", steps=1))
    base.fit()
    path = tmp_path / "a.safetensors"
    model_id = export_trainer(base, path)
    exported = {k: v.float() for k, v in canonical_state_dict(load_codec_model(path)).items()}
    widths = (16, 16, 16, 16, 16, 32)
    trainer = Trainer(_opts(photos, tmp_path / "decoder", init_encoder=str(path), decoder_only=True,
                            stage="A", steps=2, decoder_widths=widths))  # fmt: skip
    assert trainer.init_model_id == model_id and trainer.cfg.vae.decoder_block_out_channels == widths
    encoder = [n for n in exported if n.startswith("vae.encoder.")]
    start = canonical_state_dict(trainer.model)
    assert len(encoder) > 10 and all(torch.equal(start[n].float(), exported[n]) for n in encoder)
    decoder_out = start["vae.decoder.conv_out.weight"].clone()
    assert trainer.fit()["stage"] == "A"
    after = canonical_state_dict(trainer.model)
    for name in encoder:  # trained around, not trained
        assert torch.equal(after[name].float(), exported[name]), name
        assert torch.equal(trainer.ema.shadow[name].float(), exported[name]), name
    assert not torch.equal(after["vae.decoder.conv_out.weight"], decoder_out)

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    opts = options_from_args(parser.parse_args(["--data", str(photos), "--init-encoder", str(path),
                                                "--decoder-only"]))  # fmt: skip
    assert opts.init_encoder == str(path) and opts.decoder_only and not TrainOptions().decoder_only
    with pytest.raises(ValueError, match="exclude each other"):
        _opts(photos, tmp_path, init_autoencoder=str(path), init_encoder=str(path)).check()
    with pytest.raises(ValueError, match="--decoder-only keeps the encoder"):
        _opts(photos, tmp_path, decoder_only=True).check()


def test_init_autoencoder_copies_the_dcae_alone_into_another_latent_codec(photos: Path, tmp_path: Path):
    """--init-autoencoder takes only the DC-AE of an export (and its decoder widths), so stage B can start
    a latent codec of another width on a trained autoencoder; the rest is fresh, the linear path is set
    as B begins, and a DC-AE of another shape, or --init beside it, is refused."""
    base = Trainer(_opts(photos, tmp_path / "base", steps=1, latent_m=24, context_width=8, linear_path=True,
                         decoder_widths=(16, 16, 16, 16, 16, 32)))  # fmt: skip
    base.fit()
    path = tmp_path / "a.safetensors"
    model_id = export_trainer(base, path)
    exported = {k: v.float() for k, v in canonical_state_dict(load_codec_model(path)).items()}

    opts = _opts(photos, tmp_path / "wider", init_autoencoder=str(path), latent_m=32, context_width=8,
                 linear_path=True, stage="B", steps=1)  # fmt: skip
    wider = Trainer(opts)
    assert wider.init_model_id == model_id and wider.cfg.latent.M == 32
    assert wider.cfg.vae.decoder_block_out_channels == (16, 16, 16, 16, 16, 32)  # inherited
    start = canonical_state_dict(wider.model)
    copied = [n for n in exported if n.startswith("vae.") and n in start]
    assert len(copied) > 20
    for name in copied:
        assert torch.equal(start[name], exported[name]), name
        assert torch.equal(wider.ema.shadow[name].float(), exported[name]), name
    fresh = Trainer(_opts(photos, tmp_path / "fresh", latent_m=32, context_width=8, linear_path=True,
                          decoder_widths=(16, 16, 16, 16, 16, 32), steps=1))  # fmt: skip
    fresh_state = canonical_state_dict(fresh.model)  # the same seed: the same initial weights
    rest = [n for n in start if not n.startswith("vae.")]
    assert any(n.startswith("DiT.") for n in rest) and start["codec.gain"].shape == (4, 32)
    for name in rest:  # everything but the DC-AE is a fresh run's
        assert torch.equal(start[name], fresh_state[name]), name
    assert not torch.equal(start["vae.decoder.conv_out.weight"], fresh_state["vae.decoder.conv_out.weight"])
    resets = []
    wider._init_linear_path = lambda: resets.append(wider.step)
    assert wider.fit()["stage"] == "B" and resets == [0]

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", str(photos), "--init-autoencoder", str(path), "--latent-m", "32"])
    assert options_from_args(args).init_autoencoder == str(path) and TrainOptions().init_autoencoder is None
    with pytest.raises(ValueError, match="exclude each other"):
        _opts(photos, tmp_path, init=str(path), init_autoencoder=str(path)).check()
    with pytest.raises(ValueError, match="--init-autoencoder .*vae.decoder_block_out_channels"):
        Trainer(_opts(photos, tmp_path / "narrow", init_autoencoder=str(path), stage="B",
                      decoder_widths=(8, 8, 16, 16, 16, 32)))  # fmt: skip
