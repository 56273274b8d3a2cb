"""The command line as a user meets it: real processes, exit codes and one-line errors."""

import html
import json
import os
import shutil

import pytest
from conftest import run_cli, tiny_args

from nextlab.icl import STUDY_FILE, describe_transition
from nextlab.report.claims import claim_rows


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_sample_next_score(tiny_checkpoint, tmp_path):
    r = run_cli("sample", str(tiny_checkpoint), "--prompt", "the cat", "--max-tokens", "30", "--seed", "1")
    assert r.returncode == 0 and r.stdout.startswith("the cat") and len(r.stdout) > 10
    r = run_cli("next", str(tiny_checkpoint), "--prompt", "the cat", "-k", "5", "--json")
    rows = json.loads(r.stdout)
    assert len(rows) == 5 and rows[0]["prob"] >= rows[-1]["prob"]
    r = run_cli("next", str(tiny_checkpoint), "--prompt", "the cat")
    assert r.returncode == 0 and "prob" in r.stdout
    text = tmp_path / "t.txt"
    text.write_text("the red bird sleeps.\n")
    r = run_cli("score", str(tiny_checkpoint), str(text), "--json")
    out = json.loads(r.stdout)
    assert out["tokens"] == len(out["per_token"]) == 21 and out["bits_per_byte"] > 0
    r = run_cli("score", str(tiny_checkpoint), "--text", "the cat", "--tokens")
    assert r.returncode == 0 and "bits/byte" in r.stdout


def test_long_prompt_warns_and_truncates(tiny_checkpoint):
    r = run_cli("next", str(tiny_checkpoint), "--prompt", "the cat " * 50, "--json")
    assert r.returncode == 0
    assert r.stderr.startswith("warning: prompt is 400 tokens, longer than the context")


def test_missing_data_path(tmp_path):
    r = run_cli("train", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "nope.txt", "no such file or folder")


def test_unreadable_data(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    r = run_cli("train", "--data", str(bad), "--tokenizer", "chars", "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "latin1.txt", "not UTF-8")


def test_bytes_tokenizer_trains_on_any_file(tmp_path):
    """The byte-level tokenizer's point is to take any bytes (issue 18): a binary file trains."""
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 8)
    r = run_cli(*tiny_args(blob, tmp_path / "run", steps=2))
    assert r.returncode == 0 and "done: val loss" in r.stdout, r.stderr


@pytest.fixture(scope="module")
def chars_checkpoint(corpus_file, tmp_path_factory):
    from nextlab.cli import main

    out = tmp_path_factory.mktemp("chars") / "run"
    assert main(tiny_args(corpus_file, out, steps=2, extra=["data.tokenizer=chars"])) == 0
    return out


def test_prompt_that_is_not_utf8(tiny_checkpoint, chars_checkpoint, tmp_path):
    """Argv bytes that are not UTF-8 (issue 18): a byte-level model continues exactly those bytes; a model with a text
    tokenizer refuses them in one line naming the argument; so for a file to score."""
    prompt = os.fsdecode(b"abc\xff\xfe")  # subprocess passes it as the bytes a shell would
    r = run_cli("sample", str(tiny_checkpoint), "--prompt", prompt, "--max-tokens", "5", "--seed", "1", errors="surrogateescape")
    assert r.returncode == 0 and os.fsencode(r.stdout).startswith(b"abc\xff\xfe"), r.stderr
    assert_one_line_error(run_cli("sample", str(chars_checkpoint), "--prompt", prompt), "--prompt is not valid UTF-8", "chars")
    assert_one_line_error(run_cli("next", str(chars_checkpoint), "--prompt", prompt), "--prompt is not valid UTF-8")
    assert_one_line_error(run_cli("score", str(chars_checkpoint), "--text", prompt), "--text is not valid UTF-8")
    assert_one_line_error(run_cli("sample", str(tiny_checkpoint), "--stop", prompt), "--stop", "not valid UTF-8")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"the cat \xff\xfe")
    assert_one_line_error(run_cli("score", str(chars_checkpoint), str(blob)), "blob.bin is not valid UTF-8")
    r = run_cli("score", str(tiny_checkpoint), str(blob), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["bytes"] == 10, r.stderr


def test_probe_names_an_unknown_world(tiny_checkpoint):
    r = run_cli("probe", str(tiny_checkpoint), "--world", "nonexistent")
    assert_one_line_error(r, "unknown world 'nonexistent'", "arithmetic, arguments, hmm")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    assert_one_line_error(run_cli("train", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o")), "empty")


@pytest.mark.parametrize(
    "toml, fragments",
    [
        ("[model]\nn_embed = 64\n", ["unknown config key 'model.n_embed'", "'n_embd'"]),
        ('[train]\nsteps = "many"\n', ["'train.steps'", "expected int"]),
        ("[model]\nn_embd = 100\nn_head = 3\n", ["n_embd (100) must be divisible by model.n_head (3)"]),
        ("[model]\nblock_size = 0\n", ["model.block_size must be at least 1"]),
    ],
    ids=["unknown-key", "wrong-type", "not-divisible", "block-size"],
)
def test_bad_config(tmp_path, corpus_file, toml, fragments):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    assert_one_line_error(run_cli("train", str(path), "--data", str(corpus_file), "--out", str(tmp_path / "o")), *fragments)


def test_bad_set_and_flags(tmp_path, corpus_file):
    r = run_cli("train", "--data", str(corpus_file), "--set", "train.stpes=3")
    assert_one_line_error(r, "train.stpes", "'steps'")
    r = run_cli("train", "--data", str(corpus_file), "--out", str(tmp_path / "o"), "--steps", "0")
    assert_one_line_error(r, "--steps")


def test_block_size_larger_than_data(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("tiny text\n")
    r = run_cli("train", "--data", str(small), "--out", str(tmp_path / "o"), "--set", "model.block_size=64")
    assert_one_line_error(r, "tokens, fewer than block_size + 1")


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(run_cli("sample", str(tmp_path / "nothing")), "does not exist")
    (tmp_path / "emptydir").mkdir()
    assert_one_line_error(run_cli("next", str(tmp_path / "emptydir"), "--prompt", "x"), "not a checkpoint")


def corrupt_copy(tiny_checkpoint, tmp_path):
    src = sorted((tiny_checkpoint / "checkpoints").iterdir())[-1]
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_truncated_weights(tiny_checkpoint, tmp_path):
    ckpt = corrupt_copy(tiny_checkpoint, tmp_path)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_one_line_error(run_cli("sample", str(ckpt)), "model.safetensors", "corrupt or truncated")


def test_corrupt_config(tiny_checkpoint, tmp_path):
    ckpt = corrupt_copy(tiny_checkpoint, tmp_path)
    (ckpt / "config.json").write_text('{"model": {"n_embd": 32')
    assert_one_line_error(run_cli("sample", str(ckpt)), "config.json", "corrupt")


def test_mismatched_weights(tiny_checkpoint, tmp_path):
    ckpt = corrupt_copy(tiny_checkpoint, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["n_embd"] = 64
    (ckpt / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("sample", str(ckpt)), "model.safetensors", "do not match the model config")


def test_resume_with_changed_shape(tiny_checkpoint, corpus_file, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run)
    r = run_cli(*tiny_args(corpus_file, run, steps=40, extra=["model.n_layer=3"]), "--resume")
    assert_one_line_error(r, "cannot resume", "model.n_layer is 2 there but 3")


def test_resume_with_corrupt_state(tiny_checkpoint, corpus_file, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run)
    state = sorted((run / "checkpoints").iterdir())[-1] / "train_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    r = run_cli(*tiny_args(corpus_file, run, steps=40), "--resume")
    assert_one_line_error(r, "train_state.pt", "corrupt or truncated")


def test_demo_quick_writes_report(tmp_path):
    r = run_cli("demo", "--quick", "--out", str(tmp_path / "demo"), timeout=600)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "demo" / "report.html").read_text()
    assert page.index("<h2>") == page.index("<h2>Claims at a glance</h2>")  # the claims come first
    for title in ("Model", "Loss curve", "Reasoning appears from prediction", "In-context learning forms", "Samples",
                  "Surprisal of held-out text",
                  "Prediction is compression", "The model models what produced the text", "Scale does the heavy lifting",
                  "Instruction tuning reshapes the distribution"):
        assert f"<h2>{title}</h2>" in page
    assert "data:image/png;base64," in page and "bits</span>" in page
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["demo_seconds"] > 0
    # every headline figure, in the shapes the README documents
    assert summary["claims"] == claim_rows(summary) and len(summary["claims"]) >= 8
    for name in ("arithmetic", "arithmetic_3digit", "arithmetic_ood"):
        assert set(summary["tasks"][name]) == {"exact_match", "n", "token_accuracy", "logprob_per_char"}
        assert summary["tasks"][name]["n"] == 64
    # the second reasoning task: questions about facts stated in biographies, on its finite set of held-out items
    assert summary["second_task"] == "facts"
    for name in ("facts", "facts_ood"):
        assert set(summary["tasks"][name]) == {"exact_match", "n", "token_accuracy", "logprob_per_char"}
        assert 0 < summary["tasks"][name]["n"] <= 64
    for task in ("arithmetic", "facts"):
        assert set(summary["sharpness"][task]) == {"exact_match", "token_accuracy", "logprob_per_char"}
    low, high = summary["sweep_exact_match"]["arithmetic"]
    assert 0 <= low <= 1 and 0 <= high <= 1
    assert 0 <= summary["carry_probe"]["accuracy"] <= 1 and 0 <= summary["carry_probe"]["random_model"] <= 1
    for row in summary["claims"]:  # the page shows each row as computed
        assert html.escape(row["measure"]) in page
    icl = summary["icl"]
    for key in ("markov_excess_nats", "induction_start", "induction_end", "icl_mapping_k0", "icl_mapping_k8"):
        assert isinstance(icl[key], float), key
    assert [c["claim"] for c in icl["checks"]] and all(isinstance(c["met"], bool) for c in icl["checks"])
    # the report states what the run computed: the sentence and every check's verdict
    study = json.loads((tmp_path / "demo" / "icl" / STUDY_FILE).read_text())
    assert study["summary"]["checks"] == icl["checks"]
    assert html.escape(describe_transition(study["transition"])) in page


def test_existing_run_needs_resume(tiny_checkpoint, corpus_file, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run)
    assert_one_line_error(run_cli(*tiny_args(corpus_file, run, steps=40)), "already has checkpoints", "--resume")


def test_reasoning_unknown_task_is_a_one_line_error(tmp_path):
    r = run_cli("reasoning", "--tasks", "nope", "--out", str(tmp_path / "r"))
    assert_one_line_error(r, "no reasoning run for task 'nope'", "arithmetic")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_icl_help_lists_its_flags():
    r = run_cli("icl", "--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--out", "--quick", "--json"):
        assert flag in r.stdout
    assert "icl" in run_cli("--help").stdout


def test_icl_out_is_a_file(tmp_path):
    # checked before anything trains
    (tmp_path / "a_file").write_text("")
    assert_one_line_error(run_cli("icl", "--out", str(tmp_path / "a_file")), "--out", "is a file")
    assert_one_line_error(run_cli("icl", "--out", str(tmp_path / "a_file" / "run")), "--out", "is a file")
    assert_one_line_error(run_cli("icl", "--json", str(tmp_path / "no_dir" / "icl.json")), "--json", "no such directory")


def test_icl_refuses_a_folder_holding_another_run(tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run)
    assert_one_line_error(run_cli("icl", "--quick", "--out", str(run)), str(run), "holds another run")


def test_resume_past_the_last_step_is_an_error(tiny_checkpoint, corpus_file, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run)
    assert_one_line_error(run_cli(*tiny_args(corpus_file, run, steps=20), "--resume"), "at step 30", "past train.steps = 20")
