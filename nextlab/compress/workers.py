"""The coder's streams in parallel processes: one part of the streams per process, each with its own threads.

Static coding is embarrassingly parallel: every stream is coded on its own. One process with two
PyTorch threads splits each op of a step in two, and a decoding step is many small ops (half of it
batched attention matmuls over thousands of tiny matrices, which read about 12 GB/s a thread). Two processes with one thread
each, stepping half the streams apiece, code about 30% more bytes per second (benchmarks/compress.py),
and a one-thread worker runs the attention in attention.py's loops, faster still.
Each part has its own range coder payload and block checksums; the decoder splits the streams the
same way, so each part sees exactly the batches and thread count its encoder saw.

On Linux a worker with one thread is forked: it starts at once. A forked child whose parent had already
run OpenMP threads hangs as soon as it runs more than one thread itself (GNU libgomp; seen here), so
workers with more threads, and every worker elsewhere, are spawned: a fresh interpreter importing
PyTorch, about 2 s, and a script calling the coder then needs the usual `if __name__ == "__main__":`
guard. A spawned worker gets the model as its fp32 weights (NumPy arrays) and config, never a pickled module.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from nextlab.errors import NextlabError
from nextlab.model import GPT

PROGRESS_EVERY_S = 0.2  # how often a worker reports the tokens it coded


def run_parts(fn: Callable, model: GPT, parts: Sequence[tuple], threads: int, progress: Callable[[int], None] | None) -> list:
    """`fn(model, *part, progress=...)` for each part, each with `threads` PyTorch threads: in this process when
    there is one part, else in one process per part (forked or spawned, as above). A worker's NextlabError is
    raised here, with its message."""
    if len(parts) == 1:  # float kernels' results depend on the thread count: exactly `threads`, then as before
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return [fn(model, *parts[0], progress=progress)]
        finally:
            torch.set_num_threads(before)
    ctx = mp.get_context("fork" if threads == 1 and sys.platform == "linux" else "spawn")
    messages = ctx.Queue()
    weights = {name: t.detach().float().numpy() for name, t in model.state_dict().items()}
    procs = [ctx.Process(target=_work, args=(messages, i, fn, model.cfg, weights, part, threads), daemon=True)
             for i, part in enumerate(parts)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    try:
        while len(results) < len(parts):
            try:
                kind, i, value = messages.get(timeout=1.0)
            except queue.Empty:
                for k, p in enumerate(procs):
                    if k not in results and p.exitcode not in (None, 0):
                        raise NextlabError(f"coding worker {k + 1} of {len(procs)} stopped (exit code {p.exitcode})") from None
                continue
            if kind == "progress":
                if progress:
                    progress(value)
            elif kind == "error":
                raise NextlabError(value)
            else:
                results[i] = value
    finally:
        for p in procs:
            if p.is_alive() and len(results) < len(parts):
                p.terminate()
            p.join()
    return [results[i] for i in range(len(parts))]


def _work(messages, index: int, fn: Callable, cfg, weights: dict[str, np.ndarray], part: tuple, threads: int) -> None:
    torch.set_num_threads(threads)
    pending, last = 0, time.monotonic()

    def report(n: int) -> None:
        nonlocal pending, last
        pending += n
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            messages.put(("progress", index, pending))
            pending, last = 0, time.monotonic()

    try:
        model = GPT(cfg)
        model.load_state_dict({name: torch.from_numpy(w) for name, w in weights.items()})
        result = fn(model, *part, progress=report)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports it, once
        return
    except NextlabError as e:
        messages.put(("error", index, str(e)))
        return
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it as one line
        messages.put(("error", index, f"coding worker {index + 1} failed: {e.__class__.__name__}: {e}"))
        return
    if pending:
        messages.put(("progress", index, pending))
    messages.put(("done", index, result))
