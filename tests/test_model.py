import pytest
import torch

from nextlab.model import GPT, ModelConfig


def randomized(cfg):
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    with torch.no_grad():  # the modern init zeroes some weights; make every path matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


CONFIGS = [
    ModelConfig(arch="modern", vocab_size=50, block_size=24),
    ModelConfig(arch="modern", vocab_size=50, block_size=24, n_kv_head=2, qk_norm=False),
    ModelConfig(arch="gpt2", vocab_size=50, block_size=24),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["modern", "modern-gqa", "gpt2"])
def test_kv_cache_matches_full_forward(cfg):
    model = randomized(cfg)
    x = torch.randint(0, 50, (2, 20))
    full, _ = model(x)
    cache = model.make_cache(2)
    parts = [model(x[:, a:b], cache=cache)[0] for a, b in ((0, 7), (7, 8), (8, 15), (15, 20))]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    assert cache.length == 20


@pytest.mark.parametrize("cfg", CONFIGS, ids=["modern", "modern-gqa", "gpt2"])
def test_manual_attention_matches_sdpa(cfg):
    model = randomized(cfg)
    x = torch.randint(0, 50, (3, 24))
    a, _ = model(x)
    model.set_attention(True)
    b, _ = model(x)
    assert torch.allclose(a, b, atol=1e-5)


def test_causal():
    model = randomized(CONFIGS[0])
    x = torch.randint(0, 50, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 50
    a, _ = model(x)
    b, _ = model(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:], atol=1e-4)


def test_presets_and_parameter_counts():
    gpt2 = GPT(ModelConfig(arch="gpt2", vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    names = dict(gpt2.named_parameters())
    assert gpt2.lm_head.weight is gpt2.embed_tokens.weight  # tied
    assert "embed_positions.weight" in names and "layers.0.attn.q_proj.bias" in names
    # per layer: q,k,v,o with biases + GELU MLP (4x) with biases + 2 LayerNorms; then the final LayerNorm
    per_layer = 4 * (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128) + 2 * 2 * 128
    assert gpt2.num_params(non_embedding=True) == 4 * per_layer + 2 * 128
    assert gpt2.num_params() == gpt2.num_params(non_embedding=True) + 65 * 128 + 64 * 128
    # nanoGPT's bias = False: no biases anywhere (its baby GPT counts 0.80M parameters without the positions)
    bare = GPT(ModelConfig(arch="gpt2", vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False))
    assert not [n for n, _ in bare.named_parameters() if n.endswith("bias")]
    assert bare.num_params(non_embedding=True) == 4 * (4 * 128 * 128 + 2 * 128 * 512 + 2 * 128) + 128
    assert round((bare.num_params() - 64 * 128) / 1e6, 2) == 0.80

    modern = GPT(ModelConfig(vocab_size=65, n_embd=128))
    names = dict(modern.named_parameters())
    assert modern.lm_head.weight is not modern.embed_tokens.weight
    assert not any(n.endswith("bias") for n in names)
    assert {"layers.0.mlp.gate_proj.weight", "layers.0.attn.q_norm.weight"} <= set(names)
    assert modern.num_params() - modern.num_params(non_embedding=True) == 65 * 128


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_embd": 100, "n_head": 3}, "divisible"),
        ({"block_size": 0}, "block_size"),
        ({"arch": "llama"}, "arch"),
        ({"n_head": 4, "n_kv_head": 3}, "n_kv_head"),
        ({"n_embd": 12, "n_head": 4}, "even"),
        ({"arch": "gpt2", "gelu": "fast"}, "model.gelu must be one of exact, tanh"),
        ({"gelu": "tanh"}, "gpt2 preset only"),
        ({"bias": False}, "model.bias = false applies to the gpt2 preset only"),
    ],
)
def test_config_problems(kwargs, message):
    problems = ModelConfig(**kwargs).problems()
    assert any(message in p for p in problems), problems
