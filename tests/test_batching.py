import itertools

import numpy as np
import pytest

from speech.batching import Chunk, chunk_spans, pad, plan_batches


def test_batches_respect_padded_budget_and_cover_every_index():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(1, 100, size=200)]
    batches = plan_batches(lengths, max_padded=300)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= 300 or len(batch) == 1
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)


def test_exact_bins():
    assert plan_batches([5, 1, 3, 3, 10], max_padded=9) == [[1, 2, 3], [0], [4]]


def test_item_longer_than_budget_goes_alone():
    assert plan_batches([50, 2, 2], max_padded=10) == [[1, 2], [0]]


def test_exact_lengths_never_pads():
    lengths = [4, 4, 5, 5, 5, 6]
    batches = plan_batches(lengths, max_padded=100, exact_lengths=True)
    assert batches == [[0, 1], [2, 3, 4], [5]]


def test_bad_budget_is_rejected():
    with pytest.raises(ValueError, match="max_padded"):
        plan_batches([1], 0)


def test_pad_returns_lengths_and_padding_value():
    padded, lengths = pad([np.ones(3, np.float32), np.ones(1, np.float32)], padding_value=-1.0)
    assert padded.shape == (2, 3)
    assert lengths.tolist() == [3, 1]
    assert padded[1].tolist() == [1.0, -1.0, -1.0]


def test_chunk_spans_cover_the_input_with_strides():
    chunks = chunk_spans(1000, chunk_len=300, stride_left=50, stride_right=50)
    assert chunks[0] == Chunk(0, 300, 0, 50)
    assert chunks[-1].end == 1000 and chunks[-1].right == 0
    # Kept regions (without strides) tile the input exactly once.
    kept = [(c.start + c.left, c.end - c.right) for c in chunks]
    assert kept[0][0] == 0 and kept[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(kept))


def test_chunk_spans_match_transformers_chunk_iter():
    from transformers.pipelines.automatic_speech_recognition import chunk_iter

    class Identity:  # chunk_iter only calls the feature extractor on each chunk
        sampling_rate = 16000

        def __call__(self, chunk, **kwargs):
            return {}

    for n in (1, 299, 300, 301, 1000, 1234):
        expected = [
            (item["stride"][0], item["stride"][1], item["stride"][2])
            for item in chunk_iter(np.zeros(n), Identity(), 300, 50, 40)
        ]
        got = [(c.length, c.left, c.right) for c in chunk_spans(n, 300, 50, 40)]
        assert got == expected, n


def test_strides_too_large():
    with pytest.raises(ValueError, match="must exceed"):
        chunk_spans(100, 10, 5, 5)
