"""The one palette of class colours, shared by the annotated JPEG and the web page."""

from __future__ import annotations

from typing import TypedDict

RGB = tuple[int, int, int]

# Kelly's colours of maximum contrast (without white and black), in his order, so neighbouring
# entries differ most, plus teal: 21 entries, so classes 21 ids apart share a colour, while the
# ones that often meet (person, bicycle, car, motorcycle, truck, cup, cell phone...) do not.
COLOURS: tuple[str, ...] = (
    "#f3c300",  # yellow
    "#875692",  # purple
    "#f38400",  # orange
    "#a1caf1",  # light blue
    "#be0032",  # red
    "#c2b280",  # buff
    "#848482",  # grey
    "#008856",  # green
    "#e68fac",  # purplish pink
    "#0067a5",  # blue
    "#f99379",  # yellowish pink
    "#604e97",  # violet
    "#f6a600",  # orange yellow
    "#b3446c",  # purplish red
    "#4a4ae0",  # indigo (Kelly's greenish yellow is too near the yellow of person)
    "#882d17",  # reddish brown
    "#8db600",  # yellow green
    "#654522",  # yellowish brown
    "#e25822",  # reddish orange
    "#2b3d26",  # olive green
    "#009e9e",  # teal
)
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


def class_colour(class_id: int) -> RGB:
    return hex_rgb(COLOURS[class_id % len(COLOURS)])


def text_colour(background: RGB) -> RGB:
    """Black or white, whichever contrasts more with `background` (always at least 4.5:1)."""
    return BLACK if contrast(background, BLACK) >= contrast(background, WHITE) else WHITE


def palette_json() -> PaletteJson:
    """The palette as the web page reads it: colour and label text colour per palette entry."""
    text = ["#000000" if text_colour(hex_rgb(c)) == BLACK else "#ffffff" for c in COLOURS]
    return {"colours": list(COLOURS), "text": text}
