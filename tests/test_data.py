import numpy as np
import pytest
import torch

from nextlab.config import DataConfig
from nextlab.data import prepare_corpus, random_offsets, read_documents, split_documents, windows
from nextlab.errors import NextlabError
from nextlab.tokenizer import CharTokenizer


def test_single_file_split_and_cache(corpus_file):
    cfg = DataConfig(path=str(corpus_file), tokenizer="chars")
    a = prepare_corpus(cfg, log=lambda *x: None)
    text = corpus_file.read_text()
    cut = round(len(text) * 0.9)
    assert a.tokenizer.decode(a.train.tolist()) == text[:cut]  # EOT decodes to nothing
    assert a.tokenizer.decode(a.val.tolist()) == text[cut:]
    assert a.train[-1] == a.tokenizer.eot_id and a.train.dtype == np.uint16
    messages = []
    b = prepare_corpus(cfg, log=messages.append)
    assert messages == []  # cached: no tokenizer training, no tokenizing
    assert np.array_equal(a.train, b.train)


def test_folder_split_is_by_document_and_stable(tmp_path):
    for i in range(40):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"document number {i}\n" * 5)
    (tmp_path / "binary.bin").write_bytes(b"\xff\xfe\x00bad")
    docs, skipped = read_documents(str(tmp_path))
    assert len(docs) == 40 and skipped == ["binary.bin"]
    train, val = split_documents(docs, 0.2)
    assert len(train) + len(val) == 40 and 0 < len(val) < 20
    train2, val2 = split_documents(docs[:-1], 0.2)  # dropping one document moves no other
    assert set(val2) <= set(val)


def test_glob_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("aaa")
    (tmp_path / "b.md").write_text("bbb")
    docs, _ = read_documents(str(tmp_path / "*.txt"))
    assert [n for n, _ in docs] == [str(tmp_path / "a.txt")]
    with pytest.raises(NextlabError, match="no such file or folder"):
        read_documents(str(tmp_path / "missing.txt"))
    with pytest.raises(NextlabError, match="matches no files"):
        read_documents(str(tmp_path / "*.py"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(NextlabError, match="empty"):
        read_documents(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(NextlabError, match="latin1.txt: not UTF-8"):
        read_documents(str(tmp_path / "latin1.txt"))


def test_bytes_tokenizer_reads_any_file(tmp_path):
    """Byte-level training takes any bytes, exactly (issue 18); the text tokenizers keep the clear error."""
    data = bytes(range(256)) * 4 + b"\xff\xfe\x00"
    (tmp_path / "blob.bin").write_bytes(data)
    corpus = prepare_corpus(DataConfig(path=str(tmp_path / "blob.bin"), tokenizer="bytes"), log=lambda *x: None)
    tok = corpus.tokenizer
    assert tok.decode_bytes(corpus.train.tolist()) + tok.decode_bytes(corpus.val.tolist()) == data
    assert corpus.meta["train_bytes"] + corpus.meta["val_bytes"] == len(data)
    with pytest.raises(NextlabError, match="blob.bin: not UTF-8"):
        prepare_corpus(DataConfig(path=str(tmp_path / "blob.bin"), tokenizer="chars"), log=lambda *x: None)
    (tmp_path / "a.txt").write_text("text")
    docs, skipped = read_documents(str(tmp_path), any_bytes=True)  # in a folder too: nothing skipped
    assert skipped == [] and {n for n, _ in docs} == {"a.txt", "blob.bin"}


def test_large_vocab_uses_uint32(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("".join(chr(0x10000 + i) for i in range(70000)))  # 70000 distinct characters
    corpus = prepare_corpus(DataConfig(path=str(path), tokenizer="chars"), log=lambda *x: None)
    assert corpus.tokenizer.vocab_size > 2**16 and corpus.train.dtype == np.uint32


def test_stdlib_builtin_corpus():
    docs, _ = read_documents("stdlib")
    names = [n for n, _ in docs]
    assert "os.py" in names and not any(n.startswith("test/") for n in names)


def test_windows_are_seeded_next_token_pairs():
    data = np.arange(100, dtype=np.uint16)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    o1, o2 = random_offsets(data, 5, 10, g1), random_offsets(data, 5, 10, g2)
    assert torch.equal(o1, o2)
    x, y = windows(data, o1, 10)
    assert x.shape == (5, 10) and torch.equal(y, x + 1)


def test_char_tokenizer_small():
    assert CharTokenizer.train(["ba"]).chars == ["a", "b"]
