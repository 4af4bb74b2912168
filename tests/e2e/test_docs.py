"""The docs stand alone: every relative link in the repository's Markdown
(README.md, docs/, examples/, bench/) leads to a file or folder in the
repository, and no Markdown file points outside it (../shared). Standard
library only; needs no build."""
import os
import re
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))  # tests/e2e/ -> the repository

# [text](target) and [text](target "title"); images too. Reference-style
# definitions: [label]: target
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
FENCE = re.compile(r"^\s*(```|~~~)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def markdown_files():
    """README.md, then every *.md under docs/, examples/ and bench/."""
    files = [os.path.join(ROOT, "README.md")]
    for top in ("docs", "examples", "bench"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames.sort()
            files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".md")]
    return files


def prose(text):
    """The text with fenced code blocks and inline code spans blanked out
    (a link inside code is an example, not a link), line numbers kept."""
    out, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "``", line))
    return "\n".join(out)


def links(text):
    """(line number, target) for every link in text's prose."""
    body = prose(text)
    for m in list(INLINE_LINK.finditer(body)) + list(REF_DEF.finditer(body)):
        yield body.count("\n", 0, m.start()) + 1, m.group(1)


class DocsTest(unittest.TestCase):
    def test_markdown_files_found(self):
        files = markdown_files()
        self.assertTrue(os.path.isfile(files[0]), files[0])
        self.assertTrue(any(f.endswith(os.path.join("docs", "SPEC.md")) for f in files))

    def test_relative_links_resolve_inside_the_repository(self):
        broken = []
        for path in markdown_files():
            with open(path, encoding="utf-8") as f:
                text = f.read()
            for line, target in links(text):
                if EXTERNAL.match(target) or target.startswith("#"):
                    continue  # a web address, or an anchor in the same page
                rel = target.split("#", 1)[0].split("?", 1)[0]
                where = os.path.normpath(os.path.join(os.path.dirname(path), rel))
                inside = os.path.commonpath([ROOT, where]) == ROOT
                if not inside or not os.path.exists(where):
                    broken.append(f"{os.path.relpath(path, ROOT)}:{line}: {target}")
        self.assertEqual(broken, [], "links that do not lead to a file in the repository")

    def test_no_markdown_points_outside_the_repository(self):
        offenders = []
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = sorted(d for d in dirnames
                                 if not d.startswith(".") and not d.startswith("build"))
            for name in sorted(filenames):
                if not name.endswith(".md"):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    for n, line in enumerate(f, 1):
                        if "../shared" in line or "/work/shared" in line:
                            offenders.append(f"{os.path.relpath(path, ROOT)}:{n}")
        self.assertEqual(offenders, [], "Markdown that refers to files outside the repository")


if __name__ == "__main__":
    unittest.main(verbosity=2)
