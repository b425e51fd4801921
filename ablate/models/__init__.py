"""Models; importing this package registers them in ``MODELS``."""

from ablate.models import darknet, faster_rcnn, inception, mobilenet, resnet, yolov3  # noqa: F401
