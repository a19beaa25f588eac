"""The scheduler's decode batch hands its samplers logits shifted by their maximum, not
log-probabilities: the same choices, without mlx-lm's per-step logsumexp over the vocabulary."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.generate import StopSequences
from mlx_lm.sample_utils import greedy_sampler

from pensieve.engine.batching import _ShiftedLogitsBatch

# Large enough that exp of the unshifted logits would overflow float32.
LOGITS = mx.array([[1000.0, 1003.0, 999.0, 1001.5], [-4.0, 2.0, 7.5, 7.0]])


class _FixedLogits(nn.Module):
    """A model whose next-token logits are LOGITS whatever it reads."""

    def __call__(self, inputs: mx.array, cache: object = None) -> mx.array:
        return mx.broadcast_to(LOGITS[:, None, :], (inputs.shape[0], 1, LOGITS.shape[1]))


def test_samplers_see_logits_shifted_to_a_maximum_of_zero() -> None:
    seen: list[np.ndarray] = []

    def recording(shifted: mx.array) -> mx.array:
        seen.append(np.array(shifted))
        return greedy_sampler(shifted)

    batch = _ShiftedLogitsBatch(
        _FixedLogits(), uids=[0, 1], inputs=mx.array([5, 6]), prompt_cache=[], tokens=[[], []],
        samplers=[recording, recording], fallback_sampler=greedy_sampler, logits_processors=[[], []],
        stop_sequences=[StopSequences(), StopSequences()], max_tokens=[3, 3],
    )
    for _ in range(2):
        assert [response.token for response in batch.next()] == [1, 2]  # each row's largest logit
    assert len(seen) == 3  # the step the batch starts with, then one per next()
    expected = np.array(LOGITS) - np.array(LOGITS).max(axis=-1, keepdims=True)
    for shifted in seen:
        np.testing.assert_allclose(shifted, expected)
        assert np.isfinite(np.exp(shifted)).all()
