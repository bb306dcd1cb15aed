"""Generated pages that look like real documents, for the OCR demo and benchmarks.

Six kinds (:data:`KINDS`), each a page of 0.5 to 2 megapixels with dark text on light, slightly
noisy paper, in English words and numbers:

- ``letter``: a business letter: addresses, date, subject, justified paragraphs, a signature and
  small print;
- ``prose``: a heading and several justified paragraphs;
- ``receipt``: a shop receipt in a monospaced font: items with quantities and prices, subtotal,
  tax and total (the sums add up);
- ``table``: a ruled grid with a header row and right-aligned numeric cells;
- ``rotated``: normal lines with one line turned by 3 to 10 degrees;
- ``sizes``: a title, headings, body text and small print in several font sizes.

Pages are deterministic per kind and seed on a machine with the same fonts: text is drawn with
DejaVu or Liberation from ``/usr/share/fonts`` where present (for variety), else with the font
Pillow embeds (``ImageFont.load_default(size=...)``, which needs FreeType); ``fonts="embedded"``
uses only the latter, so a page is then the same on every machine with the same Pillow.

    python -m pipeserve.examples.ocr.documents --out DIR   # the bundled pages: DIR/page0..5.jpg

:func:`bundled_pages` are the pages in ``images/`` (seeds 0 to 5, one per kind);
:func:`benchmark_pages` is a held-out set for benchmarks (seeds from 1000, kinds in turn).
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["KINDS", "Page", "benchmark_pages", "bundled_pages", "document", "main"]

_SUMMARY = "Write the bundled OCR pages (page0.jpg ... page5.jpg), generated documents."
KINDS = ("letter", "prose", "receipt", "table", "rotated", "sizes")
"""The kinds of page, in the order of the bundled ``page0.jpg`` to ``page5.jpg``."""
BENCHMARK_SEED = 1000
"""The held-out pages' first seed (the bundled pages use seeds 0 to 5)."""
IMAGES = Path(__file__).with_name("images")
"""Where the bundled pages live."""
BUNDLED_PIXELS = 1_250_000
"""The bundled pages' largest size in pixels."""
FontChoice = Literal["auto", "embedded"]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Ink = tuple[int, int, int]

_FONT_ROOT = Path("/usr/share/fonts")
_FACES = {  # role -> file names, any of which will do (DejaVu and Liberation, as Debian installs them)
    "sans": ("DejaVuSans.ttf", "LiberationSans-Regular.ttf"),
    "sans-bold": ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf"),
    "serif": ("DejaVuSerif.ttf", "LiberationSerif-Regular.ttf"),
    "serif-bold": ("DejaVuSerif-Bold.ttf", "LiberationSerif-Bold.ttf"),
    "mono": ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf"),
    "mono-bold": ("DejaVuSansMono-Bold.ttf", "LiberationMono-Bold.ttf"),
}

_HEADINGS = (
    "Background,Summary of results,Next steps,Costs and funding,Delivery plan,Open questions,"
    "Staff and training,Risks,Scope of work,Timeline,Customer feedback,Maintenance"
).split(",")
_NAMES = ("Alice Carter,Ben Okafor,Clara Nunez,David Lindqvist,Emma Walsh,Frank Moreau,Grace Tanaka,Henry Osei").split(
    ","
)
_STREETS = "Harbor Street,Mill Lane,Oak Avenue,Station Road,Elm Court,River Drive,Park Place,Hill Street".split(",")
_CITIES = "Springfield,Riverton,Lakeside,Fairview,Greenville,Oakridge,Bridgeport,Milford".split(",")
_SHOPS = "CORNER MARKET,GREEN GROCER,CITY HARDWARE,BLUE CAFE,OFFICE SUPPLY CO,FRESH FOODS".split(",")
_ITEMS = (
    "Whole milk 1L,Brown bread,Free range eggs,Cheddar cheese,Apples 1kg,Bananas,Coffee beans,"
    "Green tea,Pasta 500g,Tomato sauce,Olive oil,Rice 2kg,Butter,Orange juice,Yogurt,Paper towels,"
    "Dish soap,Batteries AA,Light bulb,Notebook A4,Pens 10 pack,Tape roll,Screws box,Sandwich"
).split(",")
_ROWS = "North,South,East,West,Central,Coastal,Mountain,Valley,Metro,Rural,Harbor,Island,Plains,Lakes".split(",")
_TOPICS = (
    "Annual Report,Quarterly Review,Project Update,Service Notice,Board Minutes,Safety Guidelines,"
    "Product Overview,Field Survey,Delivery Schedule,Budget Summary"
).split(",")


@dataclass(frozen=True)
class Page:
    """One generated page: its ``kind``, ``seed`` and ``image`` (RGB)."""

    kind: str
    seed: int
    image: Image.Image

    @property
    def name(self) -> str:
        return f"{self.kind} {self.seed}"

    def jpeg(self, quality: int = 90) -> bytes:
        """The page as JPEG bytes."""
        buffer = io.BytesIO()
        self.image.save(buffer, "JPEG", quality=quality, optimize=True)
        return buffer.getvalue()

    def array(self) -> np.ndarray:
        """The page as an RGB ``uint8`` array (height x width x 3)."""
        return np.asarray(self.image)


def document(kind: str, seed: int, *, fonts: FontChoice = "auto", max_pixels: int = 2_000_000) -> Page:
    """The page of ``kind`` (one of :data:`KINDS`) for ``seed``, of 0.5 megapixels to
    ``max_pixels`` (at most 2 megapixels)."""
    if kind not in _DRAW:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    rng = random.Random(f"{kind}:{seed}")
    width, height = _size(kind, rng, min(max_pixels, 2_000_000))
    canvas = _Canvas(width, height, rng, _Faces(rng, fonts))
    _DRAW[kind](canvas)
    return Page(kind, seed, canvas.finish(np.random.default_rng(rng.getrandbits(64))))


def bundled_pages(*, fonts: FontChoice = "auto") -> list[Page]:
    """The pages in ``images/``: one of each kind, seeds 0 to 5, in :data:`KINDS` order, of at
    most :data:`BUNDLED_PIXELS` (a small package, a quick demo)."""
    return [document(kind, seed, fonts=fonts, max_pixels=BUNDLED_PIXELS) for seed, kind in enumerate(KINDS)]


def benchmark_pages(count: int, *, fonts: FontChoice = "auto") -> list[Page]:
    """``count`` held-out pages (seeds from :data:`BENCHMARK_SEED`, the kinds in turn)."""
    return [document(KINDS[index % len(KINDS)], BENCHMARK_SEED + index, fonts=fonts) for index in range(count)]


def _size(kind: str, rng: random.Random, max_pixels: int) -> tuple[int, int]:
    """Width and height: a receipt is narrow (and cut to its length later), other pages about A4."""
    if kind == "receipt":
        width, height = rng.randrange(640, 761, 4), rng.randrange(1300, 1601, 4)
    else:
        width = rng.randrange(900, 1241, 4)
        height = int(width * rng.uniform(1.3, 1.42))
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    width, height = int(width * scale), int(height * scale)
    return width - width % 4, height - height % 4


@functools.cache
def _system_font(role: str) -> str | None:
    """The path of a system font for ``role``, or None."""
    if not _FONT_ROOT.is_dir():
        return None
    for name in _FACES[role]:
        found = sorted(_FONT_ROOT.rglob(name))
        if found:
            return str(found[0])
    return None


class _Faces:
    """A page's fonts: a family chosen by the page's random state, at any size."""

    def __init__(self, rng: random.Random, choice: FontChoice) -> None:
        self.body = rng.choice(["serif", "sans"])
        self.heading = rng.choice(["sans", self.body])
        self.system = choice == "auto"
        self.loaded: dict[tuple[str, int], tuple[Font, bool]] = {}

    def get(self, role: str, size: int) -> tuple[Font, bool]:
        """The font for ``role`` ("body", "heading", "mono", with "-bold") at ``size`` pixels, and
        whether bold must be faked (the embedded font has no bold face)."""
        if (role, size) not in self.loaded:
            self.loaded[role, size] = self._load(role, size)
        return self.loaded[role, size]

    def _load(self, role: str, size: int) -> tuple[Font, bool]:
        family, _, weight = role.partition("-")
        family = {"body": self.body, "heading": self.heading}.get(family, family)
        face = f"{family}-bold" if weight else family
        path = _system_font(face) if self.system else None
        if path is not None:
            return ImageFont.truetype(path, size), False
        return ImageFont.load_default(size=size), bool(weight)


class _Canvas:
    """A page being drawn: text, rules and pasted layers on light paper."""

    def __init__(self, width: int, height: int, rng: random.Random, faces: _Faces) -> None:
        self.width, self.height, self.rng, self.faces = width, height, rng, faces
        shade = rng.randint(238, 250)
        self.paper: Ink = (shade, shade - rng.randint(0, 5), shade - rng.randint(2, 12))
        self.image = Image.new("RGB", (width, height), self.paper)
        self.draw = ImageDraw.Draw(self.image)
        dark = rng.randint(15, 55)
        self.ink: Ink = (dark, dark, dark + rng.randint(0, 30))
        self.margin = int(width * rng.uniform(0.08, 0.11))
        self.y = int(height * rng.uniform(0.05, 0.08))

    @property
    def right(self) -> int:
        return self.width - self.margin

    @property
    def column(self) -> int:
        return self.right - self.margin

    def font(self, role: str, size: int) -> tuple[Font, bool]:
        return self.faces.get(role, size)

    def measure(self, text: str, role: str, size: int) -> int:
        font, _ = self.font(role, size)
        return math.ceil(font.getlength(text))

    def text(self, x: float, y: float, text: str, role: str, size: int, *, ink: Ink | None = None) -> None:
        font, fake_bold = self.font(role, size)
        self.draw.text((x, y), text, font=font, fill=ink or self.ink, stroke_width=1 if fake_bold else 0)

    def line(self, text: str, role: str, size: int, *, align: str = "left", gap: float = 1.45) -> None:
        """One line at the cursor, then move the cursor down."""
        width = self.measure(text, role, size)
        x = {"left": self.margin, "right": self.right - width, "center": (self.width - width) // 2}[align]
        self.text(x, self.y, text, role, size)
        self.y += int(size * gap)

    def paragraph(self, words: Sequence[str], role: str, size: int, *, width: int | None = None, x: int = 0) -> None:
        """Words wrapped to ``width``, justified where the gaps stay moderate; last line ragged."""
        width = width or self.column
        left = x or self.margin
        space = self.measure(" ", role, size)
        lines: list[list[str]] = [[]]
        used = 0
        for word in words:
            extent = self.measure(word, role, size)
            if lines[-1] and used + space + extent > width:
                lines.append([])
                used = 0
            used += (space if lines[-1] else 0) + extent
            lines[-1].append(word)
        for index, line in enumerate(lines):
            if self.y + size * 1.5 > self.height * 0.94:  # the page ends: the rest would be overleaf
                break
            extents = [self.measure(word, role, size) for word in line]
            gaps = len(line) - 1
            spare = width - sum(extents) - gaps * space
            last = index == len(lines) - 1
            stretch = spare / gaps if gaps and not last and spare / gaps < 2.5 * space else 0.0
            cursor = float(left)
            for word, extent in zip(line, extents, strict=True):
                self.text(round(cursor), self.y, word, role, size)
                cursor += extent + space + stretch
            self.y += int(size * 1.5)
        self.y += int(size * 0.6)

    def rule(
        self, y: int, x0: int | None = None, x1: int | None = None, *, width: int = 2, dashed: bool = False
    ) -> None:
        start, end = self.margin if x0 is None else x0, self.right if x1 is None else x1
        if not dashed:
            self.draw.line([(start, y), (end, y)], fill=self.ink, width=width)
            return
        for x in range(start, end, 14):
            self.draw.line([(x, y), (min(x + 8, end), y)], fill=self.ink, width=width)

    def finish(self, noise: np.random.Generator) -> Image.Image:
        """Mild scanner softness and paper noise (fine grain, a faint shading across the page)."""
        soft = self.image.crop((0, 0, self.width, self.height)).filter(ImageFilter.GaussianBlur(0.4))
        pixels = np.asarray(soft).astype(np.float32)
        speckle = np.clip(noise.normal(128.0, 2.5, (self.height, self.width)), 0, 255).astype(np.uint8)
        grain = np.asarray(Image.fromarray(speckle, "L").filter(ImageFilter.GaussianBlur(0.8)), np.float32) - 128
        shading = np.linspace(0.0, noise.uniform(-6.0, 6.0), self.height, dtype=np.float32)[:, None]
        pixels += (grain + shading)[:, :, None]
        return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


_SUBJECTS = (
    "The committee,Our team,The new system,Each customer,The annual report,This office,The project,"
    "The local office,The board,Every supplier,The survey,Our partner company,The city council,"
    "The review panel,The delivery service,The finance department"
).split(",")
_VERBS = (
    "reviewed,approved,will deliver,has completed,expects,reported,needs,is planning,described,"
    "improved,will present,has updated,confirmed,recommends,is testing,measured"
).split(",")
_OBJECTS = (
    "the delivery schedule,a new payment plan,the quality figures,the budget for next year,"
    "the contract with the harbor office,the main bridge repairs,the customer accounts,"
    "the river water samples,a simpler invoice form,the station opening hours,the garden project,"
    "the safety guidelines,the price of paper,the power supply,the building design,the monthly results,"
    "a shorter meeting,the public records,the regional figures,the village library plans"
).split(",")
_TAILS = (
    "",
    "",
    " before the end of March",
    " in 2024",
    " by 12 percent",
    " for the second time",
    " within three weeks",
    " after the spring meeting",
    " at a cost of 4,500 dollars",
    " across the northern region",
    " on 18 May",
    " with 250 new members",
    " for all 17 offices",
    " without further delay",
    " during the summer",
    " ahead of the 2025 season",
    " at 9.30 each morning",
)
_LINKS = ("and", "but", "so", "while", "because")


def _clause(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}"


def _sentence(rng: random.Random) -> list[str]:
    """One sentence, plain English of a report or a letter."""
    text = _clause(rng)
    if rng.random() < 0.4:
        second = _clause(rng)
        text = f"{text}, {rng.choice(_LINKS)} {second[0].lower()}{second[1:]}"
    return f"{text}.".split()


def _prose(rng: random.Random, sentences: int) -> list[str]:
    return [word for _ in range(sentences) for word in _sentence(rng)]


def _date(rng: random.Random) -> str:
    month = rng.choice("January,February,March,April,May,June,July,August,September,October".split(","))
    return f"{rng.randint(1, 28)} {month} {rng.randint(2021, 2026)}"


def _address(rng: random.Random) -> list[str]:
    return [
        f"{rng.randint(2, 480)} {rng.choice(_STREETS)}",
        f"{rng.choice(_CITIES)} {rng.randint(10000, 99999)}",
    ]


def _letter(page: _Canvas) -> None:
    rng, body = page.rng, page.rng.randint(19, 23)
    sender, recipient = rng.sample(_NAMES, 2)
    company = f"{rng.choice(_CITIES)} {rng.choice(['Supply', 'Partners', 'Engineering', 'Logistics'])} Ltd"
    page.line(company, "heading-bold", body + 12)
    for text in [*_address(rng), f"Phone 0{rng.randint(100, 999)} {rng.randint(100000, 999999)}"]:
        page.line(text, "body", body - 3, gap=1.35)
    page.rule(page.y + 6, width=2)
    page.y += int(body * 1.6)
    page.line(_date(rng), "body", body, align="right")
    for text in [recipient, *_address(rng)]:
        page.line(text, "body", body, gap=1.35)
    page.y += body
    page.line(f"Subject: {rng.choice(_TOPICS)} {rng.randint(100, 999)}", "body-bold", body)
    page.y += body // 2
    page.line(f"Dear {recipient.split()[0]},", "body", body)
    page.y += body // 3
    for _ in range(3):
        page.paragraph(_prose(rng, rng.randint(2, 3)), "body", body)
        if page.y > page.height * 0.6:
            break
    page.line("Yours sincerely,", "body", body)
    _signature(page, rng)
    page.line(sender, "body-bold", body, gap=1.35)
    page.line(rng.choice(["Account Manager", "Project Lead", "Office Director", "Head of Sales"]), "body", body)
    page.y = page.height - int(page.height * 0.06)
    page.line(f"Registered in {rng.choice(_CITIES)} No {rng.randint(1000000, 9999999)}", "body", 14, align="center")


def _signature(page: _Canvas, rng: random.Random) -> None:
    """A pen stroke: a few joined loops, thin and slanted."""
    x, base = page.margin + 10, page.y + 34
    points = []
    for step in range(60):
        t = step / 59
        points.append((x + 220 * t + 14 * math.sin(9 * t * math.pi), base - 24 * abs(math.sin(5 * t * math.pi + 0.4))))
    page.draw.line(points, fill=(30, 40, 110), width=2, joint="curve")
    page.y += 62 + rng.randint(0, 8)


def _prose_page(page: _Canvas) -> None:
    rng, body = page.rng, page.rng.randint(20, 24)
    page.line(rng.choice(_TOPICS), "heading-bold", body + 14)
    page.y += body // 2
    while page.y < page.height * 0.8:
        page.paragraph(_prose(rng, rng.randint(3, 5)), "body", body)
    page.y = page.height - int(page.height * 0.05)
    page.line(f"Page {rng.randint(2, 40)}", "body", body - 4, align="center")


def _receipt(page: _Canvas) -> None:
    rng, size = page.rng, page.rng.randint(21, 25)
    page.margin = int(page.width * 0.09)
    page.line(rng.choice(_SHOPS), "mono-bold", size + 10, align="center", gap=1.6)
    for text in [*_address(rng), f"Tel {rng.randint(200, 999)} 555 {rng.randint(1000, 9999)}"]:
        page.line(text, "mono", size, align="center", gap=1.35)
    page.y += size // 2
    stamp = f"{rng.randint(2021, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    _columns(page, [f"Date {stamp}", f"Time {rng.randint(7, 21):02d}:{rng.randint(0, 59):02d}"], size)
    _columns(page, [f"Receipt {rng.randint(1000, 99999):06d}", f"Till {rng.randint(1, 9)}"], size)
    page.rule(page.y + size // 2, dashed=True)
    page.y += size + size // 2
    _columns(page, ["Item", "Qty", "Price"], size, bold=True)
    total = 0
    for name in rng.sample(_ITEMS, rng.randint(8, 14)):
        quantity, cents = rng.choice([1, 1, 1, 2, 2, 3, 4]), rng.randint(59, 1899)
        total += quantity * cents
        _columns(page, [name, str(quantity), _money(quantity * cents)], size)
    page.rule(page.y + size // 2, dashed=True)
    page.y += size + size // 2
    rate = rng.choice([5.0, 6.5, 7.25, 8.0, 8.25])
    tax = round(total * rate / 100)
    _columns(page, ["Subtotal", "", _money(total)], size)
    _columns(page, [f"Tax {rate:g}%", "", _money(tax)], size)
    _columns(page, ["TOTAL", "", _money(total + tax)], size + 4, bold=True)
    page.y += size // 2
    _columns(page, [f"Card **** {rng.randint(1000, 9999)}", "", _money(total + tax)], size)
    page.y += size
    page.line("Thank you for shopping with us", "mono", size - 2, align="center")
    page.height = min(page.height, max(page.y + 3 * page.margin, -(-500_000 // page.width)))


def _money(cents: int) -> str:
    return f"{cents // 100:,}.{cents % 100:02d}"


def _columns(page: _Canvas, cells: Sequence[str], size: int, *, bold: bool = False) -> None:
    """A receipt row: the first cell left, the last right-aligned at the margin, a middle one
    right-aligned at 70 percent of the width."""
    role = "mono-bold" if bold else "mono"
    page.text(page.margin, page.y, cells[0], role, size)
    if len(cells) == 3 and cells[1]:
        page.text(int(page.width * 0.68) - page.measure(cells[1], role, size), page.y, cells[1], role, size)
    if len(cells) > 1:
        page.text(page.right - page.measure(cells[-1], role, size), page.y, cells[-1], role, size)
    page.y += int(size * 1.5)


def _table(page: _Canvas) -> None:
    rng, size = page.rng, page.rng.randint(19, 22)
    page.line(f"{rng.choice(_TOPICS)} {rng.randint(2021, 2026)}", "heading-bold", size + 14)
    page.paragraph(_prose(rng, 2), "body", size)
    head = ["Region", "Q1", "Q2", "Q3", "Q4", "Total"]
    rows = []
    for name in rng.sample(_ROWS, rng.randint(9, 13)):
        values = [rng.randint(1200, 98000) for _ in range(4)]
        rows.append([name, *(_money(v * 10) for v in values), _money(sum(values) * 10)])
    first = int(page.column * 0.2)
    widths = [first] + [(page.column - first) // 5] * 5
    widths[-1] = page.column - sum(widths[:-1])
    widest = max(len(cell) for row in rows for cell in row[1:])
    while size > 14 and page.measure("8" * widest, "body", size) + 20 > widths[1]:
        size -= 1  # the numbers must fit their cells
    row_height = int(size * 2.1)
    top = page.y + size // 2
    page.draw.rectangle([page.margin, top, page.right, top + row_height], fill=(222, 222, 218))
    for index, cells in enumerate([head, *rows]):
        y = top + index * row_height + (row_height - size) // 2 - 2
        x = page.margin
        for column, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            role = "body-bold" if index == 0 else "body"
            extent = page.measure(cell, role, size)
            left = x + 10 if column == 0 else x + width - 10 - extent
            page.text(left, y, cell, role, size)
            x += width
    bottom = top + row_height * (len(rows) + 1)
    x = page.margin
    for width in [0, *widths]:
        x += width
        page.draw.line([(x, top), (x, bottom)], fill=page.ink, width=2)
    for index in range(len(rows) + 2):
        page.rule(top + index * row_height, width=3 if index in (0, 1, len(rows) + 1) else 1)
    page.y = bottom + size
    note = f"{rng.choice(_ROWS)} and {rng.choice(_ROWS)} include {rng.randint(2, 9)} new offices"
    page.line(f"Figures in dollars; {note}.", "body", size - 3)
    page.y += size
    while page.y < page.height * 0.8:
        page.line(rng.choice(_HEADINGS), "heading-bold", size + 4)
        page.paragraph(_prose(rng, rng.randint(2, 3)), "body", size)


def _rotated(page: _Canvas) -> None:
    rng, body = page.rng, page.rng.randint(20, 24)
    page.line(rng.choice(_TOPICS), "heading-bold", body + 12)
    page.y += body // 2
    turned_at = rng.randint(2, 3)
    for index in range(6):
        if index == turned_at:
            _turned_line(page, rng, body + 4)
        page.paragraph(_prose(rng, rng.randint(2, 3)), "body", body)
        if page.y > page.height * 0.75:
            break


def _turned_line(page: _Canvas, rng: random.Random, size: int) -> None:
    """One line of text turned by 3 to 10 degrees either way, pasted at the cursor."""
    subject, verb, thing, tail = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)
    texts = [f"{subject} {verb} {thing}{tail}.", f"{subject} {verb} {thing}.", f"{subject} {verb} it."]
    angle = rng.uniform(3.0, 10.0) * rng.choice([-1, 1])
    font, fake_bold = page.font("heading", size)
    stroke = 1 if fake_bold else 0
    for text in texts:  # the longest that fits the column turned
        _, _, right, bottom = font.getbbox(text, stroke_width=stroke)
        layer = Image.new("L", (math.ceil(right) + 8, math.ceil(bottom) + 8), 0)
        ImageDraw.Draw(layer).text((4, 4), text, font=font, fill=255, stroke_width=stroke)
        mask = layer.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        if mask.width <= page.column:
            break
    x = page.margin + rng.randint(0, max(0, page.column - mask.width))
    page.image.paste(Image.new("RGB", mask.size, page.ink), (x, page.y), mask)
    page.y += mask.height + size


def _sizes(page: _Canvas) -> None:
    rng = page.rng
    body = rng.randint(18, 22)
    page.line(rng.choice(_TOPICS), "heading-bold", rng.randint(50, 58), align="center", gap=1.3)
    page.line(f"{rng.choice(_CITIES)} office, {_date(rng)}", "heading", rng.randint(26, 30), align="center")
    page.y += 20
    headings = rng.sample(_HEADINGS[:6], 6)
    for index, heading in enumerate(headings):
        page.line(f"{index + 1}. {heading}", "heading-bold", body + 12, gap=1.5)
        page.paragraph(_prose(rng, rng.randint(2, 3)), "body", body)
        if rng.random() < 0.5:
            page.line(f"{index + 1}.1 {rng.choice(_HEADINGS[6:])}", "heading-bold", body + 4, gap=1.5)
            page.paragraph(_prose(rng, 2), "body", body)
        if page.y > page.height * 0.7:
            break
    page.y = max(page.y, int(page.height * 0.84))
    page.rule(page.y, x1=page.margin + page.column // 3, width=1)
    page.y += 10
    small = rng.randint(12, 14)
    page.paragraph(_prose(rng, 4), "body", small)


_DRAW: dict[str, Callable[[_Canvas], None]] = {
    "letter": _letter,
    "prose": _prose_page,
    "receipt": _receipt,
    "table": _table,
    "rotated": _rotated,
    "sizes": _sizes,
}


def main(argv: Sequence[str] | None = None) -> None:
    """Write the bundled pages (``page0.jpg`` ...) into ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m pipeserve.examples.ocr.documents", description=_SUMMARY)
    parser.add_argument("--out", type=Path, default=IMAGES, help="the folder (default: the package's images/)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--embedded-font", action="store_true", help="only Pillow's embedded font")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    fonts: FontChoice = "embedded" if args.embedded_font else "auto"
    for index, page in enumerate(bundled_pages(fonts=fonts)):
        path = args.out / f"page{index}.jpg"
        path.write_bytes(page.jpeg(args.quality))
        width, height = page.image.size
        print(f"{path}: {page.kind}, {width}x{height}, {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
