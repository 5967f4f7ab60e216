"""Model families (ae, vae, rae) on one architecture: the latent terms against closed forms and torch.distributions,
what each term does to trained latents, resume for every family, and the stages after training.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr

from engine.data.imagecache import prepare
from engine.model.autoencoder import Autoencoder, kl_normal
from engine.model.checkpoint import load_checkpoint
from engine.model.config import ModelConfig, TrainConfig
from engine.model.encode import encode
from engine.model.train import _build, latent_weight, objective, train
from engine.model.ranks import Ranks

TINY = dict(size=32, z_dim=8, widths=(8, 8, 8, 8))


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("families") / "run"
    prepare("synthetic:320", run, size=32, workers=1, progress=False)
    return run


def fresh(cache_run, path):
    path.mkdir(parents=True)
    shutil.copytree(cache_run / "images.zarr", path / "images.zarr")
    return path


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**({"epochs": 2, "batch_size": 32, "device": "cpu", "seed": 1, "grid_images": 2} | kw))


def latents(run) -> np.ndarray:
    encode(run, device="cpu", progress=False)
    return zarr.open_group(run / "latents.zarr", mode="r")["z"][:]


def test_kl_equals_torch_distributions_and_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(64, 16, generator=g) * 2, torch.randn(64, 16, generator=g)
    want = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                             torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl_normal(mu, logvar), want, rtol=1e-5, atol=1e-5)
    # planted: mu = 0 and sigma = 1 is no divergence; sigma = 1 leaves |mu|^2 / 2
    assert kl_normal(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max() == 0
    torch.testing.assert_close(kl_normal(torch.full((2, 4), 3.0), torch.zeros(2, 4)), torch.full((2,), 18.0))
    # bf16 inputs: computed in float32
    assert kl_normal(mu.bfloat16(), logvar.bfloat16()).dtype == torch.float32


def test_each_family_adds_its_own_latent_term_to_the_pixel_loss():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    pixels = 3 * 32 * 32
    for family, weight_of in (("ae", None), ("vae", "beta"), ("rae", "z_reg")):
        model = Autoencoder(ModelConfig(family=family, **TINY)).eval()
        logits, z, term = model(x)
        mu, logvar = model.encode_stats(x)
        torch.testing.assert_close(z, mu)  # eval: the mean, for every family
        t = cfg(beta=2.5, z_reg=0.7)
        w = latent_weight(t, family)
        got = objective("bce", logits, x, term, w)
        bce = F.binary_cross_entropy_with_logits(logits, x)
        if family == "ae":
            assert term is None and logvar is None and w == 0 and torch.equal(got, bce)
        elif family == "vae":
            torch.testing.assert_close(got, bce + 2.5 * kl_normal(mu, logvar).mean() / pixels)
        else:
            torch.testing.assert_close(got, bce + 0.7 * (0.5 * (mu**2).sum(1)).mean() / pixels)
    # training mode: a vae draws z = mu + sigma eps, the others give mu
    vae = Autoencoder(ModelConfig(family="vae", **TINY)).train()
    torch.manual_seed(5)
    _, z, _ = vae(x)
    mu, logvar = vae.encode_stats(x)
    torch.manual_seed(5)
    torch.testing.assert_close(z, mu + (0.5 * logvar).exp() * torch.randn_like(mu))


def test_rae_penalises_the_decoders_weights_only():
    net, opt = _build(ModelConfig(family="rae", **TINY), cfg(decoder_l2=3e-3), Ranks(), torch.device("cpu"))
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in net.named_parameters():
        want = 3e-3 if name.startswith(("from_z.", "decoder_conv.")) else 0
        assert decays[id(p)] == want, (name, decays[id(p)])
    assert len(decays) == len(list(net.parameters()))
    for family in ("ae", "vae"):
        _, opt = _build(ModelConfig(family=family, **TINY), cfg(decoder_l2=3e-3), Ranks(), torch.device("cpu"))
        assert [g["weight_decay"] for g in opt.param_groups] == [0]


def test_config_refuses_an_unknown_family_and_negative_weights():
    with pytest.raises(ValueError, match="family must be one of"):
        ModelConfig(family="gan")
    for name in ("beta", "z_reg", "decoder_l2"):
        with pytest.raises(ValueError, match=f"{name} must be >= 0"):
            TrainConfig(**{name: -1.0})
    # a checkpoint written before the families had none: it reads as the plain ae
    d = ModelConfig().to_dict()
    del d["family"]
    assert ModelConfig.from_dict(d).family == "ae"


@pytest.mark.parametrize("family, fused", [("ae", False), ("vae", False), ("rae", False), ("ae", True), ("rae", True)])
def test_resume_is_bit_exact_for_every_family(cache_run, tmp_path, family, fused):
    """Also with Adam's fused kernel (CUDA's default), here on the CPU."""
    mcfg = ModelConfig(family=family, **TINY)
    a, b = fresh(cache_run, tmp_path / "a"), fresh(cache_run, tmp_path / "b")
    full = train(a, cfg(epochs=3, fused=fused), mcfg, progress=False)
    train(b, cfg(epochs=1, fused=fused), mcfg, progress=False)
    resumed = train(b, cfg(epochs=3, fused=fused), resume=True, progress=False)
    ma, ca = load_checkpoint(a / "checkpoints" / "last.pt")
    mb, cb = load_checkpoint(b / "checkpoints" / "last.pt")
    assert ma.config.family == family and ca["config"]["model"]["family"] == family
    assert all(bool(g["fused"]) == fused for g in cb["optimizer"]["param_groups"]), cb["optimizer"]["param_groups"]
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), f"{family}: {k} differs after resume"
    assert resumed["val_loss"] == full["val_loss"]


@pytest.fixture(scope="module")
def trained(cache_run, tmp_path_factory):
    """An ae, an rae with a strong z penalty and a vae with a very large beta, trained alike (4 epochs)."""
    root = tmp_path_factory.mktemp("trained")
    runs = {}
    for name, family, kw in (("ae", "ae", {}), ("rae", "rae", {"z_reg": 200.0}), ("vae_big", "vae", {"beta": 500.0})):
        run = fresh(cache_run, root / name)
        train(run, cfg(epochs=4, **kw), ModelConfig(family=family, **TINY), progress=False)
        runs[name] = run
    return runs


def test_the_rae_z_penalty_shrinks_the_latents_radius(trained):
    r_ae = np.linalg.norm(latents(trained["ae"]), axis=1)
    r_rae = np.linalg.norm(latents(trained["rae"]), axis=1)
    assert np.median(r_rae) < 0.5 * np.median(r_ae), f"median radius rae {np.median(r_rae):.3f}, ae {np.median(r_ae):.3f}"


def test_a_vae_with_a_large_beta_gives_the_prior(trained):
    run = trained["vae_big"]
    z = latents(run)
    group = zarr.open_group(run / "latents.zarr", mode="r")
    logvar = group["logvar"][:]
    assert logvar.shape == z.shape and np.isfinite(logvar).all()
    # q(z|x) ~ N(0, I) for every image: draws from the aggregate posterior are N(0, I)
    rng = np.random.default_rng(0)
    draws = z + np.exp(0.5 * logvar) * rng.standard_normal(z.shape)
    assert np.abs(draws.mean(0)).max() < 0.25, draws.mean(0)
    cov = np.cov(draws.T)
    assert np.abs(cov - np.eye(z.shape[1])).max() < 0.3, np.round(cov, 2)
    # the decoder then ignores z: prior samples decode like reconstructions (so their face rates match)
    from engine.generation.generate import decode_with, load_model
    from engine.generation.sampling import Sampler

    model, dev, prec = load_model(run, device="cpu")
    prior = decode_with(model, Sampler("prior").fit(z).sample(64, rng), dev, prec).astype(float)
    recon = decode_with(model, z[:64], dev, prec).astype(float)
    assert abs(prior.mean() - recon.mean()) < 2 and np.abs(prior.mean(0) - recon.mean(0)).mean() < 3


def test_a_vae_with_beta_zero_is_an_autoencoder_with_noise(cache_run, tmp_path):
    run = fresh(cache_run, tmp_path / "vae0")
    mcfg = ModelConfig(family="vae", **TINY)
    torch.manual_seed(cfg().seed)
    start = Autoencoder(mcfg)
    train(run, cfg(epochs=3, beta=0.0), mcfg, progress=False)
    model, _ = load_checkpoint(run / "checkpoints" / "last.pt")
    x = torch.from_numpy(zarr.open_group(run / "images.zarr", mode="r")["images"][:64]).permute(0, 3, 1, 2) / 255
    with torch.no_grad():
        _, logvar0 = start.eval().encode_stats(x)
        mu, logvar = model.encode_stats(x)
    # nothing pulls q(z|x) toward the prior: the noise only hurts reconstruction, so training narrows it
    assert logvar.mean() < logvar0.mean() - 0.05, (float(logvar0.mean()), float(logvar.mean()))  # measured -0.08
    assert mu.std() > 0.1  # the means carry the images, as an ae's z does


def test_compare_adds_the_prior_sampler_for_a_vae_only(trained, tmp_path):
    from engine.generation.compare import compare
    from engine.generation.config import SAMPLERS

    run = trained["vae_big"]
    latents(run)
    res = compare(run, n=20, device="cpu", progress=False, samplers=None)
    assert list(res["samplers"]) == [*SAMPLERS, "prior"]
    latents(trained["ae"])
    assert "prior" not in compare(trained["ae"], n=20, device="cpu", progress=False)["samplers"]
    assert (run / "generate" / "prior" / "images.npy").exists()
    json.loads((run / "generate" / "compare.json").read_text())["samplers"]["prior"]


def test_a_feed_resident_on_the_device_trains_exactly_as_the_host_feed(cache_run, tmp_path):
    """resident=True (CUDA's default when the split fits), here on CPU torch: the same batches, the same weights."""
    from engine.data.feed import BatchFeed
    from engine.model.train import DeviceFeed

    images = zarr.open_group(cache_run / "images.zarr", mode="r")["images"]
    host = BatchFeed(images, np.arange(0, 300, 2), 16, seed=4, in_memory=True)
    dev = DeviceFeed(host, torch.device("cpu"))
    for e in (1, 2):
        got, want = list(dev.epoch(e)), list(host.epoch(e))
        assert len(got) == len(want) == len(dev) == 150 // 16
        for g, w in zip(got, want):
            assert isinstance(g, torch.Tensor) and torch.equal(g, torch.from_numpy(w))
    mcfg = ModelConfig(**TINY)
    a, b = fresh(cache_run, tmp_path / "a"), fresh(cache_run, tmp_path / "b")
    train(a, cfg(resident=True), mcfg, progress=False)
    train(b, cfg(resident=False), mcfg, progress=False)
    ma, _ = load_checkpoint(a / "checkpoints" / "last.pt")
    mb, _ = load_checkpoint(b / "checkpoints" / "last.pt")
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), k


def test_a_resume_keeps_the_familys_loss_weights_and_the_cli_refuses_stray_ones(cache_run, tmp_path):
    from cli import main

    run = fresh(cache_run, tmp_path / "v")
    mcfg = ModelConfig(family="vae", **TINY)
    train(run, cfg(epochs=1, beta=4.0), mcfg, progress=False)
    with pytest.raises(ValueError, match="trained with --beta 4, this --resume asks for 1"):
        train(run, cfg(epochs=2), resume=True, progress=False)
    # the command line takes the family and its weights from the checkpoint
    assert main(["-q", "train", "--run", str(run), "--epochs", "2", "--resume", "--device", "cpu",
                 "--batch-size", "32"]) == 0
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["train"]["beta"] == 4.0 and ckpt["config"]["model"]["family"] == "vae"
    for argv, said in ((["--resume", "--model", "rae"], "is of family vae"),
                       (["--resume", "--z-reg", "2"], "--z-reg applies to --model rae only"),
                       (["--overwrite", "--beta", "2"], "--beta applies to --model vae only")):
        assert main(["train", "--run", str(run), "--epochs", "3", "--device", "cpu", *argv]) == 2, argv
        assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2, argv  # untouched
    assert main(["run", "--run", str(tmp_path / "r"), "--z-reg", "2"]) == 2
    assert not (tmp_path / "r" / "images.zarr").exists() and not (tmp_path / "r" / "pipeline.json").exists()


@pytest.mark.parametrize("family", ["vae", "rae"])
def test_mixed_precision_trains_every_family(cache_run, tmp_path, family):
    """bf16 autocast (CUDA's default precision; on CPU here): the latent terms stay float32 and finite."""
    run = fresh(cache_run, tmp_path / family)
    last = train(run, cfg(epochs=1, precision="bf16"), ModelConfig(family=family, **TINY), progress=False)
    assert np.isfinite(last["train_loss"]) and np.isfinite(last["val_loss"]), last
    assert json.loads((run / "train" / "config.json").read_text())["precision"] == "bf16"
