import pytest

from nextlab.config import load_config, parse_override
from nextlab.errors import NextlabError


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_toml_sections_and_overrides(tmp_path):
    path = write(tmp_path, 'out = "runs/x"\n[model]\narch = "gpt2"\nn_embd = 64\n[train]\nlr = 1\n')
    cfg = load_config(path, ["train.lr=0.5", "model.n_layer=3", "data.path=foo.txt"])
    assert cfg.out == "runs/x" and cfg.model.arch == "gpt2" and cfg.model.n_embd == 64
    assert cfg.train.lr == 0.5 and isinstance(cfg.train.lr, float)
    assert cfg.model.n_layer == 3 and cfg.data.path == "foo.txt"


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(NextlabError, match=r"unknown config key 'model.n_embed'.*'n_embd'"):
        load_config(write(tmp_path, "[model]\nn_embed = 64\n"))
    with pytest.raises(NextlabError, match=r"unknown config key 'trian'.*'train'"):
        load_config(write(tmp_path, "[trian]\nsteps = 1\n"))


def test_wrong_type_names_expected(tmp_path):
    with pytest.raises(NextlabError, match=r"'train.steps': expected int, got str"):
        load_config(write(tmp_path, '[train]\nsteps = "ten"\n'))
    with pytest.raises(NextlabError, match=r"'model.qk_norm': expected bool"):
        load_config(None, ["model.qk_norm=1"])
    with pytest.raises(NextlabError, match=r"'model.n_layer': expected int, got a boolean"):
        load_config(None, ["model.n_layer=true"])


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(NextlabError, match="invalid TOML"):
        load_config(write(tmp_path, "[model\n"))
    with pytest.raises(NextlabError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_impossible_values():
    with pytest.raises(NextlabError, match="divisible"):
        load_config(None, ["model.n_embd=100", "model.n_head=3"]).check()
    with pytest.raises(NextlabError, match="block_size must be at least 1"):
        load_config(None, ["model.block_size=0"]).check()
    with pytest.raises(NextlabError, match="train.optimizer"):
        load_config(None, ["train.optimizer=sgd"]).check()


def test_parse_override():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 0.001)
    assert parse_override("model.arch=gpt2") == (["model", "arch"], "gpt2")
    with pytest.raises(NextlabError, match="key=value"):
        parse_override("train.lr")


def test_ready_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))
    assert configs
    for path in configs:
        load_config(path).check()
