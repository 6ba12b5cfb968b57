"""Grouped bar charts as PNG files with the standard library alone (zlib), for
scripts/record_results.py: no matplotlib or gnuplot is needed on either machine.

    bar_chart(path, title, unit, groups, series, values, ceiling=None)
groups: x labels (short: the record's table maps them to shapes); series: bar names (kiln,
cublas, torch, ...); values[g][s]: a number or None. A dashed line marks `ceiling` when given.
Text uses a 3x5 pixel font (digits, letters without case, a few signs).
"""
import struct
import zlib

# 3x5 glyphs, rows top to bottom, 3 bits each (4 = left column).
_FONT = {
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 1, 1),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), "a": (2, 5, 7, 5, 5), "b": (6, 5, 6, 5, 6),
    "c": (3, 4, 4, 4, 3), "d": (6, 5, 5, 5, 6), "e": (7, 4, 6, 4, 7), "f": (7, 4, 6, 4, 4),
    "g": (3, 4, 5, 5, 3), "h": (5, 5, 7, 5, 5), "i": (7, 2, 2, 2, 7), "j": (1, 1, 1, 5, 2),
    "k": (5, 5, 6, 5, 5), "l": (4, 4, 4, 4, 7), "m": (5, 7, 7, 5, 5), "n": (6, 5, 5, 5, 5),
    "o": (2, 5, 5, 5, 2), "p": (6, 5, 6, 4, 4), "q": (2, 5, 5, 6, 3), "r": (6, 5, 6, 5, 5),
    "s": (3, 4, 2, 1, 6), "t": (7, 2, 2, 2, 2), "u": (5, 5, 5, 5, 7), "v": (5, 5, 5, 5, 2),
    "w": (5, 5, 7, 7, 5), "x": (5, 5, 2, 5, 5), "y": (5, 5, 2, 2, 2), "z": (7, 1, 2, 4, 7),
    ".": (0, 0, 0, 0, 2), "-": (0, 0, 7, 0, 0), "_": (0, 0, 0, 0, 7), "/": (1, 1, 2, 4, 4),
    ":": (0, 2, 0, 2, 0), "%": (5, 1, 2, 4, 5), "=": (0, 7, 0, 7, 0), "(": (1, 2, 2, 2, 1),
    ")": (4, 2, 2, 2, 4), "^": (2, 5, 0, 0, 0), ",": (0, 0, 0, 2, 4),
    "+": (0, 2, 7, 2, 0), " ": (0, 0, 0, 0, 0),
}
_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127)]


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def set(self, x, y, rgb):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            self.px[i:i + 3] = bytes(rgb)

    def rect(self, x0, y0, x1, y1, rgb):
        for y in range(max(0, min(y0, y1)), min(self.h, max(y0, y1) + 1)):
            for x in range(max(0, min(x0, x1)), min(self.w, max(x0, x1) + 1)):
                i = (y * self.w + x) * 3
                self.px[i:i + 3] = bytes(rgb)

    def hline(self, x0, x1, y, rgb, dash=0):
        for x in range(x0, x1 + 1):
            if not dash or (x // dash) % 2 == 0:
                self.set(x, y, rgb)

    def text(self, x, y, s, rgb, scale=2):
        for ch in str(s).lower():
            g = _FONT.get(ch, _FONT[" "])
            for row in range(5):
                for col in range(3):
                    if g[row] & (4 >> col):
                        self.rect(x + col * scale, y + row * scale, x + col * scale + scale - 1,
                                  y + row * scale + scale - 1, rgb)
            x += 4 * scale

    @staticmethod
    def text_width(s, scale=2):
        return len(str(s)) * 4 * scale

    def png(self):
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3])
                       for y in range(self.h))

        def chunk(kind, data):
            c = struct.pack(">I", len(data)) + kind + data
            return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _tick(v):
    if v >= 1000:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.0f}"
    return f"{v:.2f}"


def bar_chart(path, title, unit, groups, series, values, ceiling=None):
    left, right, top, bottom = 80, 20, 50, 50
    group_w = max(24, 10 * len(series) + 14)
    w = max(520, left + right + group_w * len(groups))
    h = 400
    c = Canvas(w, h)
    finite = [v for row in values for v in row if v is not None]
    ymax = max(finite + ([ceiling] if ceiling else []) + [1e-9]) * 1.08
    ph = h - top - bottom

    def Y(v):
        return top + ph - int(round(v / ymax * ph))

    axis, grid = (51, 51, 51), (228, 228, 228)
    for i in range(6):
        v = ymax * i / 5
        c.hline(left, w - right, Y(v), grid)
        label = _tick(v)
        c.text(left - 8 - Canvas.text_width(label), Y(v) - 5, label, axis)
    c.rect(left - 1, top, left, top + ph, axis)
    c.rect(left, top + ph, w - right, top + ph + 1, axis)
    for g, name in enumerate(groups):
        x0 = left + g * group_w + 7
        for s in range(len(series)):
            v = values[g][s]
            if v is None:
                continue
            c.rect(x0 + 10 * s, Y(v), x0 + 10 * s + 8, top + ph - 1, _COLORS[s % len(_COLORS)])
        c.text(x0, top + ph + 8, name, axis)
    if ceiling:
        c.hline(left, w - right, Y(ceiling), (200, 0, 0), dash=6)
        c.text(w - right - Canvas.text_width("ceiling"), Y(ceiling) - 14, "ceiling", (200, 0, 0))
    c.text(left, 8, f"{title} ({unit})", axis)
    x = left
    for s, name in enumerate(series):
        c.rect(x, 30, x + 9, 39, _COLORS[s % len(_COLORS)])
        c.text(x + 14, 30, name, axis)
        x += 14 + Canvas.text_width(name) + 16
    with open(path, "wb") as f:
        f.write(c.png())
