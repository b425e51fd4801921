"""Input pipelines: what happens to an item between its dataset and the model (transforms,
collates, the device loaders), for classification (in memory, ImageNet folders) and detection
(YOLO, R-CNN)."""
