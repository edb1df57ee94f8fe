"""Install time and size: the light install (`pip install .`) against the one with the models extra.

    python benchmarks/install_size.py [--variants light,models] [--out FILE.md]

Each variant gets a fresh virtual environment in a temporary directory and one `pip install --no-cache-dir`
of this checkout's HEAD (`git archive`, unpacked in the temporary directory, so the build leaves nothing in
the working tree; non-editable); the table gives the wall time of that command, the size of the
environment's site-packages and the number of distributions installed. Wheels come from wherever pip is
configured to look (on the dev machines torch's come from local disk, so its download time is not in it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRAS = {"light": "", "models": "[models]"}


def _size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def export_head(root: Path) -> Path:
    """This checkout's HEAD, unpacked under ``root/src`` (a pip build writes build/ beside its sources)."""
    src = root / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src


def measure(variant: str, root: Path, src: Path) -> dict:
    env = root / variant
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    pip = [str(env / "bin" / "python"), "-m", "pip"]
    t0 = time.perf_counter()
    subprocess.run(pip + ["install", "-q", "--no-cache-dir", f"{src}{EXTRAS[variant]}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    site = next((env / "lib").glob("python3*/site-packages"))
    listed = subprocess.run(pip + ["list", "--format=freeze"], capture_output=True, text=True, check=True).stdout
    torch = subprocess.run([str(env / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode == 0
    return {"variant": variant, "wall_s": wall, "site_mib": _size_mib(site),
            "distributions": len([x for x in listed.splitlines() if x.strip()]), "torch": torch}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="light,models")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vlabench-install-") as tmp:
        src = export_head(Path(tmp))
        rows = [measure(v, Path(tmp), src) for v in args.variants.split(",")]
    lines = ["| install | command | wall s | site-packages MiB | distributions | torch importable |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        cmd = "pip install ." if r["variant"] == "light" else "pip install '.[models]'"
        lines.append(f"| {r['variant']} | `{cmd}` | {r['wall_s']:.0f} | {r['site_mib']:.0f} | {r['distributions']} | "
                     f"{'yes' if r['torch'] else 'no'} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from vlabench.fileio import write_text_atomic

        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
