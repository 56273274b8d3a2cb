"""The training loop: plain, one function, the same on one CPU or under torchrun.

    train(config) -> TrainResult

Per step: set the learning rate, run `accum` micro-batches forward and backward
(under bf16 autocast where that is faster), clip, step the optimizers. Every
`eval_every` steps: validation loss on a fixed set of windows, a metrics row,
and, every `save_every` steps, an atomic checkpoint that `resume=True`
continues from bit-exactly (model, optimizer, RNG and data-sampler state).
On SIGTERM or SIGINT (preemption.py) the step in progress finishes, a
checkpoint is written and the run raises `Preempted`; resuming from it is bit-exact too.

Distributed: under `torchrun --nproc_per_node=N` each process is a rank of a
DistributedDataParallel job (gloo on CPU, nccl on CUDA). Every rank draws the
same global batch of window offsets from the shared seeded generator and trains
on its own slice, so the data, and therefore the loss trajectory, is the same
whatever the number of processes. Rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nextlab.checkpoint import (
    list_checkpoints,
    load_train_state,
    load_weights,
    model_config_from,
    prune_checkpoints,
    read_config,
    save_checkpoint,
    step_dir,
)
from nextlab.config import RunConfig, TrainConfig, config_from_dict
from nextlab.data import check_fits, even_offsets, first_per_world, prepare_corpus, random_offsets, windows
from nextlab.errors import NextlabError
from nextlab.files import LOCK_FILE, run_lock
from nextlab.model import GPT, ModelConfig
from nextlab.muon import Muon
from nextlab.preemption import Preempted, StopSignals
from nextlab.roofline import flops_per_token, peak_flops
from nextlab.sample import document_logprobs
from nextlab.tokenizer import load_tokenizer

METRICS_FILE = "metrics.jsonl"
# Model fields that change the weights' shapes or meaning; resuming with any of them changed is an error.
SHAPE_KEYS = ("arch", "vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "mlp_hidden", "qk_norm", "bias")


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    val_loss: float
    val_bpb: float
    metrics: list[dict]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NextlabError(f"device {name!r} requested but CUDA is not available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise NextlabError("device 'mps' requested but MPS is not available")
    if name.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise NextlabError(f"unknown device {name!r}; choose cpu, cuda, mps or auto")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN can run bf16 matmuls natively here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_bf16(device: torch.device) -> bool:
    """Whether this device multiplies bf16 in hardware: CUDA, or a CPU with AVX512-BF16 or AMX."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())


def pick_dtype(name: str, device: torch.device, cfg: ModelConfig) -> torch.dtype:
    """bf16 autocast where it pays: on CUDA; on a CPU with native bf16 from 64 wide up.

    benchmarks/precision.py measures it: with AVX512-BF16, a training step under bf16
    (with the explicit attention) ran 1.3x faster than float32 at 64 to 256 wide.
    """
    if name == "bfloat16":
        return torch.bfloat16
    if name == "float32" or device.type == "mps":
        return torch.float32
    if native_bf16(device) and (device.type == "cuda" or cfg.n_embd >= 64):
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def lr_multiplier(step: int, t: TrainConfig) -> float:
    """Warm-up, then cosine decay or warmup-stable-decay (linear cool-down), to min_lr_ratio."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return 1.0
    if t.schedule == "cosine":
        progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_start = t.steps - int(t.decay_fraction * t.steps)
    if step < decay_start:
        return 1.0
    progress = (step - decay_start) / max(1, t.steps - decay_start)
    return 1.0 - (1 - t.min_lr_ratio) * min(1.0, progress)


def build_optimizers(model: GPT, t: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW for everything, or Muon on the blocks' 2-D weight matrices and AdamW on the rest."""
    hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("layers.")]
    hidden_ids = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in hidden_ids]
    betas = (t.beta1, t.beta2)
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    if t.optimizer == "adamw":
        matrices = [p for p in model.parameters() if p.dim() >= 2]
        vectors = [p for p in model.parameters() if p.dim() < 2]
        groups = [{"params": matrices, "weight_decay": t.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
        return [torch.optim.AdamW(groups, lr=t.lr, betas=betas, **fused)]
    adamw = torch.optim.AdamW(rest, lr=t.lr, betas=betas, weight_decay=0.0, **fused)
    muon = Muon(hidden, lr=t.muon_lr, weight_decay=t.weight_decay, momentum=0.95,
                ns_dtype=torch.bfloat16 if native_bf16(next(model.parameters()).device) else torch.float32)
    return [muon, adamw]


def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); (0, 1, 0) outside torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0"))


def check_resume_compatible(saved: dict, wanted: ModelConfig, source: str) -> None:
    saved_cfg = model_config_from(saved, source).resolved()
    wanted = wanted.resolved()
    for key in SHAPE_KEYS:
        a, b = getattr(saved_cfg, key), getattr(wanted, key)
        if a != b:
            raise NextlabError(f"cannot resume from {source}: model.{key} is {a!r} there but {b!r} in this config")


def saved_run_config(out: str | Path) -> RunConfig | None:
    """The run config stored in a run directory's latest checkpoint, if it has one."""
    found = list_checkpoints(out)
    if not found:
        return None
    return config_from_dict(read_config(found[-1])["run"])


def same_run(saved: RunConfig, wanted: RunConfig) -> bool:
    """Whether a run directory's saved config is the wanted run (the vocabulary size, filled in by training, aside)."""
    a, b = saved.to_dict(), wanted.to_dict()
    for d in (a, b):
        d["model"].pop("vocab_size")
        d["train"].pop("progress")
        d.pop("out")
    return a == b


def refuse_other_run(out: str | Path, wanted: RunConfig, what: str) -> None:
    """A one-line error if `out` holds a run other than `wanted` (described as `what`): a study resumes its own run only."""
    saved = saved_run_config(out)
    if saved is not None and not same_run(saved, wanted):
        raise NextlabError(f"{out} holds another run (not the {what}); choose another --out")


def _read_metrics(path: Path, upto_step: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto_step]


@torch.no_grad()
def evaluate(model: GPT, data, offsets: torch.Tensor, block_size: int, micro: int, device, dtype, rank=0, world_size=1) -> float:
    """Mean next-token loss over fixed windows; under torchrun each rank takes a share and they are summed."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    mine = offsets[rank::world_size]
    for i in range(0, len(mine), micro):
        x, y = windows(data, mine[i : i + micro], block_size)
        with autocast(device, dtype):
            _, loss = model(x.to(device), y.to(device))
        total[0] += loss.double() * len(x)
        total[1] += len(x)
    if world_size > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


@torch.no_grad()
def evaluate_worlds(model: GPT, eot_id: int, docs: list[dict], device, dtype, rank=0, world_size=1) -> dict:
    """Per world: the model's bits per byte on whole held-out documents, their entropy floor, and the excess.

    `docs` holds {"world", "ids", "bytes", "floor_bits"}; under torchrun each rank scores a share.
    """
    names = sorted({d["world"] for d in docs})
    totals = torch.zeros(len(names), 3, dtype=torch.float64)  # model bits, floor bits, bytes
    mine = docs[rank::world_size]
    model.eval()
    with autocast(device, dtype):
        logprobs = document_logprobs(model, [d["ids"] for d in mine], eot_id)
    model.train()
    for d, lp in zip(mine, logprobs):
        i = names.index(d["world"])
        totals[i] += torch.tensor([-lp / math.log(2), d["floor_bits"], d["bytes"]], dtype=torch.float64)
    if world_size > 1:
        totals = totals.to(device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    out = {}
    for name, (bits, floor, n_bytes) in zip(names, totals.tolist()):
        out[name] = {"bpb": bits / n_bytes, "floor_bpb": floor / n_bytes, "excess_bpb": (bits - floor) / n_bytes}
    return out


def evaluate_tasks(model: GPT, tokenizer, tasks: list, shots: int, device, dtype) -> dict:
    """Both metric families (means) for each task; every rank computes the same numbers."""
    from nextlab.evals import evaluate_task, means

    model.eval()
    with autocast(device, dtype):
        results = {task.name: evaluate_task(model, tokenizer, task, shots) for task in tasks}
    model.train()
    return {name: means(r) for name, r in results.items()}


def world_eval_docs(corpus, tokenizer, per_world: int) -> list[dict]:
    """The first `per_world` held-out documents of each world, tokenized once."""
    return [
        {"world": d["world"], "ids": tokenizer.encode(d["text"]), "bytes": len(d["text"].encode()), "floor_bits": d["floor_bits"]}
        for d in first_per_world(corpus.val_world_docs, per_world, world=lambda d: d["world"])
    ]


def initial_model(mcfg: ModelConfig, seed: int) -> GPT:
    """The weights a run starts from (step 0): the same seed gives the same model, on every rank."""
    torch.manual_seed(seed)
    return GPT(mcfg)


def check_finite(step: int, loss: float, grad_norm: float, out: Path) -> None:
    """Stop a diverged run before its optimizer step: the last good checkpoint stays as it was."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    saved = list_checkpoints(out)
    last = f"the last good checkpoint is {saved[-1]} (untouched; --resume continues from it)" if saved else "no checkpoint was saved yet"
    raise NextlabError(f"training diverged at step {step} (loss {loss}, gradient norm {grad_norm}); {last}; "
                       "lower train.lr / train.muon_lr, or set train.grad_clip")


def restore(start: Path, model: GPT, optimizers: list[torch.optim.Optimizer], data_gen: torch.Generator) -> dict:
    """Load a checkpoint's weights, optimizer states and random states into a run; the saved training state."""
    load_weights(model, start / "model.safetensors")
    state = load_train_state(start)
    for opt, opt_state in zip(optimizers, state["optimizers"]):
        opt.load_state_dict(opt_state)
    data_gen.set_state(state["data_rng"])
    torch.set_rng_state(state["torch_rng"])
    return state


def stop_agreed(stop: StopSignals | None, world_size: int, device: torch.device) -> bool:
    """Whether a stop was asked for, on any process: all of a torchrun's processes stop at the same step."""
    asked = stop is not None and stop.requested is not None
    if world_size > 1:
        flag = torch.tensor(float(asked), device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        asked = bool(flag.item())
    return asked


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}  {task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def train(cfg: RunConfig, resume: bool = False, log=print) -> TrainResult:
    """Train (or resume) the run `cfg` describes, holding its directory's lock (files.run_lock) on the main process.

    On SIGTERM or SIGINT the run finishes its step, writes a checkpoint and raises `preemption.Preempted`
    (every process of a torchrun stops at the same step); `resume=True` continues it bit for bit."""
    main_process = int(os.environ.get("RANK", "0")) == 0
    with run_lock(Path(cfg.out) / LOCK_FILE, "nextlab train", log) if main_process else contextlib.nullcontext():
        with StopSignals() as stop:
            return _train(cfg, resume, log, stop)


def _train(cfg: RunConfig, resume: bool = False, log=print, stop: StopSignals | None = None) -> TrainResult:
    """Train per `cfg`; with resume, continue from the latest checkpoint in cfg.out if there is one."""
    cfg = copy.deepcopy(cfg).check()  # vocab_size is filled in below; the caller's config stays as given
    t = cfg.train
    rank, world_size, local_rank = _dist_info()
    device = resolve_device(t.device)
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if t.threads:
        torch.set_num_threads(t.threads)
    is_main = rank == 0
    say = log if is_main else (lambda *a, **k: None)
    out = Path(cfg.out)

    # Resume point: the latest checkpoint in the run directory, if any.
    start = None
    found = list_checkpoints(out)
    if resume:
        if found:
            start = found[-1]
        else:
            say(f"no checkpoint in {out}; starting from scratch")
    elif found:
        raise NextlabError(f"run directory {out} already has checkpoints; pass --resume to continue it, or choose another --out")

    # Data (rank 0 builds the cache first; the others then find it).
    tokenizer = load_tokenizer(start) if start else None
    if is_main:
        corpus = prepare_corpus(cfg.data, tokenizer, log=say)
    if world_size > 1:
        dist.barrier()
    if not is_main:
        corpus = prepare_corpus(cfg.data, tokenizer, log=say)
    tokenizer = corpus.tokenizer
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = tokenizer.vocab_size
    elif cfg.model.vocab_size < tokenizer.vocab_size:
        raise NextlabError(f"model.vocab_size {cfg.model.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}")
    mcfg = cfg.model.resolved()
    if start:
        check_resume_compatible(read_config(start), mcfg, str(start / "config.json"))
    check_fits(corpus, mcfg.block_size)

    micro = t.micro_batch_size or t.batch_size // world_size
    if micro < 1 or t.batch_size % (micro * world_size):
        raise NextlabError(
            f"train.batch_size ({t.batch_size}) must be a multiple of micro_batch_size ({micro}) x processes ({world_size})"
        )
    accum = t.batch_size // (micro * world_size)

    # Model and optimizers; same seed -> same initial weights on every rank.
    model = initial_model(mcfg, t.seed).to(device)
    dtype = pick_dtype(t.dtype, device, mcfg)
    model.set_attention(mcfg.attention == "manual" or (mcfg.attention == "auto" and dtype == torch.bfloat16 and device.type == "cpu"))
    optimizers = build_optimizers(model, t)
    for opt in optimizers:
        for group in opt.param_groups:
            group["peak_lr"] = group["lr"]
    data_gen = torch.Generator().manual_seed(t.seed)
    step, tokens_seen, train_seconds, wall_offset = 0, 0, 0.0, 0.0
    resumed_step = evaluated_step = -1  # where a resumed run starts, and that step if its evaluation is logged already
    window = [0.0, 0, 0, 0.0]  # since the last evaluation: train loss sum, steps, tokens, seconds
    if start:
        state = restore(start, model, optimizers, data_gen)
        step, tokens_seen = state["step"], state["tokens_seen"]
        train_seconds, wall_offset = state["train_seconds"], state["wall_seconds"]
        resumed_step = step
        evaluated_step = step if state.get("evaluated", True) else -1  # a preempted run may stop before evaluating
        window = list(state.get("window", window))
        if step > t.steps:  # the loop ends only at step == t.steps
            raise NextlabError(f"cannot resume from {start}: it is at step {step}, past train.steps = {t.steps}")
        say(f"resumed from {start} at step {step}")
    trained = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model

    n_params, n_non_emb = model.num_params(), model.num_params(non_embedding=True)
    tokens_per_step = t.batch_size * mcfg.block_size
    # model FLOPs utilization against this machine's measured matmul peak (roofline.py), every process's together
    flops_token = flops_per_token(model, mcfg.block_size)
    peak = peak_flops(dtype, device) * world_size if is_main else 0.0
    say(
        f"model {mcfg.arch}: {n_params / 1e6:.2f}M parameters ({n_non_emb / 1e6:.2f}M non-embedding), "
        f"{corpus.meta['train_tokens'] / 1e6:.2f}M train tokens, {tokens_per_step} tokens/step, "
        f"dtype {str(dtype).removeprefix('torch.')}, device {device}" + (f", {world_size} processes" if world_size > 1 else "")
    )
    if device.type == "cpu" and dtype == torch.bfloat16 and not native_bf16(device):
        say("warning: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so bf16 matmuls are emulated, tens of "
            "times slower than float32; train.dtype=auto picks float32 here")

    metrics_path = out / "metrics.jsonl"
    metrics = _read_metrics(metrics_path, step) if start else []
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in metrics))
    eval_context = t.eval_context or mcfg.block_size
    eval_offsets = even_offsets(corpus.val, t.eval_windows, eval_context)
    tokens_per_byte = corpus.val_tokens_per_byte
    world_docs = world_eval_docs(corpus, tokenizer, t.eval_world_docs)
    tasks = []
    if t.eval_tasks:
        from nextlab.evals import get_task, notes_to  # evals sits beside train; imported only when asked for

        with notes_to(say):  # a small world's "only N items": said once, in the log
            tasks = [get_task(name, t.eval_task_items, 1234, cfg.data.worlds, cfg.data.world_seed) for name in t.eval_tasks]

    def checkpoint(val_loss: float, val_bpb: float, evaluated: bool = True) -> Path:
        path = step_dir(out, step)
        if is_main:
            state = {
                "step": step,
                "tokens_seen": tokens_seen,
                "train_seconds": train_seconds,
                "wall_seconds": wall_offset + time.perf_counter() - t0,
                "optimizers": [o.state_dict() for o in optimizers],
                "data_rng": data_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "evaluated": evaluated,  # whether this step's evaluation (if one is due) is in metrics.jsonl
                "window": window,
            }
            info = {
                "run": cfg.to_dict(),
                "step": step,
                "tokens_seen": tokens_seen,
                "val_loss": val_loss,
                "val_bpb": val_bpb,
                "params": n_params,
                "non_embedding_params": n_non_emb,
                "data": {k: corpus.meta[k] for k in ("path", "worlds", "documents", "train_tokens", "val_tokens")},
            }
            save_checkpoint(path, model, tokenizer, info, state)
            prune_checkpoints(out, t.keep_last)
        if world_size > 1:
            dist.barrier()
        return path

    progress = progress_bar(t.progress and is_main)
    t0 = time.perf_counter()
    val_loss = val_bpb = float("nan")
    if metrics:  # resumed: the last evaluation logged
        val_loss, val_bpb = metrics[-1]["val_loss"], metrics[-1]["val_bpb"]
    model.train()
    with progress:
        task = progress.add_task("train", total=t.steps, completed=step, loss=float("nan"), tps=0.0)
        while True:
            if step not in (0, resumed_step) and stop_agreed(stop, world_size, device):
                path = checkpoint(val_loss, val_bpb, evaluated=False)
                if world_size > 1:
                    dist.destroy_process_group()
                raise Preempted(f"on {stop.requested or 'a signal to another process'} at step {step}; checkpoint {path}")
            if step == evaluated_step:  # evaluated and logged before the checkpoint was written
                pass
            elif step % t.eval_every == 0 or step == t.steps or step in t.eval_tasks_at:
                val_loss = evaluate(model, corpus.val, eval_offsets, eval_context, micro, device, dtype, rank, world_size)
                val_bpb = val_loss / math.log(2) * tokens_per_byte
                row = {
                    "step": step,
                    "tokens": tokens_seen,
                    "wall_s": round(wall_offset + time.perf_counter() - t0, 3),
                    "train_s": round(train_seconds, 3),
                    "train_loss": window[0] / window[1] if window[1] else None,
                    "val_loss": val_loss,
                    "val_bpb": val_bpb,
                    "lr": optimizers[-1].param_groups[0]["lr"],
                    "tokens_per_s": window[2] / window[3] if window[3] else None,
                    "mfu": window[2] / window[3] * flops_token / peak if window[3] and peak else None,
                }
                if world_docs:
                    row["worlds"] = evaluate_worlds(model, tokenizer.eot_id, world_docs, device, dtype, rank, world_size)
                if tasks and (step % (t.eval_tasks_every or t.eval_every) == 0 or step == t.steps or step in t.eval_tasks_at):
                    row["tasks"] = evaluate_tasks(model, tokenizer, tasks, t.eval_task_shots, device, dtype)
                metrics.append(row)
                if is_main:
                    with metrics_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    (progress.console.print if t.progress else say)(
                        f"step {step:>6}  val loss {val_loss:.4f} nats/token  {val_bpb:.3f} bits/byte"
                        + (f"  train loss {row['train_loss']:.4f}  mfu {row['mfu']:.1%}" if window[1] else "")
                        + ("\n" + " " * 14 + "excess over floor, bits/byte: " if world_docs else "")
                        + ", ".join(f"{name} {w['excess_bpb']:.3f}" for name, w in row.get("worlds", {}).items())
                    )
                window = [0.0, 0, 0, 0.0]
            if step == t.steps:
                break
            if t.save_every and step % t.save_every == 0 and step not in (0, resumed_step):
                checkpoint(val_loss, val_bpb)

            step_start = time.perf_counter()
            mult = lr_multiplier(step, t)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = group["peak_lr"] * mult
            offsets = random_offsets(corpus.train, t.batch_size, mcfg.block_size, data_gen)
            mine = offsets.view(accum, world_size, micro)[:, rank]
            step_loss = torch.zeros((), device=device)
            for i in range(accum):
                x, y = windows(corpus.train, mine[i], mcfg.block_size)
                x, y = x.to(device), y.to(device)
                sync = i == accum - 1 or world_size == 1
                with contextlib.nullcontext() if sync else trained.no_sync():
                    with autocast(device, dtype):
                        _, loss = trained(x, y)
                    (loss / accum).backward()
                step_loss += loss.detach() / accum
            # the gradients are already averaged over ranks, so every rank sees the same norm and stops together
            grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip) if t.grad_clip > 0
                         else torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))
            if world_size > 1:
                dist.all_reduce(step_loss, op=dist.ReduceOp.AVG)
            loss_value = step_loss.item()
            check_finite(step + 1, loss_value, float(grad_norm), out)
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - step_start
            tokens_seen += tokens_per_step
            train_seconds += elapsed
            window = [window[0] + loss_value, window[1] + 1, window[2] + tokens_per_step, window[3] + elapsed]
            progress.update(task, completed=step, loss=loss_value, tps=window[2] / window[3])

    final = checkpoint(val_loss, val_bpb)
    say(f"done: val loss {val_loss:.4f} nats/token, {val_bpb:.3f} bits/byte; checkpoint {final}")
    if world_size > 1:
        dist.destroy_process_group()
    return TrainResult(out, final, val_loss, val_bpb, metrics)
