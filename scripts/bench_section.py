"""Writes one `## ` section of BENCHMARKS.md, for the benchmark scripts: it replaces the
section of that heading, or else goes before the MongoDB section and the hand-written notes."""
import os

PATH = "BENCHMARKS.md"


def write_section(lines, before=("\n## MongoDB", "\n## Notes")):
    heading = lines[0]
    text = open(PATH).read() if os.path.exists(PATH) else "# Benchmarks\n"
    start = text.find("\n" + heading)
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + text[end + 1 :] if end >= 0 else text[: start + 1]
    at = min([i for i in (text.find(b) for b in before) if i >= 0], default=-1)
    block = "\n".join(lines) + "\n"
    text = text[: at + 1] + block + text[at + 1 :] if at >= 0 else text.rstrip("\n") + "\n\n" + block
    open(PATH, "w").write(text)
    print("\n".join(lines))
