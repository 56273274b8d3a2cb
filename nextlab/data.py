"""Corpora to token memmaps, and random training windows from them.

A corpus is a text file, a folder (every file below it), a glob, or `stdlib`:
the built-in corpus, the Python standard library source of the running
interpreter (real code, on every machine; tests and bundled third-party
packages left out).

It is tokenized once into `train.bin` / `val.bin` (uint16, or uint32 for large
vocabularies) under a cache directory keyed by the files' names, sizes and
modification times and by the tokenizer. Documents are separated by the
end-of-text token.

The train/validation split is deterministic. With 20 or more documents whole
documents go to validation, chosen by a hash of their name (so adding a file
does not reshuffle the others). With fewer, each document is cut in two: the
first (1 - val_fraction) of its characters train, the rest validate, as
nanoGPT does for Shakespeare.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nextlab.config import DataConfig
from nextlab.errors import NextlabError
from nextlab.tokenizer import Tokenizer, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer

BUILTIN_CORPUS = "stdlib"
DOC_SPLIT_MIN_DOCS = 20
_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}


def cache_root() -> Path:
    return Path(os.environ.get("NEXTLAB_CACHE", Path.home() / ".cache" / "nextlab"))


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if not _STDLIB_SKIP.intersection(p.relative_to(root).parts))


def resolve_sources(spec: str) -> tuple[list[Path], Path | None]:
    """The files a data path names, sorted, and the folder names are reported relative to."""
    if spec == BUILTIN_CORPUS:
        return stdlib_files(), Path(sysconfig.get_paths()["stdlib"])
    path = Path(spec).expanduser()
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise NextlabError(f"data path {spec!r}: the glob matches no files")
        return files, None
    if path.is_file():
        return [path], path.parent
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts))
        if not files:
            raise NextlabError(f"data path {spec!r}: the folder holds no files")
        return files, path
    raise NextlabError(f"data path {spec!r}: no such file or folder")


def read_documents(spec: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, text) for every readable UTF-8 file, and the names of files skipped as not UTF-8 text.

    A single file named directly must be readable UTF-8 text: it is an error, not a skip.
    """
    files, base = resolve_sources(spec)
    docs, skipped = [], []
    for f in files:
        name = str(f.relative_to(base)) if base is not None else str(f)
        try:
            text = f.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            if len(files) == 1:
                raise NextlabError(f"{f}: not UTF-8 text") from None
            skipped.append(name)
            continue
        except OSError as e:
            raise NextlabError(f"{f}: cannot read ({e.strerror})") from None
        if text:
            docs.append((name, text))
    if not docs:
        raise NextlabError(f"data path {spec!r}: the corpus is empty (no non-empty UTF-8 text files)")
    return docs, skipped


def split_documents(docs: list[tuple[str, str]], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/validation texts (see the module docstring)."""
    if len(docs) >= DOC_SPLIT_MIN_DOCS:
        def is_val(name: str) -> bool:
            h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
            return h / 2**64 < val_fraction

        train = [t for n, t in docs if not is_val(n)]
        val = [t for n, t in docs if is_val(n)]
        if not val:
            train, val = train[:-1], train[-1:]
        return train, val
    train, val = [], []
    for _, text in docs:
        cut = int(round(len(text) * (1 - val_fraction)))
        train.append(text[:cut])
        val.append(text[cut:])
    return train, val


def _sources_signature(spec: str) -> str:
    files, _ = resolve_sources(spec)
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _encode_all(tok: Tokenizer, texts: list[str]) -> np.ndarray:
    dtype = np.uint16 if tok.vocab_size <= 2**16 else np.uint32
    pieces = []
    if tok.kind == "bpe":
        encoded = [e.ids for e in tok.hf.encode_batch(texts, add_special_tokens=False)]
    else:
        encoded = [tok.encode(t) for t in texts]
    for ids in encoded:
        pieces.append(np.asarray(ids, dtype=dtype))
        pieces.append(np.asarray([tok.eot_id], dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def _write_atomic_dir(target: Path, write) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Corpus:
    """A tokenized corpus: the tokenizer, the two splits as memmaps, and their sizes."""

    tokenizer: Tokenizer
    train: np.ndarray
    val: np.ndarray
    meta: dict

    @property
    def val_tokens_per_byte(self) -> float:
        return self.meta["val_tokens"] / max(1, self.meta["val_bytes"])


def prepare_corpus(cfg: DataConfig, tokenizer: Tokenizer | None = None, log=print) -> Corpus:
    """Tokenize `cfg.path` (cached), training a tokenizer first unless one is given."""
    sig = _sources_signature(cfg.path)
    docs = None
    root = cache_root() / "data"
    if tokenizer is None:
        tok_key = f"{sig}-{cfg.tokenizer}" + (f"{cfg.bpe_vocab_size}" if cfg.tokenizer == "bpe" else "")
        tok_dir = root / "tokenizers" / tok_key
        if cfg.tokenizer == "bytes":
            tokenizer = train_tokenizer("bytes", [])
        elif (tok_dir / "tokenizer.json").exists():
            tokenizer = load_tokenizer(tok_dir)
        else:
            docs, skipped = read_documents(cfg.path)
            log(f"training {cfg.tokenizer} tokenizer on {len(docs)} documents")
            tokenizer = train_tokenizer(cfg.tokenizer, [t for _, t in docs], cfg.bpe_vocab_size)
            _write_atomic_dir(tok_dir, lambda d: save_tokenizer(tokenizer, d))
    key = f"{sig}-{fingerprint(tokenizer)}-{cfg.val_fraction}"
    data_dir = root / "tokens" / key
    if not (data_dir / "meta.json").exists():
        if docs is None:
            docs, skipped = read_documents(cfg.path)
        train_texts, val_texts = split_documents(docs, cfg.val_fraction)
        log(f"tokenizing {len(docs)} documents from {cfg.path} ({sum(len(t) for _, t in docs) / 1e6:.1f}M chars)")
        train_ids, val_ids = _encode_all(tokenizer, train_texts), _encode_all(tokenizer, val_texts)
        meta = {
            "path": cfg.path,
            "documents": len(docs),
            "skipped_not_utf8": skipped,
            "dtype": str(train_ids.dtype),
            "train_tokens": int(train_ids.size),
            "val_tokens": int(val_ids.size),
            "train_bytes": sum(len(t.encode()) for t in train_texts),
            "val_bytes": sum(len(t.encode()) for t in val_texts),
        }

        def write(d: Path) -> None:
            train_ids.tofile(d / "train.bin")
            val_ids.tofile(d / "val.bin")
            (d / "meta.json").write_text(json.dumps(meta, indent=1))

        _write_atomic_dir(data_dir, write)
        if skipped:
            log(f"skipped {len(skipped)} files that are not UTF-8 text (e.g. {skipped[0]})")
    meta = json.loads((data_dir / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    train = np.memmap(data_dir / "train.bin", dtype=dtype, mode="r")
    val = np.memmap(data_dir / "val.bin", dtype=dtype, mode="r")
    return Corpus(tokenizer, train, val, meta)


def check_fits(corpus: Corpus, block_size: int) -> None:
    for split in ("train", "val"):
        n = len(getattr(corpus, split))
        if n < block_size + 1:
            raise NextlabError(
                f"the {split} split of {corpus.meta['path']!r} has {n} tokens, fewer than block_size + 1 = {block_size + 1}; "
                "use more data, a smaller model.block_size or another data.val_fraction"
            )


def windows(data: np.ndarray, offsets: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for windows starting at `offsets`."""
    idx = offsets.numpy()[:, None] + np.arange(block_size + 1)
    chunk = torch.from_numpy(data[idx].astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def random_offsets(data: np.ndarray, n: int, block_size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, len(data) - block_size, (n,), generator=generator)


def even_offsets(data: np.ndarray, n: int, block_size: int) -> torch.Tensor:
    """n window starts spread evenly over the split: a fixed evaluation set."""
    return torch.linspace(0, len(data) - block_size - 1, n).long()
