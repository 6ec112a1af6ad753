"""Installs epkd_tf: pruning + knowledge distillation for TensorFlow / Keras 2."""
from setuptools import find_packages, setup

setup(
    name="epkd_tf",
    version="0.2.0",
    description="EPKD: evolutionary pruning and knowledge distillation for tf_keras models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["epkd_tf", "epkd_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow==2.21.*",
        "tf-keras==2.21.*",
        # 0.8.0 pins numpy<2; 0.8.1 is the first release that works with TF 2.21.
        "tensorflow-model-optimization>=0.8.1",
        "tensorflow-datasets>=4.9",
        # store_as_tfds_dataset (the offline import route) needs it.
        "importlib_resources",
        "absl-py",
        "numpy",
        "pandas",
        "scipy",
        # TF 2.21 no longer depends on tensorboard; the TensorBoard callback needs it.
        "tensorboard",
        # The LiteRT interpreter replaces the deprecated tf.lite.Interpreter.
        "ai-edge-litert",
        # Plots of the study and run reports (PNG, Agg backend).
        "matplotlib",
    ],
    # pytest-xdist: the suite runs on two processes (pytest.ini), most of its time is
    # single-threaded subprocess start-up and graph building.
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3"]},
    # The command-line tools (epkd_tf.cli); `python -m epkd_tf.main` (.study, .export,
    # .report, .data) runs the same functions.
    entry_points={"console_scripts": [
        "epkd = epkd_tf.cli.main:run",
        "epkd-study = epkd_tf.cli.study:run",
        "epkd-export = epkd_tf.cli.export:run",
        "epkd-report = epkd_tf.cli.report:run",
        "epkd-data = epkd_tf.cli.data:run",
    ]},
)
