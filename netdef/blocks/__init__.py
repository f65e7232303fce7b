"""Built-in blocks. Importing this package registers them all."""
from . import common, resnet  # noqa: F401
from . import yolo, yolov8  # noqa: F401
from . import efficientnet, mobilenet, unet, vit  # noqa: F401
