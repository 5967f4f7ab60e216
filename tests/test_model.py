"""Model shapes, a training step that learns, an eval step that changes nothing, precision choice."""

from __future__ import annotations

import pytest
import torch

from engine.model.autoencoder import Autoencoder, ModelConfig
from engine.model.precision import resolve_precision
from engine.model.train import loss_fn


def test_shapes_follow_the_study():
    model = Autoencoder(ModelConfig())  # 96 px, z 256, widths 32,64,64,64
    convs = [m for m in model.encoder_conv if isinstance(m, torch.nn.Conv2d)]
    deconvs = [m for m in model.decoder_conv if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 4 and all(c.stride == (2, 2) for c in convs)
    assert len(deconvs) == 4 and all(c.stride == (2, 2) for c in deconvs)
    x = torch.rand(2, 3, 96, 96)
    assert model.encoder_conv(x).shape == (2, 64, 6, 6)
    logits, z, term = model(x)
    assert z.shape == (2, 256) and logits.shape == x.shape and term is None
    img = model.decode(z)
    assert img.min() >= 0 and img.max() <= 1


@pytest.mark.parametrize("size,z_dim", [(32, 8), (64, 32)])
def test_other_sizes(size, z_dim):
    model = Autoencoder(ModelConfig(size=size, z_dim=z_dim, widths=(4, 8, 8, 16)))
    logits, z, _ = model(torch.rand(3, 3, size, size))
    assert logits.shape == (3, 3, size, size) and z.shape == (3, z_dim)


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="multiple of 16, got 40"):
        ModelConfig(size=40)
    with pytest.raises(ValueError, match="4 entries"):
        ModelConfig(widths=(8, 8))
    with pytest.raises(ValueError, match="unknown model config keys \\['zdim'\\]"):
        ModelConfig.from_dict({"zdim": 3})


def test_train_step_changes_weights_and_eval_changes_nothing():
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(size=32, z_dim=8, widths=(4, 8, 8, 8)))
    x = torch.rand(8, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    model.eval()
    with torch.no_grad():
        model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"eval changed {k}"

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss0 = loss_fn("bce", model(x)[0], x)
    loss0.backward()
    opt.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    weights = [k for k in before if k.endswith("weight")]
    assert set(weights) <= set(changed), f"unchanged after a step: {set(weights) - set(changed)}"
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn("bce", model(x)[0], x)
        loss.backward()
        opt.step()
    assert loss.item() < loss0.item(), f"loss did not fall: {loss0.item():.4f} -> {loss.item():.4f}"


def test_losses_match_their_definitions():
    logits = torch.randn(4, 3, 8, 8)
    x = torch.rand(4, 3, 8, 8)
    p = torch.sigmoid(logits)
    bce = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).mean()
    assert torch.allclose(loss_fn("bce", logits, x), bce, atol=1e-5)
    assert torch.allclose(loss_fn("mse", logits, x), ((p - x) ** 2).mean(), atol=1e-6)


def test_precision_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu).name == "fp32"
    assert resolve_precision("bf16", cpu).dtype == torch.bfloat16
    assert resolve_precision("fp16", cuda).needs_scaler and not resolve_precision("bf16", cuda).needs_scaler
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", cpu)
