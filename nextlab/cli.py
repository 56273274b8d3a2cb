"""The `nextlab` command: parses arguments, calls library functions, prints.

Bad input (a NextlabError) ends with a one-line `error: ...` on stderr and exit
status 2; no traceback. A run stopped by SIGTERM or SIGINT after writing its
checkpoint exits with preemption.PREEMPTED_EXIT (75).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import numbers
import os
import sys
import warnings
from pathlib import Path

from nextlab.errors import NextlabError
from nextlab.preemption import PREEMPTED_EXIT, Preempted

MAX_SEED = 2**63 - 1  # what torch's and numpy's generators all take
MAX_THREADS = 1024  # torch.set_num_threads overflows at 2**31; this is already far more than cores


def cmd_train(args) -> None:
    from nextlab.config import config_from_dict, load_config
    from nextlab.train import saved_run_config, train

    flags: dict[str, dict] = {"data": {}, "train": {}}
    for section, key, value in (
        ("data", "path", args.data),
        ("data", "tokenizer", args.tokenizer),
        ("train", "steps", args.steps),
        ("train", "seed", args.seed),
        ("train", "save_every", args.save_every),
        ("train", "device", args.device),
        ("train", "progress", False if args.no_progress else None),
    ):
        if value is not None:
            flags[section][key] = value
    out = args.out or "runs/default"
    if args.resume and args.config is None and not args.set:
        # Resume exactly the run that is there: its own saved config, plus the flags given now.
        saved = saved_run_config(out)
        if saved is not None:
            base = saved.to_dict()
            for section, values in flags.items():
                base[section].update(values)
            train(config_from_dict({**base, "out": out}), resume=True)
            return
    overrides = list(args.set or []) + [f"out={json.dumps(out)}"]
    train(load_config(args.config, overrides, **flags), resume=args.resume)


def _load(path: str, device: str = "cpu"):
    from nextlab.checkpoint import load_checkpoint

    return load_checkpoint(path, device)


def _for_model(tokenizer, raw: bytes, what: str) -> str | bytes:
    """Bytes the model is to read: any bytes for a byte-level model (its point is to take anything), UTF-8 text for
    the others, whose tokenizers were made from text."""
    if tokenizer.kind == "bytes":
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NextlabError(f"{what} is not valid UTF-8; this model's {tokenizer.kind} tokenizer reads text "
                           "(only a byte-level model takes any bytes)") from None


def _text_arg(tokenizer, text: str, flag: str) -> str | bytes:
    """A text argument for the model. Python decodes argv bytes that are not UTF-8 to lone surrogates, and
    os.fsencode gives back exactly the bytes the shell passed."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a surrogate that no argv decoding makes: only a caller of main() can pass one
        raise NextlabError(f"{flag} is not valid text") from None
    return _for_model(tokenizer, raw, flag)


def _check_text(value: str | None, flag: str, why: str) -> None:
    """An argument that can only be text: argv bytes that are not UTF-8 (lone surrogates, see _text_arg) are refused."""
    try:
        (value or "").encode("utf-8")
    except UnicodeEncodeError:
        raise NextlabError(f"{flag} is not valid UTF-8 ({why})") from None


def cmd_sample(args) -> None:
    from nextlab.sample import generate_stream

    ckpt = _load(args.checkpoint)
    prompt = _text_arg(ckpt.tokenizer, args.prompt, "--prompt")
    for s in args.stop or ():
        _check_text(s, "--stop", "stop strings are matched in the decoded text")
    for i in range(args.num_samples):
        if i:
            print("\n" + "-" * 40)
        sys.stdout.write(args.prompt)
        for tok in generate_stream(
            ckpt.model,
            ckpt.tokenizer,
            prompt,
            max_new_tokens=args.max_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=None if args.seed is None else args.seed + i,
            stop=args.stop or (),
        ):
            sys.stdout.write(tok.text)
            sys.stdout.flush()
        print()


def cmd_next(args) -> None:
    from rich.console import Console
    from rich.table import Table

    from nextlab.sample import next_token_distribution

    ckpt = _load(args.checkpoint)
    choices = next_token_distribution(ckpt.model, ckpt.tokenizer, _text_arg(ckpt.tokenizer, args.prompt, "--prompt"), args.k)
    if args.json:
        print(json.dumps([{"id": c.id, "token": c.text, "prob": c.prob} for c in choices]))
        return
    table = Table(title=f"next token after {args.prompt[-40:]!r}")
    table.add_column("rank", justify="right")
    table.add_column("token")
    table.add_column("id", justify="right")
    table.add_column("prob", justify="right")
    table.add_column("")
    for rank, c in enumerate(choices, 1):
        table.add_row(str(rank), repr(c.text), str(c.id), f"{c.prob:.4f}", "█" * round(c.prob * 40))
    Console().print(table)


def cmd_score(args) -> None:
    from nextlab.sample import score

    if (args.file is None) == (args.text is None):
        raise NextlabError("score needs exactly one of FILE or --text")
    if args.file is not None:
        try:
            raw = Path(args.file).read_bytes()
        except FileNotFoundError:
            raise NextlabError(f"{args.file}: no such file") from None
        except OSError as e:
            raise NextlabError(f"{args.file}: cannot read ({e.strerror or e.__class__.__name__})") from None
    ckpt = _load(args.checkpoint)
    text = _text_arg(ckpt.tokenizer, args.text, "--text") if args.text is not None else _for_model(ckpt.tokenizer, raw, args.file)
    scores = score(ckpt.model, ckpt.tokenizer, text)
    if not scores:
        raise NextlabError("nothing to score: the text is empty")
    total_bits = sum(s.surprisal_bits for s in scores)
    n_bytes = len(text) if isinstance(text, bytes) else len(text.encode())
    summary = {
        "tokens": len(scores),
        "bytes": n_bytes,
        "total_bits": total_bits,
        "bits_per_token": total_bits / len(scores),
        "bits_per_byte": total_bits / max(1, n_bytes),
    }
    if args.json:
        summary["per_token"] = [{"id": s.id, "token": s.text, "logprob": s.logprob, "bits": s.surprisal_bits} for s in scores]
        print(json.dumps(summary))
        return
    if args.tokens:
        for s in scores:
            print(f"{s.surprisal_bits:8.3f} bits  {s.text!r}")
    print(
        f"{summary['tokens']} tokens, {n_bytes} bytes: {total_bits:.1f} bits in all, "
        f"{summary['bits_per_token']:.3f} bits/token, {summary['bits_per_byte']:.3f} bits/byte"
    )


def cmd_demo(args) -> None:
    _no_file_in_the_way(args.out, "--out")
    from nextlab.report import run_demo

    run_demo(quick=args.quick, out=args.out)


def cmd_eval(args) -> None:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from nextlab.evals import CONTINUOUS, DISCONTINUOUS, evaluate, get_task
    from nextlab.evals.run import default_tasks

    _check_output_file(args.json, "--json")
    ckpt = _load(args.checkpoint)
    data = ckpt.config.get("run", {}).get("data", {})
    names = [t for t in args.tasks.split(",") if t] if args.tasks else default_tasks(data)
    try:
        shots = sorted({int(k) for k in args.shots.split(",")})
    except ValueError:
        raise NextlabError(f"--shots must be comma-separated integers, got {args.shots!r}") from None
    if any(k < 0 for k in shots):
        raise NextlabError(f"--shots must be >= 0, got {args.shots!r}")
    tasks = [get_task(n, args.n, args.seed, data.get("worlds"), data.get("world_seed", 0)) for n in names]
    with Progress(transient=True) as progress:
        bar = progress.add_task("evaluating", total=len(tasks) * len(shots))
        rows = evaluate(ckpt.model, ckpt.tokenizer, tasks, shots, args.seed, progress=lambda: progress.advance(bar))
    table = Table(title=f"{ckpt.path}: tasks as continuations (mean ± standard error)")
    short = {"exact_match": "exact", "mc_accuracy": "MC acc", "target_logprob": "log p", "logprob_per_char": "log p/char",
             "token_accuracy": "token acc", "edit_distance": "edit dist", "brier": "Brier"}
    for col in ("task", "k", "n", *DISCONTINUOUS, *CONTINUOUS):
        table.add_column(short.get(col, col), justify="left" if col == "task" else "right", no_wrap=col == "task")
    for r in rows:
        cells = [f"{r[m]['mean']:.3f}\n±{r[m]['se']:.3f}" if m in r else "" for m in DISCONTINUOUS + CONTINUOUS]
        k = f"{r['shots']}" + (f" ({r['shots_used']:.1f} fit)" if r["shots_used"] < r["shots"] else "")
        table.add_row(r["task"], k, str(r["n"]), *cells)
    Console().print(table)
    dropped = [r for r in rows if r["shots_used"] < r["shots"]]
    if dropped:
        print(f"note: shots that did not fit the context ({ckpt.model.cfg.block_size} tokens) were dropped for "
              + ", ".join(sorted({r["task"] for r in dropped})), file=sys.stderr)
    if args.json:
        _write_json(args.json, {"checkpoint": str(ckpt.path), "results": rows})


def _coding_progress(enabled: bool, total: int, label: str):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(
        TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        transient=True, disable=not enabled,
    )


def cmd_compress(args) -> None:
    from nextlab.compress import CoderOptions, fresh_options
    from nextlab.compress.files import baseline_sizes, compress_file

    fresh = args.model == "none"
    opts = fresh_options() if fresh else CoderOptions()
    opts.mode = args.mode or opts.mode
    for name in ("streams", "block_steps", "lr", "train_window", "threads", "workers", "kernel", "window", "dtype", "attention"):
        if getattr(args, name) is not None:
            setattr(opts, name, getattr(args, name))
    checkpoint = None if fresh else args.model
    size = Path(args.input).stat().st_size if Path(args.input).is_file() else 0
    with _coding_progress(not args.no_progress, size, "compressing") as progress:
        bar = progress.add_task("", total=size)
        # the bar counts tokens as bytes: exact for byte-level models, close for others
        result = compress_file(args.input, checkpoint, args.output, opts, seed=args.seed, force=args.force,
                               progress=lambda n: progress.advance(bar, n))
    st = result.stats
    print(f"{args.input}: {st.original_bytes:,} -> {st.compressed_bytes:,} bytes ({st.bits_per_byte:.3f} bits/byte, "
          f"{opts.mode}) in {st.seconds:.1f} s -> {result.output}")
    if not args.stats:
        return
    data = Path(args.input).read_bytes()
    rows = [
        ("original size", f"{st.original_bytes:,} bytes"),
        ("compressed size", f"{st.compressed_bytes:,} bytes (coded payload {st.payload_bits // 8:,})"),
        ("bits per byte", f"{st.bits_per_byte:.4f}"),
        ("model's ideal code length", f"{st.ideal_bits / 8:,.0f} bytes = {st.ideal_bits_per_byte:.4f} bits/byte (sum of -log2 p)"),
        ("coder overhead over ideal", f"{100 * st.coder_overhead:.4f}%" + (
            " (below the ideal: the coder's probability floor of about 2^-24 caps the cost of tokens the model "
            "thought even less likely)" if st.coder_overhead < 0 else "")),
        ("tokens, streams", f"{st.tokens:,} tokens in {st.streams} streams"),
        ("kernel", st.kernel),
        ("throughput", f"{st.kb_per_s:.1f} KB/s ({st.workers} x {st.threads} threads)" if st.workers > 1
         else f"{st.kb_per_s:.1f} KB/s ({st.threads} threads)"),
    ]
    if result.model_params:
        rows.append(("adjusted (model at 2 bytes/param)", f"{result.adjusted_bits_per_byte:.4f} bits/byte "
                     f"({result.model_params:,} parameters)"))
    for name, n in baseline_sizes(data).items():
        rows.append((name, f"{n:,} bytes = {8 * n / max(1, len(data)):.4f} bits/byte"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def cmd_decompress(args) -> None:
    from nextlab.compress.files import decompress_file

    checkpoint = None if args.model in (None, "none") else args.model
    with _coding_progress(not args.no_progress, 0, "decompressing") as progress:
        bar = progress.add_task("", total=None)
        result = decompress_file(args.input, checkpoint, args.output, force=args.force,
                                 progress=lambda n: progress.advance(bar, n))
    st = result.stats
    print(f"{args.input}: {st.compressed_bytes:,} -> {st.original_bytes:,} bytes in {st.seconds:.1f} s "
          f"({st.kb_per_s:.1f} KB/s), SHA-256 verified -> {result.output}")


def cmd_export(args) -> None:
    from nextlab.hf import export_checkpoint

    _check_new_dir(args.out, "output directory")
    out = export_checkpoint(args.checkpoint, args.out)
    print(f"wrote {out}: open it with transformers' AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained")


def cmd_import(args) -> None:
    from nextlab.hf import import_checkpoint

    _check_new_dir(args.out, "output directory")
    out = import_checkpoint(args.directory, args.out)
    print(f"wrote {out}: a nextlab checkpoint (score, next, serve, compress, probe, eval take it)")


def cmd_sweep(args) -> None:
    from nextlab.scaling import load_sweep, run_sweep

    if args.jobs < 1:
        raise NextlabError(f"--jobs must be at least 1, got {args.jobs}")
    if args.ray is not None and args.jobs != 1:
        raise NextlabError("--jobs and --ray do not go together: on Ray, each point declares its threads and Ray "
                           "runs as many at once as the cluster has room for")
    shard = parse_shard(args.shard) if args.shard is not None else None
    sweep = load_sweep(args.sweep)
    rows = run_sweep(sweep, jobs=args.jobs, shard=shard, ray=args.ray, progress=not args.no_progress)
    share = "" if shard is None else f" (share {shard[0]}/{shard[1]})"
    print(f"{len(rows)} runs{share} in {sweep.out}; next: nextlab fit {sweep.out}")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), 1 <= I <= N."""
    i, slash, n = text.partition("/")
    if not (slash and i.strip().isdigit() and n.strip().isdigit()) or not 1 <= int(i) <= int(n):
        raise NextlabError(f"--shard must be I/N with 1 <= I <= N (share I of N of the grid), got {text!r}")
    return int(i), int(n)


def cmd_fit(args) -> None:
    from nextlab.scaling import fit_sweep, load_sweep_results, plot_sweep
    from nextlab.scaling.analysis import fit_report, fits_to_json

    _check_output_file(args.json, "--json")
    rows = load_sweep_results(args.sweep_dir)
    fits = fit_sweep(rows, n_bootstrap=args.bootstrap)
    print(fit_report(fits))
    for path in plot_sweep(rows, fits, Path(args.sweep_dir) / "plots"):
        print(f"wrote {path}")
    if args.json:
        _write_json(args.json, fits_to_json(fits))


def cmd_emergence(args) -> None:
    from nextlab.scaling import emergence, emergence_over_training, load_sweep_results
    from nextlab.scaling.analysis import emergence_report

    _check_output_file(args.json, "--json")
    tasks = [t for t in args.task.split(",") if t] if args.task else None
    rows = load_sweep_results(args.sweep_dir)
    table = emergence(rows, tasks)
    print(emergence_report(table, "compute across the sweep"))
    largest = max(rows, key=lambda r: (r["C"], r["name"]))
    try:
        over_steps = emergence_over_training(Path(args.sweep_dir) / largest["name"], largest["N"], tasks)
        print(emergence_report(over_steps, f"compute over the training of {largest['name']}"))
    except NextlabError as e:
        over_steps = {}
        print(f"over training: {e}")
    if args.json:
        _write_json(args.json, {"across_sweep": table, "over_training": over_steps})


def cmd_probe(args) -> None:
    from nextlab.probe import plot_probe, probe, world_knobs

    _check_plot_path(args.plot)
    ckpt = _load(args.checkpoint)
    result = probe(ckpt.model, ckpt.tokenizer, args.world, args.latent, n_docs=args.docs, seed=args.seed,
                   knobs=world_knobs(ckpt.config, args.world))
    print(result.table())
    out = Path(args.plot or f"probe_{result.world}_{result.latent}.png")
    print(f"wrote {plot_probe(result, out)}")


def cmd_heads(args) -> None:
    from rich.console import Console
    from rich.table import Table

    from nextlab.probe import heads

    labels = {"classic": "classic", "statistical": "statistical", "previous_token": "prev token"}
    _check_plot_path(args.plot)
    ckpt = _load(args.checkpoint)
    windows = heads.validation_windows(ckpt.config, ckpt.tokenizer, ckpt.model.cfg.block_size)
    scores = heads.checkpoint_head_scores(ckpt, seed=args.seed, windows=windows)
    print(f"{ckpt.path}: share of each head's attention where an induction or previous-token head looks")
    table = Table()
    for col in ("layer", "head", *(labels[n] for n in heads.SCORE_NAMES)):
        table.add_column(col, justify="right")
    best = {n: scores.best(n)[:2] for n in heads.SCORE_NAMES}
    for layer in range(scores.classic.shape[0]):
        for head in range(scores.classic.shape[1]):
            cells = [f"{scores.score(n)[layer, head]:.3f}" for n in heads.SCORE_NAMES]
            cells = [f"[bold]{c}[/bold]" if best[n] == (layer, head) else c for n, c in zip(heads.SCORE_NAMES, cells)]
            table.add_row(str(layer), str(head), *cells)
    console = Console()
    console.print(table)
    print("even causal attention (baseline): " + ", ".join(f"{labels[n]} {scores.baseline(n):.3f}" for n in heads.SCORE_NAMES))
    for n in heads.SCORE_NAMES:
        layer, head, value = scores.best(n)
        print(f"best {labels[n]}: layer {layer} head {head}: {value:.3f}")
    if args.over_training:
        rows = heads.heads_over_training(args.checkpoint, windows=windows, seed=args.seed)
        table = Table(title="over training: the best head's score (and which head)")
        for col in ("step", "tokens", *(labels[n] for n in heads.SCORE_NAMES), "ICL score"):
            table.add_column(col, justify="right")
        for r in rows:
            cells = [f"{r['best'][n]['score']:.3f}\nL{r['best'][n]['layer']} H{r['best'][n]['head']}" for n in heads.SCORE_NAMES]
            table.add_row(str(r["step"]), f"{r['tokens'] or 0:,}", *cells, f"{r['icl_score']:+.4f}")
        console.print(table)
        print("ICL score = loss at 90% of the context - loss at 10%; negative when the model uses the context")
        if args.plot and rows:
            print(f"wrote {heads.plot_heads_over_training(rows, args.plot)}")


def _no_file_in_the_way(path: str, flag: str) -> None:
    """Fail before a long run, not after it: the nearest existing part of `path` must be a directory."""
    for part in (Path(path), *Path(path).parents):
        if part.exists():
            if not part.is_dir():
                raise NextlabError(f"{flag} {path}: {part} is a file, not a directory")
            return


def _check_new_dir(path: str, flag: str) -> None:
    """A checkpoint or an export is written beside its directory and renamed to it: the path needs a name of its own."""
    if Path(path).name in ("", ".."):
        raise NextlabError(f"{flag} {path}: name a new directory, not the current or a parent one")
    _no_file_in_the_way(path, flag)


def _fmt(value) -> str:
    """A check's value: floats with 3 decimals, lists (of lists) in brackets, None as 'none'."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if value is None:
        return "none"
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{value:.3f}"
    return str(value)


def cmd_icl(args) -> None:
    _no_file_in_the_way(args.out, "--out")
    _check_output_file(args.json, "--json")

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from nextlab.icl import describe_transition, run_icl_study

    result = run_icl_study(args.out, quick=args.quick)
    refs = result["curve"]["references"]
    print(f"{args.out}: {result['params']:,} parameters, {result['steps']} steps")
    print(f"references (nats per symbol): uniform {refs['uniform']:.3f}, in-context unigram {refs['unigram']:.3f}, "
          f"Bayes floor {refs['bayes']:.3f}")
    table = Table(title="in-context learning: the checks")
    for col in ("claim", "measure", "value", "threshold", "met"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for c in result["transition"]["checks"]:
        table.add_row(escape(c["claim"]), escape(c["measure"]), escape(_fmt(c["value"])), escape(str(c["threshold"])),
                      "yes" if c["met"] else "[bold]no[/bold]")
    Console().print(table)
    print(describe_transition(result["transition"]))
    if args.json:
        _write_json(args.json, {"summary": result["summary"], "curve": result["curve"]})


def _check_output_file(path: str | None, flag: str) -> None:
    """Fail before the work, not after it: a file to write needs a directory to go in, and not to be one."""
    if path:
        if Path(path).is_dir():
            raise NextlabError(f"{flag} {path}: is a directory")
        if not Path(path).absolute().parent.is_dir():
            raise NextlabError(f"{flag} {path}: no such directory {Path(path).parent}")
        if not os.access(Path(path).absolute().parent, os.W_OK):
            raise NextlabError(f"{flag} {path}: cannot write in {Path(path).parent}")


def _check_plot_path(path: str | None) -> None:
    """matplotlib writes the format the suffix names, and refuses a suffix it does not know (after the work)."""
    if path:
        _check_output_file(path, "--plot")
        from matplotlib.figure import Figure

        formats = Figure().canvas.get_supported_filetypes()
        if Path(path).suffix.lower().lstrip(".") not in formats:
            raise NextlabError(f"--plot {path}: name a .png file (or {', '.join('.' + f for f in sorted(formats) if f != 'png')})")


def _write_json(path: str, value) -> None:
    try:
        Path(path).write_text(json.dumps(value, indent=1))
    except OSError as e:
        raise NextlabError(f"--json {path}: cannot write ({e.strerror or e.__class__.__name__})") from None
    print(f"wrote {path}")


def cmd_reasoning(args) -> None:
    _no_file_in_the_way(args.out, "--out")
    _check_output_file(args.json, "--json")

    from rich.console import Console
    from rich.table import Table

    from nextlab.reasoning import run_reasoning_study

    study = run_reasoning_study(args.out, quick=args.quick, tasks=tuple(args.tasks.split(",")) if args.tasks else None)
    table = Table(title="held-out items (never in training), greedy, no examples in the prompt")
    for col in ("run", "items", "exact match", "n", "per-token accuracy", "log-prob per character"):
        table.add_column(col, justify="left" if col in ("run", "items") else "right", no_wrap=col in ("run", "items"))
    for task, run in study["runs"].items():
        for name, sc in run["tasks"].items():
            table.add_row(task, name, f"{sc['exact_match']:.3f}", str(sc["n"]), f"{sc['token_accuracy']:.3f}",
                          f"{sc['logprob_per_char']:.3f}")
    console = Console()
    console.print(table)
    for task, run in study["runs"].items():
        widths = ", ".join(f"{m} {_fmt(w['width_decades'])}" for m, w in run["sharpness"].items())
        print(f"{task}: 10-90% width of each metric's rise over training, decades of tokens: {widths}")
        if "carry_probe" in run:
            c = run["carry_probe"]
            print(f"{task}: carry probe {c['accuracy']:.3f} at {c['layer']} (random-init model {c['random_model']:.3f} "
                  f"at {c['random_model_layer']})")
    for check, met in study["checks"].items():
        print(f"{'met' if met else 'NOT met'}: {check}")
    if args.json:
        _write_json(args.json, study)


def cmd_serve(args) -> None:
    from nextlab.serve import Limits, serve

    if not args.max_request_seconds > 0:
        raise NextlabError(f"--max-request-seconds must be more than 0, got {args.max_request_seconds}")
    for flag, value in (("--host", args.host), ("--name", args.name), ("--api-key", args.api_key)):
        _check_text(value, flag, "it travels as text: in the socket address, JSON replies or HTTP headers")
    limits = Limits(max_tokens=args.max_tokens_limit, max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
                    max_request_seconds=args.max_request_seconds, max_batch=args.max_batch)
    api_key = args.api_key if args.api_key is not None else os.environ.get("NEXTLAB_API_KEY")
    serve(args.checkpoint, host=args.host, port=args.port, name=args.name, limits=limits, threads=args.threads,
          api_key=api_key, insecure=args.insecure)


def _task_list(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t]


def cmd_tune_sft(args) -> None:
    _check_new_dir(args.out, "--out")
    from nextlab.tune import SFTConfig, sft

    cfg = SFTConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, tasks=_task_list(args.tasks),
                    examples_per_task=args.examples_per_task, pretrain_mix=args.pretrain_mix, seed=args.seed,
                    threads=args.threads or 0)
    sft(args.checkpoint, args.out, cfg, data=args.data)


def cmd_tune_rl(args) -> None:
    _check_new_dir(args.out, "--out")
    from nextlab.tune import RLConfig, rl

    cfg = RLConfig(steps=args.steps, prompts_per_step=args.prompts, samples_per_prompt=args.samples, lr=args.lr, kl=args.kl,
                   temperature=args.temperature, max_new_tokens=args.max_new_tokens, tasks=_task_list(args.tasks),
                   seed=args.seed, threads=args.threads or 0)
    rl(args.checkpoint, args.out, cfg)


def cmd_tune_compare(args) -> None:
    from nextlab.tune.compare import compare, compare_table

    _check_output_file(args.json, "--json")
    result = compare(args.base, args.tuned, n_per_task=args.n, seed=args.seed, tasks=_task_list(args.tasks) or None,
                     log=lambda m: print(m, file=sys.stderr))
    if args.json:
        _write_json(args.json, result)
    print(compare_table(result))


def cmd_chat(args) -> None:
    from nextlab.tune.chat import chat_repl

    if isinstance(sys.stdin, io.TextIOWrapper):  # a line that is not UTF-8 is refused by chat_repl, not a traceback
        sys.stdin.reconfigure(errors="surrogateescape")
    chat_repl(_load(args.checkpoint), temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed)


def _world_from_args(args):
    from nextlab.config import parse_override
    from nextlab.worlds.registry import WorldSpecError, make_world

    knobs = {}
    for text in args.set or []:
        keys, value = parse_override(text)
        knobs[".".join(keys)] = value
    try:
        return make_world(args.name, **knobs)
    except WorldSpecError as e:
        raise NextlabError(str(e)) from None


def cmd_worlds_sample(args) -> None:
    import random

    world = _world_from_args(args)
    rng = random.Random(args.seed)
    for _ in range(args.n):
        doc = world.sample(rng)
        print(doc.text)
        if args.latents:
            print(f"  latents: {json.dumps(doc.latents)}")
        lp = world.log_prob(doc.text)
        print(f"  log p = {lp:.3f} nats  ({-lp / math.log(2):.2f} bits)\n")


def cmd_worlds_floor(args) -> None:
    import random

    from nextlab.worlds import optimal_bits_per_byte

    world = _world_from_args(args)
    rng = random.Random(args.seed)
    texts = [world.sample(rng).text for _ in range(args.n)]
    floor = optimal_bits_per_byte(world, texts)
    mean_bytes = sum(len(t.encode()) for t in texts) / len(texts)
    print(f"{world.name}: entropy floor {floor:.4f} bits/byte over {args.n} sampled documents ({mean_bytes:.1f} bytes each)")


def _add_train(sub) -> None:
    """train: a run from a config and flags."""
    t = sub.add_parser("train", help="train a model (optionally from a TOML config)")
    t.add_argument("config", nargs="?", help="TOML config with [model], [data], [train] sections")
    t.add_argument("--data", help="text file (any file with the bytes tokenizer), folder, glob, or 'stdlib' (built-in corpus)")
    t.add_argument("--tokenizer", help="bytes | chars | bpe")
    t.add_argument("--out", help="run directory for checkpoints and metrics (default runs/default)")
    t.add_argument("--steps", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--save-every", type=int)
    t.add_argument("--device", help="cpu | cuda | mps | auto")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.lr=1e-3")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)


def _add_use(sub) -> None:
    """sample, next, score: use a checkpoint."""
    s = sub.add_parser("sample", help="generate text from a checkpoint")
    s.add_argument("checkpoint", help="checkpoint or run directory")
    s.add_argument("--prompt", default="")
    s.add_argument("--max-tokens", type=int, default=200)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int)
    s.add_argument("--top-p", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--stop", action="append", help="stop string (repeatable)")
    s.add_argument("-n", "--num-samples", type=int, default=1)
    s.set_defaults(func=cmd_sample)

    n = sub.add_parser("next", help="show the next-token distribution after a prompt")
    n.add_argument("checkpoint")
    n.add_argument("--prompt", required=True)
    n.add_argument("-k", type=int, default=10)
    n.add_argument("--json", action="store_true")
    n.set_defaults(func=cmd_next)

    c = sub.add_parser("score", help="log-probability and surprisal of every token of a text")
    c.add_argument("checkpoint")
    c.add_argument("file", nargs="?")
    c.add_argument("--text")
    c.add_argument("--tokens", action="store_true", help="print every token's surprisal")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_score)


def _add_eval(sub) -> None:
    """eval: tasks as continuations."""
    e = sub.add_parser("eval", help="zero- and few-shot tasks, both metric families")
    e.add_argument("checkpoint")
    e.add_argument("--tasks", help="comma-separated task names or .jsonl files (default: the worlds the model trained on)")
    e.add_argument("--shots", default="0,1,4", help="comma-separated k values (default 0,1,4)")
    e.add_argument("--n", type=int, default=500, help="items per task")
    e.add_argument("--seed", type=int, default=1234)
    e.add_argument("--json", help="write the results to this file, with each item's log-likelihoods (and each choice's)")
    e.set_defaults(func=cmd_eval)


def _add_worlds(sub) -> None:
    """worlds sample | floor."""
    w = sub.add_parser("worlds", help="look at the worlds: text with a known generator")
    wsub = w.add_subparsers(dest="worlds_command", required=True)
    for name, func, helptext in (
        ("sample", cmd_worlds_sample, "print documents from a world, with their exact log-probability"),
        ("floor", cmd_worlds_floor, "estimate a world's entropy floor in bits per byte"),
    ):
        ws = wsub.add_parser(name, help=helptext)
        ws.add_argument("name", help="arithmetic | programs | translation | facts | arguments | hmm")
        ws.add_argument("--n", type=int, default=5 if name == "sample" else 2000, help="documents")
        ws.add_argument("--seed", type=int, default=0, help="seed for drawing documents")
        ws.add_argument("--set", action="append", metavar="KNOB=VALUE", help="a world knob, e.g. max_digits=4")
        if name == "sample":
            ws.add_argument("--latents", action="store_true", help="also print each document's latents")
        ws.set_defaults(func=func)


def _add_compress(sub) -> None:
    """compress, decompress: a model as a lossless coder."""
    z = sub.add_parser("compress", help="compress a file losslessly with a model (arithmetic coding)")
    z.add_argument("input", help="any file")
    z.add_argument("-m", "--model", required=True, help="checkpoint or run directory, or 'none' for a fresh model (adaptive)")
    z.add_argument("-o", "--output", help="output file (default INPUT.nxz)")
    z.add_argument("--mode", choices=("static", "adaptive"), help="static: fixed weights; adaptive: keep learning while coding "
                   "(default: static with a checkpoint, adaptive with -m none)")
    z.add_argument("--streams", type=int, help="most parallel streams (default 512 static, 64 adaptive; 16 with -m none)")
    z.add_argument("--block-steps", type=int, help="steps per checksummed block and per adaptive update (default 64; 16 with -m none)")
    z.add_argument("--lr", type=float, help="adaptive: Adam learning rate (default 2e-3; 8e-3 with -m none)")
    z.add_argument("--train-window", type=int, help="adaptive: newest tokens per stream in each update (default 64; 32 with -m none)")
    z.add_argument("--threads", type=int, help="PyTorch threads, shared among the workers (recorded; decompression uses the same)")
    z.add_argument("--workers", type=int, help="static: processes coding parts of the streams in parallel (recorded; default one "
                   "per thread where each gets 64 streams; adaptive: 1)")
    z.add_argument("--kernel", choices=("auto", "ring", "model"), help="the decoding step: ring (modern models: a ring of "
                   "the last --ring-window keys, never rebuilt), model (the model's own forward, any model); default auto = ring "
                   "where it runs")
    z.add_argument("--ring-window", dest="window", type=int,
                   help="ring kernel: tokens of context per stream and layer (default half of block_size static, a quarter adaptive)")
    z.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), help="ring kernel: weights and keys in bfloat16 "
                   "(1.5x faster where the CPU has bf16 dot products, emulated and slower elsewhere) or float32; default auto = "
                   "bfloat16 where the CPU has them (recorded; decompression uses the same)")
    z.add_argument("--attention", choices=("auto", "numba", "torch"), help="ring kernel: the attention in compiled loops "
                   "(numba; default auto) or with torch.bmm (slower; recorded, decompression uses the same)")
    z.add_argument("--seed", type=int, default=0, help="seed of the fresh model with -m none")
    z.add_argument("--stats", action="store_true", help="print ideal code length, coder overhead, throughput, gzip/bzip2/xz")
    z.add_argument("-f", "--force", action="store_true", help="overwrite the output")
    z.add_argument("--no-progress", action="store_true")
    z.set_defaults(func=cmd_compress)

    u = sub.add_parser("decompress", help="restore a file made by nextlab compress (verified by SHA-256)")
    u.add_argument("input")
    u.add_argument("-m", "--model", help="the checkpoint it was compressed with (default: the path recorded in the file)")
    u.add_argument("-o", "--output", help="output file (default INPUT without .nxz)")
    u.add_argument("-f", "--force", action="store_true", help="overwrite the output")
    u.add_argument("--no-progress", action="store_true")
    u.set_defaults(func=cmd_decompress)


def _add_interop(sub) -> None:
    """export, import: Hugging Face model directories."""
    x = sub.add_parser("export", help="write a checkpoint as a Hugging Face model directory (Llama, Qwen3 with QK-norm, "
                       "or GPT-2; safetensors and a tokenizer that gives nextlab's ids)")
    x.add_argument("checkpoint", help="checkpoint or run directory")
    x.add_argument("out", help="new directory for the Hugging Face model")
    x.set_defaults(func=cmd_export)
    i = sub.add_parser("import", help="make a nextlab checkpoint of a local Hugging Face Llama, Qwen3 or GPT-2 directory "
                       "(safetensors weights, byte-level BPE or nextlab tokenizer; nothing is downloaded)")
    i.add_argument("directory", help="Hugging Face model directory (config.json, model.safetensors, tokenizer.json)")
    i.add_argument("out", help="checkpoint directory to write")
    i.set_defaults(func=cmd_import)


def _add_scaling(sub) -> None:
    """sweep, fit, emergence: scaling laws."""
    sw = sub.add_parser("sweep", help="train a grid of model sizes, token budgets and seeds (resumable)")
    sw.add_argument("sweep", help="sweep TOML: a run config plus a [grid] section")
    sw.add_argument("--jobs", type=int, default=1, help="points trained in parallel (the cores are shared between them)")
    sw.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="run each point as a Ray task on the cluster at ADDRESS (alone: start one on this machine); "
                         "needs nextlab[ray]")
    sw.add_argument("--shard", metavar="I/N", help="run only share I of N of the grid (1-based; e.g. a Slurm array task's "
                    "$((SLURM_ARRAY_TASK_ID + 1))/N); fit and emergence read the union of the shares")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar over points")
    sw.set_defaults(func=cmd_sweep)

    fi = sub.add_parser("fit", help="fit scaling laws L(N), L(D), L(N, D) to a sweep, with bootstrap intervals and plots")
    fi.add_argument("sweep_dir")
    fi.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the intervals (default 200)")
    fi.add_argument("--json", help="write the fits to this file")
    fi.set_defaults(func=cmd_fit)

    em = sub.add_parser("emergence", help="how abruptly each task rises with compute, under each metric")
    em.add_argument("sweep_dir")
    em.add_argument("--task", help="comma-separated task names (default: every task the sweep evaluated)")
    em.add_argument("--json", help="write the tables to this file")
    em.set_defaults(func=cmd_emergence)


def _add_inside(sub) -> None:
    """probe, heads, icl: inside the model."""
    pr = sub.add_parser("probe", help="linear probes for a world's hidden variables, per layer, with controls")
    pr.add_argument("checkpoint")
    pr.add_argument("--world", required=True, help="hmm | arithmetic | arguments | facts | programs")
    pr.add_argument("--latent", help="hmm: belief | state; arithmetic: carry; arguments: valid; facts: entity; programs: value; any: token")
    pr.add_argument("--docs", type=int, default=300, help="documents to draw (70%% train the probe, 30%% score it)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--plot", help="PNG to write (default probe_WORLD_LATENT.png)")
    pr.set_defaults(func=cmd_probe)

    hd = sub.add_parser("heads", help="classic and statistical induction and previous-token scores of every attention head; "
                        "with --over-training, the phase change")
    hd.add_argument("checkpoint", help="checkpoint or run directory")
    hd.add_argument("--over-training", action="store_true", help="every checkpoint of the run: best head scores and ICL score")
    hd.add_argument("--plot", help="with --over-training: PNG of the best heads' scores over tokens seen")
    hd.add_argument("--seed", type=int, default=0)
    hd.set_defaults(func=cmd_heads)

    ic = sub.add_parser("icl", help="train a small model on in-context worlds (markov_icl, recall) and catch in-context "
                        "learning forming, checkpoint by checkpoint")
    ic.add_argument("--out", default="runs/icl", metavar="DIR", help="run directory (default runs/icl; an unfinished run there is resumed)")
    ic.add_argument("--quick", action="store_true", help="a run of under a minute")
    ic.add_argument("--json", metavar="PATH", help="write the summary and the curve (every checkpoint's measures) to this file")
    ic.set_defaults(func=cmd_icl)

    rs = sub.add_parser("reasoning", help="train a model per reasoning task on its world alone (arithmetic: addition of 1-3 digit "
                        "numbers; facts: biographies and Q/A lines of 80 invented people) and measure it on held-out items: "
                        "exact match, how sharply each metric rose over training, for arithmetic the carries in its residual stream")
    rs.add_argument("--out", default="runs/reasoning", metavar="DIR",
                    help="directory for the runs, one folder per task (default runs/reasoning; an unfinished run is resumed)")
    rs.add_argument("--tasks", metavar="LIST", help="comma-separated reasoning tasks: arithmetic, facts (default: all of them)")
    rs.add_argument("--quick", action="store_true", help="runs of seconds (too short to learn: to try the command)")
    rs.add_argument("--json", metavar="PATH", help="write everything measured (curves, scores, probe, examples) to this file")
    rs.set_defaults(func=cmd_reasoning)


def _add_tune_sft(sub) -> None:
    """tune sft: instruction tuning."""
    ts = sub.add_parser("sft", help="instruction-tune on conversations (the loss only on the assistant's tokens)")
    ts.add_argument("checkpoint", help="checkpoint or run directory (chat tokens are added if it has none)")
    ts.add_argument("--out", required=True, help="directory for the tuned checkpoint")
    ts.add_argument("--data", help="JSONL conversations (default: built-in requests from the checkpoint's worlds)")
    ts.add_argument("--tasks", help="built-in tasks, comma-separated (default: all the checkpoint's worlds support)")
    ts.add_argument("--steps", type=int, default=300)
    ts.add_argument("--batch-size", type=int, default=32)
    ts.add_argument("--lr", type=float, default=3e-4)
    ts.add_argument("--examples-per-task", type=int, default=2000)
    ts.add_argument("--pretrain-mix", type=float, default=0.3,
                    help="weight of ordinary next-token loss on the model's own training text (lowers the alignment tax)")
    ts.add_argument("--seed", type=int, default=0)
    ts.add_argument("--threads", type=int)
    ts.set_defaults(func=cmd_tune_sft)


def _add_tune_rl(sub) -> None:
    """tune rl: reward tuning."""
    tr = sub.add_parser("rl", help="policy gradient with verifiable rewards from the worlds (group-relative REINFORCE)")
    tr.add_argument("checkpoint", help="an instruction-tuned checkpoint")
    tr.add_argument("--out", required=True)
    tr.add_argument("--tasks", help="comma-separated (default: all the checkpoint's worlds support)")
    tr.add_argument("--steps", type=int, default=100)
    tr.add_argument("--prompts", type=int, default=8, help="requests per step")
    tr.add_argument("--samples", type=int, default=8, help="sampled replies per request")
    tr.add_argument("--lr", type=float, default=5e-4)
    tr.add_argument("--kl", type=float, default=0.0, help="weight of the KL penalty to the starting model (0 = off)")
    tr.add_argument("--temperature", type=float, default=1.0)
    tr.add_argument("--max-new-tokens", type=int, default=32)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int)
    tr.set_defaults(func=cmd_tune_rl)


def _add_tune_compare(sub) -> None:
    """tune compare: base vs tuned."""
    tc = sub.add_parser("compare", help="base vs tuned: accuracy, format, answer probability, entropy, KL, alignment tax")
    tc.add_argument("base", help="the pretrained checkpoint")
    tc.add_argument("tuned", nargs="+", help="tuned checkpoints")
    tc.add_argument("-n", type=int, default=50, help="requests per task and phrasing")
    tc.add_argument("--tasks", help="comma-separated (default: all the base's worlds support)")
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--json", help="also write the full result (with sample replies) here")
    tc.set_defaults(func=cmd_tune_compare)


def _add_tune(sub) -> None:
    """tune sft | rl | compare."""
    tu = sub.add_parser("tune", help="reshape the distribution: instruction tuning, reward tuning, before/after comparison")
    tsub = tu.add_subparsers(dest="tune_command", required=True)
    for add in (_add_tune_sft, _add_tune_rl, _add_tune_compare):
        add(tsub)


def _add_chat_serve(sub) -> None:
    """chat, serve: talk to a model, or serve it."""
    ch = sub.add_parser("chat", help="talk to an instruction-tuned checkpoint in the terminal")
    ch.add_argument("checkpoint")
    ch.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ch.add_argument("--top-p", type=float)
    ch.add_argument("--max-tokens", type=int, default=128)
    ch.add_argument("--seed", type=int)
    ch.set_defaults(func=cmd_chat)

    sv = sub.add_parser("serve", help="a web page showing the next-token distribution, and an OpenAI-compatible API")
    sv.add_argument("checkpoint", help="checkpoint or run directory")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only; any other address "
                    "needs --api-key or --insecure)")
    sv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health and the page "
                    "(default: $NEXTLAB_API_KEY; none: no authentication)")
    sv.add_argument("--insecure", action="store_true", help="listen beyond loopback without an API key")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--name", help="the model name clients use (default: the run directory's name)")
    sv.add_argument("--threads", type=int, help="PyTorch threads (default: all cores)")
    sv.add_argument("--max-tokens-limit", type=int, default=1024, help="most completion tokens a request may ask for")
    sv.add_argument("--max-batch", type=int, default=32, help="requests run at once, their tokens generated together "
                    "in one forward per step (continuous batching); 1: one request at a time")
    sv.add_argument("--max-queue", type=int, default=256, help="requests that may wait for the model; more get 429")
    sv.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body; larger gets 413")
    sv.add_argument("--max-request-seconds", type=float, default=300.0,
                    help="model time one completion may take; past it, generation stops with finish_reason 'length'")
    sv.set_defaults(func=cmd_serve)


def _add_demo(sub) -> None:
    """demo: the whole pipeline and its report."""
    d = sub.add_parser("demo", help="train the default model on the built-in corpus and write a report")
    d.add_argument("--quick", action="store_true", help="a run of under a minute")
    d.add_argument("--out", default="runs/demo")
    d.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nextlab", description="Train, sample and measure next-token models.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_use, _add_eval, _add_worlds, _add_compress, _add_interop, _add_scaling, _add_inside, _add_tune,
                _add_chat_serve, _add_demo):  # the order of the commands in --help
        add(sub)
    return p


def _check_args(args) -> None:
    for name in ("max_tokens", "num_samples", "k", "steps", "n", "threads", "max_tokens_limit", "max_queue", "max_batch", "max_body_bytes",
                 "batch_size", "examples_per_task", "prompts", "samples", "max_new_tokens"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise NextlabError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if getattr(args, "temperature", None) is not None and args.temperature < 0:
        raise NextlabError(f"--temperature must be >= 0, got {args.temperature}")
    port = getattr(args, "port", None)
    if port is not None and not 0 < port < 65536:
        raise NextlabError(f"--port must be between 1 and 65535, got {port}")
    top_p = getattr(args, "top_p", None)
    if top_p is not None and not 0 < top_p <= 1:
        raise NextlabError(f"--top-p must be in (0, 1], got {top_p}")
    top_k = getattr(args, "top_k", None)
    if top_k is not None and top_k < 0:
        raise NextlabError(f"--top-k must be at least 0 (0: no limit), got {top_k}")
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise NextlabError(f"--seed must be between 0 and {MAX_SEED}, got {seed}")
    threads = getattr(args, "threads", None)
    if threads is not None and threads > MAX_THREADS:
        raise NextlabError(f"--threads must be at most {MAX_THREADS}, got {threads}")
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):  # argparse's float() takes "nan" and "inf"
            raise NextlabError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if name in ("out", "output", "json", "plot") and value == "":  # an unset shell variable: not "here"
            raise NextlabError(f"--{name} is empty; name a path")


# Arguments that name files or directories (where they are strings: next's --json is a switch).
PATH_ARGS = ("checkpoint", "base", "tuned", "input", "output", "out", "file", "directory", "data", "config", "sweep",
             "sweep_dir", "json", "plot", "model")


def _check_paths(args) -> None:
    """A path the OS cannot look up at all (a name too long, a loop of links) is refused before any work; a missing one
    is left to the command, which says what it expected there."""
    for name in PATH_ARGS:
        value = getattr(args, name, None)
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str):
                try:
                    os.stat(path)
                except (FileNotFoundError, NotADirectoryError):
                    pass
                except OSError as e:
                    raise NextlabError(f"{path}: {e.strerror}") from None


def _check_argv(argv: list[str]) -> None:
    """No OS call takes a NUL, and exec cannot pass one: only a caller of main() can, and it is refused here."""
    for arg in argv:
        if "\0" in arg:
            raise NextlabError(f"argument {arg!r:.80} contains a NUL character")


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = lambda message, *a, **k: f"warning: {message}\n"
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Python decodes argv bytes that are not UTF-8 to lone surrogates; a path or prompt echoed back is
        # written as the very bytes it came as, not a UnicodeEncodeError.
        sys.stdout.reconfigure(errors="surrogateescape")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _check_argv(argv)
        args = build_parser().parse_args(argv)
        _check_args(args)
        _check_paths(args)
        args.func(args)
    except NextlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:  # a checkpoint was written; --resume goes on
        print(f"stopped: {e}", file=sys.stderr)
        return PREEMPTED_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
