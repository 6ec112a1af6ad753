"""The teacher never changes during a run: its logits on the un-augmented training split
are computed once and travel with the examples (``Data.train(teacher_logits=...)``), so a
distillation step runs only the student."""
from __future__ import annotations

from typing import Optional

import numpy as np

import epkd_tf  # noqa: F401
import tf_keras


def teacher_logits_for(teacher: tf_keras.Model, data) -> Optional[np.ndarray]:
    """``teacher``'s logits on every training example in file order (float32, in memory:
    examples x classes, 2.4 MB for MNIST), or None when the data cannot carry them
    (augmented or streamed training split, e.g. CIFAR or ImageNet recipes: the teacher must
    see each augmented image, so it runs per batch)."""
    if not data.can_pair_teacher_logits:
        return None
    logits = teacher.predict(data.train_eval(), verbose=0)
    return np.asarray(logits, np.float32)
