from __future__ import annotations

import io

from faceaudit.cli.progress import ProgressBar


def test_non_terminal_output_prints_one_line_per_tenth():
    stream = io.StringIO()
    bar = ProgressBar("face.png", stream)
    for done in range(0, 1001, 10):
        bar(done, 1000, "rise")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("face.png rise: 1000/1000 (100%")


def test_terminal_output_redraws_one_line_and_ends_it():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ProgressBar("x", stream, width=10)
    bar(0, 4, "occlusion")
    bar(4, 4, "occlusion")
    text = stream.getvalue()
    assert text.count("\n") == 1 and "[##########] 100% 4/4" in text
