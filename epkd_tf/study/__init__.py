"""The compression study: pruning only vs distillation only vs both, at equal compression,
with model-comparison metrics (``python -m epkd_tf.study``; docs/study.md)."""
