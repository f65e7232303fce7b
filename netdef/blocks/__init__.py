"""Built-in blocks. Importing this package registers them all."""
from . import common, resnet  # noqa: F401
from . import yolo, yolo_heads, yolov8  # noqa: F401
from . import efficientnet, mobilenet, unet, vit  # noqa: F401
