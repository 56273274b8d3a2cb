import pytest

from nextlab.errors import NextlabError
from nextlab.tokenizer import BPETokenizer, ByteTokenizer, CharTokenizer, load_tokenizer, save_tokenizer, train_tokenizer

TRICKY = "plain ascii\nünïcödé — “quotes” 日本語 emoji 🎉\ttabs  \x00nul \r\n<|endoftext|> end"


@pytest.mark.parametrize("kind", ["bytes", "chars", "bpe"])
def test_round_trip_and_reload(kind, tmp_path):
    corpus = ["hello world, the cat sat on the mat.\n" * 50, "def f(x):\n    return x + 1\n" * 30]
    tok = train_tokenizer(kind, corpus, bpe_vocab_size=300)
    for text in corpus + [TRICKY, ""]:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
        assert tok.decode_bytes(ids) == text.encode()
    save_tokenizer(tok, tmp_path)
    again = load_tokenizer(tmp_path)
    assert type(again) is type(tok)
    assert again.encode(TRICKY) == tok.encode(TRICKY)
    assert again.vocab_size == tok.vocab_size and again.eot_id == tok.eot_id


def test_eot_in_text_is_not_the_special_token():
    for tok in (ByteTokenizer(), CharTokenizer.train(["<|>endoftx"]), BPETokenizer.train(["abc <|endoftext|>"] * 5, 270)):
        assert tok.eot_id not in tok.encode("<|endoftext|>")


def test_chars_falls_back_to_bytes_for_unseen_characters():
    tok = CharTokenizer.train(["abc"])
    ids = tok.encode("aé")
    assert ids[0] == tok.index["a"]
    assert [i - tok.byte_base for i in ids[1:]] == list("é".encode())
    assert tok.decode(ids) == "aé"


def test_bpe_merges_reduce_length():
    text = "the cat and the hat and the bat\n" * 200
    tok = train_tokenizer("bpe", [text], bpe_vocab_size=300)
    assert len(tok.encode(text)) < len(text.encode()) / 2
    assert tok.vocab_size <= 300


def test_decode_of_broken_utf8_replaces():
    tok = ByteTokenizer()
    assert tok.decode(list("é".encode())[:1]) == "\ufffd"


def test_bad_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(NextlabError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(NextlabError, match="unknown tokenizer"):
        train_tokenizer("words", [])
