"""Models; importing this package registers them in ``MODELS``."""

from ablate.models import resnet  # noqa: F401
