"""FashionScenes: a small generated detection dataset built from Fashion-MNIST.

It stands in for VOC/COCO where there is no GPU or no real dataset. Each scene is a textured
background (random colour gradient, faint stripes and blobs, noise) of random size in
``[min_size, max_size]`` per side, with 1-6 colourised Fashion-MNIST items (about 20-80 px, random
aspect) pasted at random positions; later items occlude earlier ones. Boxes are tight around the
item's *visible* pixels (upscaled intensity > ``MASK_THRESHOLD``) in the final scene; items
less than half visible or under 12 px on a side are ``difficult``; items less than 10 % visible
are dropped. Train scenes draw only from Fashion-MNIST's train split, test scenes only from its
test split.

One set of JPEGs is described twice: in the VOC devkit layout
(``VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/{train,trainval,test}.txt}``) and in
the COCO layout (``annotations/instances_{train,test}.json`` with ``train/``, ``test/`` holding
hard links to the same files), so ``VOCDetection`` and ``COCODetection`` read it unchanged.
Every scene has its own RNG seeded by ``(seed, split, index)``. Boxes depend only on integer
arithmetic (PIL's fixed-point resize), so they are identical everywhere; the files are
byte-identical for the same seed on the same platform and library versions.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ablate.data.datasets import fashion_mnist
from ablate.data.datasets.coco import COCODetection
from ablate.data.files import file_lock
from ablate.data.datasets.voc import VOCDetection, voc_xml_string
from ablate.errors import AblateError

CLASSES = fashion_mnist.CLASSES
VERSION = 1
SPLITS = {"train": 0, "test": 1}  # split -> RNG stream id (and Fashion-MNIST split)
ITEM_SIDE = (20.0, 80.0)
MAX_OBJECTS = 6
MASK_THRESHOLD = 51  # uint8 intensity (0.2) above which an upscaled pixel belongs to the item
ALPHA_GAIN = 2.5  # alpha = min(1, 2.5 * intensity): opaque from intensity 0.4 up
DIFFICULT_VISIBLE, DROP_VISIBLE, DIFFICULT_MIN_SIDE = 0.5, 0.1, 12
_OURS = ("VOCdevkit", "annotations", "train", "test")  # what a (re)build owns in out_dir
DEFAULTS = {"num_train": 2000, "num_test": 500, "seed": 0, "min_size": 96, "max_size": 192}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Float32 ``[3, h, w]`` background: dark-to-mid gradient, stripes, blobs and noise.

    Channel-first because numpy broadcasts over a trailing axis of 3 slowly.
    """
    corners = np.array([colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.7),
                                            rng.uniform(0.1, 0.55)) for _ in range(4)],
                       dtype=np.float32)[:, :, None, None] * 255
    tx = np.linspace(0, 1, w, dtype=np.float32)[None, None]
    ty = np.linspace(0, 1, h, dtype=np.float32)[None, :, None]
    top = corners[0] + tx * (corners[1] - corners[0])
    bg = top + ty * (corners[2] + tx * (corners[3] - corners[2]) - top)
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    # Faint stripes so that "flat background" is not a shortcut for the detector;
    # sin(a + b) = sin a cos b + cos a sin b keeps the 2-D wave an outer product (fast).
    theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.04, 0.25), rng.uniform(0, 6.3)
    ax, by = freq * np.cos(theta) * xs + phase, freq * np.sin(theta) * ys
    wave = np.sin(by)[:, None] * np.cos(ax)[None] + np.cos(by)[:, None] * np.sin(ax)[None]
    tint = (rng.uniform(0, 12) * rng.uniform(0.5, 1, 3)).astype(np.float32)
    bg += tint[:, None, None] * wave.astype(np.float32)
    for _ in range(int(rng.integers(0, 4))):  # soft blobs: separable gaussians
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 50)
        gx = np.exp(-(xs - cx) ** 2 / (2 * r * r)).astype(np.float32)
        gy = np.exp(-(ys - cy) ** 2 / (2 * r * r)).astype(np.float32)
        amp = rng.uniform(-25, 25, 3).astype(np.float32)
        bg += amp[:, None, None] * (gy[:, None] * gx[None])
    # Uniform noise (cheaper to draw than gaussian; it only needs to break flat regions).
    noise = rng.random((3, h, w), dtype=np.float32) - np.float32(0.5)
    bg += noise * np.float32(rng.uniform(3, 15))
    return bg


def _to_hwc_uint8(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(1, 2, 0))


def render_scene(images: np.ndarray, labels: np.ndarray, seed: int, split: str, index: int,
                 min_size: int = 96, max_size: int = 192, with_background: bool = False
                 ) -> dict[str, Any]:
    """Render one scene (deterministic in ``(seed, split, index)``).

    Args:
        images, labels: the Fashion-MNIST pool of ``split`` (uint8 ``[N, 28, 28]``, ``[N]``).
        seed, split, index: identify the scene; ``split`` is ``"train"`` or ``"test"``.
        min_size, max_size: range of the scene's width and height.
        with_background: also return the background alone (for tests and debugging).
    Returns:
        dict with ``image`` (uint8 ``[H, W, 3]``), ``background`` (uint8 ``[H, W, 3]`` or None),
        ``owner`` (int8 ``[H, W]``: index of the item whose mask pixel is visible, -1 none) and
        ``objects``: kept items in paste order, dicts with ``item`` (paste index), ``label``,
        ``source_index``, ``box`` (ints, 0-based continuous xyxy), ``difficult``, ``visible``
        (fraction) and ``area`` (visible pixels).
    """
    rng = np.random.default_rng([int(seed), SPLITS[split], int(index)])
    w, h = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    bg = _background(rng, h, w)
    canvas = bg.copy() if with_background else bg
    owner = np.full((h, w), -1, dtype=np.int8)
    sources = rng.integers(0, len(images), size=int(rng.integers(1, MAX_OBJECTS + 1)))
    placed = []
    for k, src in enumerate(sources):
        side, aspect = rng.uniform(*ITEM_SIDE), float(np.exp(rng.uniform(-0.2, 0.2)))
        iw, ih = min(max(round(side * aspect), 8), w), min(max(round(side / aspect), 8), h)
        x0, y0 = int(rng.integers(0, w - iw + 1)), int(rng.integers(0, h - ih + 1))
        colour = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.25, 1),
                                              rng.uniform(0.7, 1)), dtype=np.float32) * 255
        up = np.asarray(Image.fromarray(images[src]).resize((iw, ih), Image.BILINEAR))
        grey = up.astype(np.float32) / 255
        # Colour times grey intensity (lifted to 0.35..1 so dim interiors keep their colour),
        # alpha grows with intensity: the item's dark pixels let the background through, and
        # every mask pixel (grey > 0.2, alpha >= 0.5) is visibly part of the item.
        alpha = np.minimum(grey * ALPHA_GAIN, 1)
        region = canvas[:, y0:y0 + ih, x0:x0 + iw]
        region *= 1 - alpha
        region += (alpha * (0.35 + 0.65 * grey)) * colour[:, None, None]
        mask = up > MASK_THRESHOLD
        owner[y0:y0 + ih, x0:x0 + iw][mask] = k  # later items occlude earlier ones
        placed.append((x0, y0, iw, ih, int(mask.sum())))
    objects = []
    for k, (x0, y0, iw, ih, total) in enumerate(placed):
        vis = owner[y0:y0 + ih, x0:x0 + iw] == k
        area = int(vis.sum())
        if total == 0 or area < DROP_VISIBLE * total:
            continue
        cols, rows = np.flatnonzero(vis.any(0)), np.flatnonzero(vis.any(1))
        box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1,
               y0 + int(rows[-1]) + 1)
        small = min(box[2] - box[0], box[3] - box[1]) < DIFFICULT_MIN_SIDE
        objects.append({"item": k, "label": int(labels[sources[k]]),
                        "source_index": int(sources[k]), "box": box, "area": area,
                        "visible": area / total,
                        "difficult": bool(area < DIFFICULT_VISIBLE * total or small)})
    return {"image": _to_hwc_uint8(canvas),
            "background": _to_hwc_uint8(bg) if with_background else None,
            "owner": owner, "objects": objects}


def _write_scene(out: Path, pool: tuple[np.ndarray, np.ndarray], params: dict, split: str,
                 index: int, image_id: str) -> tuple[dict, list[dict]]:
    """Render, write JPEG + XML + COCO hard link; return the COCO image and annotations."""
    scene = render_scene(*pool, params["seed"], split, index, params["min_size"],
                         params["max_size"])
    h, w = scene["image"].shape[:2]
    voc = out / "VOCdevkit" / "VOC2007"
    jpeg = voc / "JPEGImages" / f"{image_id}.jpg"
    # Fixed encoder settings keep files byte-identical; 4:4:4 chroma because the items are
    # small and coloured (4:2:0 bleeds their colour edges).
    Image.fromarray(scene["image"]).save(jpeg, "JPEG", quality=95, subsampling=0,
                                         optimize=False)
    objects = scene["objects"]
    # Devkit boxes are 1-based inclusive: xmin = x0 + 1, xmax = x1 (x1 exclusive, 0-based).
    (voc / "Annotations" / f"{image_id}.xml").write_text(voc_xml_string(
        f"{image_id}.jpg", w, h, [CLASSES[o["label"]] for o in objects],
        [(o["box"][0] + 1, o["box"][1] + 1, o["box"][2], o["box"][3]) for o in objects],
        [o["difficult"] for o in objects], database="FashionScenes",
        image_source=f"Fashion-MNIST {split}"))
    link = out / split / f"{image_id}.jpg"
    try:
        os.link(jpeg, link)  # hard links survive copies that drop symlinks
    except OSError:
        shutil.copyfile(jpeg, link)
    coco_id = int(image_id)
    image = {"id": coco_id, "file_name": f"{image_id}.jpg", "width": w, "height": h,
             "fmnist_split": split}
    anns = [{"image_id": coco_id, "category_id": o["label"] + 1,
             "bbox": [o["box"][0], o["box"][1], o["box"][2] - o["box"][0],
                      o["box"][3] - o["box"][1]],
             "area": o["area"], "iscrowd": 0, "difficult": int(o["difficult"]),
             "fmnist_index": o["source_index"]} for o in scene["objects"]]
    return image, anns


def build_fashion_scenes(out_dir: str | os.PathLike, num_train: int = 2000,
                         num_test: int = 500, seed: int = 0, min_size: int = 96,
                         max_size: int = 192, fmnist_root: str | os.PathLike | None = None,
                         overwrite: bool = False, workers: int | None = None) -> Path:
    """Build FashionScenes in ``out_dir`` unless a complete build with these parameters exists.

    Args:
        out_dir: output folder (created); it is the root for both ``VOCDetection`` and
            ``COCODetection`` (``split="train"``/``"test"``).
        num_train, num_test: number of scenes (ids ``000001..`` train first, then test).
        seed: base seed; scene ``i`` of a split depends only on ``(seed, split, i)``.
        min_size, max_size: scene width/height range in pixels.
        fmnist_root: Fashion-MNIST folder (default: the Debian package's).
        overwrite: replace a complete build that has other parameters (else ``AblateError``).
        workers: threads used for rendering/encoding (default: CPU count, at most 4).
    Returns:
        ``out_dir`` as a Path.
    """
    if num_train < 1 or num_test < 1:
        raise AblateError(f"FashionScenes needs num_train, num_test >= 1 "
                          f"(got {num_train}, {num_test})")
    if not 32 <= min_size <= max_size:
        raise AblateError(f"FashionScenes needs 32 <= min_size <= max_size "
                          f"(got {min_size}, {max_size})")
    if num_train + num_test > 999_999:
        raise AblateError("FashionScenes supports at most 999,999 scenes (6-digit ids)")
    params = {"version": VERSION, "num_train": int(num_train), "num_test": int(num_test),
              "seed": int(seed), "min_size": int(min_size), "max_size": int(max_size),
              "fmnist_root": str(Path(fmnist_root or fashion_mnist.DEFAULT_ROOT).resolve())}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / ".complete"
    with file_lock(out / ".lock"):
        if marker.is_file():
            try:
                old = json.loads(marker.read_text()).get("params")
            except (json.JSONDecodeError, AttributeError):
                old = None
            if old == params:
                return out
            if old is not None and not overwrite:
                raise AblateError(
                    f"{out} holds a FashionScenes build with other parameters ({old}); "
                    f"requested {params}. Pass overwrite=True to rebuild it, or use another "
                    f"folder.")
        # No marker means an interrupted build: what we own there is rebuilt from scratch.
        marker.unlink(missing_ok=True)
        for name in _OURS:
            shutil.rmtree(out / name, ignore_errors=True)
        stats = _generate(out, params, workers)
        tmp = out / ".complete.tmp"
        tmp.write_text(json.dumps({"params": params, "stats": stats}, indent=1,
                                  sort_keys=True) + "\n")
        os.replace(tmp, marker)  # the marker appears last and atomically
    return out


def _generate(out: Path, params: dict, workers: int | None) -> dict:
    voc = out / "VOCdevkit" / "VOC2007"
    for d in (voc / "JPEGImages", voc / "Annotations", voc / "ImageSets" / "Main",
              out / "annotations", out / "train", out / "test"):
        d.mkdir(parents=True, exist_ok=True)
    workers = workers or min(4, os.cpu_count() or 1)
    stats, first_id = {}, 1
    for split in ("train", "test"):
        images, labels = fashion_mnist.load_fashion_mnist(params["fmnist_root"], split)
        pool = (images.numpy(), labels.numpy())
        n = params[f"num_{split}"]
        ids = [f"{first_id + i:06d}" for i in range(n)]
        first_id += n
        # numpy and PIL's encoder release the GIL for most of the work: threads suffice.
        with ThreadPoolExecutor(workers) as ex:
            results = list(ex.map(lambda i: _write_scene(out, pool, params, split, i, ids[i]),
                                  range(n)))
        coco_images, coco_anns = [], []
        for image, anns in results:
            coco_images.append(image)
            for a in anns:
                coco_anns.append({"id": len(coco_anns) + 1, **a})
        categories = [{"id": i + 1, "name": c, "supercategory": "fashion"}
                      for i, c in enumerate(CLASSES)]
        coco = {"info": {"description": f"FashionScenes {split}", "version": str(VERSION)},
                "licenses": [], "images": coco_images, "annotations": coco_anns,
                "categories": categories}
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
        lines = "".join(f"{i}\n" for i in ids)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(lines)
        if split == "train":
            (voc / "ImageSets" / "Main" / "trainval.txt").write_text(lines)
        stats[split] = {"images": n, "objects": len(coco_anns),
                        "difficult": sum(a["difficult"] for a in coco_anns)}
    return stats


def _folder_name(params: dict) -> str:
    p = {**DEFAULTS, **params}
    return (f"fashion_scenes_v{VERSION}_s{p['seed']}_n{p['num_train']}-{p['num_test']}_"
            f"px{p['min_size']}-{p['max_size']}")


def fashion_scenes_root(cache_dir: str | os.PathLike | None = None, **params: Any) -> Path:
    """Build FashionScenes on first use under ``cache_dir`` and return its root.

    Args:
        cache_dir: parent folder (default ``./data_cache``); the build goes into a sub-folder
            named after the parameters, so different parameter sets coexist.
        params: keyword arguments of ``build_fashion_scenes`` (not ``out_dir``).
    Returns:
        the dataset root, usable by ``VOCDetection``/``COCODetection``/``fashion_scenes_dataset``.
    """
    cache = Path(cache_dir) if cache_dir is not None else Path("data_cache")
    return build_fashion_scenes(cache / _folder_name(params), **params)


def fashion_scenes_dataset(root: str | os.PathLike, split: str = "train", view: str = "voc",
                           **kwargs: Any):
    """Open a built FashionScenes split through the VOC or the COCO loader.

    Args:
        root: a folder built by ``build_fashion_scenes``.
        split: ``"train"`` or ``"test"``.
        view: ``"voc"`` (``VOCDetection``, string ids) or ``"coco"`` (``COCODetection``).
        kwargs: passed on to the loader.
    """
    if split not in SPLITS:
        raise AblateError(f"FashionScenes has no split '{split}' (use 'train' or 'test')")
    if view == "voc":
        return VOCDetection(root, sets=[("2007", split)], class_names=CLASSES, **kwargs)
    if view == "coco":
        return COCODetection(root, split=split, **kwargs)
    raise AblateError(f"unknown FashionScenes view '{view}' (use 'voc' or 'coco')")
