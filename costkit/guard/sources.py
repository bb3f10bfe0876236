"""Which request files a guard run reads: paths and globs expanded by costkit, in the working tree and
at a git ref.

Globs are expanded here, not by the shell, so a quoted ``'evals/**/*.jsonl'`` works the same in every
CI shell. They follow Python's ``glob`` (``**`` spans directories, names starting with ``.`` match only
a pattern that starts with ``.``), and the same rules select the files a git ref holds, so a file the
change deleted still takes part in the comparison. Every failure is ``SourceError``, one line.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
from dataclasses import dataclass

from costkit.errors import CostkitError

STDIN = "-"
_MAGIC = re.compile(r"[*?[]")
_NOT_HIDDEN = r"(?!\.)"
_SEGMENT = _NOT_HIDDEN + r"[^/]+"


class SourceError(CostkitError, ValueError):
    """A file argument or git ref that cannot be read."""


def has_magic(pattern: str) -> bool:
    return _MAGIC.search(pattern) is not None


def _component_regex(component: str) -> str:
    out = [] if component.startswith(".") else [_NOT_HIDDEN]
    i = 0
    while i < len(component):
        c = component[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":  # a class, read as fnmatch reads it: [!...] negates, a leading ] is literal
            j = i + 1 if component[i : i + 1] == "!" else i
            j = j + 1 if component[j : j + 1] == "]" else j
            end = component.find("]", j)
            if end < 0:
                out.append(re.escape(c))
                continue
            body = component[i:end]
            i = end + 1
            negate = body.startswith("!")
            body = re.sub(r"([\\&~|\[^])", r"\\\1", body[1:] if negate else body)
            out.append(f"(?!/)[{'^' if negate else ''}{body}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching the ``/``-separated paths ``glob.glob(pattern, recursive=True)`` would match."""
    parts = pattern.split("/")
    regex = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex.append(f"{_SEGMENT}(?:/{_SEGMENT})*" if last else f"(?:{_SEGMENT}/)*")
        else:
            regex.append(_component_regex(part) + ("" if last else "/"))
    return re.compile("".join(regex))


@dataclass
class GitTree:
    """The files of one commit, read with git in the repository holding the working directory."""

    ref: str
    commit: str
    toplevel: str
    cwd: str
    files: frozenset[str]
    """Paths relative to ``toplevel``, ``/``-separated, as git stores them."""

    @classmethod
    def open(cls, ref: str, cwd: str | None = None) -> GitTree:
        cwd = os.path.realpath(cwd or os.getcwd())
        toplevel = _git(["rev-parse", "--show-toplevel"], cwd, f"--base-ref {ref}").decode().strip()
        commit = (
            _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], cwd, "")
            if ref and not ref.startswith("-")
            else b""
        ).strip()
        if not commit:
            raise SourceError(f"--base-ref {ref}: not a commit in the repository at {toplevel}")
        listing = _git(["ls-tree", "-r", "-z", "--name-only", "--full-tree", commit.decode()], cwd, ref)
        files = frozenset(p.decode("utf-8", "surrogateescape") for p in listing.split(b"\0") if p)
        return cls(ref, commit.decode(), os.path.realpath(toplevel), cwd, files)

    def repo_path(self, path: str) -> str | None:
        """``path`` (as given on the command line) relative to the repository root; None outside it."""
        full = os.path.join(self.cwd, path)
        full = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
        rel = os.path.relpath(full, self.toplevel)
        return None if rel == ".." or rel.startswith("../") else rel.replace(os.sep, "/")

    def matching(self, pattern: str) -> list[str]:
        """The files at the ref a glob matches, named as the working-tree expansion would name them."""
        absolute = os.path.isabs(pattern)
        full = os.path.normpath(pattern if absolute else os.path.join(self.cwd, pattern))
        rel = os.path.relpath(full, self.toplevel).replace(os.sep, "/")
        if rel == ".." or rel.startswith("../"):
            return []
        regex = pattern_regex(rel)
        found = []
        for path in self.files:
            if regex.fullmatch(path):
                inside = os.path.join(self.toplevel, path)
                found.append(inside if absolute else os.path.relpath(inside, self.cwd))
        return found

    def read(self, paths: list[str]) -> dict[str, bytes | None]:
        """The content of each path at the ref (``git cat-file --batch``, the bytes ``git show REF:path``
        prints, in one process); None for a path the ref does not hold."""
        wanted: dict[str, str] = {}
        for path in paths:
            rel = self.repo_path(path)
            if rel is not None and rel in self.files:
                wanted[path] = rel
        contents: dict[str, bytes | None] = dict.fromkeys(paths)
        if not wanted:
            return contents
        if any("\n" in rel for rel in wanted.values()):
            raise SourceError("--base-ref: a file name holds a newline, which git cat-file cannot read")
        request = "".join(f"{self.commit}:{rel}\n" for rel in wanted.values()).encode(
            "utf-8", "surrogateescape"
        )
        out = _git(["cat-file", "--batch"], self.cwd, self.ref, stdin=request)
        pos = 0
        for path in wanted:
            header_end = out.index(b"\n", pos)
            header = out[pos:header_end].split()
            if len(header) != 3 or header[1] != b"blob":
                raise SourceError(f"{self.ref}:{wanted[path]}: not a file at the ref")
            size = int(header[2])
            contents[path] = out[header_end + 1 : header_end + 1 + size]
            pos = header_end + 1 + size + 1
        return contents


def _git(args: list[str], cwd: str, what: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False, timeout=300
        )
    except FileNotFoundError:
        raise SourceError(f"{what}: git is not installed") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{what}: git did not answer in 300 s") from None
    if done.returncode != 0 and what:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        reason = message[-1] if message else f"git {args[0]} exited {done.returncode}"
        raise SourceError(f"{what}: {reason.removeprefix('fatal: ')}")
    return done.stdout if done.returncode == 0 else b""


def expand(arguments: tuple[str, ...], tree: GitTree | None = None) -> list[str]:
    """The files the arguments name, in order, each once: paths as given (``-`` is stdin), and globs
    expanded in the working tree and, with ``tree``, at its ref as well. An argument naming an existing
    file is that file, even when its name holds glob characters.

    A literal path that is not a file, or a glob that matches nothing anywhere, is a ``SourceError``.
    """
    files: dict[str, None] = {}
    for argument in arguments:
        if argument == STDIN:
            files[STDIN] = None
            continue
        if os.path.isfile(argument) or not has_magic(argument):  # a file named a[1].jsonl is that file
            if not os.path.isfile(argument):
                problem = "is a directory" if os.path.isdir(argument) else "no such file"
                raise SourceError(f"{argument}: {problem}")
            files[os.path.normpath(argument)] = None
            continue
        found = {os.path.normpath(p) for p in glob.glob(argument, recursive=True) if os.path.isfile(p)}
        if tree is not None:
            found.update(tree.matching(argument))
        if not found:
            raise SourceError(f"{argument}: matches no files")
        files.update(dict.fromkeys(sorted(found)))
    return list(files)
