"""ImageNet-1k class indices mapped to the plain nouns a robot operator uses.

ImageNet names 1000 fine classes (``school bus``, ``moving van``, 120 dog breeds); an
operator says ``bus``, ``truck``, ``dog``. Only classes with such a noun are listed; the
others (textures, rare animals, tools no one on a robot asks about) name nothing, so a
frame of them reads as nothing in view rather than as a wrong noun. The indices are the
standard ILSVRC-2012 class order that the packaged EfficientNet-Lite0 head was trained on.
"""

from __future__ import annotations


def _span(first: int, last: int, noun: str) -> dict[int, str]:
    return {i: noun for i in range(first, last + 1)}


NOUNS: dict[int, str] = {
    **_span(0, 1, "fish"), **_span(7, 24, "bird"), **_span(80, 100, "bird"),
    **_span(127, 146, "bird"), **_span(151, 268, "dog"), **_span(281, 285, "cat"),
    **_span(294, 297, "bear"), **_span(321, 326, "butterfly"), **_span(330, 332, "rabbit"),
    335: "squirrel", 339: "horse", 340: "zebra", 341: "pig", 345: "cow", 348: "sheep",
    **_span(365, 382, "monkey"), 101: "elephant", 385: "elephant", 386: "elephant",
    # vehicles (ambulance: it fires on any white box truck, and an ambulance is one)
    403: "ship", 510: "ship", 404: "airplane", 895: "airplane", 407: "truck",
    436: "car", 468: "car", 511: "car", 817: "car", 751: "car", 609: "car", 627: "car",
    661: "car", 479: "car", 581: "car", 656: "van", 734: "van", 717: "truck",
    675: "truck", 569: "truck", 555: "truck", 864: "truck", 867: "truck",
    779: "bus", 874: "bus", 654: "bus", 705: "train", 547: "train", 820: "train",
    565: "train", 466: "train", 829: "tram", 444: "bicycle", 671: "bicycle",
    870: "bicycle", 670: "scooter", 665: "scooter", 866: "tractor", 561: "forklift",
    # things indoors
    440: "bottle", 720: "bottle", 737: "bottle", 898: "bottle", 907: "bottle",
    504: "cup", 968: "cup", 831: "sofa", 423: "chair", 559: "chair", 765: "chair",
    532: "table", 526: "desk", 508: "keyboard", 527: "computer", 620: "laptop",
    681: "laptop", 664: "screen", 782: "screen", 851: "screen", 487: "phone",
    528: "phone", 673: "computer mouse", 453: "bookshelf", 846: "lamp", 409: "clock",
    892: "clock", 530: "clock", 414: "backpack", 478: "box", 519: "crate",
    728: "bag", 923: "plate", 809: "bowl", 659: "bowl", 850: "teddy bear",
    418: "pen", 626: "lighter", 921: "book", 917: "book", 624: "bookshelf",
    738: "plant", 883: "vase", 918: "puzzle", 567: "pan", 909: "pan", 402: "guitar",
    546: "guitar", 579: "piano", 881: "piano", 879: "umbrella",
    # street and buildings
    920: "traffic light", 919: "sign", 704: "parking meter", 637: "mailbox",
    703: "bench", 497: "building", 698: "building", 483: "building", 668: "building",
    663: "building", 449: "building", 489: "fence", 912: "fence", 716: "fence",
    582: "shop", 788: "shop", 860: "shop", 424: "shop", 415: "shop", 454: "shop",
    865: "shop", 467: "shop", 509: "shop", 762: "restaurant", 839: "bridge",
    821: "bridge", 888: "bridge", 437: "lighthouse",
    # food
    948: "apple", 950: "orange", 951: "lemon", 954: "banana", 953: "pineapple",
    949: "strawberry", 963: "pizza", 937: "broccoli", 945: "pepper", 943: "cucumber",
    # balls
    430: "ball", 805: "ball", 852: "ball", 890: "ball", 522: "ball", 574: "ball",
    768: "ball", 429: "ball",
}
