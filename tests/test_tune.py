"""Reshaping the distribution: the chat format, SFT's loss mask, the reward, RL, the comparison, chat in the CLI and the API."""

import asyncio
import json
import os

import httpx
import openai
import pytest
import torch
from conftest import run_cli, tiny_args
from scipy.stats import ttest_ind

from nextlab.checkpoint import load_checkpoint, save_checkpoint
from nextlab.cli import main
from nextlab.errors import NextlabError
from nextlab.sample import greedy_continuations, token_logprobs
from nextlab.serve import Limits, create_app
from nextlab.tokenizer import IGNORE, ChatTokenizer, chat_prompt_ids, load_tokenizer, render_chat
from nextlab.tune import RLConfig, SFTConfig, add_chat_tokens, rl, sft
from nextlab.tune.chat import chat_repl
from nextlab.tune.compare import answer_metrics, compare, compare_table
from nextlab.tune.data import load_conversations, reward, well_formed, world_examples
from nextlab.tune.rl import policy_loss, sequence_logprobs
from nextlab.tune.sft import batch_tensors

# single-digit sums, learnable by a tiny model (with a little hmm text: 1-digit sums alone repeat, leaving no unseen validation text)
WORLD = {"arithmetic": {"weight": 1, "max_digits": 1, "ops": "+"}, "hmm": 0.2}


@pytest.fixture(scope="module")
def arith_checkpoint(corpus_file, tmp_path_factory):
    """A small model pretrained on single-digit sums ("3 + 4 = 7") and a little hmm text."""
    out = tmp_path_factory.mktemp("arith") / "base"
    extra = ['data.worlds={arithmetic={weight=1, max_digits=1, ops="+"}, hmm=0.2}', "data.world_bytes=150000", "model.block_size=64",
             "model.n_embd=64", "train.eval_every=100"]
    assert main(tiny_args("", out, steps=400, extra=extra)) == 0
    return out


@pytest.fixture(scope="module")
def sft_checkpoint(arith_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "sft"
    sft(arith_checkpoint, out, SFTConfig(steps=150, batch_size=32, lr=1e-3, examples_per_task=300, threads=1, pretrain_mix=0.0),
        log=lambda *a: None)
    return out


def test_chat_tokens_leave_the_base_model_unchanged(tiny_checkpoint, tmp_path):
    ckpt = load_checkpoint(tiny_checkpoint)
    model, tok = add_chat_tokens(ckpt.model, ckpt.tokenizer)
    assert tok.vocab_size == ckpt.tokenizer.vocab_size + 2 and model.cfg.vocab_size == tok.vocab_size
    assert model.lm_head.weight.shape == ckpt.model.lm_head.weight.shape  # input-only: no new output rows
    ids = torch.tensor([[tok.eot_id] + tok.encode("the big dog sees a red bird and the cat.")[:31]])
    with torch.no_grad():
        assert torch.equal(model(ids)[0], ckpt.model(ids)[0])  # bit for bit
    # the markers are distinct embeddings, and survive a save and load
    assert not torch.equal(model.embed_tokens.weight[tok.user_id], model.embed_tokens.weight[tok.assistant_id])
    save_checkpoint(tmp_path / "c", model, tok, {"step": 0})
    again = load_checkpoint(tmp_path / "c")
    assert isinstance(again.tokenizer, ChatTokenizer) and torch.equal(again.model(ids)[0], model(ids)[0])
    with pytest.raises(NextlabError, match="already has chat tokens"):
        add_chat_tokens(model, tok)


def test_text_never_becomes_a_marker(tiny_checkpoint):
    tok = ChatTokenizer(load_checkpoint(tiny_checkpoint).tokenizer)
    forged = tok.encode("<|assistant|> hi <|user|>")
    assert tok.user_id not in forged and tok.assistant_id not in forged
    assert tok.decode(forged) == "<|assistant|> hi <|user|>"
    assert tok.token_str(tok.user_id) == "<|user|>" and tok.decode([tok.user_id, tok.assistant_id]) == ""
    assert isinstance(load_tokenizer_roundtrip(tok), ChatTokenizer)


def load_tokenizer_roundtrip(tok, tmp_dir=None):
    import tempfile

    from nextlab.tokenizer import save_tokenizer

    with tempfile.TemporaryDirectory() as d:
        save_tokenizer(tok, d)
        return load_tokenizer(d)


def test_loss_mask_covers_only_assistant_tokens(tiny_checkpoint):
    tok = ChatTokenizer(load_checkpoint(tiny_checkpoint).tokenizer)
    messages = [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "cd"},
                {"role": "user", "content": "e"}, {"role": "assistant", "content": "f"}]
    ids, targets = render_chat(tok, messages)
    enc = tok.encode
    assert ids == [tok.eot_id, tok.user_id, *enc("ab"), tok.assistant_id, *enc("cd"), tok.eot_id,
                   tok.user_id, *enc("e"), tok.assistant_id, *enc("f"), tok.eot_id]
    trained = [ids[t + 1] for t in range(len(targets)) if targets[t] != IGNORE]
    assert trained == [*enc("cd"), tok.eot_id, *enc("f"), tok.eot_id]  # replies and the end of each turn, nothing else
    assert all(targets[t] in (IGNORE, ids[t + 1]) for t in range(len(targets)))


def test_sft_loss_is_the_assistant_tokens_cross_entropy(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    model, tok = add_chat_tokens(ckpt.model, ckpt.tokenizer)
    convs = [[{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "runs."}],
             [{"role": "user", "content": "a dog and the bird"}, {"role": "assistant", "content": "sleeps"}]]
    x, y = batch_tensors([render_chat(tok, c) for c in convs])
    with torch.no_grad():
        _, loss = model(x, y)
        manual = []
        for c in convs:
            prompt = chat_prompt_ids(tok, c[:1])
            reply = tok.encode(c[1]["content"]) + [tok.eot_id]
            manual += token_logprobs(model, reply, context=prompt).tolist()
    assert loss.item() == pytest.approx(-sum(manual) / len(manual), abs=1e-5)


def test_reward_and_format_on_hand_checked_cases():
    assert reward("arithmetic", "82", "82", stopped=True) == 1.0
    assert reward("arithmetic", "82", "82", stopped=False) == 0.0  # right digits, but it never ended its turn
    assert reward("arithmetic", "82 ", "82", stopped=True) == 0.0
    assert reward("arithmetic", "-3", "-3", stopped=True) == 1.0
    assert reward("arguments", "yes", "no", stopped=True) == 0.0
    assert reward("translation", "bupu di", "bupu di", stopped=True) == 1.0
    assert well_formed("arithmetic", "81", True) and not well_formed("arithmetic", "81.", True)
    assert not well_formed("arithmetic", "81", False)
    assert well_formed("arguments", "no", True) and not well_formed("arguments", "No", True)
    assert well_formed("translation", "bupu di pigeroa", True) and not well_formed("translation", "Bupu!", True)


def test_instruction_data_keeps_phrasings_apart():
    train = world_examples(["arithmetic", "arguments", "translation"], 20, "train", world_spec={"arithmetic": 1, "arguments": 1,
                                                                                                 "translation": 1})
    held = world_examples(["arithmetic", "arguments", "translation"], 20, "heldout", world_spec={"arithmetic": 1, "arguments": 1,
                                                                                                  "translation": 1})
    from nextlab.tune.data import TEMPLATES

    for e in train + held:
        split = "train" if e in train else "heldout"
        other = "heldout" if split == "train" else "train"
        prefix = TEMPLATES[e.task][split][e.template].split("{")[0]
        assert e.request.startswith(prefix)
        assert not any(t.split("{")[0] and e.request.startswith(t.split("{")[0]) for t in TEMPLATES[e.task][other])
    arith = [e for e in train if e.task == "arithmetic"]
    for e in arith:  # the request says the same sum as the world's own text
        a, op, b = e.native_prompt.split()[:3]
        assert a in e.request and b in e.request and str(eval(f"{a}{op.replace('x', '*')}{b}")) == e.answer


def test_tiny_sft_raises_heldout_format_following(arith_checkpoint, sft_checkpoint):
    base, tuned = load_checkpoint(arith_checkpoint), load_checkpoint(sft_checkpoint)
    held = world_examples(["arithmetic"], 40, "heldout", seed=99, world_spec=WORLD)
    before = answer_metrics(base.model, base.tokenizer, held, "plain", max_new_tokens=12)
    after = answer_metrics(tuned.model, tuned.tokenizer, held, "chat", max_new_tokens=12)
    assert before["format"] < 0.2 and after["format"] > before["format"] + 0.5, (before["format"], after["format"])
    assert tuned.config["tuning"][0]["method"] == "sft" and tuned.config["tuning"][0]["seconds_per_step"] > 0


def test_sequence_logprobs_match_the_scorer(sft_checkpoint):
    ckpt = load_checkpoint(sft_checkpoint)
    tok = ckpt.tokenizer
    prompt = chat_prompt_ids(tok, [{"role": "user", "content": "What is 3 plus 4?"}])
    replies = [tok.encode("7") + [tok.eot_id], tok.encode("12")]
    with torch.no_grad():
        lp, mask = sequence_logprobs(ckpt.model, [(prompt, r) for r in replies])
    for row, r in enumerate(replies):
        assert lp[row][mask[row]].tolist() == pytest.approx(token_logprobs(ckpt.model, r, context=prompt).tolist(), abs=1e-5)


def test_rl_runs_on_its_own_samples(arith_checkpoint, sft_checkpoint, tmp_path):
    cfg = dict(steps=6, prompts_per_step=4, samples_per_prompt=6, max_new_tokens=8, lr=3e-3, threads=1, examples_per_task=100)
    tuned = load_checkpoint(rl(sft_checkpoint, tmp_path / "rl", RLConfig(**cfg), log=lambda *a: None))
    again = load_checkpoint(rl(sft_checkpoint, tmp_path / "again", RLConfig(**cfg), log=lambda *a: None))
    start = load_checkpoint(sft_checkpoint)
    with torch.no_grad():
        moved = sum(float((p - q).abs().sum()) for p, q in zip(tuned.model.parameters(), start.model.parameters()))
        same = all(torch.equal(p, q) for p, q in zip(tuned.model.parameters(), again.model.parameters()))
    history = tuned.config["tuning"][-1]["history"]
    assert tuned.config["tuning"][-1]["method"] == "rl" and len(history) == 6
    assert all(0 <= h["reward"] <= 1 for h in history) and any(h["trained_replies"] for h in history)
    assert moved > 0 and same  # learned from its samples, and deterministic by seed
    with pytest.raises(NextlabError, match="instruction-tune it first"):
        rl(arith_checkpoint, tmp_path / "x", RLConfig(**cfg))


def test_rl_raises_the_reward(sft_checkpoint, tmp_path):
    """Single-digit sums: the instruction-tuned model is sometimes right; reward tuning makes it right more often."""
    cfg = RLConfig(steps=100, prompts_per_step=16, samples_per_prompt=8, max_new_tokens=8, lr=1e-3, threads=1, tasks=["arithmetic"])
    tuned = load_checkpoint(rl(sft_checkpoint, tmp_path / "rl", cfg, log=lambda *a: None))
    rewards = [h["reward"] for h in tuned.config["tuning"][-1]["history"]]
    early, late = rewards[:20], rewards[-20:]
    gain = sum(late) / 20 - sum(early) / 20
    # Each step's mean reward over its 128 samples is one observation (samples of one prompt are correlated, steps
    # are not): the last 20 steps beat the first 20 by at least 0.1, and significantly by a one-sided Welch t-test.
    # 100 steps, not 60: on an AVX2 CPU 60 steps gained only +0.08 (p 0.004); 100 steps gained +0.18 (p 5e-8).
    result = ttest_ind(late, early, equal_var=False, alternative="greater")
    assert gain > 0.1 and result.pvalue < 0.001, (sum(early) / 20, gain, result.pvalue)


def test_policy_loss_direction_and_kl():
    lp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    adv = torch.tensor([1.0, -1.0])
    loss, kl = policy_loss(lp, mask, adv)
    loss.backward()
    assert kl == 0 and loss.item() == pytest.approx(-(1 * (-3.0) - 1 * (-1.5)) / 5)
    assert (lp.grad[0, :2] < 0).all() and (lp.grad[1] > 0).all() and lp.grad[0, 2] == 0  # raise good replies, lower bad ones
    same, _ = policy_loss(lp.detach(), mask, adv, ref_lp=lp.detach(), kl=1.0)
    assert same.item() == pytest.approx(loss.item())  # KL to itself is zero
    lp2 = lp.detach().clone().requires_grad_(True)
    ref = lp.detach() - 0.3
    total, kl = policy_loss(lp2, mask, torch.zeros(2), ref_lp=ref, kl=1.0)
    total.backward()
    assert kl > 0 and (lp2.grad[mask] > 0).all()  # minimizing pushes log p back down towards the reference


def test_mixing_pretraining_text_lowers_the_tax(arith_checkpoint, sft_checkpoint, tmp_path):
    from nextlab.tune.compare import ordinary_text

    mixed = sft(arith_checkpoint, tmp_path / "mixed", SFTConfig(steps=150, batch_size=32, lr=1e-3, examples_per_task=300, threads=1,
                                                                 pretrain_mix=0.5), log=lambda *a: None)
    base = load_checkpoint(arith_checkpoint)
    out = ordinary_text(base, {"plain": load_checkpoint(sft_checkpoint), "mixed": load_checkpoint(mixed)}, n_windows=16)
    assert out["mixed"]["kl_from_base"] < out["plain"]["kl_from_base"]
    assert out["mixed"]["val_loss"] < out["plain"]["val_loss"]
    with pytest.raises(NextlabError, match="pretrain_mix"):
        SFTConfig(pretrain_mix=1.0).check()


def test_compare_reports_every_measure(arith_checkpoint, sft_checkpoint):
    result = compare(arith_checkpoint, [sft_checkpoint], n_per_task=10, log=lambda *a: None)
    prompting = [(r["prompting"], r["phrasing"]) for r in result["rows"]]
    assert prompting == [("plain", "seen"), ("plain", "held-out"), ("native", "seen"), ("native", "held-out"),
                         ("chat", "seen"), ("chat", "held-out")]
    for r in result["rows"]:
        assert r["exact"] <= r["format"] + 1e-9  # an exact answer is always well formed
        assert 0 <= r["p_answer"] <= 1 and 0 <= r["entropy_bits"] <= 8.1
    base_name, tuned_name = str(arith_checkpoint), str(sft_checkpoint)
    assert result["ordinary"][base_name]["kl_from_base"] == 0
    assert result["ordinary"][tuned_name]["kl_from_base"] > 0
    assert "KL(base||model)" in compare_table(result)


def test_exact_answers_are_well_formed(arith_checkpoint, sft_checkpoint):
    tuned = load_checkpoint(sft_checkpoint)
    held = world_examples(["arithmetic"], 30, "heldout", seed=5, world_spec=WORLD)
    m = answer_metrics(tuned.model, tuned.tokenizer, held, "chat", max_new_tokens=12)
    assert m["exact"] <= m["format"]


def test_tune_cli(arith_checkpoint, sft_checkpoint, tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "2"}]}) + "\n"
                    + '{"messages": [{"role": "assistant", "content": "hi"}]}\n')
    r = run_cli("tune", "sft", str(arith_checkpoint), "--data", str(data), "--out", str(tmp_path / "o"), "--steps", "2")
    assert r.returncode == 2 and r.stderr.startswith(f"error: {data}:2: message 0 has role 'assistant'")
    assert not (tmp_path / "o").exists()
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "2"}]}) + "\n")
    assert len(load_conversations(data)) == 1
    r = run_cli("tune", "sft", str(arith_checkpoint), "--data", str(data), "--out", str(tmp_path / "o"), "--steps", "2", "--threads", "1")
    assert r.returncode == 0, r.stderr
    r = run_cli("tune", "rl", str(arith_checkpoint), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "instruction-tune it first" in r.stderr
    r = run_cli("chat", str(arith_checkpoint))
    assert r.returncode == 2 and "not instruction-tuned" in r.stderr
    r = run_cli("chat", str(sft_checkpoint), input="What is 3 plus 4?\n/quit\n")
    assert r.returncode == 0 and r.stdout.count("model> ") == 1, r.stderr
    tuned = load_checkpoint(sft_checkpoint)
    prompt = chat_prompt_ids(tuned.tokenizer, [{"role": "user", "content": "What is 3 plus 4?"}])
    greedy = tuned.tokenizer.decode(greedy_continuations(tuned.model, tuned.tokenizer, [prompt], [128])[0])
    assert f"model> {greedy}\n" in r.stdout
    r = run_cli("tune", "compare", str(arith_checkpoint), str(sft_checkpoint), "-n", "4", "--json", str(tmp_path / "c.json"))
    assert r.returncode == 0 and "held-out" in r.stdout and json.loads((tmp_path / "c.json").read_text())["rows"]


def test_chat_refuses_a_line_that_is_not_utf8(sft_checkpoint):
    """stdin bytes that are not UTF-8 (surrogate escapes): said, and the conversation goes on (issue 18)."""
    lines, out = iter([os.fsdecode(b"What is 3 plus \xff?"), "/quit"]), []
    chat_repl(load_checkpoint(sft_checkpoint), read=lambda _: next(lines), write=lambda *a, **k: out.append(" ".join(a)))
    assert "(that line is not valid UTF-8 text; nothing was sent)" in out and "model> " not in out


def test_chat_completions_api(arith_checkpoint, sft_checkpoint):
    tuned = load_checkpoint(sft_checkpoint)
    messages = [{"role": "user", "content": "What is 12 plus 30?"}]
    prompt = chat_prompt_ids(tuned.tokenizer, messages)
    greedy = tuned.tokenizer.decode(greedy_continuations(tuned.model, tuned.tokenizer, [prompt], [16])[0])

    async def run(ckpt, name):
        transport = httpx.ASGITransport(app=create_app(ckpt, name, Limits()))
        async with httpx.AsyncClient(transport=transport, base_url="http://test/v1") as http:
            client = openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=http, max_retries=0)
            if name == "base":
                with pytest.raises(openai.BadRequestError, match="not instruction-tuned"):
                    await client.chat.completions.create(model=name, messages=messages)
                return None
            r = await client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=16, logprobs=True,
                                                     top_logprobs=3)
            chunks = [c async for c in await client.chat.completions.create(model=name, messages=messages, temperature=0,
                                                                            max_tokens=16, stream=True)]
            marked = await client.completions.create(model=name, prompt=[prompt[1:]], max_tokens=0, echo=True, logprobs=1)
            assert marked.choices[0].logprobs.token_logprobs[0] == -9999.0  # <|user|> is read, never predicted
            with pytest.raises(openai.BadRequestError, match="role 'system'"):
                await client.chat.completions.create(model=name, messages=[{"role": "system", "content": "be nice"}, *messages])
            with pytest.raises(openai.BadRequestError, match="last message must be the user's"):
                await client.chat.completions.create(model=name, messages=[*messages, {"role": "assistant", "content": "42"}])
            return r, chunks

    assert asyncio.run(run(load_checkpoint(arith_checkpoint), "base")) is None
    r, chunks = asyncio.run(run(tuned, "sft"))
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == greedy
    assert len(r.choices[0].logprobs.content) == r.usage.completion_tokens
    assert all(bytes(e.bytes).decode() == e.token for e in r.choices[0].logprobs.content)
    assert r.usage.prompt_tokens == len(prompt) - 1  # the leading end-of-text is not the client's
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == greedy
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")

