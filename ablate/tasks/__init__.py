"""Tasks own their losses and evaluation; importing this package registers them."""

from ablate.tasks import classification, rcnn, yolo  # noqa: F401
