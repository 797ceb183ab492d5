"""Tests of the TTS text front end: normalization, validation, splitting, corpus reading, scoring."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from speech.inputs import InputError
from speech.text import TextError, check_text, normalize_text, scoring_text, split_sentences, unsayable_characters
from speech.text.corpus import read_corpus
from speech.text.score import ErrorCounts, character_error_rate, error_counts, word_error_rate
from speech.tts.frontend import piece_seed

# --- normalization and validation ----------------------------------------------------------


def test_normalize_text_collapses_whitespace_and_composes():
    assert normalize_text("  Hello \t\n  world  ") == "Hello world"
    assert normalize_text("e\u0301") == "\u00e9"  # NFC
    assert normalize_text("你好，世界。") == "你好，世界。"  # full-width punctuation kept


def test_scoring_text_ignores_case_punctuation_and_spacing():
    assert scoring_text("Hello,  WORLD!") == "hello world"
    assert scoring_text("你好，世界。") == "你好 世界"


@pytest.mark.parametrize(
    "text, message",
    [("", "empty"), ("   \t ", "empty"), ("?!... —", "nothing to say"), ("x" * 11, "over the limit of 10")],
)
def test_check_text_rejects_bad_rows(text, message):
    with pytest.raises(TextError, match=message):
        check_text(text, max_chars=10)


def test_check_text_accepts_digits_and_any_script():
    for text in ("7", "안녕", "你好", "ok."):
        check_text(text, max_chars=10)


def test_unsayable_characters_lists_letters_and_digits_once_in_order():
    assert unsayable_characters("ab1 c1!", lambda c: c in "abc") == ["1"]
    assert unsayable_characters("zx-y", lambda c: False) == ["z", "x", "y"]  # '-' is not spoken


# --- splitting -----------------------------------------------------------------------------


def test_short_text_is_one_piece():
    assert split_sentences("One. Two. Three.", 100) == ["One. Two. Three."]
    assert split_sentences("  ", 10) == []


def test_splits_at_sentence_ends_then_packs():
    text = "Hello there. How are you? I am fine, thanks; and you!"
    assert split_sentences(text, 30) == ["Hello there. How are you?", "I am fine, thanks; and you!"]
    assert split_sentences(text, 20) == ["Hello there.", "How are you?", "I am fine, thanks;", "and you!"]


def test_splits_chinese_without_spaces():
    assert split_sentences("你好。今天天气很好！我们去公园吧？好的", 8) == ["你好。", "今天天气很好！", "我们去公园吧？", "好的"]


def test_hard_cuts_a_run_longer_than_the_limit():
    assert split_sentences("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]


def test_never_cuts_inside_a_marker():
    # A cut every 12 characters would fall inside the marker (characters 8..17).
    assert split_sentences("abcdefgh[uv_break]ijkl", 12) == ["abcdefgh", "[uv_break]ij", "kl"]


@pytest.mark.parametrize("limit", [12, 25, 60])
def test_pieces_fit_and_keep_every_character(limit):
    text = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! 你好，世界。再见"
    pieces = split_sentences(text, limit)
    assert all(0 < len(p) <= limit for p in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")


def test_piece_seeds_are_deterministic_and_distinct():
    assert piece_seed(7, 0) == piece_seed(7, 0)
    seeds = {piece_seed(s, i) for s in range(5) for i in range(5)}
    assert len(seeds) == 25
    assert all(0 <= s < 2**31 for s in seeds)


# --- scoring -------------------------------------------------------------------------------


def test_character_error_rate():
    assert character_error_rate("abc", "abd") == pytest.approx(1 / 3)
    assert character_error_rate("Hello, World!", "hello world") == 0.0
    assert character_error_rate("ab", "") == 1.0
    assert character_error_rate("", "") == 0.0
    assert character_error_rate("a", "abc") == 2.0


# --- corpus --------------------------------------------------------------------------------


def test_text_file_keeps_blank_lines_as_rows(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first\n\n  \nlast\n", encoding="utf-8")
    table = read_corpus(str(path))
    assert table["text"].to_pylist() == ["first", "", "  ", "last"]
    assert table["id"].to_pylist() == ["1", "2", "3", "4"]
    assert table["seed"].null_count == 4


def test_csv_with_ids_voices_and_seeds(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text("id,text,voice,seed,speed\na,Hello,v1,3,1.5\nb,World,,,\n", encoding="utf-8")
    table = read_corpus(str(path))
    assert table.to_pylist() == [
        {"id": "a", "text": "Hello", "voice": "v1", "language": None, "seed": 3, "speed": 1.5},
        {"id": "b", "text": "World", "voice": None, "language": None, "seed": None, "speed": None},
    ]


def test_jsonl_speaker_column_and_parquet(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(json.dumps({"text": "hi", "speaker": "s", "language": "en"}) + "\n", encoding="utf-8")
    assert read_corpus(str(jsonl)).to_pylist() == [
        {"id": "1", "text": "hi", "voice": "s", "language": "en", "seed": None, "speed": None}]
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [10, 11], "text": ["a", None]}), parquet)
    assert read_corpus(str(parquet))["id"].to_pylist() == ["10", "11"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("c.csv", "id,words\n1,hi\n", "no 'text' column"),
        ("c.csv", "id,text\n1,a\n1,b\n", "duplicate ids '1'"),
        ("c.jsonl", '{"id": "", "text": "a"}\n', "row 0: field 'id' is empty"),
    ],
)
def test_bad_corpus_structure_is_an_input_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_corpus(str(path))


def test_missing_corpus(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        read_corpus(str(tmp_path / "nope.txt"))


def test_word_error_rate_and_corpus_counts():
    assert word_error_rate("the cat sat", "the bat sat") == pytest.approx(1 / 3)
    assert word_error_rate("The cat, sat!", "the cat sat") == 0.0
    assert word_error_rate("a b", "") == 1.0 and word_error_rate("", "") == 0.0
    # A corpus's rate weighs rows by their length, not a mean of row rates.
    total = error_counts("abcd", "abcd") + error_counts("ab", "")
    assert total == ErrorCounts(char_edits=2, chars=6, word_edits=1, words=2)
    assert total.cer == pytest.approx(2 / 6) and total.wer == pytest.approx(0.5)
