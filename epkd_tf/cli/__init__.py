"""The command-line tools, thin layers over the library: ``main`` (an EPKD run),
``study``, ``export``, ``report`` and ``data``, with what they share (flag parsing,
output-directory checks, errors to one line and an exit status) in ``common``.
``python -m epkd_tf.main`` (``.study``, ``.export``, ``.report``, ``.data``) runs them.
Library code never imports this package."""
