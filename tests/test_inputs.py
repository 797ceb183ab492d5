import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from speech.inputs import InputError, resolve_inputs


@pytest.fixture
def corpus(tmp_path):
    for name in ["a.wav", "sub/b.flac", "sub/deep/c.mp3", "notes.txt", "sub/x y ü.wav"]:
        path = tmp_path / "corpus" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path / "corpus"


def test_directory_is_walked_recursively_and_ids_are_relative(corpus):
    table = resolve_inputs([str(corpus)])
    assert sorted(table["id"].to_pylist()) == ["a.wav", "sub/b.flac", "sub/deep/c.mp3", "sub/x y ü.wav"]
    assert all(p.startswith(str(corpus)) for p in table["path"].to_pylist())


def test_glob(corpus):
    table = resolve_inputs([str(corpus / "sub" / "*.flac")])
    assert table["id"].to_pylist() == ["b.flac"]


def test_missing_input(tmp_path):
    with pytest.raises(InputError, match="not found"):
        resolve_inputs([str(tmp_path / "nothing")])


def test_directory_without_audio(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(InputError, match="no audio files"):
        resolve_inputs([str(tmp_path)])


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_manifests(tmp_path, kind):
    rows = [
        {"id": "u1", "path": "audio/1.wav", "text": "hello", "language": "en"},
        {"id": "u2", "path": "/abs/2.wav", "text": "world", "language": "en"},
    ]
    path = tmp_path / f"m.{kind}"
    if kind == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    elif kind == "csv":
        path.write_text("id,path,text,language\n" + "\n".join(f"{r['id']},{r['path']},{r['text']},en" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    table = resolve_inputs([str(path)])
    assert table["id"].to_pylist() == ["u1", "u2"]
    assert table["path"].to_pylist() == [str(tmp_path / "audio/1.wav"), "/abs/2.wav"]
    assert table["reference"].to_pylist() == ["hello", "world"]


def test_manifest_without_path_column(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"file": "a.wav"}\n')
    with pytest.raises(InputError, match="no 'path' column"):
        resolve_inputs([str(tmp_path / "m.jsonl")])


def test_manifest_empty_path_names_the_row(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav"}\n{"path": ""}\n')
    with pytest.raises(InputError, match="row 1: field 'path'"):
        resolve_inputs([str(tmp_path / "m.jsonl")])


def test_duplicate_ids_fail_before_the_job(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "x", "path": "a.wav"}\n{"id": "x", "path": "b.wav"}\n')
    with pytest.raises(InputError, match=r"duplicate ids.*'x'"):
        resolve_inputs([str(tmp_path / "m.jsonl")])


def test_id_defaults_to_path(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav"}\n')
    assert resolve_inputs([str(tmp_path / "m.jsonl")])["id"].to_pylist() == ["a.wav"]


def test_manifest_and_corpus_values_are_read_as_written(tmp_path):
    """No type or missing-value guessing: 001, 010, 1e2 and 1 are four ids; 0042, NA, null and
    N/A are text; JSON numbers become their JSON text; empty CSV cells are empty strings."""
    (tmp_path / "m.csv").write_text("id,path,text\n001,a.wav,0042\n010,b.wav,NA\n1e2,c.wav,null\n1,d.wav,N/A\n2,e.wav,\n")
    table = resolve_inputs([str(tmp_path / "m.csv")])
    assert table["id"].to_pylist() == ["001", "010", "1e2", "1", "2"]
    assert table["reference"].to_pylist() == ["0042", "NA", "null", "N/A", ""]
    (tmp_path / "m.jsonl").write_text('{"id": 1, "path": "a.wav"}\n{"id": "001", "path": "b.wav"}\n'
                                      '{"id": 1e2, "path": "c.wav", "text": "NA"}\n')
    table = resolve_inputs([str(tmp_path / "m.jsonl")])
    assert table["id"].to_pylist() == ["1", "001", "1e2"]
    assert table["reference"].to_pylist() == [None, None, "NA"]
    (tmp_path / "empty-id.csv").write_text("id,path\n001,a.wav\n,b.wav\n")
    with pytest.raises(InputError, match="row 1: field 'id' is empty"):
        resolve_inputs([str(tmp_path / "empty-id.csv")])

    from speech.text.corpus import read_corpus

    (tmp_path / "corpus.csv").write_text("id,text,seed\n001,0042,\n1,NA,7\n1e2,null,\n")
    corpus = read_corpus(str(tmp_path / "corpus.csv"))
    assert corpus["id"].to_pylist() == ["001", "1", "1e2"]
    assert corpus["text"].to_pylist() == ["0042", "NA", "null"]
    assert corpus["seed"].to_pylist() == [None, 7, None]


def test_listing_records_each_files_size_and_time(corpus):
    table = resolve_inputs([str(corpus)])
    for row in table.to_pylist():
        stat = (corpus / row["id"]).stat()
        assert row["input_size"] == stat.st_size == 1
        assert row["input_mtime"].timestamp() == pytest.approx(stat.st_mtime, abs=1e-6)


def test_a_manifest_that_is_not_a_regular_file_is_refused(tmp_path):
    (tmp_path / "m.jsonl").symlink_to("/dev/urandom")  # an endless manifest
    with pytest.raises(InputError, match="not a regular file: character device"):
        resolve_inputs([str(tmp_path / "m.jsonl")])
    os.mkfifo(tmp_path / "fifo.csv")  # no writer: opening it plainly would block forever
    with pytest.raises(InputError, match="not a regular file: FIFO"):
        resolve_inputs([str(tmp_path / "fifo.csv")])

    from speech.text.corpus import read_corpus

    with pytest.raises(InputError, match="not a regular file: character device"):
        read_corpus("/dev/urandom")
