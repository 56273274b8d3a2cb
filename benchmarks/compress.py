"""Prediction is compression: nextlab's coder against gzip, bzip2 and xz on held-out text and code.

    python benchmarks/compress.py [--data ../shared/data] [--runs runs/bench_compress] [--steps 600]

English: for each of alice29.txt, asyoulik.txt, lcet10.txt and plrabn12.txt in
`DATA/canterbury/`, a bytes-level model trains on `DATA/tinyshakespeare/input.txt`
plus the other three files (leave one out), then compresses the held-out file.
Code: a model trains on the Python standard library's source minus held-out files
(chosen by a hash of their names) that are joined into a ~1 MB test file.

Per file: bits per byte of nextlab static (raw, and adjusted: the model counted
at 2 bytes per parameter), nextlab adaptive (starting from the same checkpoint),
gzip -9, bzip2 -9 and xz -9e, and compress / decompress throughput. Every
nextlab result is decompressed and compared with the original byte for byte.
Trained models are kept under --runs and reused by later runs.

--before also codes each file with the static coder as it was before the ring kernel (the model's own
forward, 64 streams), right after the default one, and prints both rates and their ratio; --bmm likewise
with the default static coder but its attention in torch.bmm (as before format version 4), to time
attention.py's loops side by side with what they replaced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import torch

from nextlab.checkpoint import load_checkpoint, resolve_checkpoint
from nextlab.compress import CoderOptions, compress_bytes, decompress_bytes
from nextlab.compress.files import measure_compression
from nextlab.config import load_config
from nextlab.data import stdlib_files
from nextlab.train import train

ENGLISH = ["alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt"]
# The static coder before the ring kernel and 512 streams (issue 19), for --before.
BEFORE = CoderOptions(mode="static", kernel="model", streams=64, min_stream_tokens=2048)
BMM = CoderOptions(mode="static", attention="torch")  # the default static coder with torch.bmm's attention, for --bmm
MODEL = ["model.n_layer=4", "model.n_head=4", "model.n_embd=192", "model.block_size=256"]


def train_model(out: Path, data: str, steps: int, threads: int) -> Path:
    if (out / "checkpoints").is_dir():
        try:
            return resolve_checkpoint(out)
        except Exception:
            pass
    overrides = MODEL + [
        'data.tokenizer="bytes"', "data.val_fraction=0.02", f"train.steps={steps}", "train.batch_size=32",
        'train.schedule="wsd"', f"train.eval_every={steps}", f"train.threads={threads}", "train.progress=false",
        f'out="{out}"',
    ]
    t0 = time.perf_counter()
    result = train(load_config(None, overrides, data={"path": data}), log=lambda *a, **k: None)
    print(f"  trained {out.name}: {steps} steps in {time.perf_counter() - t0:.0f} s, val {result.val_bpb:.3f} bits/byte")
    return result.checkpoint


def code_split(work: Path, target_bytes: int) -> tuple[Path, bytes]:
    """A folder of links to the stdlib files for training, and ~target_bytes of held-out files joined."""
    files = sorted(stdlib_files(), key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    held, size = [], 0
    for f in files:
        if size >= target_bytes:
            break
        held.append(f)
        size += f.stat().st_size
    folder = work / "stdlib_train"
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(p for p in stdlib_files() if p not in set(held)):
        link = folder / f"{i:04d}_{f.name}"
        if not link.exists():
            link.symlink_to(f)
    return folder, b"".join(f.read_bytes() for f in held)[:target_bytes]


def measure(name: str, data: bytes, checkpoint: Path, threads: int, modes: list[str], compared: dict[str, CoderOptions]) -> dict:
    """Every mode, then each of `compared` (name: options), one after another."""
    ckpt = load_checkpoint(checkpoint)
    r = measure_compression(data, ckpt.model, ckpt.tokenizer, modes, threads)
    for mode, m in r["modes"].items():
        print(f"  {name} {mode}: {m['bits_per_byte']:.3f} bits/byte, coder overhead {100 * m['coder_overhead']:.3f}%, "
              f"{m['compress_kb_per_s']:.1f} / {m['decompress_kb_per_s']:.1f} KB/s")
    for label, opts in compared.items():
        r[label] = b = static_with(data, ckpt, threads, opts)
        print(f"  {name} static {label} ({DESCRIBED[label]}): {b['bits_per_byte']:.3f} bits/byte, "
              f"{b['compress_kb_per_s']:.1f} / {b['decompress_kb_per_s']:.1f} KB/s")
    return {"file": name, **r}


DESCRIBED = {"before": "model kernel, 64 streams", "bmm": "torch.bmm attention"}


def static_with(data: bytes, ckpt, threads: int, options: CoderOptions) -> dict:
    """Rate and speed of these options, round trip checked."""
    opts = CoderOptions(**{**vars(options), "threads": threads})
    blob, st = compress_bytes(data, ckpt.model, ckpt.tokenizer, opts)
    restored, dst = decompress_bytes(blob, ckpt.model, ckpt.tokenizer)
    assert restored == data
    return {"bits_per_byte": st.bits_per_byte, "compress_kb_per_s": st.kb_per_s, "decompress_kb_per_s": dst.kb_per_s}


def print_table(rows: list[dict], modes: list[str]) -> None:
    cols = ["file", "KB", "scorer H/ln2"] + [f"nextlab {m}" for m in modes] + (["static adj."] if "static" in modes else [])
    cols += ["gzip -9", "bzip2 -9", "xz -9e"] + [f"{m} KB/s c / d" for m in modes]
    print("\nbits per byte (lower is better); throughput in KB/s, compress / decompress\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        ms, base = r["modes"], r["baselines"]
        cells = [r["file"], f"{r['bytes'] / 1000:.0f}", f"{r['scorer_bits_per_byte']:.3f}"]
        cells += [f"{ms[m]['bits_per_byte']:.3f}" for m in modes]
        if "static" in modes:
            cells.append(f"{ms['static']['adjusted_bits_per_byte']:.1f}")
        cells += [f"{base[b]:.3f}" for b in ("gzip -9", "bzip2 -9", "xz -9e")]
        cells += [f"{ms[m]['compress_kb_per_s']:.1f} / {ms[m]['decompress_kb_per_s']:.1f}" for m in modes]
        print("| " + " | ".join(cells) + " |")
    print()
    for r in rows:
        ms, base = r["modes"], r["baselines"]
        print(f"{r['file']}: " + ", ".join(
            f"{m} {'<' if ms[m]['bits_per_byte'] < base['bzip2 -9'] else '>='} bzip2 "
            f"({100 * (1 - ms[m]['bits_per_byte'] / base['xz -9e']):+.1f}% below xz), "
            f"coder overhead {100 * ms[m]['coder_overhead']:.3f}%" for m in modes))
    for label in DESCRIBED:
        for r in (r for r in rows if label in r and "static" in r["modes"]):
            now, then = r["modes"]["static"], r[label]
            print(f"{r['file']}: static {now['bits_per_byte']:.3f} bits/byte against {then['bits_per_byte']:.3f} {label} "
                  f"({100 * (now['bits_per_byte'] / then['bits_per_byte'] - 1):+.2f}%), "
                  f"{now['compress_kb_per_s'] / then['compress_kb_per_s']:.2f}x / "
                  f"{now['decompress_kb_per_s'] / then['decompress_kb_per_s']:.2f}x the speed (compress / decompress)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--runs", default="runs/bench_compress", help="trained models are kept (and reused) here")
    ap.add_argument("--steps", type=int, default=600, help="training steps per model (batch 32 x 256 bytes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--files", default=",".join(ENGLISH + ["stdlib"]), help="which of the English files and 'stdlib'")
    ap.add_argument("--modes", default="static,adaptive")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--code-bytes", type=int, default=1_000_000)
    ap.add_argument("--before", action="store_true", help="also time the static coder as it was before the ring kernel")
    ap.add_argument("--bmm", action="store_true", help="also time the static coder with torch.bmm's attention")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data, runs = Path(args.data), Path(args.runs)
    modes = args.modes.split(",")
    compared = {label: opts for label, opts, wanted in (("before", BEFORE, args.before), ("bmm", BMM, args.bmm)) if wanted}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.files.split(","):
            if name == "stdlib":
                folder, held = code_split(Path(tmp), args.code_bytes)
                ckpt = train_model(runs / "stdlib", str(folder), args.steps, args.threads)
                rows.append(measure(f"stdlib ({len(held) / 1e6:.1f} MB held out)", held, ckpt, args.threads, modes, compared))
                continue
            folder = Path(tmp) / f"minus_{name}"
            folder.mkdir()
            (folder / "input.txt").symlink_to((data / "tinyshakespeare" / "input.txt").resolve())
            for other in ENGLISH:
                if other != name:
                    (folder / other).symlink_to((data / "canterbury" / other).resolve())
            ckpt = train_model(runs / f"minus_{Path(name).stem}", str(folder), args.steps, args.threads)
            rows.append(measure(name, (data / "canterbury" / name).read_bytes(), ckpt, args.threads, modes, compared))
    params = rows[0]["params"] if rows else 0
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"\nmodels: {', '.join(MODEL)} ({params:,} parameters), bytes tokenizer, {args.steps} steps of 32 x 256 bytes")
    print_table(rows, modes)


if __name__ == "__main__":
    main()
