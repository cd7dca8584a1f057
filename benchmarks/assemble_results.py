"""Rebuild benchmarks/RESULTS.md: RESULTS_HEADER.md, then every section in benchmarks/sections/ in a fixed order.

Usage: ``python benchmarks/assemble_results.py``
"""

import pathlib

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("pipeline", "scale", "stages", "references", "dsir", "zipfit", "dedup", "dedup_incremental", "megacluster", "kmeans",
         "diversity", "diversity_pipeline", "diversity_scale", "vendi")


def main() -> None:
    sections = {path.stem: path.read_text(encoding="utf-8").strip() for path in (HERE / "sections").glob("*.md")}
    ordered = [sections.pop(name) for name in ORDER if name in sections] + [sections[name] for name in sorted(sections)]
    text = (HERE / "RESULTS_HEADER.md").read_text(encoding="utf-8").strip() + "\n\n" + "\n\n".join(ordered) + "\n"
    (HERE / "RESULTS.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
