"""The one palette of class colours, shared by the annotated JPEG and the web page."""

from __future__ import annotations

from typing import TypedDict

RGB = tuple[int, int, int]

# Kelly's colours of maximum contrast that stay visible on photos (his greys, buff, browns and
# olive vanish on dry grass, sand and buses), plus teal, sky blue and magenta. Person, met with
# every other class, has the yellow to itself.
COLOURS: tuple[str, ...] = (
    "#f3c300",  # yellow
    "#875692",  # purple
    "#f38400",  # orange
    "#a1caf1",  # light blue
    "#be0032",  # red
    "#008856",  # green
    "#e68fac",  # purplish pink
    "#0067a5",  # blue
    "#604e97",  # violet
    "#b3446c",  # purplish red
    "#4a4ae0",  # indigo
    "#8db600",  # yellow green
    "#e25822",  # reddish orange
    "#009e9e",  # teal
    "#f99379",  # yellowish pink
    "#00b8e6",  # sky blue
    "#cc33cc",  # magenta
)
# Each COCO class's entry in COLOURS (class ids 0-79, in their order), chosen so that classes
# often seen together (COCO val2017's co-occurrences and pairs such as person/kite, car/truck,
# dog/frisbee, fork/knife) get colours far apart in CIELAB; neighbouring ids differ too.
# fmt: off
CLASS_COLOURS: tuple[int, ...] = (
    0, 8, 13, 4,  # person, bicycle, car, motorcycle
    6, 10, 1, 6,  # airplane, bus, train, truck
    15, 12, 1, 2,  # boat, traffic light, fire hydrant, stop sign
    4, 1, 12, 13,  # parking meter, bench, bird, cat
    7, 10, 6, 13,  # dog, horse, sheep, cow
    8, 14, 7, 14,  # elephant, bear, zebra, giraffe
    5, 16, 4, 3,  # backpack, umbrella, handbag, tie
    10, 9, 3, 5,  # suitcase, frisbee, skis, snowboard
    9, 8, 7, 5,  # sports ball, kite, baseball bat, baseball glove
    8, 14, 15, 4,  # skateboard, surfboard, tennis racket, bottle
    3, 5, 14, 16,  # wine glass, cup, fork, knife
    15, 10, 16, 6,  # spoon, bowl, banana, apple
    11, 13, 7, 12,  # sandwich, orange, broccoli, carrot
    1, 11, 9, 11,  # hot dog, pizza, donut, cake
    12, 16, 5, 2,  # chair, couch, potted plant, bed
    1, 12, 3, 10,  # dining table, toilet, tv, laptop
    11, 4, 2, 7,  # mouse, remote, keyboard, cell phone
    10, 2, 16, 11,  # microwave, oven, toaster, sink
    13, 9, 14, 15,  # refrigerator, book, clock, vase
    5, 6, 15, 9,  # scissors, teddy bear, hair drier, toothbrush
)
# fmt: on
BLACK: RGB = (0, 0, 0)
WHITE: RGB = (255, 255, 255)


class PaletteJson(TypedDict):
    colours: list[str]
    text: list[str]


def hex_rgb(colour: str) -> RGB:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def luminance(rgb: RGB) -> float:
    """WCAG relative luminance of an sRGB colour."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(c) for c in rgb)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(a: RGB, b: RGB) -> float:
    """WCAG contrast ratio of two colours, from 1 to 21."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def class_hex(class_id: int) -> str:
    return COLOURS[CLASS_COLOURS[class_id % len(CLASS_COLOURS)]]


def class_colour(class_id: int) -> RGB:
    return hex_rgb(class_hex(class_id))


def text_colour(background: RGB) -> RGB:
    """Black or white, whichever contrasts more with `background` (always at least 4.5:1)."""
    return BLACK if contrast(background, BLACK) >= contrast(background, WHITE) else WHITE


def palette_json() -> PaletteJson:
    """The palette as the web page reads it: colour and label text colour per class id."""
    colours = [class_hex(i) for i in range(len(CLASS_COLOURS))]
    text = ["#000000" if text_colour(hex_rgb(c)) == BLACK else "#ffffff" for c in colours]
    return {"colours": colours, "text": text}
