"""Deterministic pools of real text from this machine, with several natural domains, for the diversity benchmark.

Each corpus is a set of domains; a domain is a sorted list of files cut into ~1-2 KB documents
(``chunk_text``: whole lines, a chunk closes once it reaches ``CHUNK_MIN`` characters, lines
longer than ``CHUNK_MAX`` are cut; at most ``CHUNKS_PER_FILE`` chunks per file so one big file
cannot fill a domain; tails shorter than ``TAIL_MIN`` are dropped). A domain's documents are
ordered by ``blake2b(id)``: the first ``n_pool`` go to the pool, the next ``n_heldout`` are the
held-out sample a target is fitted on (never in the pool). Same machine, same files: same
documents, whatever the order ``os.walk`` returns.

Corpora (``CORPORA``):

- ``system``: Python stdlib code, C headers (``/usr/include``, not ``c++``), Debian changelogs,
  Debian copyright/license files, English man pages (gzip'd troff) -- the five domains of the
  prototype in issue 21.
- ``docs``: Python documentation prose (``pydoc_data.topics``), third-party Python code (the
  venv's site-packages, winnow excluded), man pages in other languages (de, fr, es, it, pl, pt,
  nl, sv, ...), Debian README/NEWS files, C++ standard library headers, and a small ``certs``
  domain of PEM certificates (base64: binary-like junk that any embedding sees as far from
  everything, so a diversity method that chases outliers picks it).

The files are the machine's: installing a package (its changelog, copyright, man pages) changes the
``system`` and ``docs`` pools, so the benchmarks print each pool's ``digest``.

Usage: ``python benchmarks/diversity_corpora.py`` prints the domain sizes and digests of both corpora.
"""

import gzip
import hashlib
import os
import pathlib
import sys
import sysconfig
from typing import NamedTuple

CHUNK_MIN = 1000
CHUNK_MAX = 2000
TAIL_MIN = 120
CHUNKS_PER_FILE = 6
MAX_FILE_BYTES = 2_000_000
N_POOL = 600
N_HELDOUT = 300
JUNK_POOL = 150
PROSE_POOL = 380  # pydoc_data.topics has ~480 chunks: keep ~100 held out

STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])
SITE = pathlib.Path(sysconfig.get_paths()["purelib"])


class Doc(NamedTuple):
    """One document: a unique id (``domain/path#chunk``), its domain and its text."""

    id: str
    domain: str
    text: str


class Corpus(NamedTuple):
    """A pool (documents sorted by id) and, per domain, a held-out sample not in the pool."""

    name: str
    pool: list[Doc]
    heldout: dict[str, list[Doc]]


def chunk_text(text: str) -> list[str]:
    """``text`` cut at line ends into chunks of ``CHUNK_MIN``..~``CHUNK_MAX`` characters (see the module docstring)."""
    chunks, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        while len(line) > CHUNK_MAX:
            chunks.append(line[:CHUNK_MAX])
            line = line[CHUNK_MAX:]
        current.append(line)
        size += len(line)
        if size >= CHUNK_MIN:
            chunks.append("".join(current))
            current, size = [], 0
    if size >= TAIL_MIN:
        chunks.append("".join(current))
    return [c for c in chunks if c.strip()]


def _read(path: pathlib.Path) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if b"\x00" in raw[:4096]:
        return None
    return raw.decode("utf-8", errors="replace")


def _files(root: pathlib.Path, keep, skip_dirs=()) -> list[pathlib.Path]:
    out = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
        out.extend(pathlib.Path(directory) / n for n in names if keep(pathlib.Path(directory) / n))
    return sorted(out)


def _file_docs(domain: str, files: list[pathlib.Path], base: pathlib.Path) -> list[Doc]:
    docs = []
    for path in files:
        text = _read(path)
        if text is None:
            continue
        rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()
        for i, chunk in enumerate(chunk_text(text)[:CHUNKS_PER_FILE]):
            docs.append(Doc(f"{domain}/{rel}#{i}", domain, chunk))
    return docs


def _doc_rank(doc: Doc) -> bytes:
    return hashlib.blake2b(doc.id.encode("utf-8"), digest_size=8).digest()


def _stdlib_code() -> list[Doc]:
    files = _files(STDLIB, lambda p: p.suffix == ".py", skip_dirs={"site-packages", "__pycache__"})
    return _file_docs("stdlib_code", files, STDLIB)


def _c_headers() -> list[Doc]:
    root = pathlib.Path("/usr/include")
    return _file_docs("c_headers", _files(root, lambda p: p.suffix == ".h", skip_dirs={"c++"}), root)


def _changelogs() -> list[Doc]:
    root = pathlib.Path("/usr/share/doc")
    return _file_docs("changelogs", _files(root, lambda p: p.name.startswith("changelog")), root)


def _licenses() -> list[Doc]:
    root = pathlib.Path("/usr/share/doc")
    return _file_docs("licenses", _files(root, lambda p: p.name == "copyright"), root)


def _man_pages(languages: set[str] | None) -> list[Doc]:
    root = pathlib.Path("/usr/share/man")
    sections = sorted(d.name for d in root.iterdir() if d.is_dir())

    def keep_dir(name: str) -> bool:
        return name.startswith("man") if languages is None else name in languages

    files = []
    for name in sections:
        if keep_dir(name):
            files.extend(_files(root / name, lambda p: p.suffix == ".gz"))
    domain = "man_pages" if languages is None else "man_foreign"
    return _file_docs(domain, files, root)


def _python_prose() -> list[Doc]:
    import pydoc_data.topics

    docs = []
    for topic in sorted(pydoc_data.topics.topics):
        for i, chunk in enumerate(chunk_text(pydoc_data.topics.topics[topic])):
            docs.append(Doc(f"python_prose/{topic}#{i}", "python_prose", chunk))
    return docs


def _site_code() -> list[Doc]:
    def keep(p: pathlib.Path) -> bool:
        return p.suffix == ".py" and "winnow" not in p.as_posix()

    return _file_docs("site_code", _files(SITE, keep, skip_dirs={"__pycache__", "tests", "test"}), SITE)


def _debian_docs() -> list[Doc]:
    root = pathlib.Path("/usr/share/doc")

    def keep(p: pathlib.Path) -> bool:
        return p.name.split(".")[0].upper() in {"README", "NEWS", "TODO", "FAQ"} and p.suffix in {"", ".gz", ".md", ".txt"}

    return _file_docs("debian_docs", _files(root, keep), root)


def _cpp_headers() -> list[Doc]:
    root = pathlib.Path("/usr/include/c++")
    return _file_docs("cpp_headers", _files(root, lambda p: p.is_file()), root)


def _certs() -> list[Doc]:
    root = pathlib.Path("/usr/share/ca-certificates")
    return _file_docs("certs", _files(root, lambda p: p.suffix == ".crt"), root)


FOREIGN_MAN = {"cs", "da", "de", "es", "fi", "fr", "hu", "id", "it", "nl", "pl", "pt", "pt_BR", "ro", "sv", "tr"}
CORPORA = {
    "system": [
        ("stdlib_code", _stdlib_code, N_POOL),
        ("c_headers", _c_headers, N_POOL),
        ("changelogs", _changelogs, N_POOL),
        ("licenses", _licenses, N_POOL),
        ("man_pages", lambda: _man_pages(None), N_POOL),
    ],
    "docs": [
        ("python_prose", _python_prose, PROSE_POOL),
        ("site_code", _site_code, N_POOL),
        ("man_foreign", lambda: _man_pages(FOREIGN_MAN), N_POOL),
        ("debian_docs", _debian_docs, N_POOL),
        ("cpp_headers", _cpp_headers, N_POOL),
        ("certs", _certs, JUNK_POOL),
    ],
}


def build_corpus(name: str, n_heldout: int = N_HELDOUT) -> Corpus:
    """The corpus ``name`` (a key of ``CORPORA``): pool sorted by id, held-out samples per domain.

    A domain with fewer than ``n_pool + n_heldout`` documents gives its first ``n_pool`` (by
    hash) to the pool and the rest, possibly fewer than ``n_heldout``, to the held-out sample.
    """
    if name not in CORPORA:
        raise ValueError(f"name={name!r}; expected one of {sorted(CORPORA)}")
    pool, heldout = [], {}
    for domain, builder, n_pool in CORPORA[name]:
        docs = sorted(builder(), key=_doc_rank)
        pool.extend(docs[:n_pool])
        heldout[domain] = sorted(docs[n_pool : n_pool + n_heldout], key=lambda d: d.id)
    pool.sort(key=lambda d: d.id)
    return Corpus(name, pool, heldout)


def digest(ids: list[str], texts: list[str]) -> str:
    """16 hex digits of blake2b over the pool's ids and texts, in order: the machine's files change
    when packages are installed, and a section quoting this digest says which pool it measured."""
    return hashlib.blake2b("".join(i + t for i, t in zip(ids, texts)).encode(), digest_size=8).hexdigest()


def main() -> int:
    for name in CORPORA:
        corpus = build_corpus(name)
        counts: dict[str, int] = {}
        for doc in corpus.pool:
            counts[doc.domain] = counts.get(doc.domain, 0) + 1
        chars = sum(len(d.text) for d in corpus.pool)
        pool_digest = digest([d.id for d in corpus.pool], [d.text for d in corpus.pool])
        print(f"{name}: {len(corpus.pool)} docs, {chars / 1e6:.2f} MB, digest {pool_digest}")
        for domain, count in counts.items():
            print(f"  {domain}: pool {count}, held-out {len(corpus.heldout[domain])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
