"""The benchmarks' round order and paired ratios (pure functions; no systems are run)."""

from bench.harness import format_paired, paired_ratios, schedule


def test_every_odd_round_runs_in_reverse_order():
    assert schedule(["a", "b", "c"], 3) == [
        ("a", 0), ("b", 0), ("c", 0), ("c", 1), ("b", 1), ("a", 1), ("a", 2), ("b", 2), ("c", 2),
    ]


def test_paired_ratios_compare_runs_of_the_same_round_and_skip_single_runs():
    systems = {
        "ours": {"rtfx_runs": [6.0, 9.0]},
        "loop": {"rtfx_runs": [3.0, 10.0]},
        "memory": {"rtfx_runs": [7.0]},  # ran once: no pairing
    }
    paired = paired_ratios(systems, "ours")
    assert paired == {"loop": [2.0, 0.9]}
    assert "ours / loop: 2.00, 0.90" in format_paired({"paired_ratios": paired, "repeat": 2})
    assert format_paired({"paired_ratios": paired, "repeat": 1}) == ""
