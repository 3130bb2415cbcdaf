"""Text from outside made safe to record and to show: surrogates, undecodable bytes, terminal controls."""
from __future__ import annotations

import os

import pytest

from orch.core.text import (
    clean_json,
    display_path,
    encode_utf8,
    one_line,
    replace_surrogates,
    terminal_safe,
    utf8_safe,
)

pytestmark = pytest.mark.unit


def test_plain_text_is_returned_unchanged() -> None:
    text = 'Add greet() — naïve café 😀'
    for fix in (replace_surrogates, utf8_safe, display_path, terminal_safe, one_line):
        assert fix(text) == text
    assert encode_utf8(text) == text.encode('utf-8')


def test_answers_get_a_replacement_character_for_every_lone_surrogate() -> None:
    assert replace_surrogates('a\ud800b\udcffc\udfff') == 'a\ufffdb\ufffdc\ufffd'
    assert clean_json({'k\ud800': ['v\udcff', 1, None, {'n': True}]}) == {'k\ufffd': ['v\ufffd', 1, None, {'n': True}]}


def test_file_names_show_undecodable_bytes_as_hex_escapes() -> None:
    name = os.fsdecode(b'caf\xff\x80.txt')
    assert name == 'caf\udcff\udc80.txt'   # what git.changed_paths gives: it still round-trips
    assert os.fsencode(name) == b'caf\xff\x80.txt'
    assert display_path(name) == 'caf\\xff\\x80.txt'
    assert display_path('Straße/ok.txt') == 'Straße/ok.txt'


def test_utf8_safe_and_encode_never_raise() -> None:
    assert utf8_safe('x\udcfe\ud800') == 'x\\xfe\ufffd'
    assert encode_utf8('x\udcfe\ud800') == b'x\\xfe\xef\xbf\xbd'


@pytest.mark.parametrize('raw, shown', [
    ('\x1b[31mred\x1b[0m', 'red'),                     # SGR colours
    ('a\x1b[2J\x1b[Hb', 'ab'),                         # clear screen, cursor home
    ('t\x1b]0;evil title\x07x', 'tx'),                 # OSC window title, BEL-terminated
    ('t\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\', 'tlink'),   # OSC 8 hyperlink, ST-terminated
    ('\x9b31mc1 csi', 'c1 csi'),                       # 8-bit CSI
    ('bell\x07', 'bell\\u0007'),
    ('nul\x00 del\x7f', 'nul\\u0000 del\\u007f'),
    ('lone esc \x1b', 'lone esc \\u001b'),
    ('unterminated \x1b]0;title', 'unterminated 0;title'),   # its ESC is gone: the rest is plain text
    ('bidi \u202eevil\u202c', 'bidi \\u202eevil\\u202c'),
    ('cr\roverwrite', 'cr\\u000doverwrite'),
])
def test_terminal_safe_removes_sequences_and_escapes_controls(raw: str, shown: str) -> None:
    assert terminal_safe(raw) == shown


def test_terminal_safe_keeps_lines_and_tabs() -> None:
    assert terminal_safe('a\tb\nc\r\nd\n') == 'a\tb\nc\nd\n'
    assert terminal_safe('file caf\udcff.txt') == 'file caf\\xff.txt'


def test_terminal_safe_output_holds_no_control_character() -> None:
    everything = ''.join(chr(c) for c in range(0xa0)) + '\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069'
    shown = terminal_safe(everything)
    assert all(c in '\t\n' or (c.isprintable() and c not in '\u202a\u202b\u202c\u202d\u202e') for c in shown)


@pytest.mark.parametrize('raw, subject', [
    ('Add greet()', 'Add greet()'),
    ('  Add\ngreet()\r\n  now ', 'Add greet() now'),
    ('tabs\tand\vform\ffeed', 'tabs and form feed'),
    ('nel\x85line\u2028para\u2029end', 'nel line para end'),
    ('\x1b[1mBold\x1b[0m title', 'Bold title'),
    ('ring\x07 the bell', 'ring\\u0007 the bell'),
    ('caf\udcff \ud800', 'caf\\xff \ufffd'),
    ('\x1b]0;x\x07', ''),
])
def test_one_line_makes_a_safe_commit_subject(raw: str, subject: str) -> None:
    assert one_line(raw) == subject
    assert '\n' not in one_line(raw)
    one_line(raw).encode('utf-8')


def test_one_line_output_is_printable() -> None:
    everything = ''.join(chr(c) for c in range(0xa0)) + 'x\u202ey'
    shown = one_line(everything)
    assert shown.isprintable() and '\u202e' not in shown
