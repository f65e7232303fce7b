"""Built-in blocks. Importing this package registers them all."""
from . import common, resnet  # noqa: F401
from . import yolo  # noqa: F401
