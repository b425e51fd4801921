"""Models; importing this package registers them in ``MODELS``."""

from ablate.models import darknet, inception, mobilenet, resnet, yolov3  # noqa: F401
