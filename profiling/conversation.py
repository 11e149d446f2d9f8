"""One vector for a chat: the last user turn weighs most, earlier turns still count."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

ASSISTANT_SHARE = 0.5


def turn_weights(roles: Sequence[str], decay: float = 0.7) -> npt.NDArray[np.float64]:
    """Weight 1 for the last user turn, decay^steps for earlier turns, halved for non-user turns."""
    last_user = max((i for i, r in enumerate(roles) if r == "user"), default=len(roles) - 1)
    weights = np.zeros(len(roles))
    for i, role in enumerate(roles):
        if i > last_user:
            continue
        weights[i] = decay ** (last_user - i) * (1.0 if role == "user" else ASSISTANT_SHARE)
    return weights


def conversation_vector(turn_vectors: npt.NDArray[np.float32], roles: Sequence[str]) -> npt.NDArray[np.float32]:
    combined = turn_weights(roles) @ turn_vectors
    norm = float(np.linalg.norm(combined))
    return (combined / norm if norm > 0 else combined).astype(np.float32)
