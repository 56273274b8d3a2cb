"""The server, through real clients: the official `openai` package, httpx, and Chromium driven by Playwright.

A live `nextlab serve` runs in a subprocess on a free loopback port for the module.
"""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import free_port, run_cli, serving

from nextlab.checkpoint import load_checkpoint
from nextlab.sample import generate, score
from nextlab.serve import APIError, Limits, create_app
from nextlab.serve.app import ModelWorker

MAX_TOKENS = 64
MAX_BODY = 20_000
ARTIFACTS = Path(os.environ.get("NEXTLAB_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    with serving(tiny_checkpoint, "--threads", "1", "--max-tokens-limit", str(MAX_TOKENS), "--max-body-bytes", str(MAX_BODY)) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def test_models_and_health(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "nextlab"
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_greedy_completion_is_the_library_continuation(client, ckpt):
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=12, temperature=0)
    expected = generate(ckpt.model, ckpt.tokenizer, "the cat", max_new_tokens=12, temperature=0)
    assert r.choices[0].text == expected
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(ckpt.tokenizer.encode("the cat"))
    assert r.usage.completion_tokens <= 12


def test_seeds_n_and_prompt_lists(client):
    a = client.completions.create(model="tiny", prompt="the", max_tokens=16, seed=5, n=3)
    b = client.completions.create(model="tiny", prompt="the", max_tokens=16, seed=5, n=3)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    # choice i is seeded with seed + i: the second choice is the request seeded with 6
    alone = client.completions.create(model="tiny", prompt="the", max_tokens=16, seed=6)
    assert a.choices[1].text == alone.choices[0].text
    assert len({c.text for c in a.choices}) > 1
    two = client.completions.create(model="tiny", prompt=["the dog", "a bird"], max_tokens=4, temperature=0)
    assert len(two.choices) == 2
    ids = client.completions.create(model="tiny", prompt=[[5, 6, 7]], max_tokens=3, temperature=0)
    assert len(ids.choices) == 1


def test_logprobs_of_generated_tokens(client, ckpt):
    r = client.completions.create(model="tiny", prompt="the dog", max_tokens=10, temperature=0, logprobs=5, extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == r.usage.completion_tokens == 10
    assert "".join(lp.tokens) == r.choices[0].text
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) <= 5 and logprob <= 0
        assert abs(max(top.values()) - logprob) < 1e-5 and top[token] == pytest.approx(logprob, abs=1e-5)  # greedy = argmax
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]


def test_echo_scores_the_prompt_like_the_library(client, ckpt):
    text = "the big dog sees a red bird.\n"
    r = client.completions.create(model="tiny", prompt=text, max_tokens=0, echo=True, logprobs=0)
    lp = r.choices[0].logprobs
    expected = score(ckpt.model, ckpt.tokenizer, text)
    assert r.choices[0].text == text
    assert lp.tokens == [s.text for s in expected]
    assert lp.token_logprobs == pytest.approx([s.logprob for s in expected], abs=1e-4)
    assert r.usage.completion_tokens == 0
    # a prompt longer than the context can still be scored (sliding window), but not continued
    long = text * 8
    assert len(ckpt.tokenizer.encode(long)) > ckpt.model.cfg.block_size
    scored = client.completions.create(model="tiny", prompt=long, max_tokens=0, echo=True, logprobs=1)
    assert len(scored.choices[0].logprobs.tokens) == len(ckpt.tokenizer.encode(long))
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="tiny", prompt=long, max_tokens=5)


def test_vllm_tokenizer_endpoints(server, ckpt):
    """The shapes lm-eval's RemoteTokenizer reads: eos_token from /tokenizer_info, tokens from /tokenize (where, as in
    vLLM, the end-of-text text is the end-of-text token), prompt from /detokenize."""
    tok = ckpt.tokenizer
    info = httpx.get(f"{server}/tokenizer_info").json()
    assert info["eos_token"] == "<|endoftext|>" and info["eos_token_id"] == tok.eot_id
    assert info["model_max_length"] == ckpt.model.cfg.block_size
    eos = httpx.post(f"{server}/tokenize", json={"prompt": info["eos_token"], "add_special_tokens": False}).json()
    assert eos["tokens"] == [tok.eot_id]
    text = "the dog <|endoftext|>naïve 🙂"
    r = httpx.post(f"{server}/tokenize", json={"model": "tiny", "prompt": text, "return_token_strs": True}).json()
    assert r["tokens"] == tok.encode("the dog ") + [tok.eot_id] + tok.encode("naïve 🙂") and r["count"] == len(r["tokens"])
    assert r["max_model_len"] == ckpt.model.cfg.block_size and len(r["token_strs"]) == r["count"]
    ids = tok.encode("the cat sees a bird")
    assert httpx.post(f"{server}/detokenize", json={"tokens": ids}).json() == {"prompt": "the cat sees a bird"}
    for path, body, param in [("/detokenize", {"tokens": [tok.vocab_size]}, "tokens"), ("/tokenize", {}, "prompt"),
                              ("/tokenize", {"messages": [{"role": "user", "content": "hi"}]}, "messages"),
                              ("/tokenize", {"prompt": "x", "model": "other"}, "model")]:
        bad = httpx.post(f"{server}{path}", json=body)
        assert bad.status_code in (400, 404) and bad.json()["error"]["param"] == param, (path, body, bad.text)


def test_a_list_of_prompts_is_scored_as_each_alone(client):
    """lm-eval sends lists of token-id prompts to score (echo, max_tokens 1): scored together in batches, each
    gets what it gets alone."""
    texts = ["the dog sees", "a big red bird", "the old house and the tree"]
    together = client.completions.create(model="tiny", prompt=texts, max_tokens=1, echo=True, logprobs=1, temperature=0)
    for text, choice in zip(texts, together.choices):
        alone = client.completions.create(model="tiny", prompt=text, max_tokens=1, echo=True, logprobs=1, temperature=0).choices[0]
        assert choice.text == alone.text and choice.logprobs.tokens == alone.logprobs.tokens
        assert choice.logprobs.token_logprobs == pytest.approx(alone.logprobs.token_logprobs, abs=1e-5)


def test_echo_with_generation(client):
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=5, echo=True, logprobs=1, temperature=0,
                                  extra_body={"ignore_eos": True})
    c = r.choices[0]
    assert c.text.startswith("the cat") and len(c.logprobs.tokens) == len("the cat") + 5
    assert "".join(c.logprobs.tokens) == c.text


def test_stop_strings(client):
    full = client.completions.create(model="tiny", prompt="the", max_tokens=40, seed=2, logprobs=1,
                                     extra_body={"ignore_eos": True}).choices[0]
    stop = full.text[8:10]
    cut = client.completions.create(model="tiny", prompt="the", max_tokens=40, seed=2, stop=[stop], logprobs=1,
                                    extra_body={"ignore_eos": True}).choices[0]
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"
    kept = len(cut.logprobs.tokens)  # the tokens that make the text, not those of the stop string
    assert 0 < kept < len(full.logprobs.tokens) and cut.logprobs.tokens == full.logprobs.tokens[:kept]
    assert all(o < len(cut.text) for o in cut.logprobs.text_offset)


def test_streaming_matches_the_whole_response(client):
    whole = client.completions.create(model="tiny", prompt="a dog", max_tokens=20, seed=11, logprobs=2)
    chunks = list(client.completions.create(model="tiny", prompt="a dog", max_tokens=20, seed=11, logprobs=2, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    streamed = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.token_logprobs]
    assert streamed[: len(whole.choices[0].logprobs.token_logprobs)] == pytest.approx(whole.choices[0].logprobs.token_logprobs)
    usage = list(client.completions.create(model="tiny", prompt="a", max_tokens=4, stream=True, stream_options={"include_usage": True},
                                           extra_body={"ignore_eos": True}))
    assert usage[-1].usage.completion_tokens == 4


@pytest.mark.parametrize("kwargs, param, phrase", [
    ({"max_tokens": MAX_TOKENS + 1}, "max_tokens", f"between 0 and {MAX_TOKENS}"),
    ({"max_tokens": 4, "temperature": 3}, "temperature", "between 0 and 2"),
    ({"max_tokens": 4, "top_p": 0}, "top_p", "top_p"),
    ({"max_tokens": 4, "logprobs": 21}, "logprobs", "between 0 and 20"),
    ({"max_tokens": 4, "n": 100}, "n", "n must be"),
    ({"max_tokens": 4, "best_of": 3}, "best_of", "not supported"),
    ({"max_tokens": 4, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"max_tokens": 0}, "max_tokens", "echo"),
    ({"max_tokens": 4, "extra_body": {"frobnicate": 1}}, "frobnicate", "Unrecognized request argument"),
    ({"max_tokens": 4, "prompt": [[10**6]]}, "prompt", "outside this model's vocabulary"),
])
def test_bad_requests_get_400_in_openai_shape(client, kwargs, param, phrase):
    kwargs = {"prompt": "the", **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", **kwargs)
    assert e.value.status_code == 400
    err = e.value.response.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and phrase in err["message"]


def test_other_errors(client, server):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=1)
    big = httpx.post(f"{server}/v1/completions", json={"model": "tiny", "prompt": "x" * MAX_BODY, "max_tokens": 1})
    assert big.status_code == 413 and "limit" in big.json()["error"]["message"]
    chunked = httpx.post(f"{server}/v1/completions", content=iter([b"{" + b" " * MAX_BODY, b"}"]),
                         headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    bad_json = httpx.post(f"{server}/v1/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    assert httpx.get(f"{server}/v1/nothing").json()["error"]["type"] == "not_found_error"


def test_page_api_and_offline_page(server, ckpt):
    page = httpx.get(server).text
    assert "<textarea" in page and "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    card = httpx.get(f"{server}/api/model").json()
    assert card["name"] == "tiny" and dict(card["card"])["tokenizer"].startswith(ckpt.config["tokenizer"])
    text = "the small cat runs.\n"
    scored = httpx.post(f"{server}/api/score", json={"text": text, "top": 5}).json()
    expected = score(ckpt.model, ckpt.tokenizer, text)
    assert "".join(t["text"] for t in scored["tokens"]) == text
    assert [t["logprob"] for t in scored["tokens"]] == pytest.approx([s.logprob for s in expected], abs=1e-4)
    for t in scored["tokens"]:
        probs = [c["prob"] for c in t["top"]]
        assert probs == sorted(probs, reverse=True) and t["rank"] >= 1
        assert (t["rank"] == 1) == (t["top"][0]["token"] == t["token"])
    with httpx.stream("POST", f"{server}/api/continue", json={"text": "the", "max_tokens": 8, "seed": 1, "temperature": 0.7}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    tokens = [e for e in events if e["id"] >= 0]
    assert tokens and events[-1]["finish_reason"] in ("stop", "length")
    for e in tokens:  # the sampling distribution (temperature 0.7) is sharper than the model's
        assert abs(sum(c["prob"] for c in e["sampled_from"]) - 1) < 0.05 or len(e["sampled_from"]) == 10
        assert e["sampled_from"][0]["prob"] >= e["top"][0]["prob"] - 1e-6


def test_load_32_clients_500_completions(server):
    """32 concurrent clients, 500 completions of 32 tokens: every one succeeds."""
    results: list = []

    async def run():
        client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=300)
        queue = list(range(500))

        async def one_client():
            while queue:
                i = queue.pop()
                try:
                    r = await client.completions.create(model="tiny", prompt=f"the {i}", max_tokens=32, seed=i,
                                                        extra_body={"ignore_eos": True})
                    results.append(r.usage.completion_tokens)
                except Exception as e:  # recorded, not raised: count every failure
                    results.append(e)

        await asyncio.gather(*(one_client() for _ in range(32)))
        await client.close()

    asyncio.run(run())
    failures = [r for r in results if not isinstance(r, int)]
    assert not failures, failures[:3]
    assert len(results) == 500 and all(r == 32 for r in results)


def test_the_model_runs_on_one_thread_at_a_time(ckpt):
    """Many requests at once, in-process: the model's forward is never entered by two threads together."""
    model = ckpt.model
    inside, overlaps, threads = [0], [0], set()
    original = model.forward

    def watched(*args, **kwargs):
        inside[0] += 1
        overlaps[0] += inside[0] > 1
        threads.add(threading.current_thread().name)
        try:
            time.sleep(0.0005)  # widen the window a race would need
            return original(*args, **kwargs)
        finally:
            inside[0] -= 1

    model.forward = watched
    try:
        app = create_app(ckpt, "tiny", Limits())

        async def run():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                body = {"model": "tiny", "prompt": "the", "max_tokens": 6}
                rs = await asyncio.gather(*(c.post("/v1/completions", json={**body, "seed": i}) for i in range(24)),
                                          *(c.post("/api/score", json={"text": "a cat"}) for _ in range(8)))
                return [r.status_code for r in rs]

        assert asyncio.run(run()) == [200] * 32
    finally:
        model.forward = original
    assert overlaps[0] == 0 and len(threads) == 1


@pytest.mark.parametrize("max_batch", [1, 2])
def test_worker_queue_limit_and_cancellation(ckpt, max_batch):
    worker = ModelWorker(max_queue=1, model=ckpt.model, max_batch=max_batch)
    gate = threading.Event()
    produced = []

    async def occupy():
        """Requests that take every running place until the gate opens (each starts before the next is sent)."""
        running = []
        for _ in range(max_batch):
            running.append(asyncio.ensure_future(worker.run(gate.wait)))
            await asyncio.sleep(0.05)
        return running

    async def run():
        first = await occupy()
        second = asyncio.ensure_future(worker.run(lambda: 2))  # waits: the queue is now full
        await asyncio.sleep(0.05)
        with pytest.raises(APIError) as e:
            await worker.run(lambda: 3)
        assert e.value.status == 429
        gate.set()
        assert await second == 2 and all(await asyncio.gather(*first))

        def forever(cancelled):
            for i in range(10**6):
                if cancelled():
                    return
                produced.append(i)
                time.sleep(0.001)
                yield i

        gate.clear()
        blockers = await occupy()
        waiting = asyncio.ensure_future(worker.run(lambda: "never"))
        await asyncio.sleep(0.05)
        waiting.cancel()  # its client went away before its turn
        await asyncio.sleep(0.05)
        assert worker.waiting == 0  # it left the queue: the next request is admitted
        gate.set()
        await asyncio.gather(*blockers)

        stream = worker.stream(forever)
        got = [await stream.__anext__() for _ in range(3)]
        await stream.aclose()  # the client went away
        await asyncio.sleep(0.1)
        n = len(produced)
        await asyncio.sleep(0.1)
        assert got == [0, 1, 2] and len(produced) == n < 1000  # the job stopped
        assert await worker.run(lambda: "free") == "free"

    asyncio.run(run())


def test_serve_cli_errors(tiny_checkpoint, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = run_cli("serve", str(tiny_checkpoint), "--port", str(busy.getsockname()[1]))
    assert r.returncode == 2 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("serve", str(tmp_path / "missing"), "--port", str(free_port()))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def _browser_or_skip():
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        if os.environ.get("NEXTLAB_REQUIRE_BROWSER"):
            pytest.fail("NEXTLAB_REQUIRE_BROWSER is set but /usr/bin/chromium is missing (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")


def test_page_in_a_real_browser(server):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(server)
            page.wait_for_selector("#tokens .tok")
            page.wait_for_function("document.querySelectorAll('#card tr').length >= 3")  # the model card
            page.fill("#text", "the big dog sees the cat.\n")
            page.wait_for_function("document.querySelectorAll('#tokens .tok').length == 26")
            colours = page.eval_on_selector_all("#tokens .tok", "els => new Set(els.map(e => e.style.background)).size")
            assert colours > 1  # coloured by surprisal, not all alike
            page.locator("#tokens .tok").nth(4).click()
            assert page.locator("#dist-body .bar-row").count() == 10
            assert "bits" in page.inner_text("#dist-body")
            page.check("input[value=rank]")
            page.wait_for_selector("#legend >> text=rank of the actual token")
            page.fill("#seed", "1")
            page.fill("#max-tokens", "12")
            page.click("#continue")
            page.wait_for_function("document.querySelectorAll('.tok.generated').length >= 3")
            page.wait_for_selector("#continue:not([disabled])")
            assert "sampled" in page.inner_text("#status")
            assert page.input_value("#text").startswith("the big dog sees the cat.\n")
            assert len(page.input_value("#text")) > len("the big dog sees the cat.\n")
            page.locator(".tok.generated").first.click()
            page.locator(".tok.generated").first.click()  # unpin, pin again: the distribution it was sampled from
            assert "sampled from" in page.inner_text("#dist-body")
            page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "serve-page.png").stat().st_size > 10_000



API_KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed_server(tiny_checkpoint):
    env = {**os.environ, "NEXTLAB_API_KEY": API_KEY}  # the key from the environment, as a deployment would set it
    with serving(tiny_checkpoint, "--threads", "1", env=env) as base:
        yield base


def test_an_api_key_guards_every_route_but_health_and_the_page(keyed_server):
    assert httpx.get(f"{keyed_server}/health").status_code == 200
    assert httpx.get(f"{keyed_server}/").status_code == 200  # the page's shell: it asks for the key itself
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/completions"), ("GET", "/api/model"), ("POST", "/tokenize"),
                         ("GET", "/tokenizer_info"), ("GET", "/openapi.json")]:
        missing = httpx.request(method, f"{keyed_server}{path}", json={})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer", path
        assert missing.json()["error"]["code"] == "invalid_api_key" and "didn't provide" in missing.json()["error"]["message"]
        wrong = httpx.request(method, f"{keyed_server}{path}", json={}, headers={"Authorization": f"Bearer {API_KEY}x"})
        assert wrong.status_code == 401 and "Incorrect API key" in wrong.json()["error"]["message"]
    # refused before the body is read: an oversized body without the key gets 401, not 413
    big = httpx.post(f"{keyed_server}/v1/completions", content=b"x" * (MAX_BODY * 3), headers={"Content-Type": "application/json"})
    assert big.status_code == 401
    client = openai.OpenAI(base_url=f"{keyed_server}/v1", api_key=API_KEY, max_retries=0, timeout=60)
    assert client.completions.create(model="tiny", prompt="the", max_tokens=3, temperature=0).choices
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed_server}/v1", api_key="nope", max_retries=0).models.list()


def test_serving_beyond_loopback_needs_a_key_or_insecure(tiny_checkpoint):
    from nextlab.serve.app import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost")
    r = run_cli("serve", str(tiny_checkpoint), "--host", "0.0.0.0", "--port", str(free_port()))
    assert r.returncode == 2 and "no API key is set" in r.stderr and "--insecure" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("serve", str(tiny_checkpoint), "--api-key", " ", "--port", str(free_port()))
    assert r.returncode == 2 and "the API key is empty" in r.stderr


def test_the_page_asks_for_the_key_once_and_keeps_it_for_the_tab(keyed_server):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            asked = []
            page.on("dialog", lambda d: (asked.append(d.message), d.accept(API_KEY)))
            page.goto(keyed_server)
            page.fill("#text", "the big dog")
            page.wait_for_function("document.querySelectorAll('#tokens .tok').length == 11")
            page.wait_for_function("document.querySelectorAll('#card tr').length >= 3")  # the card, also behind the key
            assert len(asked) == 1 and "API key" in asked[0]
            assert page.evaluate("sessionStorage.getItem('nextlab-api-key')") == API_KEY
            page.reload()
            page.fill("#text", "a cat")
            page.wait_for_function("document.querySelectorAll('#tokens .tok').length == 5")
            assert len(asked) == 1  # kept for the tab: not asked again
        finally:
            browser.close()


def test_sigterm_during_streaming_finishes_or_cancels_and_exits_0(tiny_checkpoint):
    """Four long streams queue behind one model thread; SIGTERM arrives while they run: the server stops accepting,
    lets them finish within its grace period or cuts them, and exits with status 0."""
    import signal as signals

    from nextlab.serve.app import SHUTDOWN_GRACE_S

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nextlab", "serve", str(tiny_checkpoint), "--port", str(port), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
            assert time.time() < deadline and proc.poll() is None
        ends = []

        def stream():
            body = {"model": "tiny", "prompt": "the", "max_tokens": 1024, "stream": True, "ignore_eos": True}
            last = None
            try:
                with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=60) as r:
                    for line in r.iter_lines():
                        last = line or last
            except httpx.HTTPError:
                last = "cut"
            ends.append(last)

        clients = [threading.Thread(target=stream) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(0.3)
        stopped_at = time.time()
        proc.send_signal(signals.SIGTERM)
        assert len(ends) < 4  # streams were in flight
        assert proc.wait(timeout=SHUTDOWN_GRACE_S + 20) == 0
        assert time.time() - stopped_at < SHUTDOWN_GRACE_S + 10
        for c in clients:
            c.join(timeout=30)
        assert len(ends) == 4 and all(e in ("data: [DONE]", "cut") or e.startswith("data: ") for e in ends), ends
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{base}/health", timeout=2)
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_stalled_client_does_not_hold_the_model_thread(server):
    """A client that asks for streams and then never reads: the model thread produces their tokens into each
    request's own queue and moves on, so the other clients are served as usual."""
    host, port = server.removeprefix("http://").split(":")
    body = json.dumps({"model": "tiny", "prompt": "the", "max_tokens": MAX_TOKENS, "stream": True, "ignore_eos": True}).encode()
    stalled = []
    for _ in range(4):
        s = socket.create_connection((host, int(port)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # a tiny window: the server's sends back up at once
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        stalled.append(s)  # never read
    try:
        start = time.time()
        for _ in range(5):
            r = httpx.post(f"{server}/v1/completions", json={"model": "tiny", "prompt": "a cat", "max_tokens": 8, "temperature": 0},
                           timeout=30)
            assert r.status_code == 200
        assert time.time() - start < 20
        assert httpx.get(f"{server}/health").json()["waiting"] == 0
    finally:
        for s in stalled:
            s.close()


def test_a_completion_past_its_time_limit_finishes_with_length(ckpt, tiny_checkpoint):
    """Limits.max_request_seconds bounds one request's model time: past it, generation stops and the choice
    finishes with "length" (a limit was reached), whole or streamed."""
    from fastapi.testclient import TestClient

    body = {"model": "tiny", "prompt": "the", "max_tokens": 20, "ignore_eos": True, "temperature": 0}
    with TestClient(create_app(ckpt, "tiny", Limits(max_request_seconds=0.0))) as c:
        r = c.post("/v1/completions", json=body).json()
        assert r["choices"][0]["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 0
        with c.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        assert events[-1]["choices"][0]["finish_reason"] == "length" and "".join(e["choices"][0]["text"] for e in events) == ""
    with TestClient(create_app(ckpt, "tiny", Limits())) as c:  # the default leaves room for the whole completion
        assert c.post("/v1/completions", json=body).json()["usage"]["completion_tokens"] == 20
    r = run_cli("serve", str(tiny_checkpoint), "--max-request-seconds", "0", "--port", str(free_port()))
    assert r.returncode == 2 and "--max-request-seconds must be more than 0" in r.stderr
