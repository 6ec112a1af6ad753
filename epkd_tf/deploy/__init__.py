"""Deployment: TFLite conversion, its interpreter and side-by-side timing (``tflite.py``),
the per-layer latency model (``latency.py``), and the exports of a run's models
(SavedModel for TF Serving, TFLite formats, Keras 3; ``exports.py``).

Import the submodules themselves: this package imports nothing on its own, so the budget
layer can use the TFLite primitives without loading the exports."""
