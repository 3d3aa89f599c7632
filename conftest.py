"""Collection for the whole checkout: the PyTorch backend's modules (doctests) are
collected only where torch is installed; tests/ skip their torch tests with a reason."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["partspec/torch/*"]
