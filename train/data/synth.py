"""``python -m train synth OUT --images N [--size PX] [--seed S]``: a synthetic
"shapes" caption dataset in the Karpathy format, read by the same reader as
real data (``train.data.readers``).

Each scene holds one or two filled shapes (circle, square, triangle, diamond)
in one of five colours and two sizes, on a varied background (tinted grey, gradient,
noise). A caption names size, colour and shape; with two objects it names the
left (or upper) one first and their relation: ``left of`` or ``above``.
The five reference captions of an image are paraphrases: they vary wording
only, never content, so the task is learnable from scratch on a CPU.

``--scenes binding`` (a set where the pooled feature vector must bind colours
to shapes and keep their order): two or three objects of one size, each any of
the five colours and four shapes, spread left to right at random heights; the
caption names them in order ("a red circle a blue square and a green triangle"),
paraphrased with at most two content-free words added.

Writes ``OUT/images/NNNNN.png`` and ``OUT/dataset.json`` (train/val/test 80/10/10).
"""
import json
import os

import cv2
import numpy as np

from edge.errors import NanocapError
from edge.vocab import clean_caption

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS_BGR = {"red": (30, 30, 220), "green": (40, 190, 40), "blue": (220, 90, 20),
               "yellow": (30, 220, 235), "white": (250, 250, 250)}
SIZES = {"small": (0.08, 0.10), "large": (0.18, 0.21)}  # radius / image side
TWO_OBJECT_FRACTION = 0.5
# Paraphrases add at most two content-free words, so that no long n-gram is
# shared by every image: a constant caption scores low on BLEU-4 and CIDEr.
SINGLE_TEMPLATES = ("a {a}", "one {a}", "a single {a}", "the {a}", "just one {a}")
PAIR_TEMPLATES = ("a {a} {rel} a {b}", "one {a} {rel} one {b}", "the {a} {rel} the {b}",
                  "a {a} is {rel} a {b}", "a {a} sits {rel} a {b}")
RELATIONS = {"horizontal": "left of", "vertical": "above"}
SCENES = ("shapes", "binding")
BINDING_RADIUS = 0.1  # of the image side: one size, three fit side by side
# (article, prefix): "colour shape" phrases each after the article, the last one
# after "and"; at most two words beyond "a .. a .. and a ..".
BINDING_TEMPLATES = (("a", ""), ("one", ""), ("the", ""), ("a", "in order"), ("a", "from left"))


def add_arguments(parser):
    parser.add_argument("out", metavar="OUT", help="output folder (created)")
    parser.add_argument("--images", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="image file type")
    parser.add_argument("--scenes", choices=SCENES, default="shapes",
                        help="shapes: one or two shapes, sizes and a relation (default); "
                             "binding: 2-3 shapes named left to right")


def run(args):
    if args.images < 1:
        raise NanocapError("--images must be at least 1")
    if args.size < 32:
        raise NanocapError("--size must be at least 32 pixels")
    path = write_dataset(args.out, args.images, args.size, args.seed, args.format, args.scenes)
    print("wrote %d images and %s" % (args.images, path))
    return 0


def split_of(index):
    """80/10/10 train/val/test by index (deterministic)."""
    return {8: "val", 9: "test"}.get(index % 10, "train")


def write_dataset(out, count, size=128, seed=0, ext="png", scenes="shapes"):
    """Generate ``count`` scenes of kind ``scenes``; return the path of ``OUT/dataset.json``."""
    image_dir = os.path.join(out, "images")
    try:
        os.makedirs(image_dir, exist_ok=True)
    except OSError as exc:
        raise NanocapError("cannot create %s: %s" % (image_dir, exc))
    rng = np.random.RandomState(seed)
    images = []
    for index in range(count):
        if scenes == "binding":
            image, objects = make_binding_scene(rng, size)
            captions, relation = describe_binding(objects), "left-to-right"
        else:
            image, objects, relation = make_scene(rng, size)
            captions = describe(objects, relation)
        name = "%05d.%s" % (index, ext)
        if not cv2.imwrite(os.path.join(image_dir, name), image):
            raise NanocapError("cannot write %s" % os.path.join(image_dir, name))
        sentences = [{"raw": c, "tokens": clean_caption(c), "imgid": index,
                      "sentid": index * 5 + k} for k, c in enumerate(captions)]
        images.append({"filename": name, "imgid": index, "split": split_of(index),
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences,
                       "objects": objects, "relation": relation})
    path = os.path.join(out, "dataset.json")
    with open(path, "w") as handle:
        json.dump({"dataset": "synth-" + scenes, "images": images}, handle)
    return path


def describe(objects, relation):
    """Five paraphrased captions for ``objects`` (listed in caption order)."""
    phrases = ["%s %s %s" % (o["size"], o["colour"], o["shape"]) for o in objects]
    if len(objects) == 1:
        return [t.format(a=phrases[0]) for t in SINGLE_TEMPLATES]
    rel = RELATIONS[relation]
    return [t.format(a=phrases[0], b=phrases[1], rel=rel) for t in PAIR_TEMPLATES]


def describe_binding(objects):
    """Five paraphrased captions naming ``objects`` (left to right) in order."""
    phrases = ["%s %s" % (o["colour"], o["shape"]) for o in objects]
    captions = []
    for article, prefix in BINDING_TEMPLATES:
        named = ["%s %s" % (article, p) for p in phrases]
        captions.append(" ".join(w for w in [prefix] + named[:-1] + ["and", named[-1]] if w))
    return captions


def make_binding_scene(rng, size):
    """2 or 3 objects of one size in equal vertical bands, left to right, each at
    a random height: ``(uint8 [size,size,3] BGR, objects left to right)``; an
    object's ``x``, ``y`` are its centre as fractions of the side."""
    image = background(rng, size)
    count = 2 + rng.randint(2)
    radius = BINDING_RADIUS * size
    band = size / float(count)
    objects = []
    for k in range(count):
        obj = {"shape": SHAPES[rng.randint(len(SHAPES))],
               "colour": sorted(COLOURS_BGR)[rng.randint(len(COLOURS_BGR))], "radius": radius}
        centre = (rng.uniform(k * band + radius * 1.05, (k + 1) * band - radius * 1.05),
                  rng.uniform(radius * 1.1, size - radius * 1.1))
        draw(image, obj, centre)
        objects.append({"shape": obj["shape"], "colour": obj["colour"],
                        "x": round(centre[0] / size, 4), "y": round(centre[1] / size, 4)})
    return image, objects


def make_scene(rng, size):
    """One image ``uint8 [size,size,3]`` BGR, its objects (caption order) and
    the relation (``None``, ``"horizontal"`` or ``"vertical"``)."""
    image = background(rng, size)
    if rng.rand() >= TWO_OBJECT_FRACTION:
        obj = random_object(rng, size)
        radius = obj["radius"]
        centre = rng.uniform(radius * 1.1, size - radius * 1.1, 2)
        draw(image, obj, centre)
        return image, [public(obj)], None
    relation = "horizontal" if rng.rand() < 0.5 else "vertical"
    first, second = random_object(rng, size), random_object(rng, size)
    centres = place_pair(rng, size, first["radius"], second["radius"], relation)
    for obj, centre in zip((first, second), centres):
        draw(image, obj, centre)
    return image, [public(first), public(second)], relation


def public(obj):
    return {"shape": obj["shape"], "colour": obj["colour"], "size": obj["size"]}


def random_object(rng, size):
    label = ("small", "large")[rng.randint(2)]
    low, high = SIZES[label]
    return {"shape": SHAPES[rng.randint(len(SHAPES))],
            "colour": sorted(COLOURS_BGR)[rng.randint(len(COLOURS_BGR))],
            "size": label, "radius": rng.uniform(low, high) * size}


def place_pair(rng, size, r1, r2, relation):
    """Centres (x, y) of the first (left or upper) and second object: each in its
    half along the relation axis, apart (no overlap), near the middle across it."""
    half, low, high = size / 2.0, r1 * 1.1, size - r2 * 1.1
    a, b = low, high  # the fallback: as far apart as the borders allow
    for _ in range(100):
        a_try = rng.uniform(low, half - r1 * 0.3)
        b_try = rng.uniform(half + r2 * 0.3, high)
        if b_try - a_try >= r1 + r2 + 0.05 * size:
            a, b = a_try, b_try
            break
    mid = rng.uniform(0.3, 0.7) * size
    offset = rng.uniform(-0.2, 0.2) * (b - a)
    cross = np.clip([mid - offset / 2, mid + offset / 2], max(r1, r2), size - max(r1, r2))
    if relation == "horizontal":
        return (a, cross[0]), (b, cross[1])
    return (cross[0], a), (cross[1], b)


def background(rng, size):
    """A tinted grey, a two-tone gradient, or grey noise: ``uint8 [size,size,3]``."""
    base = rng.uniform(70, 170) + rng.uniform(-20, 20, 3)
    kind = rng.randint(3)
    if kind == 0:
        image = np.ones((size, size, 3)) * base
    elif kind == 1:
        other = rng.uniform(70, 170) + rng.uniform(-20, 20, 3)
        ramp = np.linspace(0.0, 1.0, size)[:, None, None]
        image = base + (other - base) * ramp
        if rng.rand() < 0.5:
            image = image.transpose(1, 0, 2)
        image = image * np.ones((size, size, 1))
    else:
        image = base + rng.normal(0, 6, (size, size, 1))
    return np.clip(image, 0, 255).astype(np.uint8)


def draw(image, obj, centre):
    """Draw a filled, anti-aliased shape of ``obj['radius']`` pixels at ``centre``."""
    colour = tuple(int(c) for c in COLOURS_BGR[obj["colour"]])
    x, y, r = float(centre[0]), float(centre[1]), obj["radius"]
    shift = 4  # sub-pixel precision
    scale = 1 << shift
    if obj["shape"] == "circle":
        cv2.circle(image, (int(x * scale), int(y * scale)), int(r * scale), colour, -1,
                   cv2.LINE_AA, shift)
        return
    if obj["shape"] == "square":
        h = r * 0.85
        points = [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    elif obj["shape"] == "diamond":
        points = [(x, y - r), (x + r * 0.8, y), (x, y + r), (x - r * 0.8, y)]
    else:
        points = [(x, y - r), (x + r * 0.95, y + r * 0.75), (x - r * 0.95, y + r * 0.75)]
    pts = (np.array(points) * scale).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(image, [pts], colour, cv2.LINE_AA, shift)
