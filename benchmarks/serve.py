"""Serving throughput and latency, continuous batching against one request at a time: 32-token completions at
1, 8 and 32 concurrent clients.

    python benchmarks/serve.py [--checkpoint runs/demo] [--requests 200] [--server-threads 1]

Starts two `nextlab serve` subprocesses on free loopback ports, one batched (the default, `--max-batch 32`)
and one unbatched (`--max-batch 1`), and drives /v1/completions with asyncio clients (httpx) from this
process, alternating the two servers at each concurrency level (the idle one uses no CPU). Every request
asks for exactly 32 sampled tokens (`ignore_eos`, its own seed). Prints, per server and level, requests per
second, generated tokens per second and the p50 / p99 latency of a whole completion; then the two ratios
the serving issue set targets for (batched throughput at the most clients over at one client, >= 4; batched
p50 at one client over unbatched, <= 1.10); then how many of 256 seeded completions give other tokens
batched than alone (in-process, through the engine); then the same completion run in-process without HTTP,
for the server's overhead. Without a checkpoint, a fresh demo-sized model is used (speed does not depend on the
weights). On 2 cores the clients and the server share the machine (the default gives each server 1 PyTorch
thread, leaving a core for the clients).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

from nextlab.checkpoint import load_checkpoint, save_checkpoint
from nextlab.model import GPT
from nextlab.report import demo_config
from nextlab.sample import generate_stream
from nextlab.serve.batching import BatchingEngine
from nextlab.tokenizer import ByteTokenizer

TOKENS = 32
PROMPT = "def parse(line):\n    "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_checkpoint(directory: Path) -> Path:
    tokenizer = ByteTokenizer()
    cfg = demo_config().model
    cfg.vocab_size = tokenizer.vocab_size
    model = GPT(cfg)
    return save_checkpoint(directory / "fresh", model, tokenizer, {"step": 0})


def start_server(checkpoint: Path, threads: int, max_batch: int) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nextlab", "serve", str(checkpoint), "--port", str(port),
                             "--threads", str(threads), "--max-queue", "1024", "--max-batch", str(max_batch)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            health = httpx.get(f"{base}/health", timeout=1)
            if health.status_code == 200:
                return proc, base, health.json()["model"]
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            sys.exit(f"error: the server did not start: {proc.stderr.read()}")
        time.sleep(0.2)


async def load(base: str, model: str, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    todo = list(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:

        async def one_client():
            while todo:
                i = todo.pop()
                body = {"model": model, "prompt": PROMPT, "max_tokens": TOKENS, "seed": i, "temperature": 0.8, "ignore_eos": True}
                t0 = time.perf_counter()
                r = await client.post("/v1/completions", json=body)
                if r.status_code == 200 and r.json()["usage"]["completion_tokens"] == TOKENS:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures.append(f"{r.status_code} {r.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = sorted(latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return {"clients": clients, "ok": len(lat), "failed": len(failures), "rps": len(lat) / wall,
            "tok_s": len(lat) * TOKENS / wall, "p50": p(0.50), "p99": p(0.99), "first_failure": failures[:1]}


def in_process(checkpoint: Path, threads: int, repeats: int) -> float:
    """Median ms for the same completion through the library, no HTTP."""
    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        for _ in generate_stream(ckpt.model, ckpt.tokenizer, PROMPT, max_new_tokens=TOKENS, temperature=0.8, seed=i, stop_at_eot=False):
            pass
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def seeded_draws_moved(checkpoint: Path, threads: int, n: int) -> tuple[int, int]:
    """Of n seeded completions (the load's settings), how many give other tokens batched (32 at once, through the
    engine) than alone: a float difference of the batched kernels can move a draw across a boundary."""
    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    context = [ckpt.tokenizer.eot_id] + ckpt.tokenizer.encode(PROMPT)
    settings = {"max_new_tokens": TOKENS, "temperature": 0.8, "stop_at_eot": False}
    engine = BatchingEngine(ckpt.model, 32)
    with ThreadPoolExecutor(32) as pool:
        batched = list(pool.map(lambda i: [g.id for g in engine.generate(ckpt.tokenizer, context, seed=i, **settings)], range(n)))
    engine.close()
    alone = [[g.id for g in generate_stream(ckpt.model, ckpt.tokenizer, context=context, seed=i, **settings)] for i in range(n)]
    return sum(a != b for a, b in zip(alone, batched)), engine.stepped // max(engine.steps, 1)


SERVERS = {"unbatched": 1, "batched": 32}  # name -> --max-batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="checkpoint or run directory (default: runs/demo if it exists, else a fresh demo-sized model)")
    p.add_argument("--requests", type=int, default=200, help="completions per concurrency level")
    p.add_argument("--clients", default="1,8,32", help="concurrency levels")
    p.add_argument("--server-threads", type=int, default=1)
    p.add_argument("--seeded", type=int, default=256, help="seeded completions compared batched against alone")
    args = p.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    rows: dict[str, list[dict]] = {name: [] for name in SERVERS}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else Path("runs/demo")
        if not args.checkpoint and not checkpoint.exists():
            checkpoint = fresh_checkpoint(Path(tmp))
        base_ms = in_process(checkpoint, args.server_threads, 20)
        moved, mean_batch = seeded_draws_moved(checkpoint, args.server_threads, args.seeded)
        servers = {name: start_server(checkpoint, args.server_threads, max_batch) for name, max_batch in SERVERS.items()}
        try:
            for _, base, model in servers.values():
                asyncio.run(load(base, model, 4, 16))  # warm-up
            for clients in levels:
                for name, (_, base, model) in servers.items():
                    rows[name].append(asyncio.run(load(base, model, clients, args.requests)))
        finally:
            for proc, _, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=10)
    model = servers["batched"][2]
    print(f"\n{model}: {TOKENS}-token completions, {args.requests} per level, each server on {args.server_threads} PyTorch thread(s)\n")
    print(f"{'server':>10} {'clients':>8} {'ok':>5} {'failed':>7} {'req/s':>7} {'tokens/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name in SERVERS:
        for r in rows[name]:
            print(f"{name:>10} {r['clients']:>8} {r['ok']:>5} {r['failed']:>7} {r['rps']:>7.2f} {r['tok_s']:>9.0f} "
                  f"{r['p50']:>8.1f} {r['p99']:>8.1f}")
            if r["first_failure"]:
                print(f"{'':>19} first failure: {r['first_failure'][0]}")
    batched, unbatched = rows["batched"], rows["unbatched"]
    print(f"\nbatched throughput at {levels[-1]} clients / at {levels[0]}: {batched[-1]['rps'] / batched[0]['rps']:.2f}x "
          f"(unbatched: {unbatched[-1]['rps'] / unbatched[0]['rps']:.2f}x)")
    print(f"batched p50 at {levels[0]} client(s) / unbatched p50: {batched[0]['p50'] / unbatched[0]['p50']:.3f}")
    print(f"seeded completions with other tokens batched than alone: {moved} of {args.seeded} (mean batch {mean_batch})")
    print(f"in-process, no HTTP: {base_ms:.1f} ms per completion (median of 20); "
          f"batched server at {levels[0]} client(s): p50 {batched[0]['p50']:.1f} ms, {batched[0]['p50'] / base_ms:.2f}x")


if __name__ == "__main__":
    main()
