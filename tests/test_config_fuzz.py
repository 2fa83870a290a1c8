"""A config cannot hurt: seeded fuzzing of hanode.config.load.

Every case is written to a file and loaded in-process (as `hanode -c FILE` does, with
--insecure-config). Whatever the bytes, load returns a Config or raises a ConfigError
whose message is one line starting ``FILE:LINE:``, LINE a line of the file; never any
other exception, and never more than CASE_BUDGET seconds.

The cases are reproducible: HANODE_FUZZ_SEED picks another seed, HANODE_FUZZ_SCALE
multiplies the number of cases (a long run outside CI). A failure names the family,
the seed and the case number, and shows the input.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest
from test_config import FULL, SHIPPED, uncomment

from hanode import config, configfile
from hanode.errors import ConfigError

SEED = int(os.environ.get("HANODE_FUZZ_SEED", "20251201"))
SCALE = float(os.environ.get("HANODE_FUZZ_SCALE", "1"))
CASE_BUDGET = 2.0  # seconds one load may take: more is a hang (the slowest seen is ~0.1 s)
HANG = 10.0  # seconds after which a case is interrupted, so a real hang fails, not blocks

BASES = [FULL, uncomment(SHIPPED.read_text())]
WHERE = re.compile(r"(\d+): ")


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the test if the block runs longer than ``seconds``."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check(path: Path, data: bytes, label: str) -> float:
    """Load ``data`` from ``path``; assert the contract; return the seconds it took."""
    path.write_bytes(data)
    shown = f"{label}: input {data[:300]!r}{'...' if len(data) > 300 else ''}"
    started = time.perf_counter()
    try:
        with deadline(HANG):
            config.load(path, insecure=True)
    except ConfigError as err:
        message = str(err)
        assert len(message.splitlines()) == 1, f"{shown}: not one line: {message!r}"
        assert message.startswith(f"{path}:"), f"{shown}: names no file: {message!r}"
        where = WHERE.match(message, len(f"{path}:"))
        assert where, f"{shown}: names no line: {message!r}"
        # the last line may be the empty one after the final newline (end of file)
        lines = data.count(b"\n") + 1
        assert 1 <= int(where.group(1)) <= lines, f"{shown}: no such line: {message!r}"
    except Exception as err:
        pytest.fail(f"{shown}: {type(err).__name__}: {err}")
    took = time.perf_counter() - started
    assert took < CASE_BUDGET, f"{shown}: took {took:.2f} s"
    return took


# -- the pieces cases are made of ---------------------------------------------------

PUNCTUATION = "[]{}=.,\"'#\\\n \t-_:+"
ODD_TEXT = [
    "\0",
    "\n",
    "\r",
    "\r\n",
    "\t",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\u202e",
    "\ufeff",
    "é",
    "\U0001f600",
    "..",
    "/",
    "//",
    "/./",
    "%eth0",
    "/0",
    "\\",
    '"',
    "'",
    '"""',
    "'''",
    "[",
    "]",
    "{",
    "}",
]
ODD_BYTES = [b"\xff", b"\xfe", b"\xc3", b"\xe2\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\x00"]
KEYS = [
    "resource",
    "wfc-timeout",
    "become-primary-on",
    "device",
    "mountpoint",
    "type",
    "options",
    "fsck",
    "kill-holders",
    "stop-timeout",
    "links",
    "path",
    "target",
    "ip",
    "interface",
    "label",
    "arp-count",
    "probe",
    "units",
    "timeout",
    "drbd",
    "filesystem",
    "address",
    "services",
    "x",
]
SECTIONS = ["drbd", "filesystem", "links", "address", "services", "cluster", "drbd.x", "a.b.c"]


def odd_string(rng: random.Random, limit: int = 40) -> str:
    """A string of ordinary and troublesome characters."""
    pieces = [
        rng.choice(ODD_TEXT) if rng.random() < 0.3 else chr(rng.randrange(32, 127))
        for _ in range(rng.randrange(limit))
    ]
    return "".join(pieces)


def toml_string(rng: random.Random) -> str:
    """A TOML string literal: paths, names, escapes, long ones."""
    choice = rng.randrange(8)
    if choice == 0:
        parts = [rng.choice(["etc", "srv", "", ".", "..", "a b", "x\\u0000", "é"]) for _ in "123"]
        return '"/' + "/".join(parts) + rng.choice(["", "/"]) + '"'
    if choice == 1:
        escape = rng.choice(["\\u0000", "\\n", "\\t", "\\u2028", "\\u202e", "\\x", "\\U0001F600"])
        return f'"eth0{escape}"'
    if choice == 2:
        return '"' + "x" * rng.randrange(4000) + '"'
    if choice == 3:
        return "'" + odd_string(rng).replace("'", "").replace("\n", "") + "'"
    if choice == 4:
        return '"""' + odd_string(rng, 200).replace('"', "") + '"""'
    if choice == 5:
        return rng.choice(['"192.0.2.10/0"', '"fe80::1%eth0/64"', '"::/0"', '"2001:db8::1/128"'])
    if choice == 6:
        return '""'
    return '"' + rng.choice(["a.service", "eth0:1", "srv", "..", ".", "node1", "ext4"]) + '"'


def toml_value(rng: random.Random, depth: int = 0) -> str:
    """A TOML value of any type, nested a little."""
    choice = rng.randrange(11 if depth < 3 else 8)
    if choice <= 2:
        return toml_string(rng)
    if choice == 3:
        return str(rng.choice([0, -1, 1, 15, 86400, 86401, 2**63, -(2**64)]))
    if choice == 4:
        return rng.choice(["0x" + "f" * rng.randrange(1, 4000), "1e999", "-inf", "nan", "1_000"])
    if choice == 5:
        return rng.choice(["true", "false", "True", "yes"])
    if choice == 6:
        return rng.choice(["1979-05-27", "1979-05-27T07:32:00Z", "07:32:00", "1979-02-30"])
    if choice == 7:
        return rng.choice(["[]", "{}", "[,]", "{,}", ""])
    if choice == 8:
        items = ", ".join(toml_value(rng, depth + 1) for _ in range(rng.randrange(4)))
        return f"[{items}]"
    if choice == 9:
        items = ", ".join(
            f"{rng.choice(KEYS)} = {toml_value(rng, depth + 1)}" for _ in range(rng.randrange(4))
        )
        return "{" + items + "}"
    return "[\n" + ",\n".join(toml_value(rng, depth + 1) for _ in range(rng.randrange(4))) + "\n]"


def nested(rng: random.Random) -> str:
    """Values nested up to thousands deep, on one line or over many, closed or not."""
    depth = rng.randrange(1, 1900)
    opener, closer = rng.choice([("[", "]"), ("{a=", "}"), ("[{a=", "}]"), ("{a=[", "]}")])
    depth = min(depth, (config.MAX_LINE_CHARS - 10) // len(opener))
    inner = rng.choice(["", "1", '"x"'])
    if opener == "{a=":
        inner = "1"
    separator = "\n" if rng.random() < 0.3 else ""
    text = (opener + separator) * depth + inner + (closer + separator) * depth
    if rng.random() < 0.3:
        text = text[: rng.randrange(len(text) + 1)]
    key = rng.choice(["a", "drbd", "links"])
    return f"{key} = {text}\n"


# -- the families of cases ------------------------------------------------------------


def byte_mutation(rng: random.Random) -> bytes:
    """A valid config with a few bytes flipped, cut, inserted or duplicated."""
    data = bytearray(rng.choice(BASES).encode())
    for _ in range(rng.randrange(1, 6)):
        at = rng.randrange(len(data) + 1)
        choice = rng.randrange(6)
        if choice == 0 and at < len(data):
            data[at] = rng.randrange(256)
        elif choice == 1:
            del data[at : at + rng.randrange(1, 40)]
        elif choice == 2:
            data[at:at] = rng.choice(ODD_BYTES)
        elif choice == 3:
            data[at:at] = rng.choice(ODD_TEXT).encode()
        elif choice == 4:
            data[at:at] = bytes(rng.choice(PUNCTUATION.encode()) for _ in range(rng.randrange(5)))
        else:
            data = data[:at]
    return bytes(data)


def line_mutation(rng: random.Random) -> bytes:
    """A valid config with lines duplicated, dropped, swapped or moved."""
    lines = rng.choice(BASES).splitlines(keepends=True)
    for _ in range(rng.randrange(1, 5)):
        at = rng.randrange(len(lines))
        choice = rng.randrange(4)
        if choice == 0:
            lines.insert(rng.randrange(len(lines) + 1), lines[at])
        elif choice == 1 and len(lines) > 1:
            del lines[at]
        elif choice == 2:
            other = rng.randrange(len(lines))
            lines[at], lines[other] = lines[other], lines[at]
        else:
            lines.insert(rng.randrange(len(lines) + 1), lines.pop(at))
    return "".join(lines).encode()


VALUE_LINE = re.compile(r"^([a-z-]+) = .*$", re.M)


def value_substitution(rng: random.Random) -> bytes:
    """A valid config with one key's value replaced by any TOML value (or a bad one)."""
    text = rng.choice(BASES)
    lines = list(VALUE_LINE.finditer(text))
    line = rng.choice(lines)
    value = toml_value(rng) if rng.random() < 0.9 else odd_string(rng)
    return (text[: line.start()] + f"{line.group(1)} = {value}" + text[line.end() :]).encode(
        "utf-8", "surrogatepass"
    )


def random_document(rng: random.Random) -> bytes:
    """Sections, sub-tables, arrays of tables, dotted and quoted keys of random values."""
    out: list[str] = []
    for _ in range(rng.randrange(1, 12)):
        choice = rng.randrange(6)
        if choice == 0:
            out.append(f"[{rng.choice(SECTIONS)}]")
        elif choice == 1:
            out.append(f"[[{rng.choice(SECTIONS)}]]")
        elif choice == 2:
            out.append(f"{rng.choice(SECTIONS)} = {toml_value(rng)}")
        elif choice == 3:
            key = rng.choice([rng.choice(KEYS), f'"{odd_string(rng, 8)}"', "a.b", "'x y'"])
            out.append(f"{key} = {toml_value(rng)}")
        elif choice == 4:
            out.append(nested(rng).rstrip("\n"))
        else:
            out.append("# " + odd_string(rng))
    return ("\n".join(out) + rng.choice(["", "\n"])).encode("utf-8", "surrogatepass")


def deep_nesting(rng: random.Random) -> bytes:
    """A valid config followed or preceded by values nested hundreds deep."""
    text = rng.choice(BASES)
    return (nested(rng) + text if rng.random() < 0.5 else text + nested(rng)).encode()


def fill(head: str, line: str, tail: str = "") -> str:
    """``head``, then ``line`` with {n} numbered 0, 1, ... as often as fits, then ``tail``."""
    room = configfile.MAX_CONFIG_BYTES - 100 - len(head) - len(tail)
    body: list[str] = []
    for n in range(room):
        body.append(line.replace("{n}", str(n)))
        room -= len(body[-1])
        if room < len(line) + 10:
            break
    return head + "".join(body) + tail


LONG = "y" * (config.MAX_LINE_CHARS - 16)
DEEP_KEY = "a" + ".a" * ((config.MAX_LINE_CHARS - 16) // 2)


def large(rng: random.Random) -> bytes:
    """Near the limits: long strings, long lines, many keys, many sub-tables, deep keys,
    the most links and units that fit; half of them broken somewhere."""
    text = rng.choice(
        [
            fill("", f'x{{n}} = "{LONG}"\n'),
            fill('x = """\n', "z" * 80 + "\n", '"""\n'),
            fill("", "[drbd.x{n}]\nk = 1\n"),
            fill("[drbd]\n", "a.b{n} = {n}\n"),
            fill("", f"{DEEP_KEY}.k{{n}} = 1\n"),
            fill(
                '[links]\nmountpoint = "/srv"\nlinks = [\n',
                '  { path = "/etc/x{n}", target = "/srv/x{n}" },\n',
                "]\n",
            ),
            fill("[services]\nunits = [\n", '  "u{n}.service",\n', "]\n"),
        ]
    )
    if rng.random() < 0.5:
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice(ODD_TEXT) + text[at + 1 :]
    return text.encode()


def noise(rng: random.Random) -> bytes:
    """Random bytes, random punctuation soup, random printable text."""
    size = rng.randrange(1, 2000)
    choice = rng.randrange(3)
    if choice == 0:
        return rng.randbytes(size)
    if choice == 1:
        return "".join(rng.choice(PUNCTUATION + "ab1") for _ in range(size)).encode()
    return odd_string(rng, size).encode("utf-8", "surrogatepass")


FAMILIES: dict[str, tuple[Callable[[random.Random], bytes], int]] = {
    "byte_mutation": (byte_mutation, 1500),
    "line_mutation": (line_mutation, 400),
    "value_substitution": (value_substitution, 1500),
    "random_document": (random_document, 500),
    "deep_nesting": (deep_nesting, 200),
    "large": (large, 40),
    "noise": (noise, 300),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_fuzzed_config_is_a_config_or_one_line_error(family: str, tmp_path: Path) -> None:
    make, cases = FAMILIES[family]
    rng = random.Random(f"{SEED}-{family}")  # noqa: S311 - reproducible cases, not secrets
    path = tmp_path / "hanode.toml"
    slowest = 0.0
    for case in range(int(cases * SCALE)):
        data = make(rng)[: configfile.MAX_CONFIG_BYTES]  # the file-level size check is tested apart
        slowest = max(slowest, check(path, data, f"{family} seed {SEED} case {case}"))
    print(f"{family}: {int(cases * SCALE)} cases, slowest {slowest:.3f} s")


def test_fuzz_reports_the_line_of_a_substituted_value(tmp_path: Path) -> None:
    """When the error is about the key whose value was replaced, it names that key's line."""
    rng = random.Random(f"{SEED}-lines")  # noqa: S311 - reproducible cases, not secrets
    path = tmp_path / "hanode.toml"
    checked = 0
    for case in range(int(600 * SCALE)):
        text = rng.choice(BASES)
        line = rng.choice(list(VALUE_LINE.finditer(text)))
        value = toml_value(rng)
        if "\n" in value:
            continue
        mutated = text[: line.start()] + f"{line.group(1)} = {value}" + text[line.end() :]
        check(path, mutated.encode(), f"lines seed {SEED} case {case}")
        try:
            config.parse(mutated, path)
        except ConfigError as err:
            key = line.group(1)
            if f"] {key}: " in str(err) and key not in ("links", "units"):
                expected = text.count("\n", 0, line.start()) + 1
                assert str(err).startswith(f"{path}:{expected}: "), (mutated, str(err))
                checked += 1
    assert checked > 50  # the property was exercised, not skipped
