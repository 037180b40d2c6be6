"""Opening a page in real headless Chromium (Debian's ``chromium``): the DOM after its scripts ran, a screenshot."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path is not None, "Debian's chromium is missing: make system-deps installs it (apt-get install chromium)"
    return path


def _run(page: Path, tmp: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - the system's browser, fixed flags
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp / 'chromium-profile'}", *flags, page.resolve().as_uri()],
        capture_output=True, timeout=120, check=False)


def dump_dom(page: Path, tmp: Path) -> str:
    """The page's DOM serialised after its load handlers ran."""
    r = _run(page, tmp, "--dump-dom")
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    return r.stdout.decode()


def render_check(dom: str) -> list[dict]:
    """What the report's own script measured in the browser: each chart's marks, those drawn, its size."""
    m = re.search(r'<pre id="render-check">([^<]*)</pre>', dom)
    assert m is not None and m.group(1), "the page's script did not run"
    return json.loads(m.group(1).replace("&quot;", '"'))


@dataclass
class Image:
    width: int
    height: int
    pixels: list[tuple[int, int, int]]  # RGB, row by row


def screenshot(page: Path, tmp: Path, width: int = 1000, height: int = 2400) -> Image:
    out = tmp / "screenshot.png"
    r = _run(page, tmp, f"--window-size={width},{height}", f"--screenshot={out}")
    assert r.returncode == 0 and out.exists(), r.stderr.decode(errors="replace")[-2000:]
    return read_png(out.read_bytes())


def read_png(data: bytes) -> Image:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    h = colour = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    pixels = []
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels.extend(tuple(line[i:i + 3]) for i in range(0, stride, bpp))
        prev = line
    return Image(w, h, pixels)
