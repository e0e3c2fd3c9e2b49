"""The demos behind ``mmreward demo --task t2i|video|edit|judge|cloth``, one module each.

The CLI finds them through the ``mmreward.demos`` entry-point group in ``pyproject.toml``, so the
core never imports this package.
"""
