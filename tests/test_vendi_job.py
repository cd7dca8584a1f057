"""``winnow vendi``: the printed score on constructed data and on the demo corpus."""

import json
import tempfile

import numpy as np
import pytest

from winnow.pipelines import cli


def _write(path, vectors):
    path.write_text("".join(json.dumps({"id": str(i), "text": f"doc {i}", "emb": list(v)}) + "\n" for i, v in enumerate(vectors)))


@pytest.mark.parametrize("q", ["1", "0.5", "2", "inf"])
def test_orthogonal_embeddings_score_n_for_every_order(tmp_path, capsys, monkeypatch, q):
    path = tmp_path / "orthogonal.jsonl"
    _write(path, np.eye(6)[:5] * 3.0)  # 5 orthogonal vectors, not unit length: cosine kernel normalizes
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert cli.main(["vendi", "--input", str(path), "--embedding-field", "emb", "--q", q]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(5.0, rel=1e-9)
    assert not list(scratch.glob("winnow-vendi-*"))  # its result folder is removed


def test_identical_embeddings_score_one_and_bad_ones_are_counted(tmp_path, capsys):
    path = tmp_path / "same.jsonl"
    _write(path, [[1.0, 2.0, 2.0]] * 4)
    with path.open("a") as handle:
        handle.write(json.dumps({"id": "bad", "text": "x", "emb": "not a vector"}) + "\n")
    assert cli.main(["vendi", "--input", str(path), "--embedding-field", "emb"]) == 0
    captured = capsys.readouterr()
    assert float(captured.out.strip().splitlines()[-1]) == pytest.approx(1.0, rel=1e-9)
    assert "'not_numeric': 1" in captured.err


def test_a_missing_embedding_field_is_an_error_naming_it(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    _write(path, np.eye(3))
    assert cli.main(["vendi", "--input", str(path), "--embedding-field", "nope"]) == 2
    err = capsys.readouterr()
    assert "--embedding-field nope: no such field" in err.err and "fields: id, text, emb" in err.err and err.out == ""


def test_text_embeddings_of_the_demo_target(demo_corpus, capsys):
    demo_dir, counts = demo_corpus
    assert cli.main(["vendi", "--input", str(demo_dir / "target" / "*.jsonl")]) == 0
    score = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 1.0 < score < counts["target"]
