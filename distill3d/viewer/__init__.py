"""The browser viewer (viser): look at any run folder, or watch a run form while it trains.

- ``run_content``: what a run folder shows (Gaussians, a mesh or a density field, and its cameras);
- ``browser_camera``: the browser's camera as ``Cameras``, and our renders as displayable images;
- ``server``: the viser server (+Z up, world axes, training cameras, controls, status panel);
- ``live``: the watcher of the training loop behind ``--viewer``.

viser is an optional extra (``pip install -e '.[viewer]'``); ``require_viser`` says so in one line.
"""
