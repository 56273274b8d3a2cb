"""nextlab's Muon: torch's algorithm, with the Newton-Schulz iteration in a chosen dtype."""

import pytest
import torch

from nextlab.config import TrainConfig
from nextlab.model import GPT, ModelConfig
from nextlab.muon import Muon, newton_schulz
from nextlab.train import build_optimizers, cpu_has_fast_bf16


def _train(make_optimizer, steps=4):
    torch.manual_seed(0)
    shapes = [(24, 8), (8, 16), (24, 8), (8, 16), (24, 8)]  # same shapes are orthogonalized as one stack
    weights = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    opt = make_optimizer(weights)
    for step in range(steps):
        for w in weights:
            w.grad = torch.randn_like(w) * (step + 1)
        opt.step()
    return weights


def test_bfloat16_iteration_matches_torch_muon_bit_for_bit():
    kw = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95}
    ours = _train(lambda ps: Muon(ps, ns_dtype=torch.bfloat16, **kw))
    torch_s = _train(lambda ps: torch.optim.Muon(ps, **kw))
    for a, b in zip(ours, torch_s):
        assert torch.equal(a, b)


def test_float32_iteration_is_close_to_bfloat16_and_orthogonalizes():
    kw = {"lr": 0.02, "weight_decay": 0.0, "momentum": 0.95}
    f32 = _train(lambda ps: Muon(ps, ns_dtype=torch.float32, **kw))
    bf16 = _train(lambda ps: Muon(ps, ns_dtype=torch.bfloat16, **kw))
    for a, b in zip(f32, bf16):
        assert not torch.equal(a, b)  # the dtype really changed
        torch.testing.assert_close(a, b, atol=5e-3, rtol=0)
    torch.manual_seed(0)
    for shape in [(24, 8), (8, 16), (128, 352)]:
        g = torch.randn(shape)
        assert torch.linalg.svdvals(g / g.norm()).min() < 0.2  # far from orthogonal going in
        s = torch.linalg.svdvals(newton_schulz(g, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32))
        assert 0.5 < s.min() and s.max() < 1.5  # torch's doc: singular values end roughly in (0.5, 1.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(96, 96), (192, 96), (96, 192)])
def test_a_stack_is_orthogonalized_as_each_of_its_matrices_alone(shape, dtype):
    torch.manual_seed(0)
    stack = torch.randn(6, *shape) * torch.logspace(-2, 1, 6).view(6, 1, 1)  # each normalized by its own norm
    together = newton_schulz(stack, (3.4445, -4.7750, 2.0315), 5, 1e-7, dtype)
    for g, out in zip(stack, together):
        torch.testing.assert_close(out, newton_schulz(g, (3.4445, -4.7750, 2.0315), 5, 1e-7, dtype), atol=1e-5, rtol=0)


def test_unsupported_lr_adjustment_is_refused():
    with pytest.raises(ValueError, match="original"):
        Muon([torch.nn.Parameter(torch.zeros(2, 2))], adjust_lr_fn="match_rms_adamw")


def test_training_orthogonalizes_in_bfloat16_only_where_the_cpu_multiplies_it_natively():
    model = GPT(ModelConfig(vocab_size=16, n_layer=1, n_head=2, n_embd=16, block_size=8))
    muon = build_optimizers(model, TrainConfig(optimizer="muon"))[0]
    assert isinstance(muon, Muon)
    assert muon.ns_dtype == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
