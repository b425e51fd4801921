"""Pascal VOC detection in the devkit layout (Everingham et al., IJCV 2010).

Two box conventions appear here; every function says which one it returns:

* **devkit** (raw): the XML's 1-based *inclusive* pixel indices: a box covering pixel columns
  1..W has ``xmin=1, xmax=W``. The devkit's evaluation (``VOCevaldet``) works in this
  convention (its ``+1`` in widths and areas), so ``parse_voc_xml`` and ``voc_ground_truth``
  return it.
* **xyxy** (continuous): 0-based continuous coordinates, ``(xmin-1, ymin-1, xmax, ymax)``, so the
  same box is ``[0, W]``. ``VOCDetection`` targets use it (see ``files``); convert
  with ``devkit_to_xyxy`` / ``xyxy_to_devkit``.

The standard detection split trains on VOC2007+2012 trainval (16,551 images) and tests on
VOC2007 test (4,952 images).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ablate.data.files import first_missing, load_rgb, missing_path_error
from ablate.data.targets import check_class_names, make_target
from ablate.errors import AblateError, did_you_mean

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
DEFAULT_SETS = (("2007", "trainval"), ("2012", "trainval"))

LAYOUT = """\
<root>/                       (or point root at VOCdevkit/ itself)
  VOCdevkit/
    VOC2007/                  (one VOC<year>/ per year used)
      Annotations/<id>.xml
      JPEGImages/<id>.jpg
      ImageSets/Main/<split>.txt   (trainval.txt, test.txt, ...)"""


def devkit_to_xyxy(boxes: Any) -> np.ndarray:
    """Devkit 1-based inclusive boxes -> 0-based continuous xyxy (float64 ``[N, 4]``)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, :2] -= 1.0
    return b


def xyxy_to_devkit(boxes: Any) -> np.ndarray:
    """0-based continuous xyxy -> devkit 1-based inclusive boxes (float64 ``[N, 4]``)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, :2] += 1.0
    return b


def _text(node: ET.Element | None, tag: str, default: str | None = None) -> str | None:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None or not child.text.strip():
        return default
    return child.text.strip()


def parse_voc_xml(path: str | os.PathLike, class_names: Sequence[str] = VOC_CLASSES
                  ) -> dict[str, Any]:
    """Parse one devkit annotation file.

    Args:
        path: ``Annotations/<id>.xml``.
        class_names: the classes; an object of any other class raises ``AblateError``.
    Returns:
        dict with ``filename`` (str or None), ``width``/``height``/``depth`` (int or None when the
        ``size`` tag is missing), ``names`` (list of str), ``boxes`` (float64 ``[N, 4]`` in the
        **devkit 1-based inclusive** convention, exactly as written, floats kept), ``labels``
        (int64 ``[N]``), ``difficult`` and ``truncated`` (bool ``[N]``; a missing tag means 0).
    """
    path = Path(path)
    index = {c: i for i, c in enumerate(class_names)}
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise AblateError(f"VOC annotation not found: {path}") from None
    except ET.ParseError as e:
        raise AblateError(f"{path}: malformed VOC XML ({e})") from None

    def number(node: ET.Element | None, tag: str, what: str, default: str | None = None
               ) -> float:
        value = _text(node, tag, default)
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise AblateError(f"{path}: {what} has no valid <{tag}> (got {value!r})") from None

    size = root.find("size")
    dims = {}
    for tag in ("width", "height", "depth"):
        value = _text(size, tag)
        dims[tag] = int(number(size, tag, "image")) if value is not None else None
    names, boxes, labels, difficult, truncated = [], [], [], [], []
    for k, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        if name is None:
            raise AblateError(f"{path}: object {k} has no <name>")
        if name not in index:
            raise AblateError(f"{path}: unknown class '{name}'{did_you_mean(name, class_names)}; "
                              f"known classes: {', '.join(class_names)}")
        bb = obj.find("bndbox")
        if bb is None:
            raise AblateError(f"{path}: object {k} ('{name}') has no <bndbox>")
        what = f"object {k} ('{name}')"
        boxes.append([number(bb, t, what) for t in ("xmin", "ymin", "xmax", "ymax")])
        names.append(name)
        labels.append(index[name])
        # Some files write difficult/truncated as "0.0" or omit them: parse leniently.
        difficult.append(number(obj, "difficult", what, "0") != 0)
        truncated.append(number(obj, "truncated", what, "0") != 0)
    return {
        "filename": _text(root, "filename"),
        **dims,
        "names": names,
        "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64),
        "difficult": np.asarray(difficult, dtype=bool),
        "truncated": np.asarray(truncated, dtype=bool),
    }


def voc_xml_string(filename: str, width: int, height: int, names: Sequence[str],
                   boxes: Any, difficult: Sequence[bool], truncated: Sequence[bool] | None = None,
                   folder: str = "VOC2007", database: str = "ablate",
                   image_source: str = "generated") -> str:
    """Write an annotation in the devkit's XML format (tab-indented, like the real files).

    Args:
        filename, width, height: the image's file name and size (depth is 3).
        names: class name per object.
        boxes: ``[N, 4]`` in the **devkit 1-based inclusive** convention (integers expected).
        difficult, truncated: per-object flags (truncated defaults to all 0).
        folder, database, image_source: the ``<folder>`` and ``<source>`` fields.
    Returns:
        the XML text; ``parse_voc_xml`` reads it back.
    """
    truncated = truncated if truncated is not None else [False] * len(names)
    parts = [f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{filename}</filename>\n"
             f"\t<source>\n\t\t<database>{database}</database>\n"
             f"\t\t<annotation>ablate</annotation>\n\t\t<image>{image_source}</image>\n"
             f"\t</source>\n\t<size>\n\t\t<width>{width}</width>\n"
             f"\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
             f"\t<segmented>0</segmented>\n"]
    for name, box, diff, trunc in zip(names, boxes, difficult, truncated):
        coords = "".join(f"\t\t\t<{t}>{int(v) if float(v).is_integer() else v}</{t}>\n"
                         for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n"
                     f"\t\t<truncated>{int(trunc)}</truncated>\n"
                     f"\t\t<difficult>{int(diff)}</difficult>\n"
                     f"\t\t<bndbox>\n{coords}\t\t</bndbox>\n\t</object>\n")
    parts.append("</annotation>\n")
    return "".join(parts)


def resolve_devkit(root: str | os.PathLike) -> Path:
    """Return the ``VOCdevkit`` folder for ``root`` (its parent or the folder itself)."""
    root = Path(root)
    if not root.is_dir():
        raise missing_path_error(root, "Pascal VOC", LAYOUT)
    if (root / "VOCdevkit").is_dir():
        return root / "VOCdevkit"
    if root.name == "VOCdevkit" or any(root.glob("VOC[0-9][0-9][0-9][0-9]")):
        return root
    raise missing_path_error(root / "VOCdevkit", "Pascal VOC", LAYOUT)


def read_image_set(devkit: Path, year: str, split: str) -> tuple[Path, list[str]]:
    """Read ``VOC<year>/ImageSets/Main/<split>.txt``.

    Returns:
        ``(VOC<year> folder, ids in file order)``.
    """
    voc = devkit / f"VOC{year}"
    split_file = voc / "ImageSets" / "Main" / f"{split}.txt"
    missing = first_missing([voc, voc / "Annotations", voc / "JPEGImages",
                             voc / "ImageSets" / "Main", split_file])
    if missing is not None:
        raise missing_path_error(missing, "Pascal VOC", LAYOUT)
    # Lines are "<id>" (Main/<split>.txt) or "<id> <flag>" (per-class files): keep the id.
    try:
        text = split_file.read_text()
    except UnicodeDecodeError:
        raise AblateError(f"{split_file}: not a text file (an image-set file lists one id a "
                          "line)") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise AblateError(f"{split_file} lists no images")
    return voc, ids


def voc_ground_truth(root: str | os.PathLike, year: str = "2007", split: str = "test",
                     class_names: Sequence[str] = VOC_CLASSES
                     ) -> tuple[list[str], list[dict[str, np.ndarray]]]:
    """Ground truth of one image set for devkit-exact evaluation.

    Args:
        root: folder containing ``VOCdevkit/`` (or ``VOCdevkit`` itself).
        year, split: e.g. ``"2007"``, ``"test"``.
        class_names: the classes, in label order.
    Returns:
        ``(ids, gts)``: ids in image-set order; each gt has ``boxes`` (float64 ``[N, 4]``,
        **devkit 1-based inclusive**), ``labels`` (int64) and ``difficult`` (bool).
    """
    class_names = check_class_names(class_names)
    voc, ids = read_image_set(resolve_devkit(root), str(year), split)
    gts = []
    for image_id in ids:
        ann = parse_voc_xml(voc / "Annotations" / f"{image_id}.xml", class_names)
        gts.append({k: ann[k] for k in ("boxes", "labels", "difficult")})
    return ids, gts


class VOCDetection(torch.utils.data.Dataset):
    """Pascal VOC detection images with xyxy 0-based continuous boxes.

    All annotations are parsed at construction (a few seconds for 07+12 trainval) so that
    errors surface before training and sizes are known without decoding images.

    Args:
        root: folder containing ``VOCdevkit/`` (or ``VOCdevkit`` itself).
        sets: ``(year, split)`` pairs, concatenated in order.
        keep_difficult: keep difficult objects (flagged in ``target["difficult"]``); when False
            they are removed from the targets.
        class_names: the classes, in label order.
    """

    def __init__(self, root: str | os.PathLike,
                 sets: Sequence[tuple[str, str]] = DEFAULT_SETS,
                 keep_difficult: bool = True, class_names: Sequence[str] = VOC_CLASSES):
        self.class_names = check_class_names(class_names)
        self.keep_difficult = keep_difficult
        self.devkit = resolve_devkit(root)
        self.sets = [(str(y), str(s)) for y, s in sets]
        if not self.sets:
            raise AblateError("VOCDetection needs at least one (year, split) set")
        self.ids: list[str] = []
        self._images: list[Path] = []
        self._anns: list[dict[str, Any]] = []
        for year, split in self.sets:
            voc, ids = read_image_set(self.devkit, year, split)
            for image_id in ids:
                image = voc / "JPEGImages" / f"{image_id}.jpg"
                if not image.is_file():
                    raise missing_path_error(image, "Pascal VOC", LAYOUT)
                ann = parse_voc_xml(voc / "Annotations" / f"{image_id}.xml", self.class_names)
                if not keep_difficult:
                    keep = ~ann["difficult"]
                    ann = {**ann, **{k: ann[k][keep] for k in
                                     ("boxes", "labels", "difficult", "truncated")}}
                ann["xyxy"] = devkit_to_xyxy(ann["boxes"]).astype(np.float32)
                self.ids.append(image_id)
                self._images.append(image)
                self._anns.append(ann)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        """Path of image ``i``'s JPEG."""
        return self._images[i]

    def get_image_size(self, i: int) -> tuple[int, int] | None:
        """``(H, W)`` from the annotation's ``size`` tag (no decoding), or None if absent."""
        ann = self._anns[i]
        if ann["height"] is None or ann["width"] is None:
            return None
        return ann["height"], ann["width"]

    def get_target(self, i: int) -> dict[str, Any]:
        """Image ``i``'s target without decoding the image (``orig_size`` from the XML)."""
        ann = self._anns[i]
        size = self.get_image_size(i) or (0, 0)
        return make_target(ann["xyxy"], ann["labels"], ann["difficult"], self.ids[i], size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image = load_rgb(self._images[i])
        target = self.get_target(i)
        target["orig_size"] = (int(image.shape[1]), int(image.shape[2]))
        return image, target

    def __repr__(self) -> str:
        sets = "+".join(f"{y}{s}" for y, s in self.sets)
        return f"VOCDetection({self.devkit}, {sets}, {len(self)} images)"
