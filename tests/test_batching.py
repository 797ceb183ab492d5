import itertools

import numpy as np
import pytest

from speech.batching import Chunk, check_batches, chunk_spans, pad, plan_batches, plan_windows, run_batches, run_planned


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


def test_planned_windows_are_plan_batches_over_first_windows_first():
    costs = [[7, 3], [5], [3, 3, 2]]
    batches = plan_windows(costs, max_padded=10)
    # Pairs ordered (window, utterance): (0,0) 7, (1,0) 5, (2,0) 3, (0,1) 3, (2,1) 3, (2,2) 2.
    pairs = [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (2, 2)]
    assert batches == [[pairs[i] for i in b] for b in plan_batches([7, 5, 3, 3, 3, 2], max_padded=10)]
    check_batches([2, 1, 3], batches)  # every window once
    # One window per utterance: exactly plan_batches, utterance k as index k.
    assert plan_windows([[4], [4], [5]], 100, exact_lengths=True) == [[(0, 0), (1, 0)], [(2, 0)]]


def test_planned_windows_by_rank_decode_window_k_of_all_before_k_plus_1():
    costs = [[30] * 3, [30], [30] * 2]
    batches = plan_windows(costs, max_padded=60, by_rank=True)
    assert batches == [[(0, 0), (1, 0)], [(2, 0)], [(0, 1), (2, 1)], [(0, 2)]]
    # Without ranks the same costs fill every batch, first windows first.
    assert plan_windows(costs, max_padded=60) == [[(0, 0), (1, 0)], [(2, 0), (0, 1)], [(2, 1), (0, 2)]]


def test_check_batches_refuses_a_plan_missing_or_repeating_a_window():
    with pytest.raises(ValueError, match="not each of"):
        check_batches([2], [[(0, 0)]])
    with pytest.raises(ValueError, match="not each of"):
        check_batches([1], [[(0, 0)], [(0, 0)]])


def test_run_planned_runs_the_given_batches_and_reports_their_padded_length():
    inputs = [[np.ones(3), np.ones(5)], [np.ones(2)]]
    calls = []

    def forward(arrays):
        calls.append([len(a) for a in arrays])
        return [len(a) * 10 for a in arrays]

    outputs, computed = run_planned(inputs, [[(0, 1), (1, 0)], [(0, 0)]], forward)
    assert calls == [[5, 2], [3]]
    assert outputs == {(0, 1): 50, (1, 0): 20, (0, 0): 30}
    assert computed == {(0, 1): 5, (1, 0): 5, (0, 0): 3}
    flat, cost = run_batches([np.ones(3), np.ones(5), np.ones(2)], 6, forward)
    assert flat == [30, 50, 20] and cost == [3, 5, 3]  # batches [2, 3] and [5]


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
