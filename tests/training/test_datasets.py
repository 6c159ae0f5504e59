"""The real-format loaders read tiny fixtures written in each exact layout (COCO, LVIS v1, RefCOCO, CC3M, ImageNet)."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from objsearch.errors import BadImage
from training.data.cc3m import Cc3mCaptions
from training.data.coco import CocoDetection
from training.data.imagenet import ImageFolderClassification
from training.data.lvis import LvisDetection
from training.data.refcoco import RefCocoGrounding

# pycocotools' own decode() trips a numpy 2 deprecation inside the library; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def write_image(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), 128).save(path)
    return path


def image_bytes(width: int, height: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths over the column-major pixels, starting with a run of 0s."""
    flat = mask.flatten(order="F")
    edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(edges).tolist()
    return {"size": list(mask.shape), "counts": ([0] + counts) if flat[0] else counts}


def rect_mask(height: int, width: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[rows, cols] = 1
    return mask


# ------------------------------------------------------------------------------------------ COCO
# image 10: 64x48, image 20: 40x40 (stored greyscale), image 30: listed but its file is missing.
PERSON_RLE = rect_mask(48, 64, slice(30, 40), slice(40, 60))  # a 20x10 block, written as uncompressed RLE
L_SHAPE = rect_mask(40, 40, slice(2, 12), slice(2, 6)) | rect_mask(40, 40, slice(8, 12), slice(2, 14))


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path, Path]:
    images = tmp_path / "train2017"
    write_image(images / "000000000010.jpg", 64, 48)
    write_image(images / "000000000020.png", 40, 40, mode="L")
    compressed = mask_utils.encode(np.asfortranarray(L_SHAPE))
    compressed["counts"] = compressed["counts"].decode("ascii")  # how it appears in a json file
    crowd = rect_mask(48, 64, slice(0, 5), slice(0, 64))
    instances = {
        "images": [
            {"id": 10, "file_name": "000000000010.jpg", "width": 64, "height": 48},
            {"id": 20, "file_name": "000000000020.png", "width": 40, "height": 40},
            {"id": 30, "file_name": "000000000030.jpg", "width": 32, "height": 32},
        ],
        # Sparse ids, not in id order: the contiguous order is 1 person, 18 dog, 90 toothbrush.
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 18, "bbox": [10, 10, 20, 10], "iscrowd": 0,
             "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]], "caption": "a small brown dog"},
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [40, 30, 20, 10], "iscrowd": 0,
             "segmentation": uncompressed_rle(PERSON_RLE)},
            {"id": 3, "image_id": 10, "category_id": 1, "bbox": [0, 0, 64, 5], "iscrowd": 1,
             "segmentation": uncompressed_rle(crowd)},
            {"id": 4, "image_id": 20, "category_id": 90, "bbox": [2, 2, 12, 10], "iscrowd": 0,
             "segmentation": compressed},
            {"id": 5, "image_id": 20, "category_id": 18, "bbox": [30, 30, 20, 20], "iscrowd": 0,  # past the edge
             "segmentation": [[30, 30, 50, 30, 50, 50, 30, 50]]},
            {"id": 6, "image_id": 20, "category_id": 18, "bbox": [5, 5, 0.4, 10], "iscrowd": 0,  # degenerate
             "segmentation": [[5, 5, 5.4, 5, 5.4, 15, 5, 15]]},
        ],
    }
    captions = {
        "images": instances["images"],
        "annotations": [
            {"id": 100, "image_id": 10, "caption": "A dog next to a person. "},
            {"id": 101, "image_id": 10, "caption": "Someone walks a small dog."},
        ],
    }
    (tmp_path / "instances_train2017.json").write_text(json.dumps(instances))
    (tmp_path / "captions_train2017.json").write_text(json.dumps(captions))
    return images, tmp_path / "instances_train2017.json", tmp_path / "captions_train2017.json"


def test_coco_boxes_categories_masks_and_phrases(coco):
    images, instances, captions = coco
    dataset = CocoDetection(images, instances, captions_json=captions)
    assert len(dataset) == 3
    assert dataset.categories == ["person", "dog", "toothbrush"]
    assert dataset.category_coco_ids == [1, 18, 90]

    first = dataset[0]
    assert first.image_id == 10 and first.source == "coco" and first.image.size == (64, 48)
    # The crowd annotation is gone; xywh became absolute xyxy.
    np.testing.assert_array_equal(first.boxes_xyxy, [[10, 10, 30, 20], [40, 30, 60, 40]])
    np.testing.assert_array_equal(first.category_ids, [1, 0])
    assert first.phrases == ["a small brown dog", "person"]
    assert first.caption == "A dog next to a person."
    assert first.tasks == ("detection", "mask", "grounding", "caption", "classification")
    assert first.masks.shape == (2, 48, 64) and first.masks.dtype == np.uint8
    np.testing.assert_array_equal(first.masks[0], rect_mask(48, 64, slice(10, 20), slice(10, 30)))  # the polygon
    np.testing.assert_array_equal(first.masks[1], PERSON_RLE)  # uncompressed RLE
    assert first.masks[1].sum() == mask_utils.area(mask_utils.frPyObjects(uncompressed_rle(PERSON_RLE), 48, 64))

    second = dataset[1]
    assert second.image.mode == "RGB"  # stored greyscale
    # The box past the image edge is clipped; the 0.4 px wide box is dropped.
    np.testing.assert_array_equal(second.boxes_xyxy, [[2, 2, 14, 12], [30, 30, 40, 40]])
    np.testing.assert_array_equal(second.category_ids, [2, 1])
    assert second.phrases == ["toothbrush", "dog"]
    np.testing.assert_array_equal(second.masks[0], L_SHAPE)  # compressed RLE
    np.testing.assert_array_equal(second.masks[1], rect_mask(40, 40, slice(30, 40), slice(30, 40)))
    assert second.caption is None and "caption" not in second.tasks


def test_coco_missing_image_names_the_file(coco):
    images, instances, _ = coco
    dataset = CocoDetection(images, instances)
    with pytest.raises(BadImage, match="000000000030.jpg") as error:
        dataset[2]
    assert "not found" in str(error.value)
    assert dataset[-3].image_id == 10


def test_coco_image_of_the_wrong_size_is_refused(coco):
    images, instances, _ = coco
    write_image(images / "000000000010.jpg", 48, 64)  # rotated: the annotations no longer fit
    with pytest.raises(BadImage, match=r"000000000010\.jpg.*48x64 pixels but its annotations say 64x48"):
        CocoDetection(images, instances)[0]


def test_coco_without_masks_and_without_empty_images(coco):
    images, instances, _ = coco
    dataset = CocoDetection(images, instances, with_masks=False, skip_empty=True)
    assert [dataset[i].image_id for i in range(2)] == [10, 20] and len(dataset) == 2  # image 30 has no objects
    sample = dataset[0]
    assert sample.masks is None
    assert sample.tasks == ("detection", "grounding", "classification")


def test_coco_random_caption_is_seeded(coco):
    images, instances, captions = coco
    dataset = CocoDetection(images, instances, captions_json=captions, caption_choice="random", seed=3)
    seen = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        caption = dataset[0].caption
        assert dataset[0].caption == caption  # the same (seed, epoch, index) gives the same caption
        seen.add(caption)
    assert seen == {"A dog next to a person.", "Someone walks a small dog."}



def test_coco_alternative_phrases_are_drawn_and_the_caption_stays_the_caption_target(coco):
    images, instances, _ = coco
    data = json.loads(instances.read_text())
    data["annotations"][0]["phrases"] = ["a brown dog", "a dog"]  # beside its caption "a small brown dog"
    instances.write_text(json.dumps(data))
    dataset = CocoDetection(images, instances, seed=3)
    drawn = Counter()
    for epoch in range(60):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        assert dataset[0].phrases == sample.phrases, "the same (seed, epoch, index) draws the same phrases"
        assert sample.phrases[1] == "person", "an object without alternatives keeps its phrase"
        assert sample.object_captions == ["a small brown dog", "person"]
        drawn[sample.phrases[0]] += 1
    assert set(drawn) == {"a small brown dog", "a brown dog", "a dog"} and min(drawn.values()) >= 10, drawn
    untouched = dataset[1]  # no annotation of this image lists alternatives
    assert untouched.phrases == ["toothbrush", "dog"] and untouched.object_captions == []

# ------------------------------------------------------------------------------------------ LVIS
@pytest.fixture
def lvis(tmp_path: Path) -> tuple[Path, Path]:
    coco_root = tmp_path / "coco"
    write_image(coco_root / "val2017" / "000000000139.jpg", 50, 30)
    write_image(coco_root / "train2017" / "000000000285.jpg", 20, 20)  # LVIS val also uses train2017 images
    data = {
        "images": [
            {"id": 139, "coco_url": "http://images.cocodataset.org/val2017/000000000139.jpg", "width": 50,
             "height": 30, "not_exhaustive_category_ids": [3], "neg_category_ids": [2, 1]},
            {"id": 285, "coco_url": "http://images.cocodataset.org/train2017/000000000285.jpg", "width": 20,
             "height": 20, "not_exhaustive_category_ids": [], "neg_category_ids": []},
            {"id": 632, "coco_url": "http://images.cocodataset.org/val2017/000000000632.jpg", "width": 20,
             "height": 20, "not_exhaustive_category_ids": [], "neg_category_ids": []},
        ],
        "categories": [
            {"id": 3, "name": "apple", "frequency": "f", "image_count": 500},
            {"id": 1, "name": "aerosol_can", "frequency": "c", "image_count": 64},
            {"id": 2, "name": "bow_(weapon)", "frequency": "r", "image_count": 3},
        ],
        "annotations": [
            {"id": 1, "image_id": 139, "category_id": 1, "bbox": [5, 4, 10, 20], "area": 200,
             "segmentation": [[5, 4, 15, 4, 15, 24, 5, 24]]},
            {"id": 2, "image_id": 285, "category_id": 3, "bbox": [0, 0, 20, 10], "area": 200,
             "segmentation": [[0, 0, 20, 0, 20, 10, 0, 10]]},
        ],
    }
    (tmp_path / "lvis_v1_val.json").write_text(json.dumps(data))
    return coco_root, tmp_path / "lvis_v1_val.json"


def test_lvis_reads_coco_url_frequencies_and_evaluation_fields(lvis):
    coco_root, lvis_json = lvis
    dataset = LvisDetection(coco_root, lvis_json)
    assert dataset.categories == ["aerosol_can", "bow_(weapon)", "apple"]
    assert dataset.category_frequency == ["c", "r", "f"]
    assert dataset.category_image_count == [64, 3, 500]
    assert dataset.not_exhaustive_category_ids[139].tolist() == [2]  # id 3 -> index 2
    assert dataset.neg_category_ids[139].tolist() == [0, 1]

    first = dataset[0]  # found under coco_root/val2017/ from its coco_url
    assert first.source == "lvis" and first.image.size == (50, 30)
    np.testing.assert_array_equal(first.boxes_xyxy, [[5, 4, 15, 24]])
    np.testing.assert_array_equal(first.category_ids, [0])
    assert first.phrases == ["aerosol can"]
    assert first.masks[0].sum() == 200
    second = dataset[1]  # a val image stored in train2017/
    np.testing.assert_array_equal(second.boxes_xyxy, [[0, 0, 20, 10]])
    assert second.phrases == ["apple"]
    with pytest.raises(BadImage, match="000000000632.jpg"):
        dataset[2]

    # The images folder itself (files directly inside) works as well.
    assert LvisDetection(coco_root / "val2017", lvis_json)[0].image.size == (50, 30)


# --------------------------------------------------------------------------------------- RefCOCO
class Py2Pickler(pickle._Pickler):
    """Writes str as Python 2 byte strings (opcode BINSTRING, UTF-8), as in the REFER release's refs(unc).p."""

    def save_str(self, obj: str) -> None:
        data = obj.encode("utf-8")
        self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)
    dispatch[str] = save_str


def write_py2_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


@pytest.fixture
def refcoco(tmp_path: Path) -> tuple[Path, list[dict], Path]:
    images = tmp_path / "train2014"
    write_image(images / "COCO_train2014_000000581857.jpg", 60, 40)
    instances = {
        "images": [{"id": 581857, "file_name": "COCO_train2014_000000581857.jpg", "width": 60, "height": 40}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 16, "image_id": 581857, "category_id": 18, "bbox": [4, 6, 20, 10], "iscrowd": 0,
             "segmentation": [[4, 6, 24, 6, 24, 16, 4, 16]]},
            {"id": 17, "image_id": 581857, "category_id": 1, "bbox": [30, 0, 25, 40], "iscrowd": 0,
             "segmentation": [[30, 0, 55, 0, 55, 40, 30, 40]]},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))

    def sentence(sent_id: int, text: str) -> dict:
        return {"sent": text.lower(), "raw": text, "tokens": text.lower().split(), "sent_id": sent_id}

    refs = [
        {"ref_id": 0, "ann_id": 16, "image_id": 581857, "split": "train", "category_id": 18,
         "file_name": "COCO_train2014_000000581857_16.jpg", "sent_ids": [0, 1],
         "sentences": [sentence(0, "Dog on the left"), sentence(1, "small brown dog")]},
        {"ref_id": 1, "ann_id": 17, "image_id": 581857, "split": "testA", "category_id": 1,
         "file_name": "COCO_train2014_000000581857_17.jpg", "sent_ids": [2], "sentences": [sentence(2, "Man right, by the café")]},
    ]
    return images, refs, tmp_path / "instances.json"


@pytest.mark.parametrize("fmt", ["refs(unc).p", "refs_train.json"])
def test_refcoco_one_sample_per_sentence(refcoco, tmp_path, fmt):
    images, refs, instances = refcoco
    refs_file = tmp_path / fmt
    if fmt.endswith(".p"):
        write_py2_pickle(refs_file, refs)
    else:
        refs_file.write_text(json.dumps(refs))
    train = RefCocoGrounding(images, refs_file, instances, split="train")
    assert len(train) == 2
    assert train.categories == ["person", "dog"]
    first, second = train[0], train[1]
    assert first.image.size == (60, 40)  # read from the instances file name, not the refs' "_16" one
    assert first.phrases == ["dog on the left"] and second.phrases == ["small brown dog"]
    np.testing.assert_array_equal(first.boxes_xyxy, [[4, 6, 24, 16]])
    np.testing.assert_array_equal(first.category_ids, [1])
    np.testing.assert_array_equal(first.masks[0], rect_mask(40, 60, slice(6, 16), slice(4, 24)))
    assert first.tasks == ("grounding", "mask") and first.source == "refcoco"

    test_a = RefCocoGrounding(images, refs_file, instances, split="testA", with_masks=False)
    assert len(test_a) == 1 and test_a[0].phrases == ["man right, by the café"] and test_a[0].masks is None
    np.testing.assert_array_equal(test_a[0].boxes_xyxy, [[30, 0, 55, 40]])
    assert len(RefCocoGrounding(images, refs_file, instances, split=None)) == 3


def test_refcoco_missing_image_names_the_file(refcoco, tmp_path):
    images, refs, instances = refcoco
    (images / "COCO_train2014_000000581857.jpg").unlink()
    refs_file = tmp_path / "refs(unc).p"
    write_py2_pickle(refs_file, refs)
    with pytest.raises(BadImage, match="COCO_train2014_000000581857.jpg"):
        RefCocoGrounding(images, refs_file, instances)[0]


# ------------------------------------------------------------------------------------------ CC3M
def test_cc3m_tsv(tmp_path: Path):
    root = tmp_path / "cc3m"
    write_image(root / "cat.jpg", 30, 20)
    write_image(root / "sub" / "dog.png", 16, 16)
    write_image(root / "images.example.com" / "a" / "mirror.jpg", 10, 12)  # a wget -x mirror of a URL
    tsv = tmp_path / "Train_GCC-training.tsv"
    tsv.write_text(
        "a cat sitting on a mat\tcat.jpg\n"
        "a dog on grass\tsub/dog.png\n"
        "\n"
        "a mirrored photo\thttps://images.example.com/a/mirror.jpg\n"
        "a photo that was never downloaded\thttp://example.com/img/never.jpg?w=640\n",
        encoding="utf-8",
    )
    dataset = Cc3mCaptions.from_tsv(tsv, root)
    assert len(dataset) == 4 and dataset.categories == [] and dataset.source == "cc3m"
    cat = dataset[0]
    assert cat.caption == "a cat sitting on a mat" and cat.image.size == (30, 20)
    assert cat.tasks == ("caption",) and cat.num_objects == 0
    assert dataset[1].caption == "a dog on grass" and dataset[1].image.size == (16, 16)
    assert dataset[2].image.size == (10, 12)
    with pytest.raises(BadImage, match=r"Train_GCC-training\.tsv:5 \(http://example\.com/img/never\.jpg"):
        dataset[3]

    bad = tmp_path / "bad.tsv"
    bad.write_text("caption only, no image column\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:1"):
        Cc3mCaptions.from_tsv(bad, root)


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_cc3m_webdataset(tmp_path: Path):
    shards = [tmp_path / "00000.tar", tmp_path / "00001.tar"]
    with tarfile.open(shards[0], "w") as tar:
        add_member(tar, "000000000.jpg", image_bytes(24, 18, "JPEG"))
        add_member(tar, "000000000.txt", b"a red square on a table")
        add_member(tar, "000000000.json", b'{"url": "http://example.com/x.jpg", "key": "000000000"}')
        add_member(tar, "000000001.txt", b"a caption whose image failed to download")
        add_member(tar, "000000002.jpg", image_bytes(8, 8, "JPEG"))  # no caption: not a sample
    with tarfile.open(shards[1], "w") as tar:
        add_member(tar, "000010000.png", image_bytes(12, 10, "PNG"))
        add_member(tar, "000010000.txt", "caf\u00e9 sign at night\n".encode())
        add_member(tar, "000010001.jpg", b"not a jpeg at all")
        add_member(tar, "000010001.txt", b"broken image")

    dataset = Cc3mCaptions.from_webdataset(shards)
    assert len(dataset) == 4
    first = dataset[0]
    assert first.image_id == "000000000" and first.caption == "a red square on a table"
    assert first.image.size == (24, 18) and first.image.mode == "RGB" and first.tasks == ("caption",)
    with pytest.raises(BadImage, match=r"00000\.tar:000000001"):
        dataset[1]
    assert dataset[2].caption == "caf\u00e9 sign at night" and dataset[2].image.size == (12, 10)
    with pytest.raises(BadImage, match=r"00001\.tar:000010001\.jpg"):
        dataset[3]

    gzipped = tmp_path / "00002.tar.gz"
    with tarfile.open(gzipped, "w:gz") as tar:
        add_member(tar, "0.txt", b"x")
    with pytest.raises(ValueError, match="not an uncompressed tar"):
        Cc3mCaptions.from_webdataset([gzipped])


# -------------------------------------------------------------------------------------- ImageNet
def test_imagenet_class_folders_with_synset_names(tmp_path: Path):
    root = tmp_path / "train"
    write_image(root / "n01443537" / "n01443537_1.JPEG", 10, 10)
    write_image(root / "n01440764" / "n01440764_2.JPEG", 12, 10)
    write_image(root / "n01440764" / "n01440764_1.JPEG", 14, 10, mode="L")
    write_image(root / "n99999999" / "x.png", 8, 8)
    (root / "n01440764" / "notes.txt").write_text("not an image")
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")

    dataset = ImageFolderClassification(root, class_names=mapping)
    assert dataset.categories == ["tench", "goldfish", "n99999999"]  # sorted by folder; unnamed keeps its wnid
    assert len(dataset) == 4
    samples = [dataset[i] for i in range(4)]
    assert [s.image_id for s in samples] == [
        "n01440764/n01440764_1.JPEG", "n01440764/n01440764_2.JPEG", "n01443537/n01443537_1.JPEG", "n99999999/x.png"]
    assert [s.class_id for s in samples] == [0, 0, 1, 2]
    first = samples[0]
    assert first.image.mode == "RGB" and first.image.size == (14, 10)
    assert first.phrases == [] and first.num_objects == 0 and first.tasks == ("classification",)
    assert first.source == "imagenet"

    by_dict = ImageFolderClassification(root, class_names={"n01443537": "goldfish"})
    assert by_dict.categories == ["n01440764", "goldfish", "n99999999"]

    (root / "n01440764" / "n01440764_2.JPEG").unlink()
    with pytest.raises(BadImage, match="n01440764_2.JPEG"):
        dataset[1]
