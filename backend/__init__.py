"""Image2Points backend: the PyTorch service (server, CLI) and the ML code (model, data)."""

__version__ = "0.1.0"
