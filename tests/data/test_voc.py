"""Pascal VOC loader: devkit XML parsing, box conventions, dataset tensors, layout errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ablate.data.datasets.voc import (VOC_CLASSES, VOCDetection, devkit_to_xyxy, parse_voc_xml,
                             voc_ground_truth, voc_xml_string, xyxy_to_devkit)
from ablate.errors import AblateError

# Shaped like VOC2007/Annotations/000005.xml: tabs, <source>, <owner>, truncated + difficult.
XML_2007 = """<annotation>
\t<folder>VOC2007</folder>
\t<filename>000005.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t\t<image>flickr</image>
\t\t<flickrid>325991873</flickrid>
\t</source>
\t<owner>
\t\t<flickrid>archintent louisville</flickrid>
\t\t<name>?</name>
\t</owner>
\t<size>
\t\t<width>500</width>
\t\t<height>375</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>chair</name>
\t\t<pose>Rear</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>263</xmin>
\t\t\t<ymin>211</ymin>
\t\t\t<xmax>324</xmax>
\t\t\t<ymax>339</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>chair</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>1</truncated>
\t\t<difficult>1</difficult>
\t\t<bndbox>
\t\t\t<xmin>5</xmin>
\t\t\t<ymin>244</ymin>
\t\t\t<xmax>67</xmax>
\t\t\t<ymax>374</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>person</name>
\t\t<pose>Left</pose>
\t\t<truncated>1</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>1</xmin>
\t\t\t<ymin>1</ymin>
\t\t\t<xmax>500</xmax>
\t\t\t<ymax>375</ymax>
\t\t</bndbox>
\t</object>
</annotation>
"""

# Shaped like some VOC2012 files: no <difficult> tag, float coordinates, <part>s, spaces.
XML_2012 = """<annotation>
  <filename>2011_003353.jpg</filename>
  <folder>VOC2012</folder>
  <object>
    <name>dog</name>
    <bndbox>
      <xmax>273.9</xmax>
      <xmin>13.5</xmin>
      <ymax>330.0</ymax>
      <ymin>22.25</ymin>
    </bndbox>
    <pose>Frontal</pose>
    <truncated>0</truncated>
    <occluded>1</occluded>
  </object>
  <object>
    <name> person </name>
    <actions><standing>1</standing></actions>
    <bndbox><xmin>100</xmin><ymin>50</ymin><xmax>180</xmax><ymax>300</ymax></bndbox>
    <part><name>head</name><bndbox><xmin>120</xmin><ymin>55</ymin><xmax>150</xmax>
      <ymax>90</ymax></bndbox></part>
    <difficult>0</difficult>
  </object>
  <size><depth>3</depth><height>333</height><width>500</width></size>
</annotation>
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parse_voc2007_xml(tmp_path):
    ann = parse_voc_xml(_write(tmp_path / "000005.xml", XML_2007))
    assert ann["filename"] == "000005.jpg"
    assert (ann["width"], ann["height"], ann["depth"]) == (500, 375, 3)
    assert ann["names"] == ["chair", "chair", "person"]
    assert ann["boxes"].dtype == np.float64
    np.testing.assert_array_equal(ann["boxes"], [[263, 211, 324, 339], [5, 244, 67, 374],
                                                 [1, 1, 500, 375]])
    np.testing.assert_array_equal(ann["labels"], [8, 8, 14])
    np.testing.assert_array_equal(ann["difficult"], [False, True, False])
    np.testing.assert_array_equal(ann["truncated"], [False, True, True])
    # The full-image box (devkit 1..500 x 1..375) is [0, 0, W, H] continuous.
    np.testing.assert_array_equal(devkit_to_xyxy(ann["boxes"]),
                                  [[262, 210, 324, 339], [4, 243, 67, 374], [0, 0, 500, 375]])
    np.testing.assert_array_equal(xyxy_to_devkit(devkit_to_xyxy(ann["boxes"])), ann["boxes"])


def test_parse_floats_missing_difficult_and_parts(tmp_path):
    ann = parse_voc_xml(_write(tmp_path / "a.xml", XML_2012))
    assert ann["names"] == ["dog", "person"]  # the <part> name "head" is not an object
    np.testing.assert_array_equal(ann["boxes"], [[13.5, 22.25, 273.9, 330.0],
                                                 [100, 50, 180, 300]])
    np.testing.assert_array_equal(devkit_to_xyxy(ann["boxes"]),
                                  [[12.5, 21.25, 273.9, 330.0], [99, 49, 180, 300]])
    np.testing.assert_array_equal(ann["labels"], [11, 14])
    np.testing.assert_array_equal(ann["difficult"], [False, False])  # missing tag -> 0
    assert (ann["width"], ann["height"]) == (500, 333)


def test_written_xml_round_trips(tmp_path):
    text = voc_xml_string("x.jpg", 50, 40, ["cat", "dog"], [(1, 1, 50, 40), (2.5, 3, 10, 12)],
                          [False, True], truncated=[True, False])
    assert "\t\t\t<xmin>1</xmin>\n" in text and "<xmin>2.5</xmin>" in text
    ann = parse_voc_xml(_write(tmp_path / "x.xml", text))
    assert (ann["filename"], ann["width"], ann["height"], ann["depth"]) == ("x.jpg", 50, 40, 3)
    np.testing.assert_array_equal(ann["boxes"], [[1, 1, 50, 40], [2.5, 3, 10, 12]])
    np.testing.assert_array_equal(ann["labels"], [7, 11])
    np.testing.assert_array_equal(ann["difficult"], [False, True])
    np.testing.assert_array_equal(ann["truncated"], [True, False])


def test_parse_errors(tmp_path):
    bad = _write(tmp_path / "bad.xml", XML_2007.replace("<name>person</name>",
                                                        "<name>persn</name>"))
    with pytest.raises(AblateError, match=r"bad\.xml.*unknown class 'persn'.*did you mean "
                                          r"'person'"):
        parse_voc_xml(bad)
    with pytest.raises(AblateError, match="malformed"):
        parse_voc_xml(_write(tmp_path / "m.xml", XML_2007[:300]))
    with pytest.raises(AblateError, match="xmax"):
        parse_voc_xml(_write(tmp_path / "c.xml", XML_2007.replace("<xmax>324</xmax>", "")))
    with pytest.raises(AblateError, match="difficult"):
        parse_voc_xml(_write(tmp_path / "d.xml",
                             XML_2007.replace("<difficult>1<", "<difficult>yes<")))
    with pytest.raises(AblateError, match="not found"):
        parse_voc_xml(tmp_path / "missing.xml")


def _obj(name, box, difficult=None):
    tag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    x0, y0, x1, y1 = box
    return (f"<object><name>{name}</name><truncated>0</truncated>{tag}<bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def make_devkit(root: Path) -> dict:
    """A tiny devkit: VOC2007 trainval (2 images) + test (1), VOC2012 trainval (1)."""
    spec = {
        ("2007", "000005"): (40, 30, [("chair", (1, 1, 40, 30), 0), ("dog", (5, 6, 20, 25), 1)]),
        ("2007", "000007"): (32, 48, [("car", (2.5, 3, 31, 47), None)]),
        ("2007", "000001"): (20, 20, [("person", (3, 4, 10, 12), 0)]),
        ("2012", "2008_000002"): (24, 16, []),
    }
    sets = {("2007", "trainval"): ["000005", "000007"], ("2007", "test"): ["000001"],
            ("2012", "trainval"): ["2008_000002"]}
    for (year, image_id), (w, h, objs) in spec.items():
        voc = root / "VOCdevkit" / f"VOC{year}"
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (200, 10, 30)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(_obj(*o) for o in objs)
        _write(voc / "Annotations" / f"{image_id}.xml",
               f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width>"
               f"<height>{h}</height><depth>3</depth></size>{body}</annotation>")
    for (year, split), ids in sets.items():
        _write(root / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main" / f"{split}.txt",
               "".join(f"{i}\n" for i in ids))
    return spec


def list_full_trainval(root: Path) -> None:
    """List VOC 2007 trainval's 5,011 ids in the devkit at ``root``: a dry run reads only the
    list, and a full-scale recipe needs at least one global batch of images an epoch."""
    path = root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    path.write_text("".join(f"{i:06d}\n" for i in range(5011)))


def test_dataset_tensors(tmp_path):
    make_devkit(tmp_path)
    ds = VOCDetection(tmp_path)
    assert ds.ids == ["000005", "000007", "2008_000002"]
    assert ds.class_names == VOC_CLASSES and len(ds) == 3
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert abs(int(image[0].float().mean()) - 200) <= 2 and int(image[1].float().mean()) < 30
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert torch.equal(target["boxes"], torch.tensor([[0., 0, 40, 30], [4, 5, 20, 25]]))
    assert target["labels"].tolist() == [8, 11]
    assert target["difficult"].tolist() == [False, True]
    assert target["image_id"] == "000005" and target["orig_size"] == (30, 40)
    image, target = ds[1]
    assert image.shape == (3, 48, 32)
    assert torch.equal(target["boxes"], torch.tensor([[1.5, 2, 31, 47]]))
    assert target["difficult"].tolist() == [False]
    image, target = ds[2]  # an image without objects
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert ds.get_image_size(2) == (16, 24) and ds.get_target(1)["orig_size"] == (48, 32)

    easy = VOCDetection(tmp_path / "VOCdevkit", sets=[("2007", "trainval")],
                        keep_difficult=False)
    assert easy.ids == ["000005", "000007"]
    assert easy[0][1]["labels"].tolist() == [8]


def test_ground_truth_is_devkit_convention(tmp_path):
    make_devkit(tmp_path)
    ids, gts = voc_ground_truth(tmp_path, "2007", "trainval")
    assert ids == ["000005", "000007"]
    assert gts[0]["boxes"].dtype == np.float64
    np.testing.assert_array_equal(gts[0]["boxes"], [[1, 1, 40, 30], [5, 6, 20, 25]])
    np.testing.assert_array_equal(gts[0]["difficult"], [False, True])  # kept, flagged
    np.testing.assert_array_equal(gts[1]["boxes"], [[2.5, 3, 31, 47]])
    np.testing.assert_array_equal(gts[1]["labels"], [6])


def test_custom_class_names(tmp_path):
    make_devkit(tmp_path)
    ds = VOCDetection(tmp_path, sets=[("2007", "test")], class_names=("person", "cat"))
    assert ds.class_names == ("person", "cat") and ds[0][1]["labels"].tolist() == [0]
    with pytest.raises(AblateError, match=r"000005\.xml.*unknown class 'chair'"):
        VOCDetection(tmp_path, sets=[("2007", "trainval")], class_names=("person", "cat"))


@pytest.mark.parametrize("remove, missing", [
    ("VOCdevkit", "VOCdevkit"),
    ("VOCdevkit/VOC2012", "VOCdevkit/VOC2012"),
    ("VOCdevkit/VOC2007/JPEGImages", "VOCdevkit/VOC2007/JPEGImages"),
    ("VOCdevkit/VOC2007/ImageSets/Main/trainval.txt",
     "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt"),
    ("VOCdevkit/VOC2007/JPEGImages/000007.jpg", "VOCdevkit/VOC2007/JPEGImages/000007.jpg"),
    ("VOCdevkit/VOC2007/Annotations/000007.xml", "VOCdevkit/VOC2007/Annotations/000007.xml"),
])
def test_missing_paths_are_named(tmp_path, remove, missing):
    make_devkit(tmp_path)
    target = tmp_path / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(AblateError) as err:
        VOCDetection(tmp_path)
    assert str(tmp_path / missing) in str(err.value)


def test_missing_root_spells_out_layout(tmp_path):
    with pytest.raises(AblateError) as err:
        VOCDetection(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg
    for part in ("VOCdevkit/", "VOC2007/", "Annotations/", "JPEGImages/", "ImageSets/Main/"):
        assert part in msg
    with pytest.raises(AblateError, match=str(tmp_path / "VOCdevkit")):
        VOCDetection(tmp_path)  # exists but is empty
