"""A built-in synthetic face set in LFW layout, for demos and tests where LFW is absent.

    >>> from graphspec.data import synthetic_faces, lfw_dataset
    >>> root = synthetic_faces(identities=10, images=20, seed=0)   # doctest: +SKIP  (~/.cache/graphspec/...)
    >>> lfw_dataset(root).classes[:2]                              # doctest: +SKIP
    ['Abel_Daro', 'Bela_Kuvon']

Each identity is a fixed set of traits drawn from ``(seed, identity)`` (skin tone, face shape, hair style and
colour, eye spacing/size/colour, brows, nose, mouth, ears, beard, glasses, a mole); each image draws, from
``(seed, identity, image)``, a pose (yaw moves the features and hides one ear, pitch, roll), scale and position,
an expression (smile, open mouth, raised brows, blink), lighting (direction, strength, brightness, tint), a
cluttered background and clothes, blur, sensor noise and a JPEG quality. Identity ``i`` is the same whatever
the number of identities, so sets of different sizes nest. Names contain no digits, so DL4J's label pattern
(file name up to ``_0001``) gives the folder name.
"""
from __future__ import annotations

import io
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ...data.locations import cache_dir as default_cache_dir
from ...data.errors import located

FORMAT = 1
_SKIN = [(255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 40)]
_HAIR = [(28, 24, 20), (66, 42, 28), (112, 76, 46), (214, 182, 118), (158, 72, 40), (160, 160, 160),
         (226, 222, 214)]
_IRIS = [(60, 40, 25), (95, 65, 35), (70, 110, 150), (80, 120, 80), (120, 120, 130)]
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh", "br", "tr", "j"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "x", "k"]


def synthetic_faces(root: "str | os.PathLike | None" = None, *, identities: int = 10, images: int = 20,
                    seed: int = 0, size: int = 250, cache_dir: "str | os.PathLike | None" = None) -> Path:
    """Write (once) ``identities x images`` JPEG faces of ``size x size`` pixels as ``ROOT/NAME/NAME_%04d.jpg``
    and return ROOT. ``root`` None: a folder under the cache named by the parameters, reused when complete.
    An existing complete set with the same parameters is kept as it is."""
    if identities < 1 or images < 1 or size < 32:
        raise located(f"expected identities >= 1, images >= 1, size >= 32; received {identities}, {images}, "
                      f"{size}", root or "<synthetic>")
    tag = f"faces-{identities}x{images}-seed{seed}-{size}px-v{FORMAT}"
    root = Path(root) if root is not None else default_cache_dir(cache_dir) / "synthetic" / tag
    marker = root / ".graphspec-synthetic"
    if marker.exists() and marker.read_text().strip() == tag:
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise located("folder exists and is not an identical synthetic set; choose an empty or new folder", root)
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    try:
        _write_set(tmp, identities, images, seed, size)
        (tmp / marker.name).write_text(tag + "\n")
        if root.exists():
            root.rmdir()
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise located(f"cannot write the synthetic face set: {e.strerror or e}", root) from e
    return root


def _write_set(folder: Path, identities: int, images: int, seed: int, size: int) -> None:
    names = identity_names(identities, seed)
    traits = [identity_traits(seed, i) for i in range(identities)]
    for name in names:
        (folder / name).mkdir(parents=True)

    def write(job: tuple[int, int]) -> None:
        i, j = job
        rng = np.random.default_rng([seed, i, j + 1])  # every photo has its own stream: order-independent
        jpeg = render_face(traits[i], image_variation(rng), size, rng)
        (folder / names[i] / f"{names[i]}_{j + 1:04d}.jpg").write_bytes(jpeg)

    jobs = [(i, j) for i in range(identities) for j in range(images)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(write, jobs, chunksize=8))


def identity_names(n: int, seed: int) -> list[str]:
    """``n`` distinct digit-free names like ``Mira_Talvek``; name ``i`` depends only on ``(seed, i)`` (a later
    name gets a middle initial word if it collides with an earlier one)."""
    names, seen = [], set()
    for i in range(n):
        rng = np.random.default_rng([seed, i, 0, 7])
        name = f"{_word(rng, 2)}_{_word(rng, 2 + int(rng.integers(0, 2)))}"
        while name in seen:
            name = f"{name.split('_')[0]}_{_word(rng, 1)}_{name.split('_', 1)[1]}"
        seen.add(name)
        names.append(name)
    return names


def _word(rng: np.random.Generator, syllables: int) -> str:
    parts = [str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(syllables)]
    return ("".join(parts) + str(rng.choice(_CODAS))).capitalize()


def identity_traits(seed: int, identity: int) -> dict:
    """The fixed appearance of one identity (fractions of the face width ``fw`` / height ``fh``)."""
    rng = np.random.default_rng([seed, identity, 0])
    jitter = lambda c, d: tuple(int(np.clip(v + rng.integers(-d, d + 1), 0, 255)) for v in c)  # noqa: E731
    skin = jitter(_SKIN[rng.integers(len(_SKIN))], 12)
    fw = rng.uniform(0.40, 0.48)
    return {
        "skin": skin, "fw": fw, "fh": fw * rng.uniform(1.18, 1.45), "chin": rng.uniform(0.0, 0.5),
        "hair": jitter(_HAIR[rng.integers(len(_HAIR))], 10), "hair_style": int(rng.integers(0, 5)),
        "hairline": rng.uniform(0.16, 0.32), "eye_y": rng.uniform(0.40, 0.50), "eye_dx": rng.uniform(0.18, 0.25),
        "eye_w": rng.uniform(0.09, 0.14), "eye_h": rng.uniform(0.35, 0.6), "iris": _IRIS[rng.integers(len(_IRIS))],
        "brow_t": rng.uniform(0.015, 0.045), "brow_gap": rng.uniform(0.05, 0.1), "brow_tilt": rng.uniform(-0.04, 0.04),
        "nose_len": rng.uniform(0.16, 0.28), "nose_w": rng.uniform(0.10, 0.20), "mouth_y": rng.uniform(0.72, 0.82),
        "mouth_w": rng.uniform(0.26, 0.42), "lips": jitter((170, 80, 80), 30), "lip_t": rng.uniform(0.015, 0.04),
        "ear": rng.uniform(0.07, 0.12), "beard": bool(rng.random() < 0.2), "moustache": bool(rng.random() < 0.15),
        "glasses": bool(rng.random() < 0.2), "frame": jitter((40, 40, 40), 40),
        "mole": (rng.uniform(-0.3, 0.3), rng.uniform(0.5, 0.75)) if rng.random() < 0.35 else None,
    }


def image_variation(rng: np.random.Generator) -> dict:
    """What changes from one photo of a person to the next."""
    return {
        "yaw": rng.uniform(-0.35, 0.35), "pitch": rng.uniform(-0.2, 0.2), "roll": rng.normal(0, 7.0),
        "scale": rng.uniform(0.88, 1.12), "dx": rng.normal(0, 0.025), "dy": rng.normal(0, 0.025),
        "smile": rng.uniform(-0.3, 1.0), "open": rng.uniform(0, 0.6) if rng.random() < 0.3 else 0.0,
        "brow_up": rng.uniform(-0.5, 1.0), "blink": rng.random() < 0.08,
        "light_angle": rng.uniform(0, 2 * math.pi), "light": rng.uniform(0.0, 0.35),
        "gain": rng.uniform(0.85, 1.12), "tint": rng.uniform(-6, 6, size=3),
        "blur": rng.uniform(0, 1.2), "noise": rng.uniform(2, 6), "quality": int(rng.integers(72, 96)),
    }


def render_face(t: dict, v: dict, size: int, rng: np.random.Generator) -> bytes:
    """One JPEG of identity ``t`` under variation ``v`` (drawn at twice the size, then downsampled)."""
    s = 2 * size
    canvas = _background(s, rng)
    geo = _geometry(t, v, s)
    box = _head_box(geo, s)  # draw and rotate only the head's neighbourhood: rotation is the costly step
    head = Image.new("RGBA", (box[2] - box[0], box[3] - box[1]), (0, 0, 0, 0))
    _draw_head(ImageDraw.Draw(head), t, v, {**geo, "cx": geo["cx"] - box[0], "fx": geo["fx"] - box[0],
                                            "cy": geo["cy"] - box[1], "top": geo["top"] - box[1]})
    head = head.rotate(v["roll"], resample=Image.Resampling.BILINEAR,
                       center=(geo["cx"] - box[0], geo["cy"] - box[1]))
    canvas.alpha_composite(head, (box[0], box[1]))
    image = canvas.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    if v["blur"] > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(v["blur"]))
    pixels = _light(np.asarray(image, dtype=np.float32), v, rng)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=v["quality"])
    return out.getvalue()


def _head_box(g: dict, s: int) -> tuple[int, int, int, int]:
    half = max(g["fw"], g["fh"]) * 0.9
    x0, y0 = max(0, int(g["cx"] - half)), max(0, int(g["cy"] - half))
    return x0, y0, min(s, int(g["cx"] + half) + 1), min(s, int(g["cy"] + half) + 1)


def _background(s: int, rng: np.random.Generator) -> Image.Image:
    base = _muted(rng, 0.5)
    image = Image.new("RGBA", (s, s), base + (255,))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):  # clutter: walls, posters, other heads in the crowd
        x0, y0 = rng.integers(-s // 4, s, size=2)
        w, h = rng.integers(s // 8, s // 2, size=2)
        shape = draw.ellipse if rng.random() < 0.4 else draw.rectangle
        shape([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=_muted(rng, 0.6) + (255,))
    draw.ellipse([int(s * 0.12), int(s * 0.8), int(s * 0.88), int(s * 1.4)], fill=_muted(rng, 0.7) + (255,))
    return image


def _muted(rng: np.random.Generator, saturation: float) -> tuple[int, int, int]:
    """A random colour pulled towards a random grey (photo backgrounds are rarely saturated)."""
    grey, color = rng.uniform(40, 215), rng.uniform(0, 255, size=3)
    return tuple(int(grey + saturation * (c - grey)) for c in color)


def _geometry(t: dict, v: dict, s: int) -> dict:
    fw, fh = t["fw"] * s * v["scale"], t["fh"] * s * v["scale"]
    cx, cy = s * (0.5 + v["dx"]), s * (0.47 + v["dy"])
    shift = v["yaw"] * fw * 0.3  # features slide towards the side the head turns to
    return {"fw": fw, "fh": fh, "cx": cx, "cy": cy, "top": cy - fh / 2, "fx": cx + shift,
            "fy": v["pitch"] * fh * 0.1}


def _draw_head(d: ImageDraw.ImageDraw, t: dict, v: dict, g: dict) -> None:
    fw, fh, cx, cy, top = g["fw"], g["fh"], g["cx"], g["cy"], g["top"]
    hair, skin = t["hair"] + (255,), t["skin"] + (255,)
    d.rectangle([cx - fw * 0.18, cy + fh * 0.3, cx + fw * 0.18, cy + fh * 0.75], fill=_shade(skin, 0.85))  # neck
    if t["hair_style"] == 3:  # long hair falls behind the head
        d.rounded_rectangle([cx - fw * 0.62, top - fh * 0.05, cx + fw * 0.62, cy + fh * 0.55], fw * 0.3, fill=hair)
    _ears(d, t, v, g, skin)
    d.ellipse([cx - fw / 2, top, cx + fw / 2, top + fh], fill=skin)
    chin = t["chin"] * fh * 0.12
    d.polygon([(cx - fw * 0.32, top + fh * 0.8), (cx + fw * 0.32, top + fh * 0.8), (g["fx"], top + fh + chin)],
              fill=skin)
    _hair(d, t, g, hair)
    _eyes(d, t, v, g)
    _nose_mouth(d, t, v, g)
    _extras(d, t, v, g)


def _ears(d, t, v, g, skin) -> None:
    fw, fh, cx, top = g["fw"], g["fh"], g["cx"], g["top"]
    r = t["ear"] * fw * 1.6
    y = top + fh * (t["eye_y"] + 0.08) + g["fy"]
    for side in (-1, 1):
        if side * v["yaw"] > 0.22:  # turned away: this ear is hidden behind the head
            continue
        x = cx + side * fw * (0.5 - 0.15 * side * v["yaw"])
        d.ellipse([x - r * 0.5, y - r, x + r * 0.5, y + r], fill=_shade(skin, 0.92))


def _hair(d, t, g, hair) -> None:
    fw, fh, cx, top, style = g["fw"], g["fh"], g["cx"], g["top"], t["hair_style"]
    if style == 0:  # very short: a thin cap
        d.chord([cx - fw / 2, top, cx + fw / 2, top + fh * 0.5], 180, 360, fill=hair)
        return
    line = top + fh * t["hairline"]
    d.chord([cx - fw * 0.56, top - fh * 0.08, cx + fw * 0.56, line * 2 - top + fh * 0.1], 180, 360, fill=hair)
    if style in (2, 3):  # sides down to the ears
        for side in (-1, 1):
            x = cx + side * fw * 0.5
            d.rectangle([min(x, x - side * fw * 0.12), line - fh * 0.05, max(x, x - side * fw * 0.12),
                         top + fh * 0.55], fill=hair)
    if style == 4:  # fringe
        d.rectangle([cx - fw * 0.4, line - fh * 0.05, cx + fw * 0.3, line + fh * 0.07], fill=hair)


def _eyes(d, t, v, g) -> None:
    fw, fh, top = g["fw"], g["fh"], g["top"]
    y = top + fh * t["eye_y"] + g["fy"]
    ew = t["eye_w"] * fw
    for side in (-1, 1):
        squash = 1 - 0.5 * max(0.0, side * v["yaw"])  # the far eye looks narrower
        x = g["fx"] + side * t["eye_dx"] * fw * (1 - 0.3 * side * v["yaw"])
        w, h = ew * squash, ew * t["eye_h"] * (0.15 if v["blink"] else 1.0)
        d.ellipse([x - w, y - h, x + w, y + h], fill=(245, 245, 240, 255))
        if not v["blink"]:
            r = h * 0.95
            d.ellipse([x - r, y - r, x + r, y + r], fill=t["iris"] + (255,))
            d.ellipse([x - r * 0.45, y - r * 0.45, x + r * 0.45, y + r * 0.45], fill=(10, 10, 10, 255))
        by = y - fh * (t["brow_gap"] + 0.02 * v["brow_up"])
        tilt = t["brow_tilt"] * fh * side
        d.line([(x - w * 1.1, by + tilt), (x + w * 1.1, by - tilt)], fill=_shade(t["hair"] + (255,), 0.8),
               width=max(1, int(t["brow_t"] * fh)))


def _nose_mouth(d, t, v, g) -> None:
    fw, fh, top, fx = g["fw"], g["fh"], g["top"], g["fx"]
    ny = top + fh * (t["eye_y"] + 0.05) + g["fy"]
    tip = ny + fh * t["nose_len"]
    nw = fw * t["nose_w"] / 2
    shade = _shade(t["skin"] + (255,), 0.7)
    d.line([(fx, ny), (fx + v["yaw"] * nw, tip)], fill=shade, width=max(1, int(fw * 0.015)))
    d.chord([fx - nw, tip - nw * 0.6, fx + nw, tip + nw * 0.6], 0, 180, fill=shade)
    my, mw = top + fh * t["mouth_y"] + g["fy"], fw * t["mouth_w"] / 2
    curve, lip = fh * 0.06 * v["smile"], max(2, int(t["lip_t"] * fh))
    if v["open"] > 0:
        d.ellipse([fx - mw * 0.8, my - lip, fx + mw * 0.8, my + fh * 0.08 * v["open"] + lip], fill=(60, 20, 25, 255))
    d.line([(fx - mw, my - curve), (fx, my + curve * 0.5), (fx + mw, my - curve)], fill=t["lips"] + (255,),
           width=lip, joint="curve")


def _extras(d, t, v, g) -> None:
    fw, fh, top, fx = g["fw"], g["fh"], g["top"], g["fx"]
    hair = t["hair"] + (255,)
    if t["beard"]:
        d.chord([g["cx"] - fw * 0.5, top + fh * 0.45, g["cx"] + fw * 0.5, top + fh * 1.08], 20, 160, fill=hair)
    if t["moustache"]:
        my = top + fh * (t["mouth_y"] - 0.05) + g["fy"]
        d.rectangle([fx - fw * 0.16, my - fh * 0.02, fx + fw * 0.16, my + fh * 0.015], fill=hair)
    if t["glasses"]:
        y, r = top + fh * t["eye_y"] + g["fy"], t["eye_w"] * fw * 1.5
        for side in (-1, 1):
            x = fx + side * t["eye_dx"] * fw
            d.ellipse([x - r, y - r * 0.8, x + r, y + r * 0.8], outline=t["frame"] + (255,),
                      width=max(1, int(fw * 0.02)))
    if t["mole"] is not None:
        x, y, r = fx + t["mole"][0] * fw, top + t["mole"][1] * fh, fw * 0.02
        d.ellipse([x - r, y - r, x + r, y + r], fill=(60, 35, 25, 255))


def _light(pixels: np.ndarray, v: dict, rng: np.random.Generator) -> np.ndarray:
    h, w = pixels.shape[:2]
    ys = (np.arange(h, dtype=np.float32) / h - 0.5) * (2 * math.sin(v["light_angle"]))
    xs = (np.arange(w, dtype=np.float32) / w - 0.5) * (2 * math.cos(v["light_angle"]))
    gain = v["gain"] * (1 + v["light"] * (ys[:, None] + xs[None, :]))
    noise = rng.standard_normal(size=pixels.shape, dtype=np.float32) * np.float32(v["noise"])
    out = pixels * gain[..., None] + v["tint"].astype(np.float32) + noise
    return np.clip(out, 0, 255).astype(np.uint8)


def _shade(color: tuple, factor: float) -> tuple:
    return tuple(int(c * factor) for c in color[:3]) + (255,)
