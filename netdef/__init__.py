"""netdef: PyTorch weights (.wts) -> TensorRT engines through the network-definition API."""
__version__ = "0.2.0"

from .errors import NetdefError  # noqa: E402,F401
