"""Segment windows, sample times and frame indices (preprocessing.windows): pure numpy."""
import numpy as np
import pytest

from preprocessing.windows import frame_indices, sample_times, segment_windows


@pytest.mark.parametrize("duration, min_last, expected", [
    (12.0, 2.5, [[0, 5], [5, 10]]),                 # 2-s tail < 2.5: dropped
    (12.0, 2.0, [[0, 5], [5, 10], [10, 12]]),       # tail exactly min_last: kept
    (10.0, 2.5, [[0, 5], [5, 10]]),                 # no tail at all
    (9.9999999, 5.0, [[0, 5], [5, 9.9999999]]),     # float noise in a container duration keeps the full window
    (4.0, 2.5, [[0, 4]]),                           # shorter than a segment: one partial window
    (1.0, 2.5, []),                                 # too short: zero windows
    (13.0, 0.0, [[0, 5], [5, 10], [10, 13]]),       # min_last 0 keeps any tail
    (0.0, 0.0, []),
])
def test_back_to_back_windows_and_the_last_partial_window(duration, min_last, expected):
    w = segment_windows(duration, 5.0, 5.0, min_last)
    assert w.shape == (len(expected), 2)
    np.testing.assert_allclose(w, np.array(expected, dtype=float).reshape(-1, 2), atol=1e-6)


def test_overlapping_windows_keep_one_partial_window_only():
    w = segment_windows(11.0, 5.0, 2.5, 1.0)
    np.testing.assert_allclose(w, [[0, 5], [2.5, 7.5], [5, 10], [7.5, 11]])
    # every later start (10.0) would lie inside [7.5, 11]: not emitted
    assert segment_windows(11.0, 5.0, 2.5, 3.6).tolist() == [[0, 5], [2.5, 7.5], [5, 10]]


def test_invalid_window_arguments_are_refused():
    with pytest.raises(ValueError, match="stride"):
        segment_windows(10, 5, 6)
    with pytest.raises(ValueError, match="stride"):
        segment_windows(10, 0, 0)


def test_sample_times_are_window_centres_of_equal_parts():
    w = np.array([[0.0, 5.0], [5.0, 7.0]])
    t = sample_times(w, 4)
    np.testing.assert_allclose(t, [[0.625, 1.875, 3.125, 4.375], [5.25, 5.75, 6.25, 6.75]])
    assert (t > w[:, :1]).all() and (t < w[:, 1:]).all()


def test_frame_indices_pick_the_frame_on_screen_for_variable_frame_rates():
    # 10 fps for 1 s, then 1 frame every 0.5 s
    ts = np.concatenate([np.arange(10) / 10, 1.0 + np.arange(4) * 0.5])
    times = np.array([[0.0, 0.05, 0.1, 0.99, 1.0, 1.49, 1.5, 99.0, -1.0]])
    assert frame_indices(ts, times).tolist() == [[0, 0, 1, 9, 10, 10, 11, 13, 0]]
    # equals a slow reference: the last frame starting at or before t
    rng = np.random.default_rng(0)
    ts = np.cumsum(rng.uniform(0.01, 0.2, 200)) - 0.01
    times = rng.uniform(0, ts[-1], (30, 8))
    ref = [[max(i for i in range(len(ts)) if ts[i] <= t + 1e-6) if t >= ts[0] else 0 for t in row] for row in times]
    assert frame_indices(ts, times).tolist() == ref
