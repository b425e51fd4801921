"""COCO loader: contiguous labels, xywh -> xyxy, crowd and degenerate boxes, empty images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ablate.data.datasets.coco import COCODetection
from ablate.errors import AblateError

CATEGORIES = [{"id": 7, "name": "toaster", "supercategory": "appliance"},
              {"id": 1, "name": "person", "supercategory": "person"},
              {"id": 3, "name": "car", "supercategory": "vehicle"}]
IMAGES = [{"id": 42, "file_name": "000000000042.jpg", "width": 64, "height": 48},
          {"id": 9, "file_name": "000000000009.jpg", "width": 32, "height": 40},
          {"id": 100, "file_name": "000000000100.jpg", "width": 20, "height": 10},
          {"id": 7, "file_name": "000000000007.jpg", "width": 16, "height": 16}]
ANNOTATIONS = [
    {"id": 1, "image_id": 42, "category_id": 7, "bbox": [10.5, 20.25, 30, 12], "area": 360,
     "iscrowd": 0},
    {"id": 2, "image_id": 42, "category_id": 1, "bbox": [0, 0, 64, 48], "area": 3072,
     "iscrowd": 1},
    {"id": 3, "image_id": 42, "category_id": 3, "bbox": [50, 40, 20, 10], "area": 200,
     "iscrowd": 0},  # overhangs the border: clipped to [50, 40, 64, 48]
    {"id": 4, "image_id": 9, "category_id": 1, "bbox": [3, 4, 0.5, 10], "area": 5,
     "iscrowd": 0},  # degenerate under min_size=1
    {"id": 5, "image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12,
     "iscrowd": 0},
    {"id": 6, "image_id": 7, "category_id": 1, "bbox": [2, 2, 8, 8], "area": 64,
     "iscrowd": 1},  # the image's only box is a crowd region
]


def make_coco(root: Path, split: str = "val2017") -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir()
    for info in IMAGES:
        Image.new("RGB", (info["width"], info["height"]), (0, 250, 0)).save(
            root / split / info["file_name"])
    data = {"images": IMAGES, "annotations": ANNOTATIONS, "categories": CATEGORIES}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def make_coco_train_val(root: Path) -> Path:
    """``make_coco`` with the same images as train2017 and val2017 (a tree studies plan on)."""
    make_coco(root, "val2017")
    return make_coco(root, "train2017")


def test_labels_boxes_and_crowd(tmp_path, capsys):
    ds = COCODetection(make_coco(tmp_path), "val2017")
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced
    assert ds.cat_ids == [1, 3, 7] and ds.class_names == ("person", "car", "toaster")
    assert ds.cat_id_to_label == {1: 0, 3: 1, 7: 2}
    assert ds.ids == [7, 9, 42, 100]  # sorted; images without boxes are kept
    target = ds.get_target(ds.ids.index(42))
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert torch.equal(target["boxes"], torch.tensor([[10.5, 20.25, 40.5, 32.25],
                                                      [50, 40, 64, 48]]))
    assert target["labels"].tolist() == [2, 1]  # toaster, car; the crowd person is dropped
    assert target["difficult"].tolist() == [False, False]
    assert target["iscrowd"].tolist() == [False, False]
    assert target["image_id"] == 42 and target["orig_size"] == (48, 64)

    target = ds.get_target(ds.ids.index(9))  # the 0.5 px wide box is dropped
    assert torch.equal(target["boxes"], torch.tensor([[1., 2, 4, 6]]))
    assert target["labels"].tolist() == [1]
    for image_id in (7, 100):
        target = ds.get_target(ds.ids.index(image_id))
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_getitem_decodes_rgb(tmp_path):
    ds = COCODetection(make_coco(tmp_path), "val2017")
    image, target = ds[ds.ids.index(9)]
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 32)
    assert target["orig_size"] == (40, 32)
    assert int(image[1].float().mean()) > 240 and int(image[0].float().mean()) < 10


def test_keep_crowd_min_size_skip_empty(tmp_path):
    root = make_coco(tmp_path)
    keep = COCODetection(root, "val2017", remove_crowd=False, min_size=0)
    target = keep.get_target(keep.ids.index(42))
    assert target["labels"].tolist() == [2, 0, 1]
    assert target["iscrowd"].tolist() == [False, True, False]
    assert target["difficult"].tolist() == [False, True, False]  # crowd = ignored
    assert torch.equal(target["boxes"][1], torch.tensor([0., 0, 64, 48]))
    target = keep.get_target(keep.ids.index(9))
    assert torch.equal(target["boxes"], torch.tensor([[3, 4, 3.5, 14], [1, 2, 4, 6]]))

    train = COCODetection(root, "val2017", skip_empty=True)
    assert train.ids == [9, 42]  # 7 held only a crowd box, 100 nothing
    assert COCODetection(root, "val2017", skip_empty=True, remove_crowd=False).ids == [7, 9, 42]
    assert COCODetection(root, "val2017", min_size=5, skip_empty=True).ids == [42]


def test_ann_file_override(tmp_path):
    root = make_coco(tmp_path)
    moved = tmp_path / "elsewhere.json"
    (root / "annotations" / "instances_val2017.json").rename(moved)
    ds = COCODetection(root, "val2017", ann_file=moved)
    assert len(ds) == 4 and ds.ann_file == moved


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(AblateError) as err:
        COCODetection(tmp_path / "coco", "train2017")
    assert str(tmp_path / "coco") in str(err.value) and "instances_<split>.json" in str(err.value)
    root = make_coco(tmp_path / "c")
    with pytest.raises(AblateError, match=str(root / "annotations" / "instances_train2017.json")):
        COCODetection(root, "train2017")
    (root / "annotations" / "instances_train2017.json").write_text("{}")
    with pytest.raises(AblateError, match=str(root / "train2017")):
        COCODetection(root, "train2017")
    (root / "val2017" / "000000000009.jpg").unlink()
    ds = COCODetection(root, "val2017")
    with pytest.raises(AblateError, match="000000000009.jpg"):
        ds[ds.ids.index(9)]


def test_malformed_annotations(tmp_path):
    root = make_coco(tmp_path)
    ann = root / "annotations" / "instances_val2017.json"
    ann.write_text("{not json")
    with pytest.raises(AblateError, match="not a COCO annotation file"):
        COCODetection(root, "val2017")
    data = {"images": IMAGES, "annotations": ANNOTATIONS, "categories": CATEGORIES[1:]}
    ann.write_text(json.dumps(data))
    with pytest.raises(AblateError, match=r"unknown category_id\(s\) \[7\]"):
        COCODetection(root, "val2017")


@pytest.mark.parametrize("field, value, message", [
    ("bbox", [1, 2, 3], "annotation 5 has no bbox of four numbers (got [1, 2, 3])"),
    ("bbox", "1,2,3,4", "annotation 5 has no bbox of four numbers (got '1,2,3,4')"),
    ("width", "wide", "image 9 has no numeric width and height"),
])
def test_malformed_boxes_and_sizes_name_the_file_and_item(tmp_path, field, value, message):
    root = make_coco(tmp_path)
    ann = root / "annotations" / "instances_val2017.json"
    images = [dict(i) for i in IMAGES]
    anns = [dict(a) for a in ANNOTATIONS]
    if field == "bbox":
        anns[4]["bbox"] = value
    else:
        images[1]["width"] = value
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": CATEGORIES}))
    ds = COCODetection(root, "val2017")
    with pytest.raises(AblateError) as e:
        for i in range(len(ds)):
            ds.get_target(i)
    assert str(e.value) == f"{ann}: {message}"
